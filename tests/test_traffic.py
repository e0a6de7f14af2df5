"""The traffic loop and the scraper, on fake clusters with real threads.

``FakeMesh`` implements the Cluster protocol with the policy engine and one
:class:`ProxyMetrics` registry, so a policy flip during traffic gives real label sets on
the proxy side and real answers on the client side (tests/test_outcomes.py uses it too).
"""

from __future__ import annotations

import copy
import threading
from collections.abc import Callable, Mapping
from dataclasses import replace
from datetime import UTC, datetime
from typing import Any
from urllib.parse import urlsplit

import pandas as pd
import pytest

from egresskit import guide
from egresskit.analysis.counters import increases
from egresskit.analysis.outcomes import (
    PolicyTimeline,
    classify_requests,
    classify_series,
    reconcile,
)
from egresskit.analysis.scrape import Scraper
from egresskit.cluster.base import ChangeRecord, Cluster, CurlResult
from egresskit.cluster.owned import Jobs
from egresskit.errors import BackendError, ClusterClosed, WaitTimeout
from egresskit.explaining import explain, with_cluster_ips
from egresskit.manifests import load_manifests
from egresskit.manifests.model import K8sObject
from egresskit.mesh.metrics import ProxyMetrics
from egresskit.policy.snapshot import Snapshot
from egresskit.traffic import Traffic, due_count, start_traffic
from tests.resources import threads_left

BOUND = 10.0  # every wait in these tests is bounded by this


def _merge(into: dict[str, Any], patch: Mapping[str, Any]) -> None:
    for key, value in patch.items():
        if isinstance(value, Mapping) and isinstance(into.get(key), dict):
            _merge(into[key], value)
        elif value is None:
            into.pop(key, None)
        else:
            into[key] = copy.deepcopy(value)


class FakeMesh:
    """A Cluster whose proxy is the policy engine plus a ProxyMetrics registry."""

    name = "fake-mesh"

    def __init__(self, *manifests: str) -> None:
        self._lock = threading.Lock()
        self._objects: dict[tuple[str, str, str, str], K8sObject] = {}
        self._changes: list[ChangeRecord] = []
        self.metrics = ProxyMetrics(hostname_labels=True)
        self.scrape_failures: list[str] = []  # messages to raise on the next scrapes
        for m in manifests:
            self.apply(m)

    def __enter__(self) -> FakeMesh:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def close(self) -> None:
        pass

    def objects(self) -> list[K8sObject]:
        with self._lock:
            return list(self._objects.values())

    def apply(self, manifests: Any) -> list[str]:
        objs = load_manifests(manifests)
        with self._lock:
            for o in objs:
                self._objects[o.key] = o
            self._record("apply", objs, f"apply {', '.join(o.display for o in objs)}")
        return [f"{o.display} configured" for o in objs]

    def patch(
        self,
        kind: str,
        name: str,
        patch: Mapping[str, Any] | str,
        *,
        namespace: str,
        type: str = "merge",
    ) -> dict[str, Any]:
        assert isinstance(patch, Mapping)
        with self._lock:
            (key,) = [k for k in self._objects if k[1:] == (kind, namespace, name)]
            raw = copy.deepcopy(self._objects[key].raw)
            _merge(raw, patch)
            (obj,) = load_manifests(raw)
            self._objects[key] = obj
            policy = raw.get("spec", {}).get("trafficPolicy", "")
            self._record("patch", [obj], f"{kind} {name}: {policy}")
        return raw

    def delete(self, kind: str, name: str, *, namespace: str | None = None) -> None:
        with self._lock:
            (key,) = [k for k in self._objects if k[1:] == (kind, namespace or "", name)]
            obj = self._objects.pop(key)
            self._record("delete", [obj], f"delete {obj.display}")

    def get(self, kind: str, name: str, *, namespace: str | None = None) -> dict[str, Any]:
        with self._lock:
            for key, obj in self._objects.items():
                if key[1:] == (kind, namespace or "", name):
                    return dict(obj.raw)
        raise BackendError(f"{kind} {namespace}/{name} not found")

    def _record(self, verb: Any, objs: list[K8sObject], summary: str) -> None:
        self._changes.append(
            ChangeRecord(
                at=datetime.now(UTC),
                verb=verb,
                objects=tuple(o.display for o in objs),
                summary=summary,
            )
        )

    @property
    def changes(self) -> list[ChangeRecord]:
        with self._lock:
            return list(self._changes)

    def curl(self, *args: str, pod: str, namespace: str, timeout: float = 30.0) -> CurlResult:
        url = args[-1]
        host = urlsplit(url).hostname or ""
        # The lock makes "started" and the policy used one moment: a request is judged
        # entirely by the old or entirely by the new policy (as the real proxy does).
        with self._lock:
            started = datetime.now(UTC)
            snap = Snapshot.build(with_cluster_ips(list(self._objects.values())))
            d = explain(snap, url, namespace=namespace)
            status: int | None = 200
            body = f'{{"url": "{url}"}}'
            exit_code = 0
            m = self.metrics
            if d.outcome == "redirected":
                body = "You cannot go there right now"
            if d.family in ("http", "grpc"):
                if d.outcome == "forbidden":
                    status, body = 403, ""
                m.http_request(
                    d.labels, hostname=host, http_status=status, error="", duration_s=0.01
                )
                if d.backend_labels:
                    m.http_backend_request(d.labels, d.backend_labels)
            else:
                if d.outcome == "forbidden":
                    status, body, exit_code = None, "", 35
                sni = host
                if d.family == "tls":
                    m.tls_open(d.labels, hostname=sni)
                    m.tls_close(d.labels, hostname=sni, error=d.error)
                else:
                    ip = "192.0.2.10"
                    m.tcp_open(d.labels, target_ip=ip, target_port=443)
                    m.tcp_close(d.labels, target_ip=ip, target_port=443, error=d.error)
            took = (datetime.now(UTC) - started).total_seconds()
        return CurlResult(
            args=args,
            exit_code=exit_code,
            http_status=status,
            stdout=body,
            stderr="curl: (35) TLS connect error" if exit_code == 35 else "",
            time_total=took,
            started_at=started,
        )

    def proxy_metrics(self, pod: str, *, namespace: str) -> str:
        if self.scrape_failures:
            raise BackendError(self.scrape_failures.pop(0))
        return f"#\n# POD {pod} (1 of 1)\n#\n" + self.metrics.render()


