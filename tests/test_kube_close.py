"""The kube backend owns what is started on it, as the local one does (issue 10 item 5,
issue 11 item 4), against the fake API server with real traffic loops and scrapers.

``close()`` stops every traffic loop and scraper started on the :class:`KubeCluster`, then
its REST client; nothing new starts on a closed cluster; every later call fails once with
:class:`~egresskit.errors.ClusterClosed`. Starting jobs from several threads while the
cluster closes leaves each one either stopped or refused.
"""

from __future__ import annotations

import threading
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest

from egresskit import guide
from egresskit.analysis.scrape import Scraper
from egresskit.cluster.kube import KubeCluster
from egresskit.errors import BackendError, ClusterClosed, WaitTimeout
from egresskit.traffic import Traffic, start_traffic
from tests.fakes.apiserver import FakeApiServer
from tests.resources import threads_left

NS = guide.NAMESPACE_NAME
METRICS = "# TYPE x counter\nx_total 1\n"
URL = "http://httpbin.org/get"


@pytest.fixture
def api() -> Iterator[FakeApiServer]:
    with FakeApiServer() as server:
        yield server


def open_cluster(api: FakeApiServer, tmp_path: Path) -> KubeCluster:
    cluster = KubeCluster(
        "fake", kubeconfig=str(api.kubeconfig(tmp_path)), poll_interval=0.001, progress=None
    )
    cluster.apply([guide.NAMESPACE, guide.EGRESS_NETWORK, guide.CLIENT_POD])
    api.metrics[(NS, "client")] = METRICS
    return cluster


def test_closing_stops_traffic_and_scraper_started_on_it(
    api: FakeApiServer, tmp_path: Path
) -> None:
    before = set(threading.enumerate())
    cluster = open_cluster(api, tmp_path)
    traffic = start_traffic(cluster, URL, pod="client", rate=20.0)
    scraper = Scraper(cluster, [("client", NS)], 0.05).start()
    assert traffic.wait(0.3).running and scraper.running
    assert len(cluster.jobs) == 2

    cluster.close()

    assert cluster.closed
    assert not traffic.running and not scraper.running
    assert traffic.ended_because == "its cluster was closed"
    n = len(traffic.records)
    assert n > 0 and all(r.http_status == 200 for r in traffic.records), traffic.progress()
    assert not any("closed" in r.error for r in traffic.records)
    # A scrape in flight when the cluster closed ends the scraper with one failure saying so.
    assert scraper.scrapes > 0
    assert all("was closed" in e.message for e in scraper.errors) and len(scraper.errors) <= 1
    assert len(cluster.jobs) == 0
    assert threads_left(before) == []
    assert len(traffic.records) == n  # nothing recorded after the close


def test_a_with_block_that_raised_stops_its_loop(api: FakeApiServer, tmp_path: Path) -> None:
    before = set(threading.enumerate())
    traffic: Traffic | None = None
    with pytest.raises(RuntimeError, match="boom"), open_cluster(api, tmp_path) as cluster:
        traffic = start_traffic(cluster, URL, rate=20.0)
        raise RuntimeError("boom")
    assert traffic is not None and not traffic.running
    assert traffic.ended_because == "its cluster was closed"
    assert threads_left(before) == []


