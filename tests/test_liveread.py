"""``--context``: objects and traffic read from a live cluster, read-only, against the fake
API server (real HTTP, the real ``kubernetes`` client)."""

from __future__ import annotations

import io
import json
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import yaml

import egresskit
from egresskit import guide
from egresskit.cli import main
from egresskit.liveread import read_live
from tests.fakes.listing import ListingApiServer

DENY = guide.EGRESS_NETWORK.replace("trafficPolicy: Allow", "trafficPolicy: Deny")
PLURALS = {
    "Namespace": "namespaces",
    "Pod": "pods",
    "EgressNetwork": "egressnetworks",
    "HTTPRoute": "httproutes",
    "TLSRoute": "tlsroutes",
}


def put(api: ListingApiServer, text: str, *, stamp: str = "2026-01-01T00:00:00Z") -> None:
    """Store a manifest as the API server would hold it (server fields, status added)."""
    doc: dict[str, Any] = yaml.safe_load(text)
    group = doc["apiVersion"].rpartition("/")[0]
    meta = doc["metadata"]
    meta.update(creationTimestamp=stamp, managedFields=[{"manager": "kubectl"}])
    key = (group, PLURALS[doc["kind"]], meta.get("namespace", ""), meta["name"])
    version = doc["apiVersion"].rpartition("/")[2]
    served = next(k for k in api.served(group, version) or [] if k.kind == doc["kind"])
    api.apply(key, served, doc, dry_run=False)
    api.objects[key]["status"] = {"observed": True}


def meshed_pod(name: str) -> str:
    return (
        guide.CLIENT_POD.replace("name: client\n", f"name: {name}\n", 1)
        + "  - name: linkerd-proxy\n    image: cr.l5d.io/linkerd/proxy\n"
    )


@pytest.fixture
def api(tmp_path: Path) -> Iterator[tuple[ListingApiServer, Path]]:
    with ListingApiServer() as fake:
        yield fake, fake.kubeconfig(tmp_path)


def test_objects_are_listed_in_every_namespace_and_parsed(api) -> None:
    fake, kubeconfig = api
    put(fake, guide.NAMESPACE)
    put(fake, DENY)
    put(fake, guide.HTTPBIN_GET_ROUTE, stamp="2026-01-02T00:00:00Z")
    live = read_live("fake", kubeconfig=str(kubeconfig))
    assert [o.display for o in live.objects] == [
        "EgressNetwork egress-test/all-egress-traffic",
        "HTTPRoute egress-test/httpbin-get",
    ]
    assert live.objects[1].metadata.creation_timestamp == "2026-01-02T00:00:00Z"
    assert live.not_served == []
    assert fake.writes() == []  # read-only
    listed = {r.path for r in fake.calls("GET")}
    assert "/apis/policy.linkerd.io/v1alpha1/egressnetworks" in listed
    assert "/apis/gateway.networking.k8s.io/v1alpha2/tlsroutes" in listed


def test_kinds_the_cluster_does_not_serve_are_named(api) -> None:
    fake, kubeconfig = api
    fake.gateway_api = False
    live = read_live("fake", kubeconfig=str(kubeconfig))
    assert "TLSRoute (gateway.networking.k8s.io/v1alpha2)" in live.not_served


def test_cli_explain_against_the_cluster(api, capsys) -> None:
    fake, kubeconfig = api
    put(fake, DENY)
    put(fake, guide.HTTPBIN_GET_ROUTE)
    args = ["--context", "fake", "--kubeconfig", str(kubeconfig), "-n", "egress-test"]
    code = main(["explain", "http://httpbin.org/ip", "http://httpbin.org/get", *args, "-o", "json"])
    items = json.loads(capsys.readouterr().out)["items"]
    assert code == 1
    assert [i["labels"]["route_name"] for i in items] == ["http-egress-deny", "httpbin-get"]
    assert fake.writes() == []


def test_unknown_context_exits_3(api, capsys) -> None:
    _, kubeconfig = api
    code = main(["explain", "http://x/", "--context", "nope", "--kubeconfig", str(kubeconfig)])
    assert code == 3
    assert "no context 'nope'; expected one of fake" in capsys.readouterr().err


def traffic_metrics(pod: str, *, hostname_labels: bool) -> str:
    """Real proxy metrics: the guide's traffic under Allow through the local mesh."""
    client = guide.CLIENT_POD
    if not hostname_labels:
        # The line carries a YAML comment (egresskit.guide marks it as not the guide's).
        client = "".join(
            line for line in client.splitlines(keepends=True) if "hostname-labels" not in line
        )
    with egresskit.connect("local") as cluster:
        cluster.apply([guide.NAMESPACE, guide.EGRESS_NETWORK, client])
        for url in ("http://httpbin.org/get", "http://httpbin.org/ip", "https://httpbin.org/"):
            assert cluster.curl("-s", url, pod="client", namespace="egress-test").exit_code == 0
        return cluster.proxy_metrics("client", namespace="egress-test").replace("client", pod)