class ScriptedCluster(FakeMesh):
    """curl answers come from a function; ``calls`` counts them."""

    def __init__(self, answer: Callable[[str], CurlResult]) -> None:
        super().__init__()
        self.answer = answer
        self.calls = 0
        self.called = threading.Condition()

    def curl(self, *args: str, pod: str, namespace: str, timeout: float = 30.0) -> CurlResult:
        result = self.answer(args[-1])
        with self.called:
            self.calls += 1
            self.called.notify_all()
        return result

    def wait_calls(self, n: int) -> None:
        with self.called:
            assert self.called.wait_for(lambda: self.calls >= n, BOUND), f"{self.calls} < {n}"


def ok(url: str, status: int = 200, body: str = "ok") -> CurlResult:
    return CurlResult(
        args=("-s", url),
        exit_code=0,
        http_status=status,
        stdout=body * 100,
        stderr="",
        time_total=0.002,
        started_at=datetime.now(UTC),
    )


def test_fake_clusters_implement_the_protocol() -> None:
    assert isinstance(FakeMesh(), Cluster)
    assert isinstance(ScriptedCluster(ok), Cluster)


# ------------------------------------------------------------------------- scheduling


@pytest.mark.parametrize(
    ("elapsed", "rate", "n_urls", "due"),
    [
        (0.0, 1.0, 1, 0),
        (0.5, 1.0, 1, 1),
        (1.0, 1.0, 1, 1),
        (1.01, 1.0, 1, 2),
        (10.0, 1.0, 1, 10),
        (10.0, 1.0, 3, 30),
        (1.0, 5.0, 2, 10),
    ],
    ids=[
        "nothing-yet",
        "first-at-start",
        "second-not-yet",
        "second",
        "ten-s",
        "three-urls",
        "rate",
    ],
)
def test_due_count_counts_deadlines_on_the_absolute_grid(
    elapsed: float, rate: float, n_urls: int, due: int
) -> None:
    assert due_count(elapsed, rate=rate, n_urls=n_urls) == due


