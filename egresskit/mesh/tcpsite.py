"""A tiny line-protocol server: the simulated internet's opaque TCP service.

Job: something that is neither HTTP nor TLS to send real bytes to through a TCPRoute. It
speaks a Redis-like inline protocol (one command per line, the client speaks first, so
protocol detection is never left waiting), served on ``127.0.0.1:0``:

* ``PING`` -> ``+PONG``; ``ECHO <text>`` -> ``+<text>``; ``WHO`` -> ``+<banner>``;
* ``QUIT`` -> ``+BYE`` and the server closes; anything else -> ``-ERR unknown command``;
* a line longer than :data:`MAX_LINE` bytes -> ``-ERR line too long`` and close; a client
  silent for :data:`IDLE_TIMEOUT` seconds is closed.

Port 6379 (Redis) is in Linkerd's default ``proxy.opaquePorts``, so the proxy relays it
without detection (docs/facts/linkerd-egress.md 1, 5.2); the notebooks use it there.
"""

from __future__ import annotations

import socket
import socketserver
import threading

from egresskit.errors import WaitTimeout

LOOPBACK = "127.0.0.1"
MAX_LINE = 4096
IDLE_TIMEOUT = 30.0
BANNER = "egresskit simulated internet TCP site (line protocol); nothing left this machine"


def answer(line: bytes) -> tuple[bytes, bool]:
    """The reply to one command line (without its line end), and whether to close after."""
    text = line.decode("utf-8", "replace").strip()
    command, _, rest = text.partition(" ")
    verb = command.upper()
    if verb == "PING":
        return b"+PONG\r\n", False
    if verb == "ECHO":
        return f"+{rest}\r\n".encode(), False
    if verb == "WHO":
        return f"+{BANNER}\r\n".encode(), False
    if verb == "QUIT":
        return b"+BYE\r\n", True
    return f"-ERR unknown command {command[:64]!r}\r\n".encode(), False


class _Handler(socketserver.StreamRequestHandler):
    timeout = IDLE_TIMEOUT

    def handle(self) -> None:
        try:
            while True:
                line = self.rfile.readline(MAX_LINE + 1)
                if not line:
                    return
                if len(line) > MAX_LINE and not line.endswith(b"\n"):
                    self.wfile.write(b"-ERR line too long\r\n")
                    return
                reply, close = answer(line.rstrip(b"\r\n"))
                self.wfile.write(reply)
                if close:
                    return
        except (TimeoutError, OSError):
            return


class _Server(socketserver.ThreadingTCPServer):
    daemon_threads = True
    allow_reuse_address = True
    block_on_close = False


class TcpSite:
    """The line-protocol server on ``127.0.0.1:0``; ``close()`` stops it, bounded."""

    def __init__(self) -> None:
        self._server = _Server((LOOPBACK, 0), _Handler)
        self.address: tuple[str, int] = (LOOPBACK, int(self._server.server_address[1]))
        self._thread = threading.Thread(
            target=self._server.serve_forever, kwargs={"poll_interval": 0.2}, daemon=True
        )
        self._thread.name = "internet-tcp"

    def start(self) -> TcpSite:
        self._thread.start()
        return self

    def close(self, timeout: float = 5.0) -> None:
        if self._thread.is_alive():
            self._server.shutdown()
            self._thread.join(timeout)
            if self._thread.is_alive():
                raise WaitTimeout("the TCP site to stop", timeout, "still serving")
        self._server.server_close()


def exchange(address: tuple[str, int], data: bytes, *, timeout: float = 10.0) -> bytes:
    """Send ``data`` and return every byte received until the other end closes
    (a client for tests and notebooks: ``b"PING\\r\\nQUIT\\r\\n"`` -> ``b"+PONG\\r\\n+BYE\\r\\n"``).

    A proxy that forbids the connection accepts it and closes it: the answer is then b"" (or
    what came before a reset); failing to connect raises ``OSError``; so does a peer that
    neither answers nor closes within ``timeout`` (``TimeoutError``)."""
    received = bytearray()
    with socket.create_connection(address, timeout=timeout) as sock:
        try:
            # No half-close: many servers (Tornado among them) drop a connection whose
            # peer shut its sending side. The exchange ends when the server closes (after
            # QUIT here, after the response for HTTP/1.0).
            sock.sendall(data)
            while chunk := sock.recv(65536):
                received += chunk
                if len(received) > 1 << 20:
                    break  # enough for any demo; do not buffer without bound
        except (ConnectionResetError, BrokenPipeError):
            pass  # closed by the other end: what came so far is the answer
    return bytes(received)
