"""The guide's steps as calls, for the notebooks and for the tests that call them too.

A :class:`Tutorial` holds one walkthrough: the cluster facade (any backend), the client's
traffic, the metrics scraper and the policy timeline. Each guide step is one method;
each verify step prints one PASS line or raises (``egresskit.verify``). Cleanup deletes
the namespace and checks nothing is left; it also runs when the kernel exits after a
failed cell (``atexit``), so a failing notebook leaves no namespace behind.

Kernel rules (a notebook is re-run in the same kernel, interrupted, restarted):

* One walkthrough per kernel: a new :class:`Tutorial` closes the previous one first (its
  traffic, scraper, and on ``local`` the whole embedded mesh), so re-running a notebook
  top to bottom leaves no threads or listeners behind.
* Interrupting a traffic or live cell (KeyboardInterrupt in ``run_for``/``watch``) stops
  the traffic and re-raises, so Run All stops there.
* A call that needs running traffic raises :class:`~egresskit.errors.NotRunning` saying
  why there is none (never started, interrupted, stopped), shown as one line.
"""

from __future__ import annotations

import atexit
import contextlib
import json
import threading
import time
import weakref
from collections.abc import Sequence
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import pandas as pd

from egresskit import guide
from egresskit.analysis.outcomes import PolicyTimeline
from egresskit.analysis.parse import parse_proxy_metrics
from egresskit.analysis.render import Renderer
from egresskit.analysis.scrape import Scraper
from egresskit.backends import connect
from egresskit.cluster.base import Cluster, CurlResult
from egresskit.errors import EgressKitError, NotRunning, TrafficInterrupted, WaitTimeout
from egresskit.lesson import ApplyReport, Lesson, Observation, Prediction
from egresskit.traffic import Traffic, start_traffic
from egresskit.verify import check, equal

NS = guide.NAMESPACE_NAME
EN = guide.EGRESS_NETWORK_NAME
POD = "client"
STATUSES = "outbound_http_route_request_statuses_total"
#: What an interrupted traffic cell says (one line; the cell fails so Run All stops).
INTERRUPTED = "traffic stopped, later cells not run; start again with t.start_traffic(...)"

# The kernel's current walkthrough (weak: a Tutorial nobody holds may go).
_current_lock = threading.Lock()
_current: weakref.ref[Tutorial] | None = None


def _take_over(new: Tutorial) -> None:
    """Close the kernel's previous walkthrough (if any) and make ``new`` the current one."""
    global _current
    with _current_lock:
        previous = _current() if _current is not None else None
        _current = weakref.ref(new)
    if previous is not None and previous is not new:
        previous.close()