def test_duration_run_fires_each_due_deadline_once_or_counts_it_missed() -> None:
    cluster = ScriptedCluster(ok)
    traffic = start_traffic(cluster, "http://httpbin.org/get", rate=40.0, duration=0.25)
    traffic.wait(BOUND)
    assert not traffic.running
    assert len(traffic.records) + traffic.missed == 10  # deadlines 0, 25 ms, ... 225 ms
    assert len(traffic.records) == cluster.calls >= 1
    assert traffic._thread.name.startswith("egresskit-traffic-")
    assert traffic._thread.daemon


def test_urls_take_turns() -> None:
    cluster = ScriptedCluster(ok)
    traffic = start_traffic(cluster, ["http://a.example/", "http://b.example/"], rate=20.0)
    cluster.wait_calls(6)
    traffic.stop()
    urls = [r.url for r in traffic.records]
    assert urls[:6] == ["http://a.example/", "http://b.example/"] * 3 or traffic.missed > 0


def test_stop_ends_an_unbounded_run_and_nothing_is_recorded_after() -> None:
    cluster = ScriptedCluster(ok)
    traffic = start_traffic(cluster, "http://httpbin.org/get", rate=50.0)
    cluster.wait_calls(3)
    assert traffic.running
    traffic.stop()
    assert not traffic.running
    n = len(traffic.records)
    assert n >= 3 and n == cluster.calls
    assert "stopped after" in traffic.progress()


def test_context_manager_stops() -> None:
    cluster = ScriptedCluster(ok)
    with start_traffic(cluster, "http://httpbin.org/get", rate=50.0) as traffic:
        cluster.wait_calls(2)
    assert not traffic.running


