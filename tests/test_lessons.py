"""The notebooks teach from one source: their YAML cells are egresskit.guide's text, the
default-route table is what the engine decides, and a lesson cell's report says what the
cluster did (created/configured/unchanged) and what Linkerd said."""

from __future__ import annotations

import dataclasses
import json
import re
from collections.abc import Iterator
from pathlib import Path

import pytest

from egresskit import guide
from egresskit.cluster.local import LocalCluster
from egresskit.explaining import explain
from egresskit.lesson import DEFAULT_ROUTES, Lesson
from egresskit.tutorial import Tutorial

NOTEBOOKS = Path(__file__).resolve().parent.parent / "notebooks"
NS = "egress-test"
DENY_EN = guide.EGRESS_NETWORK.replace("Allow", "Deny")
YAML_STRING = re.compile(r'^(\w+) = """\\\n(.*?)"""$', re.S | re.M)

#: Every guide step that changes the cluster, as the constant its notebook cell embeds.
GUIDE_STEPS = {
    "NAMESPACE",
    "EGRESS_NETWORK",
    "CLIENT_POD",
    "DENY_PATCH_JSON",
    "HTTPBIN_GET_ROUTE",
    "TLS_EGRESS_ROUTE",
    "INTERNAL_EGRESS",
    "TLS_EGRESS_ROUTE_ALL",
    "UNENCRYPTED_HTTP_ROUTE",
}


def _manifest_cells() -> Iterator[tuple[str, list[str], str]]:
    for path in sorted(NOTEBOOKS.glob("[0-9]*.ipynb")):
        for cell in json.loads(path.read_text())["cells"]:
            tags = cell.get("metadata", {}).get("tags", [])
            consts = [t.split(":", 1)[1] for t in tags if t.startswith("manifest:")]
            if consts:
                yield path.name, consts, "".join(cell["source"])


def test_every_guide_step_has_a_yaml_cell() -> None:
    shown = {c for _, consts, _ in _manifest_cells() for c in consts}
    assert shown >= GUIDE_STEPS


@pytest.mark.parametrize(
    ("notebook", "consts", "source"),
    list(_manifest_cells()),
    ids=[f"{n}:{'+'.join(c)}" for n, c, _ in _manifest_cells()],
)
def test_committed_yaml_cells_are_the_guide_text(
    notebook: str, consts: list[str], source: str
) -> None:
    if consts == ["DENY_PATCH_JSON"]:
        m = re.search(r"^deny_patch = '(.*)'$", source, re.M)
        assert m is not None, source
        assert m.group(1) == guide.DENY_PATCH_JSON
        assert "kubectl patch egressnetwork" in source
        return
    texts = [body for _, body in YAML_STRING.findall(source)]
    assert texts == [getattr(guide, c) for c in consts], f"{notebook} drifted from guide.py"
    assert "# kubectl " in source and "t.apply(" in source


def test_the_two_deliberate_changes_are_marked_on_their_lines() -> None:
    marked = {
        name: [line for line in text.splitlines() if "# egresskit:" in line]
        for name, text in guide.ALL_MANIFESTS.items()
    }
    assert marked["CLIENT_POD"] == [
        line for line in guide.CLIENT_POD.splitlines() if "hostname-labels" in line
    ]
    for name in ("HTTPBIN_GET_ROUTE", "UNENCRYPTED_HTTP_ROUTE"):
        (line,) = marked[name]
        assert line.startswith("apiVersion: gateway.networking.k8s.io/v1 ")
        assert "v1alpha2" in line
    others = {
        n: m
        for n, m in marked.items()
        if n not in ("CLIENT_POD", "HTTPBIN_GET_ROUTE", "UNENCRYPTED_HTTP_ROUTE")
    }
    assert all(m == [] for m in others.values()), others


def _tls_route(host: str) -> str:
    return guide.TLS_EGRESS_ROUTE.replace("- httpbin.org", f"- {host}")