class Tutorial:
    """One walkthrough of the guide on one backend."""

    def __init__(
        self,
        backend: str = "local",
        *,
        kube_context: str | None = None,
        output_dir: str | Path = "out",
        rate: float = 2.0,
        scrape_interval: float = 0.5,
    ) -> None:
        kwargs: dict[str, Any] = {}
        if backend == "kube" and kube_context:
            kwargs["context"] = kube_context
        self._closed = True  # until the cluster exists: close() has nothing to do
        _take_over(self)
        _readable_tables()
        self.backend = backend
        self.cluster: Cluster = connect(backend, **kwargs)
        self.output_dir = Path(output_dir)
        self.rate = rate
        self.scrape_interval = scrape_interval
        self.traffic: Traffic | None = None
        self.scraper: Scraper | None = None
        self._renderer: Renderer | None = None  # live charts' render worker, see watch()
        self.timeline = PolicyTimeline.of(self.cluster)
        self._series_frame: pd.DataFrame | None = None
        self._traffic_note = "no traffic was started yet: call t.start_traffic(...) first"
        self._closed = False
        #: Apply-with-report, explain and observe for the lesson cells (egresskit.lesson).
        self.lesson = Lesson(self.cluster, pod=POD, namespace=NS)
        atexit.register(self.close)

    # -- the guide's steps -------------------------------------------------------------------

    def create_egress_network(self) -> ApplyReport:
        """``kubectl create ns egress-test`` and the EgressNetwork with trafficPolicy Allow."""
        return self._apply([guide.NAMESPACE, guide.EGRESS_NETWORK])

    def deploy_client(self) -> ApplyReport:
        """The curl client pod, meshed, with hostname labels on (spec 6.2)."""
        return self._apply(guide.CLIENT_POD)

    def deny(self) -> ApplyReport:
        """``kubectl patch egressnetwork ... {"spec":{"trafficPolicy": "Deny"}}``."""
        return self.patch("egressnetwork", EN, guide.DENY_PATCH_JSON)

    def allow_httpbin_get(self) -> ApplyReport:
        return self._apply(guide.HTTPBIN_GET_ROUTE)

    def allow_tls_to_httpbin(self) -> ApplyReport:
        return self._apply(guide.TLS_EGRESS_ROUTE)

    def deploy_internal_service(self) -> ApplyReport:
        return self._apply(guide.INTERNAL_EGRESS)

    def redirect_plaintext(self) -> ApplyReport:
        """The final section's three routes: httpbin-get, tls-egress (all), unencrypted-http."""
        return self._apply(
            [guide.HTTPBIN_GET_ROUTE, guide.TLS_EGRESS_ROUTE_ALL, guide.UNENCRYPTED_HTTP_ROUTE]
        )

    def _apply(self, manifests: Any) -> ApplyReport:
        return self.apply(manifests)

    # -- lesson cells: the YAML in the cell, applied with a report (egresskit.lesson) ------

    def apply(self, manifests: Any) -> ApplyReport:
        """``kubectl apply -f -``: what was created/configured/unchanged, and Linkerd's verdict."""
        report = self.lesson.apply(manifests)
        self.timeline.sync()
        return report

    def patch(self, kind: str, name: str, body: Any) -> ApplyReport:
        """``kubectl patch KIND NAME -n egress-test -p BODY --type=merge``."""
        report = self.lesson.patch(kind, name, body)
        self.timeline.sync()
        return report

    def explain(self, url: str, **kw: Any) -> Prediction:
        """The engine's decision for ``url`` now and before the last change (predict)."""
        return self.lesson.explain(url, **kw)

    def observe(self, *curl_args: str, backends: bool = False) -> Observation:
        """One curl from the client and the proxy series it moved (observe). Traffic
        running in the background is paused meanwhile (its curl in flight finishes and is
        counted first): the series shown moved for this request alone."""
        traffic = self.traffic
        if traffic is not None and traffic.running:
            try:
                with traffic.paused():
                    self._settle(
                        said_by="observe",
                        risk="the series shown may include the loop's last request",
                    )
                    result = self.lesson.observe(*curl_args, backends=backends)
            except KeyboardInterrupt:  # as in every traffic cell: stop it, say so in one line
                self._interrupted()
                raise TrafficInterrupted(INTERRUPTED) from None
        else:
            result = self.lesson.observe(*curl_args, backends=backends)
        if self.traffic is not None and self.scraper is not None:
            self.traffic.record(result.result)
        return result

    # -- traffic and metrics ------------------------------------------------------------------

    def curl(self, *args: str) -> CurlResult:
        """One curl from the client. While traffic is recorded, it joins the records, so
        the client-side totals still match what the proxy counted."""
        result = self.cluster.curl(*args, pod=POD, namespace=NS)
        if self.traffic is not None and self.scraper is not None:
            self.traffic.record(result)
        return result

    def start_traffic(self, urls: str | Sequence[str], *, rate: float | None = None) -> Traffic:
        """The guide's ``while sleep 1; do curl -s URL; done``, in the background, with a
        scraper taking the proxy's metrics alongside. Ctrl-C while it starts (stopping
        the last traffic lets its counters settle first) stops what it began and re-raises
        in one line, as :meth:`run_for` does."""
        from egresskit.analysis.live import in_jupyter

        scraper: Scraper | None = None
        try:
            self.stop_traffic()
            if self.scraper is None:
                # The baseline scrape comes first, so every request falls inside the
                # scraped span.
                scraper = Scraper(
                    self.cluster, [(POD, NS)], self.scrape_interval, timeline=self.timeline
                )
                self.scraper = scraper.start()
            self.traffic = start_traffic(
                self.cluster, urls, pod=POD, namespace=NS, rate=rate or self.rate
            )
            if self._renderer is None and in_jupyter():
                # Started now, so it has warmed up by the time a live cell draws.
                self._renderer = Renderer()
        except KeyboardInterrupt:
            if scraper is not None and scraper is not self.scraper:
                scraper.close()  # interrupted between its thread's start and our hold on it
            self._interrupted()
            raise TrafficInterrupted(INTERRUPTED) from None
        return self.traffic

    def run_for(self, seconds: float) -> None:
        """Let the traffic run for a while (the notebook's "now look at the metrics").
        Prints the progress once at the end; Ctrl-C stops the traffic and re-raises."""
        from egresskit.analysis.live import progress_text

        traffic = self._running_traffic("run_for")
        try:
            traffic.wait(seconds)
        except KeyboardInterrupt:
            self._interrupted()
            raise TrafficInterrupted(INTERRUPTED) from None
        print(progress_text(traffic, self.scraper, self.timeline))

    def watch(self, seconds: float) -> None:
        """Let the traffic run for ``seconds`` with a live chart that updates in place in
        Jupyter (a progress line elsewhere); the final chart stays as a static image.
        Ctrl-C stops the traffic, leaves the chart so far, and re-raises."""
        from egresskit.analysis.live import watch

        try:
            watch(
                self._running_traffic("watch"),
                scraper=self.scraper,
                timeline=self.timeline,
                for_seconds=seconds,
                renderer=self._renderer,
            )
        except KeyboardInterrupt:
            self._interrupted()
            raise TrafficInterrupted(INTERRUPTED) from None

    def _interrupted(self) -> None:
        """After Ctrl-C in a traffic cell: the traffic is stopped (Traffic.wait did it);
        stop the scraper too, keeping what it scraped for the charts. A second Ctrl-C
        while the counters settle (up to 2 s, a likely moment to press it again) skips
        the settling: the final scrape is taken at once."""
        try:
            with contextlib.suppress(EgressKitError):
                self._stop_traffic(settle=True)
        except KeyboardInterrupt:
            with contextlib.suppress(EgressKitError):
                self._stop_traffic(settle=False)

    def _running_traffic(self, call: str) -> Traffic:
        """The running traffic, or :class:`NotRunning` saying why there is none."""
        if self._closed:
            raise NotRunning(f"{call}: this walkthrough is closed; create a new Tutorial")
        traffic = self.traffic
        if traffic is None or not traffic.running:
            why = self._traffic_note
            if traffic is not None:
                why = f"the traffic stopped: {traffic.ended_because or 'it ended'}"
                why += f" ({traffic.progress()}); call t.start_traffic(...) again"
            raise NotRunning(f"{call}: no traffic is running: {why}")
        return traffic

    def stop_traffic(self) -> None:
        self._stop_traffic(settle=True)

    def _stop_traffic(self, *, settle: bool) -> None:
        if self._renderer is not None:
            self._renderer.close()
            self._renderer = None
        if self.traffic is not None and self.traffic.running:
            self.traffic.stop("t.stop_traffic() was called")
        if self.scraper is not None:
            # The proxy counts a connection's close a moment after curl returns: let the
            # counters settle before the final scrape (bounded).
            if settle:
                self._settle()
            self.scraper.stop()
            self._series_frame = self.scraper.frame()
            self.scraper = None

    def _settle(
        self,
        within: float = 2.0,
        *,
        said_by: str = "stop_traffic",
        risk: str = "the final scrape may miss the last requests",
    ) -> None:
        """Wait (bounded) until the proxy's counters stop moving. When the bound runs out
        the notebook goes on (the final scrape is still taken) and one line says so."""
        deadline = time.monotonic() + within
        # The route families only: a real proxy's process metrics (CPU seconds, memory)
        # move on every scrape and would never settle.
        last = self.lesson.samples()
        while time.monotonic() < deadline:
            time.sleep(0.1)
            now = self.lesson.samples()
            if now == last:
                return
            last = now
        expired = WaitTimeout(
            f"the proxy counters of {NS}/{POD} to stop moving", within, "still moving"
        )
        print(f"{said_by}: {expired}; {risk}")

    def metrics(self, grep: str | None = None, *, one_label_per_line: bool = True) -> str:
        """``linkerd dg proxy-metrics -n egress-test po/client | grep <grep>``, with each
        sample's labels one per line as the guide prints them (``one_label_per_line``;
        the proxy itself writes each sample on one line: docs/facts/linkerd-egress.md 6.3)."""
        from egresskit.analysis.metric_lines import one_label_per_line as spread

        text = self.cluster.proxy_metrics(POD, namespace=NS)
        if grep is not None:
            text = "\n".join(line for line in text.splitlines() if grep in line)
        return spread(text) if one_label_per_line else text

    def series(self, metric: str = STATUSES, **labels: str) -> pd.DataFrame:
        """The current samples of ``metric`` whose labels include ``labels``, as a table."""
        scrape = parse_proxy_metrics(self.cluster.proxy_metrics(POD, namespace=NS))
        scrape.raise_for_errors()
        rows = []
        for s in scrape.samples:
            lbl = dict(s.labels)
            if s.metric == metric and all(lbl.get(k) == v for k, v in labels.items()):
                rows.append(lbl | {"value": s.value})
        return pd.DataFrame(rows)

    def count(self, metric: str = STATUSES, **labels: str) -> float:
        frame = self.series(metric, **labels)
        return float(frame["value"].sum()) if not frame.empty else 0.0

    # -- verify steps ---------------------------------------------------------------------------

    def verify_curl(
        self,
        url: str,
        *,
        status: int | None = None,
        exit_code: int | None = None,
        body_contains: str | None = None,
        json_field: tuple[str, Any] | None = None,
    ) -> None:
        """Run the guide's curl once and check what the client sees. Returns nothing, so a
        verify cell's output is only its PASS lines."""
        r = self.curl("-sS", url)
        if status is not None:
            equal(f"curl {url}: HTTP status", status, r.http_status, hint=self._hint(url))
        if exit_code is not None:
            equal(f"curl {url}: exit code", exit_code, r.exit_code, hint=self._hint(url))
        if body_contains is not None:
            check(
                f"curl {url}: body",
                body_contains in r.stdout,
                expected=f"to contain {body_contains!r}",
                seen=repr(r.stdout[:80]),
            )
        if json_field is not None:
            key, want = json_field
            try:
                got = json.loads(r.stdout).get(key)
            except (json.JSONDecodeError, AttributeError):
                got = f"not JSON: {r.stdout[:60]!r}"
            equal(f"curl {url}: JSON {key}", want, got)

    def _hint(self, url: str) -> Any:
        """A hint for a failed curl check, computed only on failure: what the policy
        engine decides for ``url`` under the objects in force now."""

        def hint() -> str:
            from egresskit.explaining import explain

            self.timeline.sync()
            snapshot = self.timeline.snapshot_at(datetime.now(UTC))
            try:
                decision = explain(snapshot, url, namespace=NS)
            except EgressKitError as exc:
                return f"the policy engine cannot judge {url}: {exc}"
            why = f" ({decision.reason})" if decision.reason else ""
            return f"with the objects in force, Linkerd gives {decision.summary()}{why}"

        return hint

    def verify_series(self, metric: str = STATUSES, *, within: float = 10.0, **labels: str) -> None:
        """The proxy has counted at least one more request in this series since it was last
        verified (or since the start), waiting up to ``within`` seconds."""
        shown = ", ".join(f'{k}="{v}"' for k, v in labels.items())
        deadline = time.monotonic() + within
        seen = self.count(metric, **labels)
        while seen < 1 and time.monotonic() < deadline:
            time.sleep(0.1)
            seen = self.count(metric, **labels)
        check(f"{metric}{{{shown}}}", seen >= 1, expected="a count above 0", seen=_counted(seen))

    def verify_no_series(self, metric: str = STATUSES, **labels: str) -> None:
        shown = ", ".join(f'{k}="{v}"' for k, v in labels.items())
        seen = self.count(metric, **labels)
        check(f"{metric}{{{shown}}}", seen == 0, expected="no samples yet", seen=_counted(seen))

    def verify_accepted(self, kind: str, name: str) -> None:
        """The status Linkerd writes: EgressNetwork or route Accepted=True."""
        obj = self.cluster.get(kind, name, namespace=NS)
        status = obj.get("status", {})
        conds = status.get("conditions") or [
            c for p in status.get("parents", []) for c in p.get("conditions", [])
        ]
        accepted: dict[str, Any] = next((c for c in conds if c.get("type") == "Accepted"), {})
        equal(f"{kind} {name}: Accepted", "True", accepted.get("status", "(missing)"))

    # -- charts and reconciliation ---------------------------------------------------------

    def requests(self) -> pd.DataFrame:
        """Every request the client made, classified (allowed/forbidden/redirected/failed)."""
        from egresskit.analysis.outcomes import classify_requests

        if self.traffic is None:
            raise NotRunning("requests: no traffic was run yet: call t.start_traffic(...) first")
        self.timeline.sync()
        return classify_requests(self.traffic.frame(), self.timeline)

    def proxy_series(self) -> pd.DataFrame | None:
        """The proxy's route counters as classified increases per scrape (what the
        headline chart plots), or None when no metrics were scraped."""
        from egresskit.analysis.counters import increases
        from egresskit.analysis.outcomes import classify_series

        frame = self.scraper.frame() if self.scraper is not None else self._series_frame
        if frame is None:
            return None
        self.timeline.sync()
        return classify_series(increases(frame), self.timeline)

    def chart(self, name: str, *, title: str) -> Any:
        """The headline figure: the proxy's route metrics over time (increase of the
        ``outbound_*_route_*`` counters per route and status, as a Grafana panel shows
        them) above the client's own view, policy changes labelled; saved as PNG and SVG
        under ``output_dir/charts`` and shown as a static image (renders on GitHub)."""
        from egresskit.analysis import charts

        chart = charts.story_chart(
            self.requests(), self.proxy_series(), self.cluster.changes, title=title
        )
        folder = self.output_dir / "charts"
        folder.mkdir(parents=True, exist_ok=True)
        png, _ = charts.save_png_and_svg(chart, folder / name)
        return _image(png)

    def breakdown(self, name: str) -> Any:
        """Per-route and per-hostname views of the same requests."""
        from egresskit.analysis import charts

        classified = self.requests()
        folder = self.output_dir / "charts"
        folder.mkdir(parents=True, exist_ok=True)
        routes = charts.save_png(
            charts.routes_chart(classified, self.cluster.changes), folder / f"{name}-routes.png"
        )
        hosts = charts.save_png(charts.hostnames_chart(classified), folder / f"{name}-hosts.png")
        return _images(routes, hosts)

    def verify_reconciled(self) -> None:
        """What the client saw and what the proxy counted agree, outcome by outcome."""
        from egresskit.analysis.counters import increases
        from egresskit.analysis.outcomes import classify_series, reconcile

        if self._series_frame is None:
            raise NotRunning(
                "verify_reconciled: no metrics were scraped yet: call t.start_traffic(...), "
                "then t.stop_traffic()"
            )
        series = classify_series(increases(self._series_frame), self.timeline)
        result = reconcile(self.requests(), series)
        check(
            "client-side and proxy-side totals per outcome",
            result.ok,
            expected="equal",
            seen="equal" if result.ok else str(result),
        )

    # -- auditing -----------------------------------------------------------------------------

    def verify_explained(self, table: pd.DataFrame, url: str, *, outcome: str, route: str) -> None:
        row = table[table["url"] == url].iloc[0]
        equal(f"explain {url}", f"{outcome} via {route}", f"{row['outcome']} via {row['route']}")

    def verify_finding(self, found: pd.DataFrame, obj: str, text: str) -> None:
        hits = found[(found["object"] == obj) & found["finding"].str.contains(text)]
        check(
            f"finding on {obj}",
            len(hits) == 1,
            expected=f"one about {text!r}",
            seen=f"{len(hits)} finding(s)",
        )

    def enforcement_delay(self) -> float:
        """Seconds from the Deny patch until the client sees its first 403."""
        from egresskit.audit import enforcement_delay

        return enforcement_delay(
            self.cluster, self.deny, url="http://httpbin.org/get", expect_status=403
        )

    def bypass(self, url: str, pod: str | None = None) -> pd.DataFrame:
        """``url`` from the meshed client and from the Pod ``pod`` (YAML; default: the
        client without ``linkerd.io/inject``), as a table."""
        from egresskit.audit import BYPASS_POD, bypass_demo

        return bypass_demo(self.cluster, [url], namespace=NS, manifest=pod or BYPASS_POD)

    def verify_bypass(self, frame: pd.DataFrame) -> None:
        # By role, not by name: the learner may rename the bypass pod in its YAML.
        seen = {"client" if row.meshed else "bypass": row.http_status for row in frame.itertuples()}
        equal("meshed client vs unmeshed pod under Deny", {"client": 403, "bypass": 200}, seen)

    # -- cleanup ----------------------------------------------------------------------------------

    def cleanup(self) -> None:
        """``kubectl delete ns egress-test``, then check nothing is left."""
        self.stop_traffic()
        with contextlib.suppress(EgressKitError):
            self.cluster.delete("namespace", NS)
        self.lesson.forget()
        left = _leftovers(self.cluster)
        equal("objects left in egress-test after cleanup", [], left)

    def close(self) -> None:
        """Stop the traffic and scraper, delete the namespace, close the cluster (on
        ``local``: every proxy, server and thread); idempotent."""
        if self._closed:
            return
        self._closed = True
        atexit.unregister(self.close)
        try:
            self.stop_traffic()
            with contextlib.suppress(EgressKitError):
                self.cluster.delete("namespace", NS)
        except (EgressKitError, WaitTimeout):
            pass
        finally:
            self.cluster.close()

    def __enter__(self) -> Tutorial:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()


