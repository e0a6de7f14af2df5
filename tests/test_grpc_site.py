"""The simulated internet's gRPC site on its own: a late answer ends with its call, and
close() joins every worker it started (nothing outlives the cluster)."""

from __future__ import annotations

import threading
from typing import Any

import grpc
import pytest

from egresskit.grpcproto import ECHO_UNARY
from egresskit.mesh.grpcsite import internet_site
from tests.resources import WAIT, threads_left

WORKERS = 8  # GrpcServer's pool


def late_call(channel: grpc.Channel, ms: int) -> Any:
    """Echo/Unary asked to answer ``ms`` later; the call's future."""
    unary = channel.unary_unary(
        ECHO_UNARY.path,
        request_serializer=lambda fields: ECHO_UNARY.encode_request(fields),
        response_deserializer=ECHO_UNARY.decode_response,
    )
    return unary.future({"message": f"sleep:{ms}"}, timeout=30)


def target(address: tuple[str, int]) -> str:
    return f"{address[0]}:{address[1]}"


def rpc_workers(name: str) -> list[str]:
    return [t.name for t in threading.enumerate() if t.name.startswith(f"{name}-rpc")]


def wait_for_workers(name: str, n: int) -> None:
    """Until ``n`` workers exist (the pool starts one per call it is handed while none is
    idle), at most WAIT seconds."""
    pause = threading.Event()
    for _ in range(int(WAIT / 0.01)):
        if len(rpc_workers(name)) >= n:
            return
        pause.wait(0.01)
    raise AssertionError(f"waited {WAIT}s for {n} {name} workers, saw {rpc_workers(name)}")


def test_close_with_a_late_call_in_flight_cancels_it_and_joins_its_worker() -> None:
    before = set(threading.enumerate())
    site = internet_site()
    with grpc.insecure_channel(target(site.address)) as channel:
        late = late_call(channel, 10_000)  # the longest the site waits
        wait_for_workers(site.name, 1)
        site.close(grace=0.1)
        # close() returned: its workers are joined, not still sleeping out the 10 s.
        assert rpc_workers(site.name) == []
        with pytest.raises(grpc.RpcError) as ended:
            late.result(timeout=WAIT)
        assert ended.value.code() in (grpc.StatusCode.CANCELLED, grpc.StatusCode.UNAVAILABLE)
    assert threads_left(before) == []


def test_a_call_its_client_cancels_frees_its_worker_for_the_next_call() -> None:
    site = internet_site()
    try:
        with grpc.insecure_channel(target(site.address)) as channel:
            # As many late calls as the site has workers, all cancelled by their clients:
            # a worker still sleeping out its call would leave none for the next one.
            calls = [late_call(channel, 10_000) for _ in range(WORKERS)]
            wait_for_workers(site.name, WORKERS)  # every call reached its handler
            for call in calls:
                call.cancel()
            # Half the 10 s the cancelled calls asked for: a worker still sleeping one out
            # cannot answer within it; a free worker answers at once.
            answer = late_call(channel, 0).result(timeout=5)
            assert answer == {"message": "sleep:0"}
    finally:
        site.close()
