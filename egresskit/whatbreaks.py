"""The notebook section "Before you restrict: what would break?", as calls and cells.

Job: the few steps of that section that are machinery, not lesson (send the traffic and
record what the client saw, read the traffic the proxies saw, predict the impact of a
proposed change, check the traffic after the change against the prediction), the same calls
``tests/test_impact_e2e.py`` makes; and :data:`CELLS`, the section's cells, which
``notebooks/build_audit.py`` writes as notebook 6 (and which fit notebook 4 as they are).

Verify steps print one ``PASS what: expected X, saw Y`` line, or raise
:class:`~egresskit.errors.VerificationFailed` with a hint.
"""

from __future__ import annotations

import time
from collections.abc import Sequence
from typing import Any

import pandas as pd

from egresskit import guide
from egresskit.errors import VerificationFailed
from egresskit.explaining import snapshot_of
from egresskit.impact import Impact, impact
from egresskit.manifests import load_manifests
from egresskit.probes import Probe, probes_from_traffic
from egresskit.seen import scrape_local, series_seen
from egresskit.sources import overlay


def observed(cluster: Any, url: str, *, pod: str, namespace: str) -> tuple[str, str]:
    """(outcome, what the client saw) for one real request from ``pod``."""
    r = cluster.curl("-s", "-o", "/dev/null", url, pod=pod, namespace=namespace)
    if r.http_status == 403:
        return "forbidden", "HTTP 403"
    if r.http_status is not None and r.exit_code == 0:
        return "allowed", f"HTTP {r.http_status}"
    if r.exit_code != 0:
        return "forbidden", f"connection closed (curl exit {r.exit_code})"
    return "failed", f"curl exit {r.exit_code}, HTTP {r.http_status}"


def send(
    cluster: Any, urls: Sequence[str], *, pod: str = "client", namespace: str = "egress-test"
) -> pd.DataFrame:
    """Each URL once from ``pod``: what the client saw."""
    rows = []
    for url in urls:
        outcome, saw = observed(cluster, url, pod=pod, namespace=namespace)
        rows.append({"url": url, "outcome": outcome, "client saw": saw})
    return pd.DataFrame(rows, columns=["url", "outcome", "client saw"])


def metrics_texts(cluster: Any, namespace: str) -> dict[str, str]:
    """The proxy metrics of the meshed pods of ``namespace``, on any backend."""
    if getattr(cluster, "name", "") == "local":
        return scrape_local(cluster, namespace)
    from egresskit.liveread import live_metrics

    return live_metrics(getattr(cluster, "name", None), namespace)


def traffic_seen(cluster: Any, namespace: str = "egress-test") -> pd.DataFrame:
    """The route series the proxies counted, one row per destination and route."""
    series, errors = series_seen(metrics_texts(cluster, namespace))
    if errors:
        raise VerificationFailed("; ".join(errors))
    return pd.DataFrame(
        [
            {
                "protocol": s.family,
                "destination": s.hostname or s.target_ip or "(not recorded)",
                "port": s.port,
                "route": s.route_name,
                "seen": int(s.count),
                "not recorded": s.lost,
            }
            for s in series
        ]
    )


def current_objects(cluster: Any) -> list[Any]:
    if hasattr(cluster, "objects"):
        return list(cluster.objects())
    from egresskit.liveread import read_live

    return read_live(getattr(cluster, "name", None)).objects


def predict(cluster: Any, proposed: object, *, namespace: str = "egress-test") -> Impact:
    """The impact of applying ``proposed`` on the traffic the proxies of ``namespace`` saw."""
    current = current_objects(cluster)
    after = overlay(current, load_manifests(proposed, default_namespace=namespace))  # type: ignore[arg-type]
    series, _ = series_seen(metrics_texts(cluster, namespace))
    probes, lost = probes_from_traffic(series, [snapshot_of(current), snapshot_of(after)])
    return impact(current, after, probes, namespace=namespace, lost=lost)


def predict_urls(
    cluster: Any, proposed: object, urls: Sequence[str], *, namespace: str = "egress-test"
) -> Impact:
    """The impact of applying ``proposed`` on exactly these requests."""
    current = current_objects(cluster)
    after = overlay(current, load_manifests(proposed, default_namespace=namespace))  # type: ignore[arg-type]
    return impact(current, after, [Probe(url=u) for u in urls], namespace=namespace)


def verify_predicts(prediction: Impact, group: str, url: str) -> None:
    """PASS when ``url`` is in ``group`` of the prediction."""
    found = [o.group for o in prediction.outcomes if o.probe.url == url]
    saw = (found[0] or "no change") if found else "not in the request set"
    if saw != group:
        raise VerificationFailed(
            f"FAIL prediction for {url}: expected {group}, saw {saw} "
            "(hint: is the proposed change the one in the cell above?)"
        )
    print(f"PASS prediction for {url}: expected {group}, saw {saw}")


