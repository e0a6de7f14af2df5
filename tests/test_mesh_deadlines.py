"""The one timer of an HTTP/1 connection never lets a deadline pass unenforced.

The machine tells the shell a deadline only when it must fire earlier than the last one
it told (:meth:`~egresskit.mesh.http1_machine.Http1Machine.flush`); a timer that fires
early is told the current one. The property, over seeded random event sequences through
the real shell (:class:`egresskit.mesh.http1._Connection`, its upstream Protocol and its
connect coroutine) on a fake loop and clock: whenever the connection is open and the
machine has a deadline, the shell's timer is armed at or before it. Timers fire on time
or a hair early, as asyncio's may (its clock resolution); exact, no sleeps.
"""

from __future__ import annotations

import asyncio
import random
from collections.abc import Callable, Coroutine, Generator
from types import SimpleNamespace
from typing import Any

import pytest

from benchmarks.bench_exchange import DropTransport
from egresskit.mesh import http1
from egresskit.mesh.http1_machine import Judgement
from egresskit.mesh.http1_wire import Request
from egresskit.mesh.settings import ProxyConfig
from tests.machinekit import DECISION, TARGET

CLIENT = [
    b"GET /get HTTP/1.1\r\nHost: h\r\n\r\n",
    b"GET /g",
    b"et HTTP/1.1\r\nHost: h\r\n\r\n",
    b"\r\n",
    b"POST /p HTTP/1.1\r\nHost: h\r\nContent-Length: 5\r\n\r\nab",
    b"cde",
    b"HEAD / HTTP/1.1\r\nHost: h\r\n\r\n",
    b"POST /c HTTP/1.1\r\nHost: h\r\nTransfer-Encoding: chunked\r\n\r\n",
    b"3\r\nabc\r\n",
    b"0\r\n\r\n",
    b"GET / HTTP/1.1\r\nHost: h\r\nUpgrade: websocket\r\nConnection: upgrade\r\n\r\n",
]
#: Bytes that end the connection with a 400, sent now and then.
MALFORMED = b"BAD\x00\r\n\r\n"
UPSTREAM = [
    b"HTTP/1.1 200 OK\r\ncontent-length: 2\r\n\r\nok",
    b"HTTP/1.1 200 OK\r\n",
    b"content-length: 3\r\n\r\nab",
    b"c",
    b"HTTP/1.1 200 OK\r\ntransfer-encoding: chunked\r\n\r\n",
    b"2\r\nok\r\n",
    b"0\r\n\r\n",
    b"HTTP/1.1 100 Continue\r\n\r\n",
    b"HTTP/1.1 101 Switching Protocols\r\nupgrade: websocket\r\nconnection: upgrade\r\n\r\n",
    b"HTTP/1.1 204 No Content\r\n\r\n",
    b"HTTP/1.1 200 OK\r\n\r\nclose-delimited",
]


class _Timer:
    def __init__(self, at: float, callback: Callable[[], None]) -> None:
        self.at = at
        self.callback = callback
        self.live = True  # neither cancelled nor fired

    def cancel(self) -> None:
        self.live = False

    def cancelled(self) -> bool:
        return not self.live


class _Done:
    """The connection's ``done`` future: done once set."""

    def __init__(self) -> None:
        self.result: object = None
        self.is_done = False

    def done(self) -> bool:
        return self.is_done

    def set_result(self, result: object) -> None:
        self.is_done = True


class _Connecting:
    """``await`` point of a connect: the test resumes it with a result or an exception."""

    def __await__(self) -> Generator[None, object, object]:
        outcome = yield
        if isinstance(outcome, BaseException):
            raise outcome
        return outcome


class _Task:
    def __init__(self, coro: Coroutine[Any, Any, None]) -> None:
        self.coro = coro
        self.finished = False
        coro.send(None)  # runs up to the connect's await point

    def resume(self, outcome: object) -> None:
        try:
            self.coro.send(outcome)
        except StopIteration:
            self.finished = True

    def cancel(self) -> None:
        if not self.finished:
            self.coro.close()
            self.finished = True


class _Loop:
    """What the shell uses of its event loop, on a clock the test moves."""

    def __init__(self) -> None:
        self.now = 0.0
        self.timers: list[_Timer] = []
        self.tasks: list[_Task] = []

    def time(self) -> float:
        return self.now

    def call_at(self, at: float, callback: Callable[[], None]) -> _Timer:
        timer = _Timer(at, callback)
        self.timers.append(timer)
        return timer

    def create_future(self) -> _Done:
        return _Done()

    def create_task(self, coro: Coroutine[Any, Any, None], name: str = "") -> _Task:
        task = _Task(coro)
        self.tasks.append(task)
        return task

    async def create_connection(
        self, factory: Callable[[], asyncio.Protocol], host: str, port: int
    ) -> tuple[DropTransport, asyncio.Protocol]:
        await _Connecting()  # until the test says the connect succeeded (or raises)
        protocol = factory()
        transport = DropTransport()
        protocol.connection_made(transport)  # type: ignore[arg-type]
        return transport, protocol

    def due(self, until: float) -> _Timer | None:
        live = [t for t in self.timers if t.live and t.at <= until]
        return min(live, key=lambda t: t.at) if live else None


