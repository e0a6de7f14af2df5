"""One meshed pod's outbound proxy: a real egress data plane on loopback (asyncio).

Job: accept the pod's outbound connections, find the original destination, sniff the
first bytes, ask the policy engine, and do what Linkerd's outbound proxy does: forward,
send to an in-cluster Service, answer 403/500/3xx itself, or close the connection; and
count it all in the pod's own :class:`~egresskit.mesh.metrics.ProxyMetrics`.

Rules:

* Listeners bind 127.0.0.1 only, port 0. A listener either stands for one original
  destination ``ip:port`` (what iptables would have kept; used by the pod's curl) or for a
  port, in which case the destination is the name in the SNI or ``Host`` (``outbound_ports``).
* On a pinned listener the port's protocol decides first (docs/facts/linkerd-egress.md
  5.2): an opaque port is relayed unread; a TLSRoute port needs a whole ClientHello with
  an SNI (broken, missing or silent: closed, no route metrics); a gRPC port speaks
  HTTP/2 only (:mod:`egresskit.mesh.http2`).
* Protocol detection reads what the client sends first, at most ``detect_timeout``
  (Linkerd: 10 s); silence means opaque (docs/facts/linkerd-egress.md 5.2).
* Each HTTP request takes the snapshot current when its head arrives and is judged by it
  alone: policy changes are atomic per request. TLS and TCP connections are judged once.
* Every wait is bounded; a fault on one connection never touches another.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import socket
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field

from egresskit.dns import SimulatedDNS
from egresskit.errors import EgressKitError
from egresskit.mesh.http1 import serve_http1
from egresskit.mesh.http2 import serve_http2
from egresskit.mesh.metrics import ProxyMetrics
from egresskit.mesh.runtime import Channel, connect, relay
from egresskit.mesh.settings import CLOSE_GRACE, ProxyConfig, Upstreams
from egresskit.mesh.sniff import (
    ClientHello,
    NeedMore,
    detect_protocol,
    sniff_client_hello,
)
from egresskit.policy.decision import Decision, TcpConnection, TlsConnection
from egresskit.policy.engine import decide, port_policy
from egresskit.policy.snapshot import Snapshot

__all__ = ["HANDLERS", "EgressProxy", "ProxyConfig", "Upstreams"]

#: A protocol handler: serves one client connection once detection (or the port's
#: protocol) named its protocol; ``buffered`` holds the bytes detection already read.
#: Arguments: (the proxy, the client, buffered, original port, original IP if pinned).
Handler = Callable[["EgressProxy", Channel, bytes, int, str | None], Awaitable[None]]

#: Handlers by detected protocol (:func:`~egresskit.mesh.sniff.detect_protocol`'s names;
#: a gRPC port goes to "http2"); a protocol without one is closed without an answer.
HANDLERS: dict[str, Handler] = {"http1": serve_http1, "http2": serve_http2}

log = logging.getLogger(__name__)

LOOPBACK = "127.0.0.1"


@dataclass(kw_only=True)
class EgressProxy:
    """The outbound proxy of one pod. Runs on the mesh's event loop."""

    namespace: str
    pod: str
    snapshot: Callable[[], Snapshot]
    dns: SimulatedDNS
    upstreams: Upstreams
    metrics: ProxyMetrics
    config: ProxyConfig = field(default_factory=ProxyConfig)
    _listeners: dict[tuple[int, str | None], _Listener] = field(default_factory=dict)
    _ports: dict[tuple[int, str | None], int] = field(default_factory=dict)
    _tasks: set[asyncio.Task[None]] = field(default_factory=set)
    _live: set[asyncio.BaseTransport] = field(default_factory=set)

    # -- listeners ------------------------------------------------------------------------

    async def listen(self, port: int, fixed_ip: str | None = None) -> int:
        """A loopback listener for original port ``port`` (and ``fixed_ip``, if given)."""
        key = (port, fixed_ip)
        if key in self._ports:
            return self._ports[key]

        name = f"proxy {self.namespace}/{self.pod} :{port} conn"

        async def handle(client: Channel) -> None:
            try:
                await self._connection(client, port, fixed_ip)
            except Exception:  # one connection's fault never stops the proxy
                log.exception("proxy %s/%s: connection failed", self.namespace, self.pod)
            finally:
                client.close()
                with contextlib.suppress(Exception):
                    await client.wait_closed(CLOSE_GRACE)

        def opened(client: Channel) -> None:
            # The connection is tracked from here until it is lost, so close() can close
            # every accepted connection, started handler or not.
            assert client.transport is not None
            self._live.add(client.transport)
            task = asyncio.get_running_loop().create_task(handle(client), name=name)
            self._tasks.add(task)
            task.add_done_callback(self._tasks.discard)

        def lost(client: Channel) -> None:
            if client.transport is not None:
                self._live.discard(client.transport)

        def protocol() -> Channel:
            return Channel(on_open=opened, on_lost=lost)

        listener = _Listener.open(protocol, name=f"proxy {self.namespace}/{self.pod} :{port}")
        lport = listener.port
        self._listeners[key] = listener
        self._ports[key] = lport
        return lport

    def ports(self) -> dict[int, int]:
        """Original port -> loopback port of the name-routed listeners."""
        return {p: lp for (p, ip), lp in self._ports.items() if ip is None}

    async def close(self, grace: float = 2.0) -> None:
        listeners = list(self._listeners.values())
        for listener in listeners:
            await listener.close(grace)
        tasks = list(self._tasks)
        for task in tasks:
            task.cancel()
        if tasks:
            await asyncio.wait(tasks, timeout=grace)
        # A connection accepted just before the listener closed may have a handler task
        # that never started (so it never closes its writer): close what is left here.
        for transport in list(self._live):
            transport.close()
        self._live.clear()
        self._listeners.clear()
        self._ports.clear()

    # -- one connection ---------------------------------------------------------------------

    async def _connection(self, client: Channel, port: int, fixed_ip: str | None) -> None:
        # With the original destination known (a pinned listener), the port's protocol
        # comes first, as in Linkerd (spec 5.2): opaque ports are never sniffed, TLSRoute
        # ports require a ClientHello with an SNI, gRPC ports speak HTTP/2 only. A
        # name-routed listener has to sniff first to learn the destination at all.
        port_protocol = "detect"
        if fixed_ip is not None:
            policy = port_policy(self.snapshot(), self.namespace, fixed_ip, port)
            if policy.parent is not None and policy.parent.kind != "Service":
                port_protocol = policy.protocol
        if port_protocol == "grpc":
            # HTTP/2 with no detection: anything else fails the HTTP/2 handshake (spec 5.2).
            await self._handle("http2", client, b"", port, fixed_ip)
            return
        if port_protocol == "opaque":
            buffered, protocol = b"", "opaque"
        else:
            buffered, protocol = await self._detect(client)
        if protocol == "closed":
            return
        if port_protocol == "tls" and protocol != "tls":
            return  # no ClientHello (silence included): "Could not find SNI", closed
        if protocol in ("http1", "http2"):
            await self._handle(protocol, client, buffered, port, fixed_ip)
            return
        sni: str | None = None
        if protocol == "tls":
            buffered, hello = await self._read_hello(client, buffered)
            if not isinstance(hello, ClientHello):
                # A broken or unfinished ClientHello: the TLS detection fails and the
                # connection closes before any route is chosen (no route metrics).
                return
            sni = hello.sni
        ip = self.resolve(sni, fixed_ip)
        if ip is None:
            log.info(
                "proxy %s/%s: no destination for an opaque stream on :%s",
                self.namespace,
                self.pod,
                port,
            )
            return
        request: TlsConnection | TcpConnection
        if protocol == "tls":
            request = TlsConnection(
                client_namespace=self.namespace, dst_ip=ip, dst_port=port, sni=sni
            )
        else:
            request = TcpConnection(client_namespace=self.namespace, dst_ip=ip, dst_port=port)
        decision = decide(self.snapshot(), request)
        await self._stream(decision, client, buffered, sni, ip, port, protocol == "tls")

    async def _handle(
        self, protocol: str, client: Channel, buffered: bytes, port: int, fixed_ip: str | None
    ) -> None:
        """Hand the connection to the handler of ``protocol`` (:data:`HANDLERS`)."""
        handler = HANDLERS.get(protocol)
        if handler is None:
            log.info("proxy %s/%s: %s is not supported locally", self.namespace, self.pod, protocol)
            return
        await handler(self, client, buffered, port, fixed_ip)

    def resolve(self, host: str | None, fixed_ip: str | None) -> str | None:
        if fixed_ip is not None:
            return fixed_ip
        if not host:
            return None
        try:
            return str(self.dns.resolve(host, search_namespace=self.namespace))
        except EgressKitError:
            return None

    async def _detect(self, client: Channel) -> tuple[bytes, str]:
        buffered = b""
        deadline = asyncio.get_running_loop().time() + self.config.detect_timeout
        while True:
            try:
                chunk = await client.read(deadline)
            except TimeoutError:
                return buffered, "opaque"  # the client did not speak first
            except OSError:
                return buffered, "closed"
            if not chunk:
                return buffered, ("closed" if not buffered else "opaque")
            buffered += chunk
            verdict = detect_protocol(buffered)
            if not isinstance(verdict, NeedMore):
                return buffered, verdict.protocol

    async def _read_hello(self, client: Channel, buffered: bytes) -> tuple[bytes, object]:
        deadline = asyncio.get_running_loop().time() + self.config.detect_timeout
        while True:
            hello = sniff_client_hello(buffered)
            if not isinstance(hello, NeedMore):
                return buffered, hello
            try:
                chunk = await client.read(deadline)
            except (OSError, TimeoutError):  # TimeoutError: the deadline passed
                return buffered, None
            if not chunk:
                return buffered, None
            buffered += chunk

    # -- TLS and opaque streams ------------------------------------------------------------

    async def _stream(
        self,
        decision: Decision,
        client: Channel,
        buffered: bytes,
        sni: str | None,
        ip: str,
        port: int,
        is_tls: bool,
    ) -> None:
        family = decision.family
        labels = decision.labels

        def opened() -> None:
            if not labels:
                return
            if family == "tls":
                self.metrics.tls_open(labels, hostname=sni or "")
            elif family == "tcp":
                self.metrics.tcp_open(labels, target_ip=ip, target_port=port)

        def closed(error: str) -> None:
            if not labels:
                return
            if family == "tls":
                self.metrics.tls_close(labels, hostname=sni or "", error=error)
            elif family == "tcp":
                self.metrics.tcp_close(labels, target_ip=ip, target_port=port, error=error)

        if decision.outcome in ("forbidden", "invalid", "failed"):
            # Forbidden/Invalid filters: the proxy accepts, then drops the connection; the
            # client sees a reset or EOF during its handshake (curl: (35)). Spec 3.
            opened()
            closed(decision.error)
            return
        target = self.upstreams(sni, ip, port, is_tls, decision)
        if target is None:
            opened()
            closed("unexpected")
            return
        try:
            upstream = await connect(target, self.config.connect_timeout)
        except (OSError, TimeoutError):
            opened()
            closed("unexpected")
            return
        opened()
        try:
            upstream.write(buffered)
            await relay(client, upstream)
        finally:
            upstream.close()
            with contextlib.suppress(Exception):
                await upstream.wait_closed(CLOSE_GRACE)
            closed("")


