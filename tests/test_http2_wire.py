"""The pure parts of the HTTP/2 path: header blocks in, engine requests and answers out."""

from __future__ import annotations

import pytest

from egresskit.grpcproto import GREETER, method
from egresskit.mesh.http2_wire import (
    BadRequest,
    engine_request,
    grpc_status,
    host_only,
    proxy_answer,
    read_head,
    upstream_headers,
)
from egresskit.mesh.tcpsite import answer
from egresskit.policy.decision import Decision, HeaderEdit

GRPC_HEAD = [
    (b":method", b"POST"),
    (b":scheme", b"http"),
    (b":path", b"/helloworld.Greeter/SayHello"),
    (b":authority", b"grpc.example.com:50051"),
    (b"content-type", b"application/grpc+proto"),
    (b"x-team", b"blue"),
]


def test_read_head_splits_pseudo_headers_and_spots_grpc() -> None:
    head = read_head(GRPC_HEAD)
    assert (head.method, head.path, head.authority, head.grpc) == (
        "POST",
        "/helloworld.Greeter/SayHello",
        "grpc.example.com:50051",
        True,
    )
    assert head.headers == (("content-type", "application/grpc+proto"), ("x-team", "blue"))
    request = engine_request(head, namespace="egress-test", dst_ip="203.0.113.9", dst_port=50051)
    assert (request.http_version, request.grpc, request.host) == ("2", True, head.authority)


@pytest.mark.parametrize("missing", [b":method", b":scheme", b":path"])
def test_read_head_names_the_missing_pseudo_header(missing: bytes) -> None:
    with pytest.raises(BadRequest, match=f"expected {missing.decode()}, found none"):
        read_head([(k, v) for k, v in GRPC_HEAD if k != missing])


@pytest.mark.parametrize(
    ("authority", "host"),
    [
        ("grpc.example.com:50051", "grpc.example.com"),
        ("GRPC.Example.com.", "grpc.example.com"),
        ("[::1]:8080", "::1"),
        (None, ""),
    ],
)
def test_host_only(authority: str | None, host: str) -> None:
    assert host_only(authority) == host


def test_upstream_headers_keep_pseudo_headers_first_and_apply_edits() -> None:
    edit = HeaderEdit(add=(("X-Add", "1"),), set=(("x-team", "red"),), remove=("content-type",))
    out = upstream_headers(GRPC_HEAD, edit)
    assert out[:4] == GRPC_HEAD[:4]
    assert out[4:] == [(b"x-add", b"1"), (b"x-team", b"red")]


def _decision(**kw: object) -> Decision:
    base: dict[str, object] = {
        "outcome": "forbidden",
        "protocol": "grpc",
        "family": "grpc",
        "parent": None,
        "route": None,
        "backend": None,
    }
    base.update(kw)
    return Decision(**base)  # type: ignore[arg-type]


def test_grpc_deny_answer_is_status_7_in_a_200() -> None:
    decision = _decision(
        http_status=200,
        grpc_status="PERMISSION_DENIED",
        response_headers=(("grpc-status", "7"), ("grpc-message", "traffic not allowed")),
    )
    headers, recorded = proxy_answer(decision, grpc=True)
    assert headers[0] == (b":status", b"200")
    assert (b"grpc-status", b"7") in headers and recorded == "PERMISSION_DENIED"


def test_http_deny_of_a_grpc_request_is_failed_precondition() -> None:
    decision = _decision(
        family="http",
        protocol="detect",
        http_status=403,
        grpc_status="FAILED_PRECONDITION",
        response_headers=(("l5d-proxy-error", "traffic not allowed"),),
    )
    headers, recorded = proxy_answer(decision, grpc=True)
    assert recorded == "FAILED_PRECONDITION"
    assert (b"grpc-status", b"9") in headers and (
        b"grpc-message",
        b"traffic not allowed",
    ) in headers
    plain, none = proxy_answer(decision, grpc=False)
    assert plain[0] == (b":status", b"403") and none is None


@pytest.mark.parametrize(
    ("headers", "name"),
    [([(b"grpc-status", b"0")], "OK"), ([(b"grpc-status", b"12")], "UNIMPLEMENTED"), ([], None)],
)
def test_grpc_status(headers: list[tuple[bytes, bytes]], name: str | None) -> None:
    assert grpc_status(headers) == name


def test_methods_round_trip_and_unknown_names_are_listed() -> None:
    data = GREETER.encode_request({"name": "x"})
    assert data == b"\n\x01x"  # field 1, length-delimited: what protoc's code sends
    assert method("helloworld.Greeter/SayHello") is GREETER
    with pytest.raises(ValueError, match=r"expected one of helloworld\.Greeter/SayHello"):
        method("no.Such/Method")
    with pytest.raises(ValueError, match="request"):
        GREETER.encode_request({"nam": "typo"})


@pytest.mark.parametrize(
    ("line", "reply", "close"),
    [
        (b"PING", b"+PONG\r\n", False),
        (b"echo hello there", b"+hello there\r\n", False),
        (b"QUIT", b"+BYE\r\n", True),
        (b"GET / HTTP/1.1", b"-ERR unknown command 'GET'\r\n", False),
    ],
)
def test_tcp_site_answers(line: bytes, reply: bytes, close: bool) -> None:
    assert answer(line) == (reply, close)


def test_a_backend_without_a_grpc_client_gets_the_command_to_run() -> None:
    from egresskit import grpcguide as g
    from egresskit.errors import BackendError

    class NoClient:  # a facade without grpc()/tcp(), as the kube backend is today
        name = "kind-egresskit"

    with pytest.raises(BackendError, match=r"kubectl exec -n egress-test <pod> -- python -m "):
        g.grpc_call(NoClient(), g.SAY_HELLO, data=[{"name": "x"}])  # type: ignore[arg-type]
    with pytest.raises(BackendError, match=r"nc tcp\.example\.com 6379"):
        g.tcp_call(NoClient(), b"PING\r\n")  # type: ignore[arg-type]


def test_sample_value_sums_matching_samples() -> None:
    from egresskit.grpcguide import sample_value

    text = (
        '# TYPE x counter\nx_total{route_name="a",grpc_status="OK"} 2\n'
        'x_total{route_name="a",grpc_status="NOT_FOUND"} 1\nx_total{route_name="b"} 5\n'
    )
    assert sample_value(text, "x_total", route_name="a") == 3
    assert sample_value(text, "x_total", route_name="a", grpc_status="OK") == 2
    assert sample_value(text, "x_total", route_name="c") == 0
