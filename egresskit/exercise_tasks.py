"""The exercises' tasks: what each asks, its skeleton and solution, and its requests.

Job: data only. An :class:`Exercise` states a task as requests and the outcome each must
get (:class:`Probe`: ``http://``/``https://`` URLs are sent with curl, ``grpc://`` as a gRPC
call, ``tcp://`` as a line of the TCP site's protocol), a skeleton manifest (valid YAML that
applies but does not solve the task: a check never passes on it) and a solution.
:mod:`egresskit.exercises` checks answers against them with real traffic; the notebook
(``notebooks/build.py``) shows the task, the skeleton and the solution.
"""

from __future__ import annotations

import textwrap
from dataclasses import dataclass
from typing import Literal
from urllib.parse import urlsplit

from egresskit import guide

Want = Literal["allowed", "forbidden", "redirected"]
NS = guide.NAMESPACE_NAME
TERMINUS_TEXT = "You cannot go there right now"


@dataclass(frozen=True, kw_only=True)
class Probe:
    """One request of a task and the outcome the task wants for it."""

    url: str
    want: Want
    method: str = "GET"
    headers: tuple[tuple[str, str], ...] = ()
    #: For ``tcp://`` probes: the line sent (the TCP site answers ``PING`` with ``+PONG``).
    send: bytes = b"PING\r\nQUIT\r\n"  # QUIT: the site closes, so the exchange ends

    @property
    def scheme(self) -> str:
        return urlsplit(self.url).scheme

    @property
    def grpc_method(self) -> str:
        """``package.Service/Method`` of a ``grpc://host:port/package.Service/Method`` URL."""
        return urlsplit(self.url).path.lstrip("/")

    @property
    def shown(self) -> str:
        if self.scheme == "grpc":
            return f"gRPC {self.grpc_method} to {urlsplit(self.url).netloc}"
        if self.scheme == "tcp":
            return f"TCP {self.send.decode().split()[0]} to {urlsplit(self.url).netloc}"
        hdr = "".join(f" -H '{k}: {v}'" for k, v in self.headers)
        return f"{self.method} {self.url}{hdr}"

    @property
    def expected(self) -> str:
        """The client's view the task wants, in words."""
        if self.want == "redirected":
            return f"internal-egress's answer ({TERMINUS_TEXT!r})"
        if self.want == "allowed" and self.scheme == "grpc":
            return "grpc-status OK"
        if self.want == "allowed":
            return f"an answer from {urlsplit(self.url).hostname}"
        if self.scheme == "grpc":
            return "grpc-status PERMISSION_DENIED"
        if self.scheme in ("https", "tcp"):
            return "a closed connection" + (" (curl exit 35)" if self.scheme == "https" else "")
        return "HTTP 403 (forbidden)"

    def curl_args(self) -> list[str]:
        args = ["-sS", "-m", "10"]
        if self.method != "GET":
            args += ["-X", self.method]
        for k, v in self.headers:
            args += ["-H", f"{k}: {v}"]
        return [*args, self.url]


@dataclass(frozen=True, kw_only=True)
class Exercise:
    number: int
    key: str
    title: str
    task: str  # markdown: the requests and what they must give
    skeleton: str
    solution: str
    probes: tuple[Probe, ...]


# ------------------------------------------------------------------------ the tasks


def _route(kind: str, api: str, name: str, port: int, spec: str) -> str:
    return (
        f"apiVersion: {api}\nkind: {kind}\nmetadata:\n  name: {name}\n  namespace: {NS}\n"
        "spec:\n  parentRefs:\n  - name: all-egress-traffic\n    kind: EgressNetwork\n"
        f"    group: policy.linkerd.io\n    namespace: {NS}\n    port: {port}\n"
        + textwrap.indent(textwrap.dedent(spec).strip("\n"), "  ")
        + "\n"
    )


HTTP_V1 = "gateway.networking.k8s.io/v1"
GRPC = "grpc://grpc.example.com:50051"  # the simulated internet serves gRPC on 50051
ALPHA2 = "gateway.networking.k8s.io/v1alpha2"
EN_BACKEND = """\
  rules:
  - backendRefs:
    - kind: EgressNetwork
      group: policy.linkerd.io
      name: all-egress-traffic
"""

