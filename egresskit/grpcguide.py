"""GRPCRoute and TCPRoute "in a similar fashion": the manifests and the calls of that step.

The guide ends its restriction section with "Similar to HTTP and TLS routes, we can use
GRPCRoute and TCPRoute in a similar fashion." This module is that sentence with traffic:
the manifests (one constant per step, YAML a learner can edit), and the machinery a
notebook or a test calls -- a gRPC call or a TCP exchange from the client pod, a metric
sample read from the pod's proxy, a verify line. It does not depend on
:mod:`egresskit.tutorial`.

The manifests are in :mod:`egresskit.grpcmanifests` (re-exported here). The simulated
internet serves gRPC on port 50051 of every host and a line protocol on
port 6379 (:mod:`egresskit.mesh.extrasites`); the story uses ``grpc.example.com:50051`` and
``tcp.example.com:6379``. What Linkerd does (docs/facts/linkerd-egress.md):

* no GRPCRoute on 50051: the port is HTTP-detected, the gRPC client's HTTP/2 takes the
  HTTP routes; under Deny ``http-egress-deny`` answers 403, which a gRPC client sees as
  ``FAILED_PRECONDITION`` (3, derived) -- counted in ``outbound_http_route_*``;
* a GRPCRoute on 50051 switches the port to gRPC: routes first, then the synthesized
  ``grpc-egress-deny`` (``PERMISSION_DENIED``, "traffic not allowed"; 3, 5.2), counted in
  ``outbound_grpc_route_*`` with ``grpc_status`` (6.2);
* 6379 is opaque by default: ``tcp-egress-deny`` closes the connection; the first TCPRoute
  replaces it (3, 4.5), forwarding to the original destination or to a Service.
"""

from __future__ import annotations

import json
import re
import time
from collections.abc import Callable, Mapping, Sequence
from dataclasses import replace
from pathlib import Path
from typing import Any

from egresskit.cluster.base import Cluster
from egresskit.errors import BackendError
from egresskit.explaining import dns_for, with_cluster_ips
from egresskit.grpcclient import GrpcCallResult, parse_header
from egresskit.grpcmanifests import (
    ALL_MANIFESTS,
    BB,
    BB_REDIRECT_ROUTE,
    ECHO,
    EGRESS_NETWORK_DENY,
    GREETER_ROUTE,
    GRPC_TARGET,
    INTERNAL_GRPC,
    NAMESPACE,
    POD,
    SAY_HELLO,
    TCP_ALLOW_ROUTE,
    TCP_REDIRECT_ROUTE,
    TCP_TARGET,
    TEAM_HEADER_ROUTE,
)
from egresskit.manifests.model import K8sObject
from egresskit.podcalls import grpcclient_argv
from egresskit.policy.decision import Decision, HttpRequest, Request, TcpConnection
from egresskit.policy.engine import decide
from egresskit.policy.snapshot import Snapshot
from egresskit.verify import check

__all__ = [
    "ALL_MANIFESTS",
    "BB",
    "BB_REDIRECT_ROUTE",
    "ECHO",
    "EGRESS_NETWORK_DENY",
    "GREETER_ROUTE",
    "GRPC_TARGET",
    "INTERNAL_GRPC",
    "NAMESPACE",
    "POD",
    "SAY_HELLO",
    "TCP_ALLOW_ROUTE",
    "TCP_REDIRECT_ROUTE",
    "TCP_TARGET",
    "TEAM_HEADER_ROUTE",
    "expect_count",
    "expect_grpc",
    "grpc_call",
    "http_body_text",
    "outcome_chart",
    "outcome_rows",
    "predict",
    "proxy_count",
    "sample_value",
    "show_series",
    "tcp_call",
]

# ------------------------------------------------------------------------ the calls


def grpc_call(
    cluster: Cluster,
    method: str,
    *,
    data: Sequence[Mapping[str, Any]] = (),
    headers: Sequence[str] = (),
    target: str = GRPC_TARGET,
    pod: str = POD,
    namespace: str = NAMESPACE,
) -> GrpcCallResult:
    """One gRPC call from ``pod`` with ``python -m egresskit.grpcclient`` (see podcalls)."""
    run = getattr(cluster, "grpc", None)
    if run is None:
        argv = grpcclient_argv(target, method, connect_to=None, data=data, headers=headers)
        command = " ".join(["python", *argv[1:]])
        raise BackendError(
            f"the {cluster.name} backend runs no gRPC client for you; from a pod whose image "
            f"has egresskit and grpcio run: kubectl exec -n {namespace} <pod> -- {command}"
        )
    result: GrpcCallResult = run(
        target, method, pod=pod, namespace=namespace, data=data, headers=headers
    )
    return result