class _Listener:
    """A loopback listening socket and the task accepting on it.

    Not ``asyncio.start_server``: on Python 3.11 a connection accepted in the same loop
    tick as ``Server.close()`` fails in ``Server._attach`` and its socket is leaked
    unclosed. Accepting with ``sock_accept`` + ``connect_accepted_socket`` keeps every
    accepted socket in our hands until its transport owns it.
    """

    def __init__(self, sock: socket.socket, task: asyncio.Task[None]) -> None:
        self.sock = sock
        self.task = task
        self.port = int(sock.getsockname()[1])

    @classmethod
    def open(cls, factory: Callable[[], asyncio.BaseProtocol], *, name: str) -> _Listener:
        sock = socket.create_server((LOOPBACK, 0), backlog=128)
        sock.setblocking(False)
        return cls(sock, asyncio.create_task(cls._accept(sock, factory), name=f"{name} accept"))

    @staticmethod
    async def _accept(sock: socket.socket, factory: Callable[[], asyncio.BaseProtocol]) -> None:
        loop = asyncio.get_running_loop()
        while True:
            try:
                conn, _ = await loop.sock_accept(sock)
            except OSError:
                # Out of descriptors or similar: keep the listener, retry shortly.
                log.exception("proxy listener on :%s: accept failed", sock.getsockname()[1])
                await asyncio.sleep(0.1)
                continue
            # Nagle off, as hyper sets it: a socket from create_server has proto 0, so
            # asyncio's own TCP_NODELAY check skips it, and a response written in two
            # pieces would wait for the client's delayed ACK (40 ms) between them.
            with contextlib.suppress(OSError):
                conn.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
            try:
                await loop.connect_accepted_socket(factory, conn)
            except asyncio.CancelledError:
                conn.close()  # the transport was never made, or closed itself
                raise
            except Exception:
                conn.close()
                log.exception("proxy listener on :%s: a connection failed", sock.getsockname()[1])

    async def close(self, grace: float) -> None:
        self.task.cancel()
        await asyncio.wait({self.task}, timeout=grace)
        self.sock.close()
