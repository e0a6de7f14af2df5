"""Write ``07-grpc-and-tcp.ipynb`` from the cells below (``python notebooks/build_grpc.py``).

The guide's "Similar to HTTP and TLS routes, we can use GRPCRoute and TCPRoute in a similar
fashion", with traffic. Same conventions as ``build.py`` (which this file does not import,
so the two can change apart): manifests as YAML in the cells, one call into the package per
step (:mod:`egresskit.grpcguide`, the calls the tests make), ``verify`` cells printing one
PASS line, every other output tagged ``nbval-ignore-output``. Then
``python -m egresskit.runner 07`` executes it in place with outputs.
"""

from __future__ import annotations

from pathlib import Path

import nbformat

from egresskit import grpcmanifests as gm
from egresskit.runner import KERNELSPEC

HERE = Path(__file__).resolve().parent
NAME = "07-grpc-and-tcp"


def md(text: str) -> nbformat.NotebookNode:
    return nbformat.v4.new_markdown_cell(text.strip())


def code(text: str, *, tags: tuple[str, ...] = ("nbval-ignore-output",)) -> nbformat.NotebookNode:
    cell = nbformat.v4.new_code_cell(text.strip())
    cell.metadata["tags"] = list(tags)
    return cell


def verify(text: str) -> nbformat.NotebookNode:
    return code(text, tags=("verify",))


def yaml_cell(var: str, yaml: str, kubectl: str) -> nbformat.NotebookNode:
    return code(f'# {kubectl}\n{var} = """\\\n{yaml}"""\nlesson.apply({var})')


# The manifests the notebook shows are the ones the tests apply: one source, embedded verbatim.
GREETER_ROUTE = gm.GREETER_ROUTE
TEAM_ROUTE = gm.TEAM_HEADER_ROUTE
BB_ROUTE = gm.BB_REDIRECT_ROUTE
TCP_ROUTE = gm.TCP_ALLOW_ROUTE
TCP_REDIRECT = gm.TCP_REDIRECT_ROUTE

GRPC = "outbound_grpc_route_request_statuses_total"