def http_body_text(answer: bytes, *, field: str = "payload") -> str:
    """The body of an HTTP/1 answer read off a raw socket, for a PASS/FAIL line: its JSON
    ``field`` when it has one (bb's body also carries a request UID that differs every
    run), else the body's first 80 characters."""
    body = answer.partition(b"\r\n\r\n")[2].decode(errors="replace")
    try:
        value = json.loads(body).get(field)
    except (ValueError, AttributeError):
        value = None
    return value if isinstance(value, str) else body[:80]


def tcp_call(
    cluster: Cluster,
    data: bytes,
    *,
    target: str = TCP_TARGET,
    pod: str = POD,
    namespace: str = NAMESPACE,
) -> bytes:
    """Send ``data`` over TCP from ``pod``; every byte that came back (b"": closed)."""
    run = getattr(cluster, "tcp", None)
    if run is None:
        raise BackendError(
            f"the {cluster.name} backend has no TCP client for you; from the pod run e.g. "
            f"kubectl exec -n {namespace} {pod} -- sh -c \"printf 'PING\\r\\n' | nc "
            f'{target.replace(":", " ")}"'
        )
    answer: bytes = run(target, data, pod=pod, namespace=namespace)
    return answer


# ---------------------------------------------------------------------- predicting


def predict(
    objects: Sequence[K8sObject],
    target: str,
    method: str | None = None,
    *,
    headers: Sequence[str] = (),
    namespace: str = NAMESPACE,
) -> Decision:
    """What Linkerd does with a gRPC call (``method`` given) or a plain TCP connection to
    ``target`` from a pod in ``namespace``, with the engine's reasoning (as ``explain``
    gives it for URLs). ``objects``: the objects in force, e.g. ``cluster.objects()``.

    The call is what a gRPC client sends (docs/facts/linkerd-egress.md 6.2, grpcmatch):
    HTTP/2 ``POST /<service>/<method>``, ``:authority`` the target, ``content-type:
    application/grpc``, the metadata as headers."""
    snap = Snapshot.build(with_cluster_ips(list(objects)))
    host, _, port_text = target.rpartition(":")
    if not host or not port_text.isdigit():
        raise ValueError(f"target {target!r}: expected host:port")
    ip = str(dns_for(snap).resolve(host, search_namespace=namespace))
    port = int(port_text)
    request: Request
    if method is None:
        request = TcpConnection(client_namespace=namespace, dst_ip=ip, dst_port=port)
        said = f"a TCP connection to {ip}:{port} ({host} resolves to {ip})"
    else:
        path = "/" + method.lstrip("/")
        metadata = tuple(parse_header(h) for h in headers)
        request = HttpRequest(
            client_namespace=namespace,
            dst_ip=ip,
            dst_port=port,
            method="POST",
            path=path,
            host=target,
            headers=(("content-type", "application/grpc"), ("te", "trailers"), *metadata),
            http_version="2",
            grpc=True,
        )
        said = f"a gRPC call {path} (HTTP/2 POST, :authority {target}) to {ip}:{port}"
    trace = [f"the client in {namespace} sends {said}"]
    decision = decide(snap, request, trace=trace)
    trace.append(
        f"outcome: {decision.summary()}" + (f" ({decision.reason})" if decision.reason else "")
    )
    return replace(decision, reasons=tuple(trace))


# ---------------------------------------------------------------------- the metrics

_SAMPLE = re.compile(r"^(?P<name>[a-zA-Z_:][a-zA-Z0-9_:]*)\{(?P<labels>.*)\} (?P<value>\S+)$")
_LABEL = re.compile(r'(?P<key>[a-zA-Z_][a-zA-Z0-9_]*)="(?P<value>(?:[^"\\]|\\.)*)"')


def sample_value(metrics_text: str, name: str, **labels: str) -> float:
    """The sum of the samples called ``name`` whose labels include ``labels`` (0 if none),
    read from ``linkerd dg proxy-metrics`` text."""
    total = 0.0
    for line in metrics_text.splitlines():
        m = _SAMPLE.match(line)
        if m is None or m["name"] != name:
            continue
        found = {lm["key"]: lm["value"] for lm in _LABEL.finditer(m["labels"])}
        if all(found.get(k) == v for k, v in labels.items()):
            total += float(m["value"])
    return total


def proxy_count(
    cluster: Cluster, name: str, *, pod: str = POD, namespace: str = NAMESPACE, **labels: str
) -> float:
    """:func:`sample_value` on the pod's proxy metrics now."""
    return sample_value(cluster.proxy_metrics(pod, namespace=namespace), name, **labels)


# ------------------------------------------------------------------------ verifying


