"""The fake API server with list (collection GET), for the read-only live-cluster reader.

Kept apart from :mod:`tests.fakes.apiserver` (whose job is the kube backend's writes): this
subclass only adds what ``kubectl get -A`` needs, ``GET`` on a collection, cluster-wide
(``/apis/<g>/<v>/<plural>``) or in one namespace (``.../namespaces/<ns>/<plural>``), and
answers 404 for versions the fake does not serve, as a real API server does.
"""

from __future__ import annotations

import copy
import threading
from http.server import ThreadingHTTPServer
from typing import Any

from tests.fakes.apiserver import FakeApiServer, _Handler


class _ListingHandler(_Handler):
    def do_GET(self) -> None:
        parts = [p for p in self.path.split("?", 1)[0].strip("/").split("/") if p]
        listed = self.fake.collection(parts) if isinstance(self.fake, ListingApiServer) else None
        if listed is None:
            super().do_GET()
            return
        self._record()
        code, body = listed
        self._send(code, body)


class ListingApiServer(FakeApiServer):
    def collection(self, parts: list[str]) -> tuple[int, dict[str, Any]] | None:
        """(status, body) for a collection URL, or None when ``parts`` is not one."""
        if parts[:1] == ["api"] and len(parts) >= 3:
            group, version, rest = "", parts[1], parts[2:]
        elif parts[:1] == ["apis"] and len(parts) >= 4:
            group, version, rest = parts[1], parts[2], parts[3:]
        else:
            return None
        namespace = None
        if len(rest) == 3 and rest[0] == "namespaces":
            namespace, rest = rest[1], rest[2:]
        if len(rest) != 1:
            return None
        kinds = self.served(group, version)
        kind = next((k.kind for k in kinds or [] if k.plural == rest[0]), None)
        if kind is None:
            msg = "the server could not find the requested resource"
            return 404, {
                "kind": "Status",
                "status": "Failure",
                "reason": "NotFound",
                "message": msg,
                "code": 404,
            }
        with self._lock:
            items = [
                copy.deepcopy(obj)
                for (g, plural, ns, _), obj in sorted(self.objects.items())
                if g == group and plural == rest[0] and namespace in (None, ns)
            ]
        for item in items:  # list items carry no apiVersion/kind, as from a real server
            item.pop("apiVersion", None)
            item.pop("kind", None)
        api_version = f"{group}/{version}" if group else version
        return 200, {"kind": f"{kind}List", "apiVersion": api_version, "items": items}

    def __enter__(self) -> ListingApiServer:
        handler = type("Handler", (_ListingHandler,), {"fake": self})
        self._server = ThreadingHTTPServer(("127.0.0.1", 0), handler)
        self._server.daemon_threads = True
        self._thread = threading.Thread(
            target=self._server.serve_forever,
            kwargs={"poll_interval": 0.02},
            name="fake-apiserver-listing",
            daemon=True,
        )
        self._thread.start()
        return self
