"""The simulated internet's non-HTTP/1 sites: gRPC and a line-protocol TCP service.

Job: start and stop the extra servers with :class:`~egresskit.mesh.internet.SimulatedInternet`
and tell it which one answers an original destination port. These sites are chosen by
port, on every external host (the proxy cannot learn a name from opaque bytes, and a gRPC
client need not send one), the way a real host serves gRPC on one port and Redis on another:

* :data:`GRPC_PORT` (50051, the customary gRPC port) ->
  :func:`~egresskit.mesh.grpcsite.internet_site`;
* :data:`TCP_PORT` (6379, in Linkerd's default opaque ports) ->
  :class:`~egresskit.mesh.tcpsite.TcpSite`.

A TLS stream to these ports is not served here (no gRPC over TLS on the simulated internet).
"""

from __future__ import annotations

from egresskit.mesh.grpcsite import GrpcServer, internet_site
from egresskit.mesh.tcpsite import TcpSite

GRPC_PORT = 50051
TCP_PORT = 6379


class ExtraSites:
    """The gRPC and TCP sites, started and closed together."""

    def __init__(self) -> None:
        self._grpc: GrpcServer | None = None
        self._tcp: TcpSite | None = None

    def start(self) -> ExtraSites:
        try:
            self._grpc = internet_site()
            self._tcp = TcpSite().start()
        except BaseException:
            self.close()
            raise
        return self

    def close(self) -> None:
        grpc_site, self._grpc = self._grpc, None
        tcp_site, self._tcp = self._tcp, None
        try:
            if grpc_site is not None:
                grpc_site.close()
        finally:
            if tcp_site is not None:
                tcp_site.close()

    @property
    def grpc_address(self) -> tuple[str, int] | None:
        return None if self._grpc is None else self._grpc.address

    @property
    def tcp_address(self) -> tuple[str, int] | None:
        return None if self._tcp is None else self._tcp.address

    def upstream_for(self, port: int, *, tls: bool) -> tuple[str, int] | None:
        """The site answering plaintext on original ``port``, or None (not one of ours)."""
        if tls:
            return None
        if port == GRPC_PORT:
            return self.grpc_address
        if port == TCP_PORT:
            return self.tcp_address
        return None