GRPC_ROUTE = """\
apiVersion: gateway.networking.k8s.io/v1
kind: GRPCRoute
metadata: {name: other, namespace: egress-test}
spec:
  hostnames: [other.example.com]
  parentRefs:
  - {name: all-egress-traffic, kind: EgressNetwork, group: policy.linkerd.io,
     namespace: egress-test, port: 50051}
  rules:
  - matches:
    - method: {service: x.Y}
"""


@pytest.mark.parametrize("policy", ["Allow", "Deny"])
@pytest.mark.parametrize("row", range(len(DEFAULT_ROUTES)), ids=["http", "tls", "tcp", "grpc"])
def test_default_route_table_is_what_the_engine_decides(row: int, policy: str) -> None:
    _, allow, deny, _ = DEFAULT_ROUTES[row]
    en = guide.EGRESS_NETWORK.replace("Allow", policy)
    docs, url = {
        0: ([guide.NAMESPACE, en], "http://httpbin.org/get"),
        1: ([guide.NAMESPACE, en, _tls_route("httpbin.org")], "https://github.com/"),
        2: ([guide.NAMESPACE, en], "https://httpbin.org/get"),
        3: ([guide.NAMESPACE, en, GRPC_ROUTE], "grpc://grpc.example.com:50051/a.B/C"),
    }[row]
    decision = explain(docs, url, namespace=NS)
    assert decision.route is not None and decision.route.kind == "default"
    assert decision.route.name == (allow if policy == "Allow" else deny)


@pytest.fixture
def lesson() -> Iterator[Lesson]:
    with LocalCluster() as cluster:
        yield Lesson(cluster)


def test_apply_reports_created_unchanged_configured_and_linkerds_verdict(lesson: Lesson) -> None:
    first = lesson.apply([guide.NAMESPACE, DENY_EN, guide.CLIENT_POD])
    assert str(first).splitlines() == [
        "namespace/egress-test created",
        "egressnetwork.policy.linkerd.io/all-egress-traffic created",
        "  Linkerd: Accepted",
        "pod/client created",
    ]
    assert str(lesson.apply(guide.HTTPBIN_GET_ROUTE)).splitlines() == [
        "httproute.gateway.networking.k8s.io/httpbin-get created",
        "  Linkerd: Accepted on EgressNetwork all-egress-traffic port 80",
    ]
    again = lesson.apply(guide.HTTPBIN_GET_ROUTE)
    assert again.results[0].verb == "unchanged"
    edited = lesson.apply(guide.HTTPBIN_GET_ROUTE.replace('"/get"', '"/anything"'))
    assert edited.results[0].verb == "configured"


def test_a_route_linkerd_does_not_accept_says_why(lesson: Lesson) -> None:
    lesson.apply([guide.NAMESPACE, DENY_EN])
    orphan = guide.HTTPBIN_GET_ROUTE.replace("- name: all-egress-traffic", "- name: nope")
    report = lesson.apply(orphan)
    assert not report.accepted
    assert "NOT accepted on EgressNetwork nope port 80, reason NoMatchingParent" in str(report)
    unresolved = lesson.apply(guide.UNENCRYPTED_HTTP_ROUTE)  # internal-egress not deployed
    assert not unresolved.accepted
    assert "a backend is not resolved (BackendNotFound" in str(unresolved)


def test_patch_shows_the_change_and_explain_compares_before_and_now(lesson: Lesson) -> None:
    lesson.apply([guide.NAMESPACE, guide.EGRESS_NETWORK, guide.CLIENT_POD])
    report = lesson.patch("egressnetwork", guide.EGRESS_NETWORK_NAME, guide.DENY_PATCH_JSON)
    assert str(report).splitlines()[0] == (
        "egressnetwork.policy.linkerd.io/all-egress-traffic patched"
    )
    text = str(lesson.explain("http://httpbin.org/get"))
    assert "before this patch: ALLOWED via http-egress-allow" in text
    assert "now: FORBIDDEN via http-egress-deny HTTP 403" in text
    assert "route:   default http-egress-deny" in text