@pytest.mark.parametrize(
    "call",
    [
        pytest.param(lambda c: c.apply(guide.NAMESPACE), id="apply"),
        pytest.param(
            lambda c: c.patch(
                "egressnetwork", "all-egress-traffic", guide.DENY_PATCH, namespace=NS
            ),
            id="patch",
        ),
        pytest.param(lambda c: c.delete("namespace", NS), id="delete"),
        pytest.param(lambda c: c.get("namespace", NS), id="get"),
        pytest.param(lambda c: c.curl("-s", URL, pod="client", namespace=NS), id="curl"),
        pytest.param(
            lambda c: c.grpc(
                "grpc.example.com:50051",
                "helloworld.Greeter/SayHello",
                pod="grpc-client",
                namespace=NS,
            ),
            id="grpc",
        ),
        pytest.param(
            lambda c: c.tcp("tcp.example.com:6379", b"PING\r\n", pod="grpc-client", namespace=NS),
            id="tcp",
        ),
        pytest.param(lambda c: c.proxy_metrics("client", namespace=NS), id="proxy_metrics"),
        pytest.param(lambda c: start_traffic(c, URL), id="start_traffic"),
        pytest.param(lambda c: Scraper(c, [("client", NS)]).start(), id="scraper"),
    ],
)
def test_every_call_on_a_closed_cluster_fails_clearly(
    api: FakeApiServer, tmp_path: Path, call: Callable[[Any], object]
) -> None:
    before = set(threading.enumerate())
    cluster = open_cluster(api, tmp_path)
    sent = len(api.calls()) + len(api.exec_calls)
    cluster.close()
    cluster.close()  # idempotent
    with pytest.raises(ClusterClosed, match=r"this kube cluster \(fake\) was closed at .* UTC"):
        call(cluster)
    assert len(api.calls()) + len(api.exec_calls) == sent  # refused before any request
    assert threads_left(before) == []


def test_jobs_started_from_threads_while_it_closes_are_stopped_or_refused(
    api: FakeApiServer, tmp_path: Path
) -> None:
    before = set(threading.enumerate())
    cluster = open_cluster(api, tmp_path)
    started: list[Traffic | Scraper] = []
    refused: list[ClusterClosed] = []
    lock = threading.Lock()
    go = threading.Barrier(7)

    def starter(i: int) -> None:
        go.wait()
        for _ in range(4):
            try:
                job: Traffic | Scraper = (
                    start_traffic(cluster, URL, rate=20.0)
                    if i % 2
                    else Scraper(cluster, [("client", NS)], 0.05).start()
                )
            except ClusterClosed as exc:
                with lock:
                    refused.append(exc)
            else:
                with lock:
                    started.append(job)

    threads = [threading.Thread(target=starter, args=(i,), name=f"starter-{i}") for i in range(6)]
    for t in threads:
        t.start()
    go.wait()
    cluster.close()
    for t in threads:
        t.join(60)
    assert not any(t.is_alive() for t in threads)
    assert not any(job.running for job in started)
    assert len(started) + len(refused) == 24
    assert len(cluster.jobs) == 0
    assert threads_left(before) == []


class _StuckJob:
    """A job whose stop runs past its bound (what Traffic.close raises then)."""

    def close(self) -> None:
        raise WaitTimeout("traffic thread x to stop", 7.0, "still sending")


def test_a_job_failing_to_stop_still_closes_the_rest(api: FakeApiServer, tmp_path: Path) -> None:
    """Reviewer finding: a job raising in close() skipped the other jobs and the REST
    client's close, and the closed flag made a second close() a no-op."""
    before = set(threading.enumerate())
    cluster = open_cluster(api, tmp_path)
    cluster.jobs.adopt(_StuckJob())  # first: the loop after it must still be stopped
    traffic = start_traffic(cluster, URL, pod="client", rate=20.0)
    assert traffic.wait(0.3).running
    api_closed: list[bool] = []
    real_close = cluster._api.close

    def close_and_note() -> None:
        real_close()
        api_closed.append(True)

    cluster._api.close = close_and_note
    with pytest.raises(BackendError, match=r"closing the kube cluster \(fake\)") as info:
        cluster.close()
    assert "WaitTimeout: timed out after 7s waiting for traffic thread x to stop" in str(info.value)
    assert not traffic.running and traffic.ended_because == "its cluster was closed"
    assert api_closed == [True]
    assert cluster.closed
    assert threads_left(before) == []
    cluster.close()  # nothing left to stop: quiet
    assert api_closed == [True]
    with pytest.raises(ClusterClosed):
        cluster.apply([guide.NAMESPACE])