def diff_from_traffic(fake: ListingApiServer, kubeconfig: Path, capsys, tmp_path: Path) -> Any:
    (tmp_path / "proposed.yaml").write_text(DENY + "---\n" + guide.HTTPBIN_GET_ROUTE)
    code = main(
        [
            "diff",
            "--context",
            "fake",
            "--kubeconfig",
            str(kubeconfig),
            "-n",
            "egress-test",
            "-p",
            str(tmp_path / "proposed.yaml"),
            "--from-traffic",
            "-o",
            "json",
        ],
        stdin=io.StringIO(),
    )
    assert code == 1
    return json.loads(capsys.readouterr().out)


def test_diff_from_the_traffic_the_proxies_saw(api, capsys, tmp_path: Path) -> None:
    fake, kubeconfig = api
    put(fake, guide.EGRESS_NETWORK)
    put(fake, meshed_pod("client-1"))
    put(fake, guide.CLIENT_POD.replace("name: client\n", "name: unmeshed\n", 1))
    fake.metrics[("egress-test", "client-1")] = traffic_metrics("client-1", hostname_labels=True)
    data = diff_from_traffic(fake, kubeconfig, capsys, tmp_path)
    forbidden = {c["request"]["url"]: c for c in data["changes"]["newly forbidden"]}
    assert set(forbidden) == {"http://httpbin.org/", "https://httpbin.org/"}
    assert forbidden["http://httpbin.org/"]["request"]["seen"] == 2
    assert (
        "/ stands for every path no route names"
        in forbidden["http://httpbin.org/"]["request"]["note"]
    )
    assert [u["request"]["url"] for u in data["unchanged"]] == ["http://httpbin.org/get"]
    assert any("the path, method and headers are not recorded" in t for t in data["not_recorded"])
    metrics_paths = [r.path for r in fake.calls("GET") if r.path.endswith("/proxy/metrics")]
    assert metrics_paths == ["/api/v1/namespaces/egress-test/pods/client-1:4191/proxy/metrics"]
    assert fake.writes() == []


def test_with_hostname_labels_off_the_diff_says_what_is_lost(api, capsys, tmp_path) -> None:
    fake, kubeconfig = api
    put(fake, guide.EGRESS_NETWORK)
    put(fake, meshed_pod("client-1"))
    fake.metrics[("egress-test", "client-1")] = traffic_metrics("client-1", hostname_labels=False)
    data = diff_from_traffic(fake, kubeconfig, capsys, tmp_path)
    assert any(
        "hostname not recorded" in t and "proxy-metrics-hostname-labels" in t
        for t in data["not_recorded"]
    )
    urls = {c["request"]["url"]: c["request"]["note"] for c in data["changes"]["newly forbidden"]}
    assert "http://unlisted.example.net/" in urls
    assert urls["http://unlisted.example.net/"].startswith(
        "hostname not recorded: if the host was unlisted.example.net"
    )


def test_an_object_the_kit_cannot_read_is_left_out_and_named(api, capsys) -> None:
    fake, kubeconfig = api
    put(fake, DENY)
    put(
        fake,
        guide.HTTPBIN_GET_ROUTE.replace("name: httpbin-get", "name: broken").replace(
            "port: 80", "port: 99999"
        ),
    )
    code = main(
        [
            "explain",
            "http://httpbin.org/get",
            "--context",
            "fake",
            "--kubeconfig",
            str(kubeconfig),
            "-n",
            "egress-test",
        ]
    )
    out, err = capsys.readouterr()
    assert (code, out.splitlines()[0]) == (1, "FORBIDDEN via http-egress-deny HTTP 403")
    assert "left out (cannot be read): context fake: document" in err
    assert "(HTTPRoute egress-test/broken): spec.parentRefs[0].port" in err


def test_audit_of_a_live_cluster_as_a_gate(api, capsys) -> None:
    fake, kubeconfig = api
    put(fake, DENY)
    put(fake, guide.HTTPBIN_GET_ROUTE)
    args = ["audit", "--context", "fake", "--kubeconfig", str(kubeconfig), "-n", "egress-test"]
    assert main([*args, "--fail-on", "warning", "-o", "json"]) == 1
    data = json.loads(capsys.readouterr().out)
    assert [f["obj"] for f in data["findings"]] == ["HTTPRoute egress-test/httpbin-get"]
    assert fake.writes() == []
