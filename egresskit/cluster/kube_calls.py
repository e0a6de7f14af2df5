"""The commands ``KubeCluster.grpc``/``tcp`` exec in a pod, and how their output is read.

Job: pure functions, no I/O. The gRPC call is the kit's own client,
``python -m egresskit.grpcclient --json`` (:mod:`egresskit.podcalls` runs the same program
on the local backend), in the ``grpc-client`` container of
:data:`egresskit.podimages.GRPC_CLIENT_POD`; the pod's own network carries it, so there is
no ``--connect-to``: the pod's proxy captures the connection as it captures curl's.

The TCP exchange is a few lines of Python in the same container (``python:3.11-slim`` has
no ``nc``): the bytes go in base64 on the command line (exec here has no stdin) and come
back in base64 on stdout, so any byte survives the text channels of exec. It behaves as
:func:`egresskit.mesh.tcpsite.exchange`, the local backend's client: no half-close, read
until the other end closes, at most 1 MiB; a refused or timed-out connection is an error.
"""

from __future__ import annotations

import base64
import binascii
from collections.abc import Mapping, Sequence
from typing import Any

from egresskit.errors import BackendError
from egresskit.grpcclient import GrpcCallResult
from egresskit.podcalls import grpc_result, grpcclient_argv

__all__ = [
    "EXEC_STARTUP",
    "TCP_SCRIPT",
    "grpc_exec_command",
    "parse_grpc_exec",
    "parse_tcp_exec",
    "tcp_exec_command",
]

#: Seconds allowed on top of a call's own timeout for exec and the interpreter to start.
EXEC_STARTUP = 20.0

#: argv: host port base64-data timeout. Exit 0 with base64 on stdout, or 1 and a reason.
TCP_SCRIPT = """\
import base64, socket, sys
host, port, data, timeout = sys.argv[1:5]
got = bytearray()
try:
    with socket.create_connection((host, int(port)), timeout=float(timeout)) as s:
        try:
            s.sendall(base64.b64decode(data))
            while chunk := s.recv(65536):
                got += chunk
                if len(got) > 1 << 20:
                    break
        except (ConnectionResetError, BrokenPipeError):
            pass
except OSError as exc:
    sys.stderr.write(f"{type(exc).__name__}: {exc}\\n")
    sys.exit(1)
sys.stdout.write(base64.b64encode(got).decode())
"""


def grpc_exec_command(
    target: str,
    method: str,
    *,
    data: Sequence[Mapping[str, Any]] = (),
    headers: Sequence[str] = (),
    timeout: float = 30.0,
) -> list[str]:
    """``python -m egresskit.grpcclient --json --timeout T [-d ..] [-H ..] TARGET METHOD``."""
    argv = grpcclient_argv(
        target, method, connect_to=None, data=data, headers=headers, timeout=timeout
    )
    return ["python", *argv[1:]]


def parse_grpc_exec(stdout: str, stderr: str, exit_code: int, *, where: str) -> GrpcCallResult:
    """The client's JSON answer (its exit code is the gRPC status, so non-zero is normal);
    ``BackendError`` when it printed none (not installed, bad command line, crashed)."""
    result = grpc_result(stdout)
    if result is None:
        hint = ""
        if exit_code in (126, 127) or "executable file not found" in stderr:
            hint = "; is this a pod from egresskit.podimages.GRPC_CLIENT_POD?"
        raise BackendError(
            f"{where}: exit code {exit_code}, no result; {stderr.strip() or 'no stderr'}{hint}"
        )
    return result


def tcp_exec_command(target: str, data: bytes, *, timeout: float = 10.0) -> list[str]:
    """``python -c TCP_SCRIPT HOST PORT BASE64 TIMEOUT``; ``BackendError`` for a bad target."""
    host, sep, port = target.rpartition(":")
    if not sep or not host or not port.isdigit() or not 0 < int(port) < 65536:
        raise BackendError(f"tcp target {target!r}: expected host:port")
    data_b64 = base64.b64encode(data).decode()
    return ["python", "-c", TCP_SCRIPT, host.strip("[]"), port, data_b64, f"{timeout:g}"]


def parse_tcp_exec(stdout: str, stderr: str, exit_code: int, *, where: str) -> bytes:
    """The bytes that came back; ``BackendError`` for a failed connection or bad output."""
    if exit_code != 0:
        raise BackendError(f"{where}: {stderr.strip() or f'exit code {exit_code}'}")
    try:
        return base64.b64decode(stdout.strip(), validate=True)
    except (binascii.Error, ValueError) as exc:
        raise BackendError(f"{where}: output is not base64: {stdout[:80]!r}") from exc
