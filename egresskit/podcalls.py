"""gRPC and TCP clients run "inside" a pod, the way the local backend runs curl there.

Job: the process side of :meth:`LocalCluster.grpc <egresskit.cluster.local.LocalCluster.grpc>`
and :meth:`LocalCluster.tcp <egresskit.cluster.local.LocalCluster.tcp>`. The cluster works out
where the pod's connection to ``host:port`` lands (its proxy's listener for that original
destination, or the destination itself for a pod that is not meshed) as a curl-style
``HOST:PORT:ADDR:APORT`` string; this module then

* runs ``python -m egresskit.grpcclient --json`` as a separate process (a real gRPC client,
  its own HTTP/2 connection, exactly one call), and reads its JSON answer;
* or opens a TCP connection, sends bytes and reads until the other end closes.

On kind, :meth:`KubeCluster.grpc <egresskit.cluster.kube.KubeCluster.grpc>` execs the same
client in the pod of :data:`egresskit.podimages.GRPC_CLIENT_POD` (docs/kind.md).
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from collections.abc import Mapping, Sequence
from typing import Any

from egresskit.errors import BackendError
from egresskit.grpcclient import GrpcCallResult
from egresskit.mesh.tcpsite import exchange

__all__ = ["GrpcCallResult", "grpc_result", "run_grpcclient", "tcp_exchange"]

#: Seconds allowed on top of the call's own timeout for the interpreter to start.
_STARTUP = 20.0


def grpcclient_argv(
    target: str,
    method: str,
    *,
    connect_to: str | None,
    data: Sequence[Mapping[str, Any]] = (),
    headers: Sequence[str] = (),
    timeout: float = 30.0,
) -> list[str]:
    """The command line of one call (what a learner would type in the pod)."""
    argv = [sys.executable, "-m", "egresskit.grpcclient", "--json", "--timeout", f"{timeout:g}"]
    if connect_to:
        argv += ["--connect-to", connect_to]
    for message in data:
        argv += ["-d", json.dumps(dict(message))]
    for header in headers:
        argv += ["-H", header]
    return [*argv, target, method]


def run_grpcclient(
    target: str,
    method: str,
    *,
    connect_to: str | None,
    data: Sequence[Mapping[str, Any]] = (),
    headers: Sequence[str] = (),
    timeout: float = 30.0,
) -> GrpcCallResult:
    """Run the client command; its result, or ``BackendError`` if it could not call."""
    argv = grpcclient_argv(
        target, method, connect_to=connect_to, data=data, headers=headers, timeout=timeout
    )
    env = {k: v for k, v in os.environ.items() if "proxy" not in k.lower()}
    try:
        proc = subprocess.run(
            argv, capture_output=True, timeout=timeout + _STARTUP, env=env, check=False
        )
    except subprocess.TimeoutExpired as exc:
        raise BackendError(
            f"grpcclient {target} {method} did not finish within {timeout + _STARTUP:g}s"
        ) from exc
    stderr = proc.stderr.decode("utf-8", "replace").strip()
    result = grpc_result(proc.stdout.decode("utf-8", "replace"))
    if result is None:
        raise BackendError(
            f"grpcclient {target} {method}: exit code {proc.returncode}, no result; {stderr}"
        )
    return result


def grpc_result(stdout: str) -> GrpcCallResult | None:
    """The result ``grpcclient --json`` printed, or ``None`` when it printed none (both
    backends read the client's output with this)."""
    try:
        answer = json.loads(stdout)
    except json.JSONDecodeError:
        return None
    if not isinstance(answer, dict):
        return None
    for key in ("initial_metadata", "trailing_metadata"):
        answer[key] = [tuple(pair) for pair in answer.get(key, [])]
    try:
        return GrpcCallResult(**answer)
    except TypeError:
        return None


def tcp_exchange(connect_to: str, data: bytes, *, timeout: float = 10.0) -> bytes:
    """Send ``data`` to the address in ``connect_to`` (``H:P:ADDR:APORT``), and read until
    the other end closes; ``BackendError`` if nothing accepts the connection."""
    addr, port = connect_to.rsplit(":", 2)[-2:]
    try:
        return exchange((addr, int(port)), data, timeout=timeout)
    except OSError as exc:
        raise BackendError(f"tcp {connect_to}: {exc}") from exc
