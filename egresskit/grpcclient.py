"""``python -m egresskit.grpcclient``: a small gRPC client command, the kit's grpcurl.

Job: make one gRPC call (any streaming shape) to ``host:port`` the way a pod's application
would, and report the status the client saw. It knows the methods of
:mod:`egresskit.grpcproto` (no reflection, no codegen). grpcurl is not packaged for this
machine; this runs wherever Python and grpcio are (the local backend runs it "inside" a pod
as it runs curl; on kind, from a pod image that has egresskit, see docs/local-backend.md).

    python -m egresskit.grpcclient grpc.example.com:50051 helloworld.Greeter/SayHello \\
        -d '{"name": "learner"}' -H 'x-team: blue'

* ``-d JSON`` is one request message (repeat it for client and bidi streaming);
* ``-H 'name: value'`` adds metadata (request headers, which GRPCRoute header matches see);
* ``--connect-to HOST:PORT:ADDR:APORT`` connects to ``ADDR:APORT`` while ``:authority``
  stays ``HOST:PORT`` (curl's option of the same name);
* ``--json`` prints one JSON object (status, details, responses, metadata) instead of text.

The exit code is the gRPC status code (0 OK, 7 PERMISSION_DENIED, 14 UNAVAILABLE, ...), and
2 for a bad command line.
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from collections.abc import Sequence
from dataclasses import asdict, dataclass, field
from typing import Any

import grpc

from egresskit.grpcproto import Method, method


@dataclass(frozen=True, kw_only=True)
class GrpcCallResult:
    """What one gRPC call gave, as the client saw it."""

    target: str
    method: str
    code: str
    code_number: int
    details: str
    responses: list[dict[str, Any]] = field(default_factory=list)
    initial_metadata: list[tuple[str, str]] = field(default_factory=list)
    trailing_metadata: list[tuple[str, str]] = field(default_factory=list)
    time_total: float = 0.0

    @property
    def ok(self) -> bool:
        return self.code == "OK"

    def summary(self) -> str:
        text = f"grpc-status: {self.code} ({self.code_number})"
        return f"{text}: {self.details}" if self.details else text


def _metadata(md: Any) -> list[tuple[str, str]]:
    out = []
    for item in md or ():
        key, value = item[0], item[1]
        out.append((str(key), value.decode("latin-1") if isinstance(value, bytes) else value))
    return out


def parse_header(text: str) -> tuple[str, str]:
    name, sep, value = text.partition(":")
    if not sep or not name.strip():
        raise ValueError(f"-H {text!r}: expected 'name: value'")
    return name.strip().lower(), value.strip()


def call(
    target: str,
    method_name: str,
    *,
    messages: Sequence[dict[str, Any]] = (),
    metadata: Sequence[tuple[str, str]] = (),
    connect_to: str | None = None,
    timeout: float = 10.0,
) -> GrpcCallResult:
    """Make one call; ``ValueError`` for a bad target, method or message."""
    m = method(method_name)
    host, sep, port = target.rpartition(":")
    if not sep or not host or not port.isdigit():
        raise ValueError(f"target {target!r}: expected host:port")
    address = target
    if connect_to:
        parts = connect_to.rsplit(":", 3)
        if len(parts) != 4 or f"{parts[0]}:{parts[1]}" != target or not parts[3].isdigit():
            raise ValueError(f"--connect-to {connect_to!r}: expected {target}:ADDR:PORT")
        address = f"{parts[2]}:{parts[3]}"
    bodies = [m.encode_request(msg) for msg in (messages or [{}])]
    options = [("grpc.default_authority", target), ("grpc.enable_http_proxy", 0)]
    started = time.monotonic()
    with grpc.insecure_channel(address, options=options) as channel:
        return _invoke(channel, m, target, bodies, list(metadata), timeout, started)


def _invoke(
    channel: grpc.Channel,
    m: Method,
    target: str,
    bodies: list[bytes],
    metadata: list[tuple[str, str]],
    timeout: float,
    started: float,
) -> GrpcCallResult:
    responses: list[bytes] = []
    rpc_call: Any = None
    try:
        if m.shape == "unary":
            body, rpc_call = channel.unary_unary(m.path).with_call(
                bodies[0], metadata=metadata, timeout=timeout
            )
            responses.append(body)
        elif m.shape == "client_stream":
            body, rpc_call = channel.stream_unary(m.path).with_call(
                iter(bodies), metadata=metadata, timeout=timeout
            )
            responses.append(body)
        else:
            if m.shape == "server_stream":
                rpc_call = channel.unary_stream(m.path)(
                    bodies[0], metadata=metadata, timeout=timeout
                )
            else:
                rpc_call = channel.stream_stream(m.path)(
                    iter(bodies), metadata=metadata, timeout=timeout
                )
            responses.extend(rpc_call)
        status = grpc.StatusCode.OK
        details = ""
    except grpc.RpcError as exc:
        rpc_call = exc
        status = exc.code()
        details = exc.details() or ""
    return GrpcCallResult(
        target=target,
        method=m.path.lstrip("/"),
        code=status.name,
        code_number=int(status.value[0]),
        details=details,
        responses=[m.decode_response(b) for b in responses],
        initial_metadata=_metadata(rpc_call.initial_metadata() if rpc_call else ()),
        trailing_metadata=_metadata(rpc_call.trailing_metadata() if rpc_call else ()),
        time_total=time.monotonic() - started,
    )


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        prog="python -m egresskit.grpcclient", description=__doc__.split("\n\n")[0]
    )
    parser.add_argument("target", help="host:port")
    parser.add_argument("method", help="package.Service/Method")
    parser.add_argument("-d", "--data", action="append", default=[], help="a JSON message")
    parser.add_argument("-H", "--header", action="append", default=[], help="'name: value'")
    parser.add_argument("--connect-to", default=None, help="HOST:PORT:ADDR:APORT")
    parser.add_argument("--timeout", type=float, default=10.0, help="seconds (default 10)")
    parser.add_argument("--json", action="store_true", help="print one JSON object")
    args = parser.parse_args(argv)
    try:
        messages = [json.loads(d) for d in args.data]
        if not all(isinstance(msg, dict) for msg in messages):
            raise ValueError("-d: expected a JSON object")
        metadata = [parse_header(h) for h in args.header]
        result = call(
            args.target,
            args.method,
            messages=messages,
            metadata=metadata,
            connect_to=args.connect_to,
            timeout=args.timeout,
        )
    except (ValueError, json.JSONDecodeError) as exc:
        print(f"grpcclient: {exc}", file=sys.stderr)
        return 2
    if args.json:
        print(json.dumps(asdict(result)))
    else:
        for response in result.responses:
            print(json.dumps(response))
        print(result.summary(), file=sys.stderr)
    return result.code_number


if __name__ == "__main__":
    raise SystemExit(main())