def test_observe_shows_the_clients_view_and_the_series_one_label_per_line(
    lesson: Lesson,
) -> None:
    lesson.apply([guide.NAMESPACE, DENY_EN, guide.CLIENT_POD])
    seen = lesson.observe("-sS", "https://httpbin.org/get")
    assert seen.result.exit_code == 35
    text = str(seen)
    assert "client: no HTTP response, curl exit 35" in text
    assert '  route_name="tcp-egress-deny",\n' in text
    assert '  error="forbidden"\n} +1' in text


def test_observe_with_dash_i_shows_the_proxys_own_403(lesson: Lesson) -> None:
    lesson.apply([guide.NAMESPACE, DENY_EN, guide.CLIENT_POD])
    text = str(lesson.observe("-sS", "-i", "http://httpbin.org/get"))
    assert "client: HTTP 403\n  < HTTP/1.1 403 Forbidden\n" in text
    assert "  < l5d-proxy-error: traffic not allowed\n" in text
    assert '  route_name="http-egress-deny",\n' in text


def test_observe_with_backends_shows_where_the_proxy_sent_it(lesson: Lesson) -> None:
    lesson.apply([guide.NAMESPACE, DENY_EN, guide.CLIENT_POD, guide.INTERNAL_EGRESS])
    lesson.apply(guide.UNENCRYPTED_HTTP_ROUTE)
    plain = str(lesson.observe("-sS", "http://google.com/"))
    assert "outbound_http_route_backend_requests_total" not in plain
    text = str(lesson.observe("-sS", "http://google.com/", backends=True))
    assert '  backend_kind="Service",\n  backend_namespace="egress-test",\n' in text
    assert '  backend_name="internal-egress",\n' in text


def test_moved_says_which_wait_expired(lesson: Lesson) -> None:
    """Reviewer finding: the bounded wait for the proxy's count returned without a word."""
    lesson.cluster.apply([guide.NAMESPACE, guide.EGRESS_NETWORK, guide.CLIENT_POD])
    before = lesson.samples()
    # Nothing is sent to nothing.example: nothing can count it, so the wait runs out.
    assert lesson.moved(before, "http://nothing.example/", within=0.2) == ()
    assert lesson.expired == (
        "timed out after 0.2s waiting for the proxy to count the end of a request to "
        "nothing.example:80 (a status or close series); last seen: no series moved"
    )
    seen = lesson.observe("-sS", "http://httpbin.org/get")
    assert seen.counted and lesson.expired == "" and seen.waited == ""
    assert "note:" not in str(seen)
    shown = str(dataclasses.replace(seen, counted=(), waited="x"))
    assert "note: the proxy's count may be incomplete: x" in shown


def test_settle_says_when_the_counters_did_not_settle(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    with Tutorial("local", output_dir=tmp_path) as t:
        t.create_egress_network()
        t.deploy_client()
        capsys.readouterr()
        t._settle(within=0)  # the bound is over before the first comparison
        assert capsys.readouterr().out == (
            "stop_traffic: timed out after 0s waiting for the proxy counters of "
            "egress-test/client to stop moving; last seen: still moving; the final scrape "
            "may miss the last requests\n"
        )
        t._settle(within=30)  # no traffic: the counters are steady, nothing printed
        assert capsys.readouterr().out == ""
        t._settle(within=0, said_by="observe", risk="the series shown may include more")
        assert capsys.readouterr().out.startswith("observe: timed out after 0s waiting for ")


def test_settle_ignores_the_process_metrics_a_real_proxy_moves_on_every_scrape(
    tmp_path: Path, capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    with Tutorial("local", output_dir=tmp_path) as t:
        t.create_egress_network()
        t.deploy_client()
        real = t.cluster.proxy_metrics
        scrapes = {"n": 0}

        def with_process_metrics(pod: str, *, namespace: str) -> str:
            scrapes["n"] += 1
            return real(pod, namespace=namespace) + (
                f"# TYPE process_cpu_seconds_total counter\n"
                f"process_cpu_seconds_total {scrapes['n'] / 100}\n"
            )

        monkeypatch.setattr(t.cluster, "proxy_metrics", with_process_metrics)
        capsys.readouterr()
        t._settle(within=30)
        assert capsys.readouterr().out == ""  # settled, without waiting out its bound
        assert scrapes["n"] == 2
