"""A kernel that behaves (issue 10 item 5): the Tutorial's lifecycle on the real local
backend, driven the way a notebook drives it.

A new walkthrough closes the previous one (threads and listening sockets counted before
and after); an interrupted traffic cell stops the traffic and re-raises; a call that needs
running traffic says why there is none; a failed check is one FAIL line with a hint.
"""

from __future__ import annotations

import re
import threading
from pathlib import Path
from typing import Any

import pytest

from egresskit import tutorial
from egresskit.errors import ClusterClosed, NotRunning, TrafficInterrupted, VerificationFailed
from egresskit.tutorial import INTERRUPTED, Tutorial
from tests.resources import listening_sockets, threads_left

# Worker threads of the cluster's sites (the simulated internet's app pool, the gRPC sites'
# pool): ThreadPoolExecutor grows them on demand while any traffic runs, they belong to the
# cluster and end with it (tests/test_cluster_close.py), not with a traffic run.
_SITE_POOL_WORKER = re.compile(r"-(app|rpc)_\d+$")


def walkthrough(tmp_path: Path) -> Tutorial:
    t = Tutorial("local", output_dir=tmp_path, rate=10.0)
    t.create_egress_network()
    t.deploy_client()
    return t


def test_a_new_walkthrough_closes_the_previous_one(tmp_path: Path) -> None:
    before, listening = set(threading.enumerate()), listening_sockets()
    first = walkthrough(tmp_path)
    first.start_traffic("http://httpbin.org/get")
    first.run_for(0.3)
    assert first.traffic is not None and first.traffic.running
    assert listening_sockets() - listening, "the first mesh listens while it runs"
    second = walkthrough(tmp_path)  # re-running the notebook's setup cell
    assert first.traffic is not None and not first.traffic.running
    with pytest.raises(ClusterClosed):
        first.cluster.objects()
    second.start_traffic("http://httpbin.org/get")
    second.run_for(0.3)
    third = Tutorial("local", output_dir=tmp_path)
    third.close()
    assert threads_left(before) == []
    assert listening_sockets() <= listening


def test_run_for_says_why_there_is_no_traffic(tmp_path: Path, capsys: Any) -> None:
    with walkthrough(tmp_path) as t:
        with pytest.raises(NotRunning, match=r"run_for: no traffic is running: no traffic was"):
            t.run_for(1)
        t.start_traffic("http://httpbin.org/get")
        t.run_for(0.2)
        assert capsys.readouterr().out.startswith("traffic: ")  # progress, formatted text
        t.stop_traffic()
        with pytest.raises(NotRunning, match=r"watch: .* the traffic stopped: t.stop_traffic"):
            t.watch(1)


def test_interrupting_a_traffic_cell_stops_it_and_re_raises(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: Any
) -> None:
    with walkthrough(tmp_path) as t:
        traffic = t.start_traffic("http://httpbin.org/get")
        real_join = traffic._thread.join
        calls = {"n": 0}

        def join(timeout: float | None = None) -> None:
            calls["n"] += 1
            if calls["n"] == 2:
                raise KeyboardInterrupt  # what the kernel does on "Interrupt"
            real_join(timeout)

        monkeypatch.setattr(traffic._thread, "join", join)
        with pytest.raises(KeyboardInterrupt):
            t.run_for(5)
        assert not traffic.running and t.scraper is None
        assert "interrupted, traffic stopped" in capsys.readouterr().out
        monkeypatch.undo()
        with pytest.raises(NotRunning, match=r"it was interrupted \(KeyboardInterrupt\)"):
            t.run_for(1)  # the next cell of a Run All that went on anyway
        t.verify_reconciled()  # what was recorded before the interrupt still adds up