def test_keyboard_interrupt_during_wait_stops_the_traffic(
    monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    cluster = ScriptedCluster(ok)
    traffic = start_traffic(cluster, "http://httpbin.org/get", rate=50.0)
    cluster.wait_calls(2)
    real_join = traffic._thread.join
    state = {"raised": False}

    def join(timeout: float | None = None) -> None:
        if not state["raised"]:
            state["raised"] = True
            raise KeyboardInterrupt
        real_join(timeout)

    monkeypatch.setattr(traffic._thread, "join", join)
    with pytest.raises(KeyboardInterrupt):  # re-raised: Run All stops at this cell
        traffic.wait()
    assert not traffic.running
    assert capsys.readouterr().out.startswith("interrupted, traffic stopped: traffic: ")
    assert traffic.ended_because == "it was interrupted (KeyboardInterrupt)"
    assert "stopped after" in traffic.progress() and "interrupted" in traffic.progress()


def test_keyboard_interrupt_while_its_thread_starts_ends_the_loop(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    # Thread.start() waits for the new thread to begin; Ctrl-C there leaves a loop that no
    # caller holds (start_traffic never returned it), so it must end by itself.
    before = set(threading.enumerate())
    real_start = threading.Thread.start

    begun: list[Traffic] = []

    def start(self: threading.Thread) -> None:
        ours = self.name.startswith("egresskit-traffic-")
        if ours:
            begun.append(self._target.__self__)  # type: ignore[attr-defined]
        real_start(self)
        if ours:
            raise KeyboardInterrupt

    monkeypatch.setattr(threading.Thread, "start", start)
    cluster = ScriptedCluster(ok)
    with pytest.raises(KeyboardInterrupt):
        start_traffic(cluster, "http://httpbin.org/get", rate=50.0)
    monkeypatch.undo()
    assert threads_left(before) == []
    (traffic,) = begun
    assert not traffic.running
    assert traffic.ended_because == "it was interrupted while starting"
    assert cluster.calls <= 1  # at most the step it was taking when told


def test_paused_makes_no_curl_inside_the_block_and_moves_the_grid() -> None:
    cluster = ScriptedCluster(ok)
    traffic = start_traffic(cluster, "http://httpbin.org/get", rate=50.0)
    cluster.wait_calls(2)
    with traffic.paused():
        calls, missed = cluster.calls, traffic.missed
        threading.Event().wait(0.6)  # 30 deadlines at 50 a second
        assert cluster.calls == calls, "the loop curled while paused"
    cluster.wait_calls(calls + 3)  # it goes on after the block
    traffic.stop()
    # The 30 deadlines inside the pause moved with it (a grid that stayed would count
    # about 29 missed); not fired in a burst either: a burst is not how the loop catches up.
    assert traffic.missed - missed < 15
    assert traffic.ended_because == "it was stopped"


def test_paused_waits_for_the_curl_in_flight() -> None:
    release, in_flight = threading.Event(), threading.Event()

    def slow(url: str) -> CurlResult:
        in_flight.set()
        release.wait(BOUND)
        return ok(url)

    cluster = ScriptedCluster(slow)
    traffic = start_traffic(cluster, "http://httpbin.org/get", rate=50.0)
    assert in_flight.wait(BOUND)
    entered = threading.Event()
    calls_inside: list[int] = []

    def pause() -> None:
        with traffic.paused():
            calls_inside.append(cluster.calls)
            entered.set()

    pauser = threading.Thread(target=pause)
    pauser.start()
    assert not entered.wait(0.2), "paused() entered while a curl was in flight"
    release.set()
    assert entered.wait(BOUND)
    pauser.join(BOUND)
    assert calls_inside == [1]  # the curl in flight was finished, and counted, first
    traffic.stop()


def test_stop_inside_paused_ends_the_loop() -> None:
    cluster = ScriptedCluster(ok)
    traffic = start_traffic(cluster, "http://httpbin.org/get", rate=50.0)
    cluster.wait_calls(1)
    with traffic.paused():
        traffic.stop()  # the loop waits for its turn; stop() must not wait for the block
        assert not traffic.running
    assert traffic.ended_because == "it was stopped"


def test_a_traffic_whose_thread_never_started_is_let_go_by_its_cluster(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    real_start = threading.Thread.start

    def start(self: threading.Thread) -> None:
        if self.name.startswith("egresskit-traffic-"):
            raise RuntimeError("can't start new thread")  # before the thread exists
        real_start(self)

    monkeypatch.setattr(threading.Thread, "start", start)
    cluster = ScriptedCluster(ok)
    cluster.jobs = Jobs(lambda: ClusterClosed("closed"))  # type: ignore[attr-defined]
    with pytest.raises(RuntimeError, match="can't start new thread"):
        start_traffic(cluster, "http://httpbin.org/get", rate=50.0)
    assert cluster.jobs.close() == []  # type: ignore[attr-defined]  # nothing left to stop
    assert cluster.calls == 0


def test_a_pause_inside_a_pause_on_one_thread_nests() -> None:
    cluster = ScriptedCluster(ok)
    traffic = start_traffic(cluster, "http://httpbin.org/get", rate=50.0, curl_timeout=30.0)
    cluster.wait_calls(1)
    # A learner's own `with t.traffic.paused():` around t.observe, which pauses too: the
    # inner pause must not wait (up to 35 s) for a curl in flight that is its own pause.
    with traffic.paused(), traffic.paused():
        calls = cluster.calls
    cluster.wait_calls(calls + 2)  # and the loop goes on after both
    traffic.stop()


def test_records_keep_status_exit_code_timing_and_200_body_chars() -> None:
    answers = iter([ok("u", 200, "xyz"), ok("u", 403, "")])

    def answer(url: str) -> CurlResult:
        try:
            return next(answers)
        except StopIteration:
            return CurlResult(
                args=(url,), exit_code=35, http_status=None, stdout="", stderr="curl: (35) TLS\n",
                time_total=0.5, started_at=datetime.now(UTC),
            )  # fmt: skip

    cluster = ScriptedCluster(answer)
    traffic = start_traffic(cluster, "https://httpbin.org/get", rate=50.0)
    cluster.wait_calls(3)
    traffic.stop()
    first, second, third = traffic.records[:3]
    assert (first.http_status, len(first.body), first.exit_code) == (200, 200, 0)
    assert (second.http_status, second.body) == (403, "")
    assert (third.http_status, third.exit_code, third.error) == (None, 35, "curl: (35) TLS")
    frame = traffic.frame()
    assert list(frame.columns) == [
        "at", "completed_at", "pod", "namespace", "url", "exit_code", "http_status",
        "time_total", "body", "error",
    ]  # fmt: skip
    assert str(frame["at"].dt.tz) == "UTC"
    assert frame["http_status"].isna().iloc[2]
    assert (frame["completed_at"] - frame["at"]).iloc[2] == pd.Timedelta(seconds=0.5)
    assert traffic.progress().startswith(
        f"traffic: {len(frame)} requests (1 HTTP 200, 1 HTTP 403, 1 curl exit 35"
    )


def test_curls_made_outside_the_loop_can_be_recorded_too() -> None:
    cluster = ScriptedCluster(ok)
    traffic = start_traffic(cluster, "http://httpbin.org/get", rate=50.0, duration=0.02)
    traffic.wait(BOUND)
    n = len(traffic.records)
    traffic.record(ok("http://google.com", 403, ""))
    assert len(traffic.records) == n + 1
    assert (traffic.records[-1].url, traffic.records[-1].http_status) == ("http://google.com", 403)
    with pytest.raises(ValueError, match="expected a URL among the curl args"):
        traffic.record(replace(ok("x"), args=("-V",)))


def test_a_backend_error_is_recorded_not_raised() -> None:
    def answer(url: str) -> CurlResult:
        raise BackendError("exec failed: pod not running")

    cluster = ScriptedCluster(answer)
    traffic = start_traffic(cluster, "http://httpbin.org/get", rate=50.0)
    cluster_wait = threading.Event()
    traffic.wait(0.2)
    traffic.stop()
    cluster_wait.set()
    records = traffic.records
    assert records and all(r.exit_code == -1 for r in records)
    assert records[0].error == "exec failed: pod not running"
    assert f"({len(records)} backend errors)" in traffic.progress()


def test_a_crash_in_the_loop_is_raised_by_wait() -> None:
    def answer(url: str) -> CurlResult:
        raise RuntimeError("bug in backend")

    traffic = start_traffic(ScriptedCluster(answer), "http://httpbin.org/get", rate=50.0)
    with pytest.raises(BackendError, match="the loop failed: bug in backend"):
        traffic.wait(BOUND)


@pytest.mark.parametrize(
    ("kwargs", "message"),
    [
        ({"urls": []}, "urls: expected at least one URL"),
        ({"rate": 0.0}, "rate: expected requests/s per URL > 0"),
        ({"duration": -1.0}, "duration: expected seconds > 0"),
    ],
    ids=["no-urls", "zero-rate", "negative-duration"],
)
def test_bad_arguments_say_what_was_expected(kwargs: dict[str, Any], message: str) -> None:
    args: dict[str, Any] = {"urls": ["http://httpbin.org/get"]} | kwargs
    with pytest.raises(ValueError, match=message):
        start_traffic(ScriptedCluster(ok), **args)


def test_stop_is_bounded(monkeypatch: pytest.MonkeyPatch) -> None:
    release = threading.Event()

    def answer(url: str) -> CurlResult:
        release.wait(BOUND)
        return ok(url)

    cluster = ScriptedCluster(answer)
    traffic = Traffic(
        cluster, ["http://httpbin.org/get"], pod="client", namespace="egress-test",
        rate=1.0, duration=None, curl_args=("-s",), curl_timeout=0.0,
    )  # fmt: skip
    monkeypatch.setattr("egresskit.traffic._STOP_GRACE", 0.05)
    with pytest.raises(WaitTimeout, match=r"traffic thread .* to stop"):
        traffic.stop()
    release.set()
    traffic._thread.join(BOUND)


# --------------------------------------------------------------------------- scraper


def test_scraper_records_failures_and_says_so() -> None:
    mesh = FakeMesh(guide.NAMESPACE, guide.EGRESS_NETWORK, guide.CLIENT_POD)
    mesh.scrape_failures.append("port-forward to client: connection refused")
    scraper = Scraper(mesh, [("client", "egress-test")], interval=0.01)
    scraper.scrape_now()  # fails
    mesh.curl("-s", "http://httpbin.org/get", pod="client", namespace="egress-test")
    scraper.scrape_now()
    assert [e.message for e in scraper.errors] == ["port-forward to client: connection refused"]
    assert "WARNING 1 failed" in scraper.progress()
    frame = scraper.frame()
    assert frame["scraped_at"].nunique() == 1
    assert (frame["pod"] == "client").all()


def test_scraper_error_pods_in_the_output_are_failures_too() -> None:
    mesh = FakeMesh()
    mesh.proxy_metrics = lambda pod, namespace: "# ERROR pod client is not running\n"  # type: ignore[method-assign]
    scraper = Scraper(mesh, interval=0.01)
    scraper.scrape_now()
    assert len(scraper.errors) == 1 and "pod client is not running" in scraper.errors[0].message
    assert scraper.frame().empty


def test_scraper_baseline_is_synchronous_and_stop_scrapes_once_more() -> None:
    mesh = FakeMesh(guide.NAMESPACE, guide.EGRESS_NETWORK, guide.CLIENT_POD)
    mesh.curl("-s", "http://httpbin.org/get", pod="client", namespace="egress-test")
    scraper = Scraper(mesh, interval=3600.0).start()  # the thread will not tick
    assert scraper.scrapes == 1
    first = scraper.frame()
    assert "target_ip" not in first.columns  # HTTP series only so far
    mesh.curl("-s", "https://httpbin.org/get", pod="client", namespace="egress-test")
    scraper.stop()
    assert not scraper.running and scraper.scrapes == 2
    frame = scraper.frame()  # label columns of both scrapes, "" where absent
    assert len(frame) > 2 * len(first) - 1 and frame["scraped_at"].nunique() == 2
    assert {"hostname", "http_status", "target_ip"} <= set(frame.columns)
    assert not frame[["hostname", "target_ip"]].isna().any().any()
    assert list(frame.columns[:3]) == ["scraped_at", "pod", "metric"]
    assert frame.columns[-1] == "value"
    assert scraper.scrapes_frame()["pod"].tolist() == ["client", "client"]


def test_scraper_thread_scrapes_every_interval_until_stopped() -> None:
    mesh = FakeMesh(guide.NAMESPACE, guide.EGRESS_NETWORK, guide.CLIENT_POD)
    scraper = Scraper(mesh, interval=0.01).start()
    done = threading.Event()
    for _ in range(int(BOUND / 0.01)):
        if scraper.scrapes >= 4 or done.wait(0.01):
            break
    assert scraper.running
    scraper.stop(final_scrape=False)
    n = scraper.scrapes
    assert n >= 4 and not scraper.running
    assert scraper._thread is not None and scraper._thread.name.startswith("egresskit-scraper-")


# ------------------------------------------------------------- a policy flip, end to end


def test_allow_then_deny_flip_gives_the_guide_sequence_and_both_sides_agree() -> None:
    mesh = FakeMesh(guide.NAMESPACE, guide.EGRESS_NETWORK, guide.CLIENT_POD)
    timeline = PolicyTimeline.of(mesh)
    scraper = Scraper(mesh, interval=0.02, timeline=timeline).start()
    traffic = start_traffic(mesh, ["http://httpbin.org/get", "https://httpbin.org/get"], rate=40.0)
    _wait_records(traffic, 6)
    mesh.patch(
        "EgressNetwork", guide.EGRESS_NETWORK_NAME, guide.DENY_PATCH, namespace=guide.NAMESPACE_NAME
    )
    n_before = len(traffic.records)
    _wait_records(traffic, n_before + 6)
    traffic.stop()
    scraper.stop()

    requests = classify_requests(traffic.frame(), timeline)
    flip = mesh.changes[-1].at
    before = requests[requests["at"] < flip]
    after = requests[requests["at"] > flip]
    assert set(before["outcome"]) == {"allowed"}
    assert set(after["outcome"]) == {"forbidden"}
    assert set(after["route_name"]) == {"http-egress-deny", "tcp-egress-deny"}

    # The scrape list rides along in frame.attrs: the fresh proxy's empty baseline counts.
    series = classify_series(increases(scraper.frame()), timeline)
    result = reconcile(requests, series)
    assert result.excluded == 0  # the baseline scrape came before the traffic
    assert result.ok, str(result)
    totals = result.table.groupby("outcome")["client"].sum()
    assert totals["allowed"] + totals["forbidden"] == len(requests) - result.excluded


def _wait_records(traffic: Traffic, n: int) -> None:
    done = threading.Event()
    for _ in range(int(BOUND / 0.01)):
        if len(traffic.records) >= n or done.wait(0.01):
            return
    raise AssertionError(f"expected {n} records within {BOUND}s, found {len(traffic.records)}")