def verify_traffic_agrees(
    cluster: Any,
    prediction: Impact,
    *,
    pod: str = "client",
    namespace: str = "egress-test",
    settle: float | None = None,
) -> pd.DataFrame:
    """Send every predicted request again; PASS when each outcome is the predicted one.

    On a real cluster a change reaches the proxies seconds after it is Accepted
    (docs/facts/linkerd-egress.md 4.3): a request that disagrees is retried until
    ``settle`` seconds (default 0 on the local backend, which enforces before ``apply``
    returns; 30 elsewhere) have passed.
    """
    if settle is None:
        settle = 0.0 if getattr(cluster, "name", "") == "local" else 30.0
    deadline = time.monotonic() + settle
    rows = []
    for o in prediction.outcomes:
        expected = o.after.outcome if o.after is not None else "(no prediction)"
        outcome, saw = observed(cluster, o.probe.url, pod=pod, namespace=namespace)
        while outcome != expected and time.monotonic() < deadline:
            time.sleep(0.5)  # a poll interval, bounded by ``deadline``
            outcome, saw = observed(cluster, o.probe.url, pod=pod, namespace=namespace)
        rows.append(
            {"url": o.probe.url, "predicted": expected, "outcome": outcome, "client saw": saw}
        )
    frame = pd.DataFrame(rows, columns=["url", "predicted", "outcome", "client saw"])
    wrong = frame[frame["predicted"] != frame["outcome"]]
    n = len(frame)
    if len(wrong):
        first = wrong.iloc[0]
        raise VerificationFailed(
            f"FAIL traffic after the change: expected the predicted outcome for {n} requests, "
            f"saw it for {n - len(wrong)} ({first['url']}: predicted {first['predicted']}, "
            f"got {first['client saw']})"
        )
    print(
        f"PASS traffic after the change: expected the predicted outcome for {n} requests, "
        f"saw it for {n}"
    )
    return frame


# ---------------------------------------------------------------------- the section

URLS = """[
    "http://httpbin.org/get",
    "http://httpbin.org/ip",
    "https://httpbin.org/get",
    "http://google.com/get",
    "http://google.com/",
    "https://github.com/",
]"""

# The guide's own objects (egresskit.guide), so this section cannot drift from notebooks 1-3.
ALLOW = "# kubectl create ns egress-test && kubectl apply -f - <<EOF ... EOF\n" + (
    guide.EGRESS_NETWORK.rstrip("\n")
)

PROPOSED = (
    "# The change under review (not applied yet): kubectl diff -f proposed.yaml would show it.\n"
    + guide.EGRESS_NETWORK.replace("trafficPolicy: Allow", "trafficPolicy: Deny")
    + "---\n"
    + guide.HTTPBIN_GET_ROUTE.rstrip("\n")
)

#: (cell type, source, tags): the section, in order. ``verify`` cells print one PASS line.
CELLS: list[tuple[str, str, tuple[str, ...]]] = [
    ("markdown", "## Before you restrict: what would break?\n\n"
     "The guide restricts by hand: Allow first, read the metrics, then Deny and add routes. "
     "Here the same question is asked directly. With the `EgressNetwork` on `Allow`, send "
     "the traffic the namespace really sends; then ask the policy engine, for every "
     "destination the proxies counted, what the proposed policy would do, *before* "
     "applying it. The CLI asks the same: `egresskit diff --context CTX -n egress-test "
     "-p proposed.yaml --from-traffic`.", ()),
    ("code", "import egresskit\nfrom egresskit import guide, whatbreaks\n"
     "from egresskit.lesson import Lesson\n\n"
     'cluster = egresskit.connect(backend, **({"context": kube_context} if backend == "kube" '
     "else {}))\n"
     "lesson = Lesson(cluster)  # applies as kubectl does, then shows Linkerd's verdict\n"
     f'ALLOW = """\\\n{ALLOW}\n"""\n'
     "lesson.apply([guide.NAMESPACE, ALLOW, guide.CLIENT_POD])", ()),
    ("markdown", "The client's traffic under `Allow`: everything leaves the cluster.", ()),
    ("code", f"URLS = {URLS}\nwhatbreaks.send(cluster, URLS)", ()),
    ("markdown", "What the proxy counted, per destination and route. The route metrics carry "
     "the host (when hostname labels are on) and the port, never the path or method; "
     "HTTPS under `Allow` without a `TLSRoute` is opaque TCP, counted by address only.", ()),
    ("code", 'whatbreaks.traffic_seen(cluster, "egress-test")', ()),
    ("markdown", "The proposed change: `Deny`, plus the guide's `httpbin-get` route.", ()),
    ("code", f'PROPOSED = """\\\n{PROPOSED}\n"""\n'
     'from_traffic = whatbreaks.predict(cluster, PROPOSED, namespace="egress-test")\n'
     "print(from_traffic)", ()),
    ("code", 'whatbreaks.verify_predicts(from_traffic, "newly forbidden", '
     '"https://httpbin.org/")', ("verify",)),
    ("markdown", "Where the metrics do not record what a route looks at (the path), one "
     "request per path a route names stands for the traffic, and `/` for every other path. "
     "For the exact requests, give them as a list (the CLI's `--requests FILE`):", ()),
    ("code", "exact = whatbreaks.predict_urls(cluster, PROPOSED, URLS, "
     'namespace="egress-test")\nexact.frame()', ()),
    ("code", 'whatbreaks.verify_predicts(exact, "newly forbidden", "http://httpbin.org/ip")',
     ("verify",)),
    ("markdown", "`http://google.com/get` does *not* break: `httpbin-get` has no hostnames, "
     "so it allows `/get` on every host (the reviewer's finding in the audit above). Now "
     "apply the change and send the same requests: each gets the predicted outcome.", ()),
    ("code", "lesson.apply(PROPOSED)", ()),
    ("code", "agreed = whatbreaks.verify_traffic_agrees(cluster, exact)", ("verify",)),
    ("code", "agreed", ()),
    ("markdown", "### What happened, and why\n\n"
     "The prediction is the engine's answer under both policies, request by request; the "
     "proxy then enforced exactly that. On a real cluster the change takes seconds to "
     "reach the proxies (the status controller, then the policy push), and with Linkerd "
     "2.18+ the `hostname` label is empty unless the pod sets "
     '`config.linkerd.io/proxy-metrics-hostname-labels: "true"`; the prediction then says '
     "which hosts it had to guess.", ()),
    ("code", "cluster.close()", ()),
]  # fmt: skip
