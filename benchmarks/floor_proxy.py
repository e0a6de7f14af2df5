"""The least an HTTP/1 reverse proxy written in Python does: a yardstick, not a proxy.

``python -m benchmarks.floor_proxy UPSTREAM_PORT LISTEN_PORT`` serves on 127.0.0.1, on the
same event loop (uvloop) and parser (httptools, llhttp) as egresskit's data plane, and
does only what every proxy must: parse each request head, write it to one keep-alive
upstream connection per client connection, parse the response to find its end, write it
back. No policy, no metrics, no framing rules, no timeouts, no pooling, no error answers:
it is unsafe by design and exists so that ``make bench`` can say how much of egresskit's
cost per request is Python's floor on this machine and how much is egresskit's own work.
It handles what wrk sends (bodiless GETs) and nothing else.
"""

from __future__ import annotations

import asyncio
import sys

import httptools
import uvloop


class _Upstream(asyncio.Protocol):
    def __init__(self, client: _Client) -> None:
        self.client = client
        self.parser = httptools.HttpResponseParser(self)
        self.chunks: list[bytes] = []
        self.transport: asyncio.Transport | None = None

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self.transport = transport  # type: ignore[assignment]

    def data_received(self, data: bytes) -> None:
        self.chunks.append(data)
        self.parser.feed_data(data)

    def on_message_complete(self) -> None:
        self.client.answer(b"".join(self.chunks))
        self.chunks.clear()

    def connection_lost(self, exc: Exception | None) -> None:
        self.client.close()


class _Client(asyncio.Protocol):
    def __init__(self, upstream: tuple[str, int]) -> None:
        self.upstream_address = upstream
        self.parser = httptools.HttpRequestParser(self)
        self.fields: list[bytes] = []
        self.url = b""
        self.head = b""
        self.upstream: _Upstream | None = None
        self.transport: asyncio.Transport | None = None

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self.transport = transport  # type: ignore[assignment]

    def data_received(self, data: bytes) -> None:
        try:
            self.parser.feed_data(data)
        except httptools.HttpParserError:
            self.close()

    def on_url(self, url: bytes) -> None:
        self.url = url

    def on_header(self, name: bytes, value: bytes) -> None:
        self.fields.append(b"%s: %s\r\n" % (name, value))

    def on_headers_complete(self) -> None:
        method = self.parser.get_method()
        self.head = b"%s %s HTTP/1.1\r\n%s\r\n" % (method, self.url, b"".join(self.fields))
        self.fields.clear()

    def on_message_complete(self) -> None:
        if self.upstream is None:
            asyncio.get_running_loop().create_task(self._open(self.head))
        elif self.upstream.transport is not None:
            self.upstream.transport.write(self.head)

    async def _open(self, head: bytes) -> None:
        loop = asyncio.get_running_loop()
        _, self.upstream = await loop.create_connection(
            lambda: _Upstream(self), *self.upstream_address
        )
        assert self.upstream.transport is not None
        self.upstream.transport.write(head)

    def answer(self, response: bytes) -> None:
        if self.transport is not None and not self.transport.is_closing():
            self.transport.write(response)

    def close(self) -> None:
        if self.transport is not None:
            self.transport.close()

    def connection_lost(self, exc: Exception | None) -> None:
        if self.upstream is not None and self.upstream.transport is not None:
            self.upstream.transport.close()


async def serve(upstream_port: int, port: int) -> None:
    loop = asyncio.get_running_loop()
    server = await loop.create_server(
        lambda: _Client(("127.0.0.1", upstream_port)), "127.0.0.1", port
    )
    print("ready", flush=True)  # the benchmark waits for this line
    await server.serve_forever()


def main(argv: list[str]) -> int:
    upstream_port, port = (int(a) for a in argv)
    uvloop.run(serve(upstream_port, port))
    return 0


if __name__ == "__main__":
    raise SystemExit(main(sys.argv[1:]))
