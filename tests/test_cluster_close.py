"""Nothing outlives its cluster (issue 11 item 4), on the real local backend.

Closing a local cluster stops every traffic loop and scraper started on it; nothing new
starts on a closed cluster; every later call fails once, with one clear error; the
temporary CA directory goes with the cluster, also when the process exits after an error.
The facade is used from several threads at once (traffic loop, scraper, notebook), so
registration racing ``close()`` is tested with threads.
"""

from __future__ import annotations

import subprocess
import sys
import threading
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest

import egresskit
from egresskit import guide
from egresskit.analysis.scrape import Scraper
from egresskit.cluster.local import LocalCluster
from egresskit.errors import BackendError, ClusterClosed, WaitTimeout
from egresskit.traffic import Traffic, start_traffic
from tests.resources import listening_sockets, threads_left

NS = guide.NAMESPACE_NAME


def cluster_with_client() -> LocalCluster:
    cluster = LocalCluster()
    cluster.apply([guide.NAMESPACE, guide.EGRESS_NETWORK, guide.CLIENT_POD])
    return cluster


def test_closing_stops_traffic_and_scraper_started_on_it() -> None:
    before, listening = set(threading.enumerate()), listening_sockets()
    cluster = cluster_with_client()
    traffic = start_traffic(cluster, "http://httpbin.org/get", pod="client", rate=20.0)
    scraper = Scraper(cluster, [("client", NS)], 0.05).start()
    assert traffic.wait(0.3).running and scraper.running
    assert len(cluster.jobs) == 2
    cluster.close()
    assert not traffic.running and not scraper.running
    assert traffic.ended_because == "its cluster was closed"
    n = len(traffic.records)
    assert n > 0 and all(r.exit_code == 0 for r in traffic.records), traffic.progress()
    assert threads_left(before) == []
    assert listening_sockets() <= listening
    assert len(traffic.records) == n  # nothing recorded after the close


def test_a_cluster_closed_by_a_with_block_that_raised_stops_its_loop() -> None:
    """The issue's case: the loop outlived ``with connect("local")``, recording
    "this local cluster is closed" five times a second, forever."""
    before = set(threading.enumerate())
    traffic: Traffic | None = None
    with pytest.raises(RuntimeError, match="boom"), egresskit.connect("local") as cluster:
        cluster.apply([guide.NAMESPACE, guide.EGRESS_NETWORK, guide.CLIENT_POD])
        traffic = start_traffic(cluster, "http://httpbin.org/get", rate=5.0)
        raise RuntimeError("boom")
    assert traffic is not None and not traffic.running
    assert not any("closed" in r.error for r in traffic.records)
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
        pytest.param(lambda c: c.objects(), id="objects"),
        pytest.param(
            lambda c: c.curl("-s", "http://httpbin.org", pod="client", namespace=NS), id="curl"
        ),
        pytest.param(lambda c: c.proxy_metrics("client", namespace=NS), id="proxy_metrics"),
        pytest.param(lambda c: c.outbound_ports("client", namespace=NS), id="outbound_ports"),
        pytest.param(lambda c: start_traffic(c, "http://httpbin.org/get"), id="start_traffic"),
        pytest.param(lambda c: Scraper(c, [("client", NS)]).start(), id="scraper"),
    ],
)
def test_every_call_on_a_closed_cluster_fails_clearly(call: Callable[[Any], object]) -> None:
    before = set(threading.enumerate())
    cluster = cluster_with_client()
    cluster.close()
    cluster.close()  # idempotent
    with pytest.raises(ClusterClosed, match=r"this local cluster was closed at .* UTC; start a"):
        call(cluster)
    assert threads_left(before) == []


def test_jobs_started_from_threads_while_it_closes_are_stopped_or_refused() -> None:
    """Eight threads start traffic loops and scrapers while the notebook thread closes
    the cluster: each start either registers (and close stops it) or is refused."""
    before = set(threading.enumerate())
    cluster = cluster_with_client()
    started: list[Traffic | Scraper] = []
    refused: list[ClusterClosed] = []
    lock = threading.Lock()
    go = threading.Barrier(9)

    def starter(i: int) -> None:
        go.wait()
        for _ in range(5):
            try:
                job: Traffic | Scraper = (
                    start_traffic(cluster, "http://httpbin.org/get", rate=20.0)
                    if i % 2
                    else Scraper(cluster, [("client", NS)], 0.05).start()
                )
            except ClusterClosed as exc:
                with lock:
                    refused.append(exc)
            else:
                with lock:
                    started.append(job)

    threads = [threading.Thread(target=starter, args=(i,), name=f"starter-{i}") for i in range(8)]
    for t in threads:
        t.start()
    go.wait()
    cluster.close()
    for t in threads:
        t.join(30)
    assert not any(job.running for job in started)
    assert len(started) + len(refused) == 40
    assert threads_left(before) == []
    assert len(cluster.jobs) == 0


def test_the_ca_directory_goes_with_close() -> None:
    cluster = LocalCluster()
    folder = cluster.internet.ca_file.parent
    assert folder.is_dir()
    cluster.close()
    assert not folder.exists()


def test_the_ca_directory_goes_when_the_process_exits_after_an_error(tmp_path: Path) -> None:
    """A notebook that failed before its cleanup: the kernel exits, the directory goes."""
    script = (
        "import egresskit\n"
        "c = egresskit.connect('local')\n"
        "print(c.internet.ca_file.parent, flush=True)\n"
        "raise RuntimeError('a cell failed')\n"
    )
    done = subprocess.run(
        [sys.executable, "-c", script], capture_output=True, text=True, timeout=60, cwd=tmp_path
    )
    assert done.returncode == 1 and "a cell failed" in done.stderr
    folder = Path(done.stdout.strip())
    assert folder.name.startswith("egresskit-internet-")
    assert not folder.exists(), f"{folder} was left behind"


class _StuckJob:
    """A job whose stop runs past its bound (what Traffic.close raises then)."""

    def close(self) -> None:
        raise WaitTimeout("traffic thread x to stop", 7.0, "still sending")


class _Job:
    stopped = False

    def close(self) -> None:
        self.stopped = True


def test_a_job_failing_to_stop_leaves_nothing_else_running() -> None:
    """Reviewer finding: a job raising in close() skipped the proxies, the simulated
    internet, the loop thread and the CA directory, and the closed flag made a second
    close() a no-op, so they ran until the process exited."""
    before, listening = set(threading.enumerate()), listening_sockets()
    cluster = cluster_with_client()
    ca_dir = cluster.internet.ca_file.parent
    later = _Job()
    cluster.jobs.adopt(_StuckJob())
    cluster.jobs.adopt(later)
    with pytest.raises(BackendError, match="closing the local cluster") as info:
        cluster.close()
    assert (
        "job _StuckJob: WaitTimeout: timed out after 7s waiting for traffic thread x to stop"
        in str(info.value)
    )
    assert later.stopped  # the jobs after the stuck one were stopped too
    assert cluster.closed
    assert threads_left(before) == []
    assert listening_sockets() <= listening
    assert not ca_dir.exists()
    cluster.close()  # nothing left to stop: quiet
    with pytest.raises(ClusterClosed):
        cluster.objects()