def _readable_tables() -> None:
    """Tables show whole cells, wrapped, never cut at pandas' 50 characters mid-word."""
    pd.set_option("display.max_colwidth", None)
    pd.set_option("display.width", 120)


def _counted(value: float) -> str:
    # Counts are volatile (they depend on timing): say only whether there were any.
    return "a count above 0" if value >= 1 else "no samples"


def _image(path: Path) -> Any:
    try:
        from IPython.display import Image
    except ImportError:  # pragma: no cover - IPython comes with ipykernel
        return path
    return Image(filename=str(path))  # type: ignore[no-untyped-call]


def _images(*paths: Path) -> Any:
    try:
        from IPython.display import HTML
    except ImportError:  # pragma: no cover
        return paths
    import base64

    tags = "".join(
        f"<img src='data:image/png;base64,{base64.b64encode(p.read_bytes()).decode()}' "
        "style='max-width:100%'>"
        for p in paths
    )
    return HTML(tags)  # type: ignore[no-untyped-call]


def _leftovers(cluster: Cluster) -> list[str]:
    objects = getattr(cluster, "objects", None)
    if callable(objects):
        return sorted(o.display for o in objects() if (o.namespace or "") == NS)
    try:
        cluster.get("namespace", NS)
    except EgressKitError:
        return []
    return [f"Namespace {NS}"]