def expect_grpc(
    what: str,
    result: GrpcCallResult,
    code: str,
    *,
    out: Callable[[str], Any] = print,
) -> None:
    """``PASS what: expected grpc-status CODE, saw ...`` or raise the FAIL line."""
    seen = result.code + (f" ({result.details})" if result.details and result.code != code else "")
    check(what, result.code == code, expected=f"grpc-status {code}", seen=seen, out=out)


def expect_count(
    cluster: Cluster,
    metric: str,
    expected: float,
    *,
    out: Callable[[str], Any] = print,
    within: float = 2.0,
    **labels: str,
) -> None:
    """``PASS`` when the pod's proxy has counted exactly ``expected`` in ``metric``'s
    samples with ``labels`` (shown in the line), else raise the FAIL line. A close is
    counted a moment after the client saw it, so wait up to ``within`` seconds for it."""
    deadline = time.monotonic() + within
    seen = proxy_count(cluster, metric, **labels)
    while seen != expected and time.monotonic() < deadline:
        time.sleep(0.05)
        seen = proxy_count(cluster, metric, **labels)
    shown = ", ".join(f'{k}="{v}"' for k, v in labels.items())
    said = str(int(seen) if seen.is_integer() else seen)  # counters are integers: print so
    if seen != expected:
        said += f" after waiting {within:g}s"
    check(f"{metric}{{{shown}}}", seen == expected, expected=expected, seen=said, out=out)


def show_series(
    cluster: Cluster, metric: str, *, out: Callable[[str], Any] = print, **labels: str
) -> None:
    """Print each sample of ``metric`` (with ``labels``), one label per line, as the guide
    shows ``linkerd dg proxy-metrics`` output."""
    text = cluster.proxy_metrics(POD, namespace=NAMESPACE)
    for line in text.splitlines():
        m = _SAMPLE.match(line)
        if m is None or m["name"] != metric:
            continue
        found = {lm["key"]: lm["value"] for lm in _LABEL.finditer(m["labels"])}
        if not all(found.get(k) == v for k, v in labels.items()):
            continue
        body = ",\n".join(f'  {k}="{v}"' for k, v in found.items())
        out(f"{metric}{{\n{body}\n}} {m['value']}")


#: (family sample, status label) of the outcome chart, per route family.
_CHART_SAMPLES = (
    ("outbound_grpc_route_request_statuses_total", "grpc_status"),
    ("outbound_http_route_request_statuses_total", "http_status"),
    ("outbound_tcp_route_close_total", "error"),
)


def outcome_rows(cluster: Cluster) -> list[dict[str, Any]]:
    """One row per route and status with its count, from the pod's proxy now."""
    text = cluster.proxy_metrics(POD, namespace=NAMESPACE)
    rows: dict[tuple[str, str, str], float] = {}
    for line in text.splitlines():
        m = _SAMPLE.match(line)
        if m is None:
            continue
        for name, status_label in _CHART_SAMPLES:
            if m["name"] != name or float(m["value"]) == 0:
                continue
            found = {lm["key"]: lm["value"] for lm in _LABEL.finditer(m["labels"])}
            family = name.split("_")[1]
            status = found.get(status_label, "") or ("closed, no error" if family == "tcp" else "")
            key = (family, found.get("route_name", ""), status)
            rows[key] = rows.get(key, 0.0) + float(m["value"])
    return [
        {"family": f, "route": r, "status": s, "count": c} for (f, r, s), c in sorted(rows.items())
    ]


def outcome_chart(cluster: Cluster, output_dir: str | Path, name: str = "07-grpc-and-tcp") -> Any:
    """Calls and connections per route and status (gRPC, HTTP, TCP), as the proxy counted
    them; saved as PNG and SVG under ``output_dir/charts`` and returned as an image."""
    import altair as alt
    import pandas as pd

    from egresskit.analysis import charts

    frame = pd.DataFrame(outcome_rows(cluster), columns=["family", "route", "status", "count"])
    chart = (
        alt.Chart(frame, title="What the proxy counted, per route and status")
        .mark_bar()
        .encode(
            y=alt.Y("route:N", title="route"),
            x=alt.X(
                "count:Q",
                title="calls / connections",
                axis=alt.Axis(values=list(range(int(frame["count"].max() or 0) + 1)), format="d"),
            ),
            color=alt.Color("status:N", title="grpc_status / http_status / close"),
            row=alt.Row("family:N", title=None),
        )
        .resolve_scale(y="independent")
    )
    folder = Path(output_dir) / "charts"
    folder.mkdir(parents=True, exist_ok=True)
    png = charts.save_png(chart, folder / f"{name}.png")
    charts.save_svg(chart, folder / f"{name}.svg")
    try:
        from IPython.display import Image
    except ImportError:  # pragma: no cover - IPython comes with ipykernel
        return png
    return Image(filename=str(png))  # type: ignore[no-untyped-call]
