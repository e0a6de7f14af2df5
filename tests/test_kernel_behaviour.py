"""A kernel that behaves (issue 10 item 5), in a real IPython kernel driven cell by cell.

Re-running a walkthrough top to bottom in one kernel leaves no threads or listeners from
the previous run; interrupting a traffic cell stops the traffic and fails the cell, so Run
All stops; a failed check shows its FAIL line and hint, not a traceback.
"""

from __future__ import annotations

import json
import threading
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from egresskit import tutorial
from tests.kernel_driver import Kernel

pytestmark = pytest.mark.slow

SETUP = """\
from egresskit.tutorial import Tutorial
t = Tutorial("local", output_dir={out!r}, rate=5.0)
t.create_egress_network()
t.deploy_client()
"""
# Until both URLs have been asked (at most 30 s): the first HTTPS request is what opens
# the simulated internet's port 443, so a slow first curl must not change the counts.
TRAFFIC = """\
urls = ["http://httpbin.org/get", "https://httpbin.org/get"]
t.start_traffic(urls)
t.run_for(0.5)
for _ in range(300):
    if {r.url for r in t.traffic.records} >= set(urls):
        break
    t.run_for(0.1)
"""
COUNT = """\
import json, re, threading
from tests.resources import listening_sockets
# A set: the simulated sites' thread pools grow on demand (1 or 2 workers), that is no leak.
names = {re.sub(r"\\d+", "N", th.name) for th in threading.enumerate()}
print(json.dumps({"threads": sorted(names), "listening": len(listening_sockets())}))
"""


@pytest.fixture
def kernel(tmp_path: Path) -> Iterator[Kernel]:
    k = Kernel(Path(__file__).resolve().parent.parent)
    try:
        yield k
    finally:
        k.close()


def counts(kernel: Kernel) -> dict[str, object]:
    cell = kernel.run(COUNT)
    assert cell.status == "ok", cell.traceback
    result: dict[str, object] = json.loads(cell.text.strip().splitlines()[-1])
    return result


def test_running_the_walkthrough_again_in_the_same_kernel_leaves_nothing_behind(
    kernel: Kernel, tmp_path: Path
) -> None:
    baseline = counts(kernel)
    for _ in range(2):
        assert kernel.run(SETUP.format(out=str(tmp_path))).status == "ok"
        assert kernel.run(TRAFFIC).status == "ok"
    second = counts(kernel)
    assert kernel.run(SETUP.format(out=str(tmp_path))).status == "ok"  # a third run
    assert kernel.run(TRAFFIC).status == "ok"
    third = counts(kernel)
    assert third == second, f"a run leaves exactly what one walkthrough holds: {third} {second}"
    assert kernel.run("t.close()").status == "ok"
    closed = counts(kernel)
    assert closed["listening"] == baseline["listening"]
    assert closed["threads"] == baseline["threads"]


def test_interrupting_a_traffic_cell_stops_the_traffic_and_fails_the_cell(
    kernel: Kernel, tmp_path: Path
) -> None:
    marker = tmp_path / "started"
    assert kernel.run(SETUP.format(out=str(tmp_path))).status == "ok"

    def interrupt_once_started() -> None:
        deadline = time.monotonic() + 60
        while not marker.exists():  # bounded: the cell says when its traffic runs
            if time.monotonic() > deadline:
                return  # the cell then runs its 60 s and the asserts below say so
            time.sleep(0.05)
        kernel.interrupt()

    interrupter = threading.Thread(target=interrupt_once_started)
    interrupter.start()
    cell = kernel.run(
        'traffic = t.start_traffic("http://httpbin.org/get")\n'
        f"open({str(marker)!r}, 'w').close()\n"
        "t.run_for(60)"
    )
    interrupter.join(70)
    # Still a KeyboardInterrupt (the cell fails, Run All stops), shown as one line.
    assert cell.status == "error" and cell.ename == "TrafficInterrupted"
    assert "interrupted, traffic stopped" in cell.text
    assert cell.traceback == ["KeyboardInterrupt: " + tutorial.INTERRUPTED]
    after = kernel.run("print(traffic.running, t.scraper)\nt.run_for(1)")
    assert after.text.startswith("False None")
    assert after.ename == "NotRunning"
    assert after.traceback == [
        "run_for: no traffic is running: the traffic stopped: it was interrupted "
        + "(KeyboardInterrupt)"
        + after.traceback[0].split("(KeyboardInterrupt)", 1)[1]
    ]  # one line, no traceback
    assert kernel.run("t.close()").status == "ok"


def test_a_failed_check_shows_one_fail_line_and_its_hint(kernel: Kernel, tmp_path: Path) -> None:
    assert kernel.run(SETUP.format(out=str(tmp_path))).status == "ok"
    cell = kernel.run('t.deny()\nt.verify_curl("http://httpbin.org/get", status=200)')
    assert cell.status == "error" and cell.ename == "VerificationFailed"
    assert cell.traceback[0] == (
        "FAIL curl http://httpbin.org/get: HTTP status: expected 200, saw 403"
    )
    assert cell.traceback[1].startswith("  hint: with the objects in force, Linkerd gives")
    assert len(cell.traceback) == 2
    assert kernel.run("t.close()").status == "ok"