@pytest.mark.parametrize(
    "where",
    [
        "stopping the last traffic",
        "stopping the last traffic, twice",
        "making the scraper",
        "the scraper's thread started",
    ],
)
def test_interrupting_start_traffic_stops_what_it_began_and_says_so_in_one_line(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, where: str
) -> None:
    # A second Run All reaches start_traffic while the first run's traffic still runs:
    # stopping it lets the counters settle (up to 2 s), and the interrupt lands there or
    # in the new scraper's first scrape. Either way: one line, nothing left running.
    with walkthrough(tmp_path) as t:
        first = t.start_traffic("http://httpbin.org/get")
        t.run_for(0.2)
        before = set(threading.enumerate())
        if where.startswith("stopping the last traffic"):
            real = t._settle
            calls = {"n": 0}
            interrupts = 2 if where.endswith("twice") else 1

            def settle(within: float = 2.0) -> None:
                calls["n"] += 1
                if calls["n"] <= interrupts:
                    raise KeyboardInterrupt  # what the kernel does on "Interrupt"
                real(within)

            monkeypatch.setattr(t, "_settle", settle)
        elif where == "making the scraper":

            def scraper(*args: Any, **kwargs: Any) -> Any:
                raise KeyboardInterrupt

            monkeypatch.setattr(tutorial, "Scraper", scraper)
        else:
            real_start = tutorial.Scraper.start

            def start(self: Any) -> Any:
                real_start(self)
                raise KeyboardInterrupt  # after its thread started, before it returned

            monkeypatch.setattr(tutorial.Scraper, "start", start)
        with pytest.raises(TrafficInterrupted) as interrupted:
            t.start_traffic("http://httpbin.org/ip")
        assert interrupted.value._render_traceback_() == [f"KeyboardInterrupt: {INTERRUPTED}"]
        assert not first.running and t.scraper is None
        assert t.traffic is None or not t.traffic.running
        started = {th.name for th in set(threading.enumerate()) - before}
        started = {name for name in started if not _SITE_POOL_WORKER.search(name)}
        assert not started, f"left running after the interrupt: {started}"
        monkeypatch.undo()
        with pytest.raises(NotRunning):
            t.run_for(1)  # the next cell of a Run All that went on anyway


def test_a_failed_check_is_one_fail_line_with_a_hint(tmp_path: Path) -> None:
    with walkthrough(tmp_path) as t:
        t.deny()
        with pytest.raises(VerificationFailed) as failed:
            t.verify_curl("http://httpbin.org/get", status=200)
        lines = failed.value._render_traceback_()  # what IPython shows instead of a traceback
        assert lines[0] == "FAIL curl http://httpbin.org/get: HTTP status: expected 200, saw 403"
        assert lines[1].startswith("  hint: with the objects in force, Linkerd gives FORBIDDEN")
        assert "http-egress-deny" in lines[1] and len(lines) == 2


def test_metrics_show_one_label_per_line_as_the_guide(tmp_path: Path) -> None:
    with walkthrough(tmp_path) as t:
        t.verify_curl("http://httpbin.org/get", status=200)
        text = t.metrics("outbound_http_route_request_statuses_total")
        sample = text[text.index("outbound_http_route_request_statuses_total{") :]
        assert sample.startswith(
            'outbound_http_route_request_statuses_total{\n  parent_group="policy.linkerd.io",\n'
        )
        assert '  route_name="http-egress-allow",\n' in sample
        assert max(len(line) for line in text.splitlines()) < 100
        raw = t.metrics("outbound_http_route_request_statuses_total", one_label_per_line=False)
        assert any(len(line) > 300 for line in raw.splitlines())  # the proxy's own layout


def test_observe_shows_the_series_of_its_own_request_while_traffic_runs(
    tmp_path: Path,
) -> None:
    # The background loop asks the same host and port many times a second: without a pause
    # its requests land between observe's two scrapes and read as this request's.
    with walkthrough(tmp_path) as t:
        t.start_traffic("http://httpbin.org/ip", rate=50.0)
        t.run_for(0.3)
        for _ in range(3):
            seen = t.observe("-sS", "http://httpbin.org/get")
            assert seen.result.http_status == 200
            statuses = [c for c in seen.counted if c.family.endswith("_statuses_total")]
            assert [c.increase for c in statuses] == [1.0], str(seen)
        assert t.traffic is not None and t.traffic.running  # resumed after each
        t.run_for(0.3)
        t.stop_traffic()
        t.verify_reconciled()  # the observed requests count on both sides


def test_interrupting_observe_while_traffic_runs_stops_it_in_one_line(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    with walkthrough(tmp_path) as t:
        traffic = t.start_traffic("http://httpbin.org/ip")
        t.run_for(0.2)

        def observe(*args: Any, **kwargs: Any) -> Any:
            raise KeyboardInterrupt  # what the kernel does on "Interrupt"

        monkeypatch.setattr(t.lesson, "observe", observe)
        with pytest.raises(TrafficInterrupted) as interrupted:
            t.observe("-sS", "http://httpbin.org/get")
        assert interrupted.value._render_traceback_() == [f"KeyboardInterrupt: {INTERRUPTED}"]
        assert not traffic.running and t.scraper is None
        with traffic.paused():  # and the pause was let go
            pass