EXERCISES: tuple[Exercise, ...] = (
    Exercise(
        number=1,
        key="close-the-hole",
        title="close the hole in httpbin-get",
        task=(
            "The guide's `httpbin-get` has no `hostnames`, so `/get` is allowed on every "
            "host. Change it so that:\n\n"
            "- `curl http://httpbin.org/get` → **200** from httpbin\n"
            "- `curl http://google.com/get` → **403**\n"
            "- `curl http://httpbin.org/ip` → **403**"
        ),
        skeleton=_route(
            "HTTPRoute", HTTP_V1, "httpbin-get", 80,
            """
              # TODO: make this route match httpbin.org only
              rules:
              - matches:
                - path:
                    value: "/get"
            """,
        ),
        solution=_route(
            "HTTPRoute", HTTP_V1, "httpbin-get", 80,
            """
              hostnames:
              - httpbin.org
              rules:
              - matches:
                - path:
                    value: "/get"
            """,
        ),
        probes=(
            Probe(url="http://httpbin.org/get", want="allowed"),
            Probe(url="http://google.com/get", want="forbidden"),
            Probe(url="http://httpbin.org/ip", want="forbidden"),
        ),
    ),
    Exercise(
        number=2,
        key="tls-by-sni",
        title="HTTPS to one host only, by SNI",
        task=(
            "Allow HTTPS to `api.github.com` and to nothing else:\n\n"
            "- `curl https://api.github.com/` → **200**\n"
            "- `curl https://github.com/` → connection closed (**curl exit 35**)\n"
            "- `curl https://httpbin.org/get` → connection closed (**curl exit 35**)"
        ),
        skeleton=_route(
            "TLSRoute", ALPHA2, "github-api", 443,
            "  # TODO: which server names (SNI) may pass?\n" + EN_BACKEND,
        ),
        solution=_route(
            "TLSRoute", ALPHA2, "github-api", 443,
            "  hostnames:\n  - api.github.com\n" + EN_BACKEND,
        ),
        probes=(
            Probe(url="https://api.github.com/", want="allowed"),
            Probe(url="https://github.com/", want="forbidden"),
            Probe(url="https://httpbin.org/get", want="forbidden"),
        ),
    ),
    Exercise(
        number=3,
        key="post-only",
        title="POST /post, and nothing else, on httpbin.org",
        task=(
            "Allow exactly one kind of request to `httpbin.org`:\n\n"
            "- `curl -X POST http://httpbin.org/post` → **200**\n"
            "- `curl http://httpbin.org/post` (a GET) → **403**\n"
            "- `curl http://httpbin.org/get` → **403**\n"
            "- `curl -X POST http://google.com/post` → **403**"
        ),
        skeleton=_route(
            "HTTPRoute", HTTP_V1, "httpbin-post", 80,
            """
              hostnames:
              - httpbin.org
              rules:
              - matches:
                - path:
                    value: "/post"
                  # TODO: only this method
            """,
        ),
        solution=_route(
            "HTTPRoute", HTTP_V1, "httpbin-post", 80,
            """
              hostnames:
              - httpbin.org
              rules:
              - matches:
                - path:
                    value: "/post"
                  method: POST
            """,
        ),
        probes=(
            Probe(url="http://httpbin.org/post", method="POST", want="allowed"),
            Probe(url="http://httpbin.org/post", want="forbidden"),
            Probe(url="http://httpbin.org/get", want="forbidden"),
            Probe(url="http://google.com/post", method="POST", want="forbidden"),
        ),
    ),
    Exercise(
        number=4,
        key="header",
        title="only with a ticket header",
        task=(
            "Let `http://httpbin.org/headers` through only when the request carries the "
            "header `x-egress-ticket: ABC-123`:\n\n"
            "- `curl -H 'x-egress-ticket: ABC-123' http://httpbin.org/headers` → **200**\n"
            "- `curl http://httpbin.org/headers` → **403**\n"
            "- `curl -H 'x-egress-ticket: nope' http://httpbin.org/headers` → **403**"
        ),
        skeleton=_route(
            "HTTPRoute", HTTP_V1, "httpbin-ticket", 80,
            """
              hostnames:
              - httpbin.org
              rules:
              - matches:
                - path:
                    value: "/headers"
                  # TODO: and the header x-egress-ticket with value ABC-123
            """,
        ),
        solution=_route(
            "HTTPRoute", HTTP_V1, "httpbin-ticket", 80,
            """
              hostnames:
              - httpbin.org
              rules:
              - matches:
                - path:
                    value: "/headers"
                  headers:
                  - name: x-egress-ticket
                    value: ABC-123
            """,
        ),
        probes=(
            Probe(
                url="http://httpbin.org/headers",
                headers=(("x-egress-ticket", "ABC-123"),),
                want="allowed",
            ),
            Probe(url="http://httpbin.org/headers", want="forbidden"),
            Probe(
                url="http://httpbin.org/headers",
                headers=(("x-egress-ticket", "nope"),),
                want="forbidden",
            ),
        ),
    ),
    Exercise(
        number=5,
        key="redirect-one-host",
        title="send one external host to the internal service",
        task=(
            "Plaintext requests to `example.com` must go to `internal-egress` (already "
            "deployed), nothing else changes:\n\n"
            f"- `curl http://example.com/` → **200** with *{TERMINUS_TEXT}*\n"
            "- `curl http://google.com/` → **403**\n"
            "- `curl http://httpbin.org/get` → **403**"
        ),
        skeleton=_route(
            "HTTPRoute", HTTP_V1, "example-to-internal", 80,
            """
              # TODO: only for example.com
              rules:
              - backendRefs:
                - kind: Service
                  name: internal-egress
                  port: 80
            """,
        ),
        solution=_route(
            "HTTPRoute", HTTP_V1, "example-to-internal", 80,
            """
              hostnames:
              - example.com
              rules:
              - backendRefs:
                - kind: Service
                  name: internal-egress
                  port: 80
            """,
        ),
        probes=(
            Probe(url="http://example.com/", want="redirected"),
            Probe(url="http://google.com/", want="forbidden"),
            Probe(url="http://httpbin.org/get", want="forbidden"),
        ),
    ),
    Exercise(
        number=6,
        key="tcp-port",
        title="a TCPRoute for a non-HTTP port",
        task=(
            "`tcp.example.com:6379` speaks a Redis-like line protocol (`PING` answers "
            "`+PONG`): not HTTP, not TLS. Port 6379 is one of Linkerd's default opaque ports, "
            "so under `Deny` the proxy closes the connection (`tcp-egress-deny`). Let port "
            "6379 through with a TCPRoute, and nothing else:\n\n"
            "- `PING` to `tcp.example.com:6379` → **`+PONG`**, counted by your TCPRoute in "
            "`outbound_tcp_route_*`\n"
            "- `curl http://httpbin.org/get` (port 80) → **403**"
        ),
        skeleton=_route(
            "TCPRoute", ALPHA2, "redis", 80,
            "  # TODO: the port above is not the service's port\n" + EN_BACKEND,
        ),
        solution=_route("TCPRoute", ALPHA2, "redis", 6379, EN_BACKEND),
        probes=(
            Probe(url="tcp://tcp.example.com:6379", want="allowed"),
            Probe(url="http://httpbin.org/get", want="forbidden"),
        ),
    ),
    Exercise(
        number=7,
        key="grpc-method",
        title="one gRPC method",
        task=(
            "A gRPC service at `grpc.example.com:50051`: allow its health check "
            "`grpc.health.v1.Health/Check` and no other call. A GRPCRoute switches the port "
            "to gRPC, so what no rule matches gets `grpc-egress-deny` (`PERMISSION_DENIED`):"
            "\n\n"
            "- `grpc.health.v1.Health/Check` → **OK**\n"
            "- `helloworld.Greeter/SayHello` → **PERMISSION_DENIED**\n"
            "- `egresskit.echo.Echo/Unary` → **PERMISSION_DENIED**"
        ),
        skeleton=_route(
            "GRPCRoute", HTTP_V1, "health-check", 50051,
            """
              hostnames:
              - grpc.example.com
              rules:
              - matches: []  # TODO: only the method Check of grpc.health.v1.Health
            """,
        ),
        solution=_route(
            "GRPCRoute", HTTP_V1, "health-check", 50051,
            """
              hostnames:
              - grpc.example.com
              rules:
              - matches:
                - method:
                    service: grpc.health.v1.Health
                    method: Check
            """,
        ),
        probes=(
            Probe(url=f"{GRPC}/grpc.health.v1.Health/Check", want="allowed"),
            Probe(url=f"{GRPC}/helloworld.Greeter/SayHello", want="forbidden"),
            Probe(url=f"{GRPC}/egresskit.echo.Echo/Unary", want="forbidden"),
        ),
    ),
)  # fmt: skip