CELLS = [
    md(
        """
# 7. GRPCRoute and TCPRoute, with traffic

The guide ends its restriction section with *"Similar to HTTP and TLS routes, we can use
GRPCRoute and TCPRoute in a similar fashion."* Here is that sentence with real calls: a gRPC
service out on the (simulated) internet at `grpc.example.com:50051`, a line-protocol service at
`tcp.example.com:6379`, an `EgressNetwork` that denies by default, and routes that let some of it
through or send it back into the cluster.

The client is `python -m egresskit.grpcclient`, the kit's small stand-in for grpcurl, run inside
the `client` pod as `curl` is (local backend; on kind, see `docs/local-backend.md`).
"""
    ),
    code(
        """
# Parameters (papermill): the backend and where outputs go.
backend = "local"  # the gRPC client runs in the pod on the local backend only (see the docs)
kube_context = None
output_dir = "../out"  # the chart is written to output_dir/charts""",
        tags=("parameters",),
    ),
    code(
        """
import egresskit
from egresskit import guide
from egresskit import grpcguide as g

from egresskit.lesson import Lesson

cluster = egresskit.connect(backend, **({"context": kube_context} if kube_context else {}))
# Applies as kubectl does, then says what changed and Linkerd's verdict on each route.
lesson = Lesson(cluster)
# kubectl create ns egress-test; the curl client pod of the guide (it also runs our gRPC client)
lesson.apply([guide.NAMESPACE, guide.CLIENT_POD])"""
    ),
    md("Deny everything by default: the guide's `EgressNetwork` after its `trafficPolicy` patch."),
    code(
        '''
# kubectl apply -f - <<EOF ... EOF
EGRESS_NETWORK = """\\
apiVersion: policy.linkerd.io/v1alpha1
kind: EgressNetwork
metadata:
  namespace: egress-test
  name: all-egress-traffic
spec:
  trafficPolicy: Deny
"""
lesson.apply(EGRESS_NETWORK)'''
    ),
    md(
        """
## A gRPC call with no GRPCRoute

Port 50051 has no route yet, so Linkerd detects the protocol: the call's HTTP/2 takes the
**HTTP** routes, and `http-egress-deny` answers 403. A gRPC client cannot read a 403; it sees
the 403 rendered as a gRPC error. Predict, then call:
"""
    ),
    code("g.predict(cluster.objects(), g.GRPC_TARGET, g.SAY_HELLO)"),
    code(
        """
# python -m egresskit.grpcclient grpc.example.com:50051 helloworld.Greeter/SayHello -d '{"name": "learner"}'
hello = g.grpc_call(cluster, g.SAY_HELLO, data=[{"name": "learner"}])
print(hello.summary())"""
    ),
    verify('g.expect_grpc("SayHello with no GRPCRoute on the port", hello, "FAILED_PRECONDITION")'),
    verify(
        'g.expect_count(cluster, "outbound_http_route_request_statuses_total", 1, '
        'route_name="http-egress-deny", parent_port="50051", http_status="403")'
    ),
    md(
        """
**What happened, and why.** Without a GRPCRoute the port is an HTTP port like any other
([facts 5.2](../docs/facts/linkerd-egress.md)); the deny is the HTTP default route's 403, counted in the **HTTP** family with
`http_status="403"`, and the client reads it as `FAILED_PRECONDITION` (9). (That code is
derived from Linkerd's source, not observed: [facts 3](../docs/facts/linkerd-egress.md).)

## Allow one method with a GRPCRoute

A GRPCRoute on port 50051 changes the port itself: HTTP/2 without detection, gRPC routes, and
the synthesized `grpc-egress-deny` after them. Allow only `helloworld.Greeter/SayHello`:
"""
    ),
    yaml_cell("GREETER_ROUTE", GREETER_ROUTE, "kubectl apply -f - <<EOF ... EOF"),
    code(
        """
for method in (g.SAY_HELLO, g.ECHO):
    print(method, "->", g.predict(cluster.objects(), g.GRPC_TARGET, method).summary())"""
    ),
    code(
        """
hello = g.grpc_call(cluster, g.SAY_HELLO, data=[{"name": "learner"}])
echo = g.grpc_call(cluster, g.ECHO, data=[{"message": "hi"}])
print(hello.responses, hello.summary())
print(echo.summary())"""
    ),
    verify('g.expect_grpc("SayHello allowed by grpc-greeter", hello, "OK")'),
    verify('g.expect_grpc("Echo/Unary denied by grpc-egress-deny", echo, "PERMISSION_DENIED")'),
    code(f'g.show_series(cluster, "{GRPC}")'),
    verify(
        f'g.expect_count(cluster, "{GRPC}", 1, route_name="grpc-egress-deny", '
        'grpc_status="PERMISSION_DENIED")'
    ),
    md(
        """
**What happened, and why.** `SayHello` matched the GRPCRoute's method match and went to the
original destination; `Echo/Unary` matched no route and fell through to `grpc-egress-deny`,
which Linkerd answers itself: HTTP 200 with `grpc-status: 7` and `grpc-message: traffic not
allowed` ([facts 3](../docs/facts/linkerd-egress.md)). Both are counted in `outbound_grpc_route_request_statuses_total`, with
`grpc_status` instead of `http_status` ([facts 6.2](../docs/facts/linkerd-egress.md)).

## Allow by metadata: a header match

gRPC metadata are HTTP/2 headers, so a GRPCRoute can match them. Let the Echo service through
for the blue team only:
"""
    ),
    yaml_cell("TEAM_ROUTE", TEAM_ROUTE, "kubectl apply -f - <<EOF ... EOF"),
    code(
        """
blue = g.grpc_call(cluster, g.ECHO, data=[{"message": "hi"}], headers=["x-team: blue"])
red = g.grpc_call(cluster, g.ECHO, data=[{"message": "hi"}], headers=["x-team: red"])
stream = g.grpc_call(cluster, "egresskit.echo.Echo/Bidi",
                     data=[{"message": w} for w in ("streams", "both", "ways")],
                     headers=["x-team: blue"])
print(blue.summary(), red.summary(), stream.responses, sep="\\n")"""
    ),
    verify('g.expect_grpc("Echo with x-team: blue", blue, "OK")'),
    verify('g.expect_grpc("Echo with x-team: red", red, "PERMISSION_DENIED")'),
    verify('g.expect_grpc("a bidirectional stream with x-team: blue", stream, "OK")'),
    md(
        """
## Send calls back into the cluster

As the guide redirects plaintext HTTP to `internal-egress`, a GRPCRoute can send calls to an
in-cluster Service. Here `bb` runs with a gRPC port, and calls to its `TheService` go there
instead of out:
"""
    ),
    yaml_cell(
        "INTERNAL_GRPC",
        gm.INTERNAL_GRPC,
        "kubectl apply -f - <<EOF ... EOF  (a Service and a Deployment: bb terminus with a gRPC port)",
    ),
    yaml_cell("BB_ROUTE", BB_ROUTE, "kubectl apply -f - <<EOF ... EOF"),
    code(
        """
inside = g.grpc_call(cluster, g.BB)
print(inside.responses, inside.summary())"""
    ),
    verify('g.expect_grpc("TheService/theFunction, redirected", inside, "OK")'),
    verify(
        'g.expect_count(cluster, "outbound_grpc_route_backend_response_statuses_total", 1, '
        'route_name="grpc-bb-internal", backend_kind="Service", backend_name="internal-grpc", '
        'grpc_status="OK")'
    ),
    md(
        """
**What happened, and why.** The route's `backendRefs` name a Service, so the proxy sent the call
to `internal-grpc:9090` (backend labels `backend_kind="Service"`), and bb answered with its
`payload`. The external site never saw the call.

## TCPRoute: opaque bytes

Port 6379 (Redis) is in Linkerd's default opaque ports, so the proxy never looks inside: under
Deny, `tcp-egress-deny` accepts the connection and closes it.
"""
    ),
    code(
        """
# kubectl exec -n egress-test client -- sh -c "printf 'PING\\r\\nQUIT\\r\\n' | nc tcp.example.com 6379"
before = g.tcp_call(cluster, b"PING\\r\\nQUIT\\r\\n")
print(before)"""
    ),
    verify(
        "from egresskit.verify import equal\n"
        'equal("bytes back from tcp.example.com:6379 under Deny", b"", before)'
    ),
    md('The proxy counts the connection it closed, and why (`error="forbidden"`):'),
    verify(
        'g.expect_count(cluster, "outbound_tcp_route_close_total", 1, route_name="tcp-egress-deny", '
        'error="forbidden")'
    ),
    md(
        "A TCPRoute has no matches: it takes the whole port. Allow 6379 to its original "
        "destination (a TCPRoute needs a backend, so it names the EgressNetwork itself):"
    ),
    yaml_cell("TCP_ROUTE", TCP_ROUTE, "kubectl apply -f - <<EOF ... EOF"),
    code(
        """
after = g.tcp_call(cluster, b"PING\\r\\nECHO egress\\r\\nQUIT\\r\\n")
print(after)"""
    ),
    verify('equal("bytes back through tcp-6379", b"+PONG\\r\\n+egress\\r\\n+BYE\\r\\n", after)'),
    md("Counted on your route now, not on the default one:"),
    verify('g.expect_count(cluster, "outbound_tcp_route_open_total", 1, route_name="tcp-6379")'),
    md(
        """
Only the first TCPRoute of a port is used ([facts 4.5](../docs/facts/linkerd-egress.md)), so
to send 6379 into the cluster, replace the route. The guide's `internal-egress` (bb, HTTP/1)
answers whatever arrives, so speak HTTP/1.0 to it over the opaque port:
"""
    ),
    code(
        """
# kubectl delete tcproute -n egress-test tcp-6379; kubectl apply -f internal-egress.yaml
cluster.delete("tcproute", "tcp-6379", namespace="egress-test")
lesson.apply(guide.INTERNAL_EGRESS)"""
    ),
    yaml_cell("TCP_REDIRECT", TCP_REDIRECT, "kubectl apply -f - <<EOF ... EOF"),
    code(
        """
redirected = g.tcp_call(cluster, b"GET / HTTP/1.0\\r\\n\\r\\n")
print(redirected.decode())"""
    ),
    verify(
        'g.check("tcp.example.com:6379 answered inside the cluster", '
        'b"You cannot go there right now" in redirected, '
        'expected="bb\'s payload \\"You cannot go there right now\\"", '
        "seen=repr(g.http_body_text(redirected)))"
    ),
    md(
        """
## Everything the proxy counted

Calls and connections per route and status, from the client's proxy metrics: gRPC by
`grpc_status`, the first HTTP-routed call by `http_status`, TCP by how each connection closed.
"""
    ),
    code("g.outcome_chart(cluster, output_dir)"),
    md("## Cleanup\n\n`kubectl delete ns egress-test`."),
    code('cluster.delete("namespace", "egress-test")\ncluster.close()'),
]


def build() -> Path:
    nb = nbformat.v4.new_notebook()
    nb.cells = CELLS
    nb.metadata["kernelspec"] = dict(KERNELSPEC)
    path = HERE / f"{NAME}.ipynb"
    nbformat.write(nb, path)
    return path


if __name__ == "__main__":
    print(build())
