"""A throwaway certificate authority for the simulated internet.

Job: let a real TLS client (curl with ``--cacert``, Python's ``ssl``) verify a certificate for
*any* hostname it asks for, on a machine with no internet. One CA is made per
:class:`LocalCA` (trustme, ECDSA keys: a few milliseconds); leaf certificates are issued on
demand, per SNI hostname, the first time a client asks, and cached.

Rules:

- :meth:`LocalCA.server_context` serves whatever name the client sends in SNI: its
  ``sni_callback`` swaps in a per-host context. A handshake without SNI gets the default
  certificate (``localhost``, ``127.0.0.1``, ``::1``).
- Issuing and caching are thread-safe (one lock); the cache is bounded (least recently used
  name evicted first) so a client that invents names cannot grow it without limit.
- Only HTTP/1.1 is offered in ALPN: the simulated internet's servers speak HTTP/1.1 only.
- Nothing here raises out of the TLS callback: a name trustme cannot issue for (not a valid
  IDNA hostname) fails that one handshake with an ``unrecognized_name`` alert.
"""

from __future__ import annotations

import logging
import ssl
import threading
from collections import OrderedDict
from pathlib import Path

import trustme

__all__ = ["DEFAULT_IDENTITIES", "LocalCA"]

log = logging.getLogger(__name__)

#: Names on the certificate served when the client sends no SNI.
DEFAULT_IDENTITIES = ("localhost", "127.0.0.1", "::1")
_ALPN = ["http/1.1"]


class LocalCA:
    """A local CA that issues a valid leaf certificate for any hostname, on demand."""

    def __init__(self, *, max_cached_hosts: int = 256) -> None:
        self._ca = trustme.CA(
            organization_name="egresskit",
            organization_unit_name="egresskit simulated internet CA",
        )
        self._lock = threading.Lock()
        self._max_cached = max_cached_hosts
        self._contexts: OrderedDict[str, ssl.SSLContext] = OrderedDict()
        self._server_context: ssl.SSLContext | None = None

    # ------------------------------------------------------------------ client side

    @property
    def ca_pem(self) -> bytes:
        """The CA certificate, PEM encoded."""
        return bytes(self._ca.cert_pem.bytes())

    def ca_pem_path(self, directory: Path) -> Path:
        """Write the CA certificate into ``directory`` (for ``curl --cacert``); return its path."""
        path = Path(directory) / "egresskit-ca.pem"
        path.write_bytes(self.ca_pem)
        return path

    def client_context(self) -> ssl.SSLContext:
        """A client context that trusts this CA only (for Python clients and tests)."""
        ctx = ssl.create_default_context(ssl.Purpose.SERVER_AUTH)
        ctx.load_verify_locations(cadata=self.ca_pem.decode("ascii"))
        return ctx

    # ------------------------------------------------------------------ server side

    def server_context(self) -> ssl.SSLContext:
        """A server context that presents a certificate for whatever SNI the client sends.

        The same context is returned on every call (one per CA).
        """
        with self._lock:
            if self._server_context is None:
                ctx = self._new_context(DEFAULT_IDENTITIES)
                ctx.sni_callback = self._on_sni
                self._server_context = ctx
            return self._server_context

    def context_for(self, hostname: str) -> ssl.SSLContext:
        """The server context holding a certificate for ``hostname`` (issued on first use)."""
        name = _normalise(hostname)
        with self._lock:
            ctx = self._contexts.get(name)
            if ctx is not None:
                self._contexts.move_to_end(name)
                return ctx
            # Issued under the lock: two clients racing for a new name get one certificate.
            ctx = self._new_context((name,))
            self._contexts[name] = ctx
            while len(self._contexts) > self._max_cached:
                self._contexts.popitem(last=False)
            return ctx

    def _new_context(self, identities: tuple[str, ...]) -> ssl.SSLContext:
        leaf = self._ca.issue_cert(*identities)
        ctx = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
        leaf.configure_cert(ctx)
        ctx.set_alpn_protocols(_ALPN)
        return ctx

    def _on_sni(
        self, sslobj: ssl.SSLObject | ssl.SSLSocket, server_name: str | None, _: ssl.SSLContext
    ) -> int | None:
        if not server_name:
            return None  # keep the default certificate
        try:
            sslobj.context = self.context_for(server_name)
        except Exception as exc:  # an exception here would only be printed by ssl: say why
            log.warning("no certificate for SNI %r: %s", server_name, exc)
            return ssl.ALERT_DESCRIPTION_UNRECOGNIZED_NAME
        return None


def _normalise(hostname: str) -> str:
    # DNS names are case-insensitive and "example.com." is "example.com" (RFC 4343, RFC 1034).
    return hostname.strip().rstrip(".").lower()