def _connection(
    loop: _Loop, config: ProxyConfig, rng: random.Random, monkeypatch: pytest.MonkeyPatch
) -> http1._Connection:
    class Judged(http1._Connection):
        def judge(self, req: Request, host: str | None) -> Judgement:
            if rng.random() < 0.15:
                return Judgement("answer", decision=DECISION, status=403, hostname="h")
            return Judgement("forward", decision=DECISION, target=TARGET, hostname="h")

    monkeypatch.setattr(asyncio, "get_running_loop", lambda: loop)
    metrics = SimpleNamespace(http_exchange=lambda *args, **kwargs: None)
    proxy = SimpleNamespace(config=config, metrics=metrics)
    channel = SimpleNamespace(transport=DropTransport(), connection_lost=lambda exc: None)
    conn = Judged(proxy, channel, 80, None)  # type: ignore[arg-type]
    conn.do(conn.machine.flush())  # as run() starts it
    return conn


def _check(conn: http1._Connection, where: str) -> None:
    machine = conn.machine
    if conn.done.done() or machine.phase == "closed" or machine.deadline is None:
        return
    timer = conn.timer
    armed = timer is not None and not timer.cancelled()
    assert armed and conn.timer_at <= machine.deadline, (
        f"{where}: the machine's deadline is {machine.deadline} in phase {machine.phase}, "
        f"the shell's timer {'at ' + str(conn.timer_at) if armed else 'is not armed'}"
    )


def _run(seed: int, monkeypatch: pytest.MonkeyPatch, steps: int = 80) -> None:
    rng = random.Random(seed)
    config = ProxyConfig(
        request_head_timeout=rng.choice([1.0, 10.0, 100.0]),
        idle_timeout=rng.choice([2.0, 60.0]),
        connect_timeout=rng.choice([0.5, 3.0, 200.0]),
        response_timeout=rng.choice([1.0, 30.0, 90.0]),
    )
    loop = _Loop()
    conn = _connection(loop, config, rng, monkeypatch)
    _check(conn, "start")
    for step in range(steps):
        # Time moves on; every timer due fires, some a hair early.
        # Mostly small steps, so exchanges get far; now and then one past every timeout.
        until = loop.now + rng.choice([0.0, 0.0, 0.0, 0.05, 0.1, 0.1, 0.4, 1.0, 5.0, 70.0])
        while not conn.done.done() and (timer := loop.due(until)) is not None:
            timer.live = False  # it fired
            loop.now = max(loop.now, timer.at - rng.choice([0.0, 0.0, 1e-6]))
            timer.callback()
            _check(conn, f"seed {seed}: the timer fired at {loop.now}")
        loop.now = max(loop.now, until)
        if conn.done.done():
            return
        up = conn.up
        connecting = next((t for t in loop.tasks if not t.finished), None)
        r = rng.random()
        if r < 0.35:
            event = "client bytes"
            # Whole requests mostly: a fragment out of place is a 400 and the end.
            whole = rng.random() < 0.6
            data = CLIENT[0] if whole else rng.choice(CLIENT)
            conn.data_received(data if rng.random() < 0.97 else MALFORMED)
        elif r < 0.45 and connecting is not None:
            event = "connected"
            connecting.resume(None)
        elif r < 0.47 and connecting is not None:
            event = "connect refused"
            connecting.resume(ConnectionRefusedError())
        elif r < 0.75 and up is not None:
            event = "upstream bytes"
            up.data_received(UPSTREAM[0] if rng.random() < 0.4 else rng.choice(UPSTREAM))
        elif r < 0.78 and up is not None:
            event = "upstream EOF"
            up.eof_received()
        elif r < 0.84:
            event = "client write buffer full or drained"
            (conn.pause_writing if rng.random() < 0.5 else conn.resume_writing)()
        elif r < 0.88 and up is not None:
            event = "upstream write buffer full or drained"
            (up.pause_writing if rng.random() < 0.5 else up.resume_writing)()
        elif r < 0.90:
            event = "client EOF"
            conn.eof_received()
        elif r < 0.91:
            event = "client connection lost"
            conn.connection_lost(None)
        else:
            event = "nothing"
        _check(conn, f"seed {seed}, step {step}: {event}")


@pytest.mark.parametrize("block", range(4))
def test_a_deadline_always_has_a_timer_at_or_before_it(
    block: int, monkeypatch: pytest.MonkeyPatch
) -> None:
    for seed in range(block * 150, (block + 1) * 150):
        _run(seed, monkeypatch)


def test_the_fake_loop_reaches_the_timeouts() -> None:
    """The property above is not vacuous: over the same seeds, deadlines are enforced
    (connections closed by their timer) and timers fire early and re-arm."""
    fired = {"timeouts": 0, "early": 0}
    original = http1._Connection._expire

    def counting(self: http1._Connection) -> None:
        deadline = self.deadline
        if deadline is not None and self.now() < deadline:
            fired["early"] += 1
        elif deadline is not None:
            fired["timeouts"] += 1
        original(self)

    with pytest.MonkeyPatch.context() as patch:
        patch.setattr(http1._Connection, "_expire", counting)
        for seed in range(150):
            _run(seed, patch)
    assert fired["timeouts"] > 50 and fired["early"] > 5, fired
