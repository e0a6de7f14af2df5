"""``egresskit demo`` walks the guide's states, gRPC and TCP included."""

from __future__ import annotations

from egresskit.demo import run


def test_demo_prints_one_line_per_request() -> None:
    lines: list[str] = []
    assert run(lines.append) == 0
    text = "\n".join(lines)
    assert "http://httpbin.org/ip" in text and "FORBIDDEN via http-egress-deny HTTP 403" in text
    said = {line.split()[0]: " ".join(line.split()[1:]) for line in lines if "://" in line}
    assert (
        said["grpc://grpc.example.com:50051/helloworld.Greeter/SayHello"] == "ALLOWED via greeter"
    )
    assert said["grpc://grpc.example.com:50051/helloworld.Greeter/SayGoodbye"].startswith(
        "FORBIDDEN via grpc-egress-deny"
    )
    assert said["tcp://db.example.com:5432"] == "ALLOWED via postgres"
    assert said["tcp://db.example.com:6379"] == 'FORBIDDEN via tcp-egress-deny error="forbidden"'
