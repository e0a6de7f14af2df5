"""In-cluster workloads: the guide's bb terminus as a loopback server, read like bb reads it."""

from __future__ import annotations

import json
import re
import socket
import subprocess
import threading
from collections.abc import Iterator

import pytest

from egresskit.errors import UnsupportedWorkload
from egresskit.manifests.model import Container, ContainerPort
from egresskit.mesh.workloads import CAN_RUN, RunningWorkload, parse_terminus, start_workload
from tests.resources import threads_left

CURL = "/usr/bin/curl"
GUIDE_ARGS = (
    "/out/bb terminus --h1-server-port 80 --response-text 'You cannot go there right now'"
    " --fire-and-forget"
)
GUIDE = Container(
    name="legacy-app",
    image="buoyantio/bb:v0.0.5",
    command=("sh", "-c"),
    args=(GUIDE_ARGS,),
    ports=(ContainerPort(container_port=80, name="http-port"),),
)
UID = re.compile(r"^in:http-sid:terminus-grpc:-1-h1:80-\d+$")


def curl(*args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [CURL, "-sS", "--max-time", "20", *args],
        capture_output=True,
        text=True,
        timeout=30,
        check=False,
    )


def url(workload: RunningWorkload, path: str = "/") -> str:
    host, port = workload.address
    return f"http://{host}:{port}{path}"


@pytest.fixture
def terminus() -> Iterator[RunningWorkload]:
    with start_workload(GUIDE) as workload:
        yield workload


def test_the_guides_terminus_answers_like_bb(terminus: RunningWorkload) -> None:
    out = curl("-H", "Host: google.com", "-w", "\n%{http_code} %{content_type}", url(terminus))
    assert out.returncode == 0, out.stderr
    body, _, status = out.stdout.rpartition("\n")
    assert status == "200 text/plain; charset=utf-8"
    answer = json.loads(body)
    assert list(answer) == ["requestUID", "payload"]
    assert UID.match(answer["requestUID"]), answer
    assert answer["payload"] == "You cannot go there right now"
    # jsonpb's compact form, as bb writes it.
    assert body.startswith('{"requestUID":"in:http-sid:terminus-grpc:-1-h1:80-')
    assert body.endswith('","payload":"You cannot go there right now"}')
    assert terminus.container_port == 80


def test_every_method_and_path_gets_the_same_answer_over_one_connection(
    terminus: RunningWorkload,
) -> None:
    out = curl(
        "-X", "DELETE", "-w", "\n%{num_connects}\n", url(terminus, "/a"), url(terminus, "/b/c?d=e")
    )
    assert out.returncode == 0, out.stderr
    lines = out.stdout.splitlines()
    assert [json.loads(lines[i])["payload"] for i in (0, 2)] == [
        "You cannot go there right now"
    ] * 2
    assert (lines[1], lines[3]) == ("1", "0")


def test_a_request_body_carries_the_request_uid(terminus: RunningWorkload) -> None:
    out = curl("-d", '{"requestUID":"abc-1"}', url(terminus))
    assert json.loads(out.stdout) == {
        "requestUID": "abc-1",
        "payload": "You cannot go there right now",
    }


def test_a_body_that_is_not_a_request_is_a_500_like_bb(terminus: RunningWorkload) -> None:
    out = curl("-d", "hello", "-w", "%{http_code}", url(terminus))
    assert out.stdout == "error unmarshalling the request: hello\n500"


@pytest.mark.parametrize(
    ("container", "uid_prefix", "payload", "port"),
    [
        (
            Container(
                name="c",
                image="buoyantio/bb:v0.0.5",
                command=("/out/bb",),
                args=("terminus", "--h1-server-port=8080", "--response-text=hi <&>"),
            ),
            "in:http-sid:terminus-grpc:-1-h1:8080-",
            "hi <&>",
            8080,
        ),
        (
            Container(
                name="c",
                image="docker.io/buoyantio/bb",
                args=("terminus", "--h1-server-port", "9", "--id", "me"),
            ),
            "in:http-sid:me-",
            None,
            9,
        ),
        (
            Container(
                name="c",
                image="buoyantio/bb@sha256:" + "0" * 64,
                command=("bash", "-c"),
                args=("exec bb terminus --h1-server-port 80 --response-text=x",),
            ),
            "in:http-sid:terminus-grpc:-1-h1:80-",
            "x",
            80,
        ),
    ],
    ids=["direct-command", "image-entrypoint-and-id", "bash-exec-digest"],
)
def test_other_forms_of_the_command_line(
    container: Container, uid_prefix: str, payload: str | None, port: int
) -> None:
    with start_workload(container) as workload:
        out = curl("-w", "\n%{http_code}", url(workload))
    body, _, status = out.stdout.rpartition("\n")
    assert status == "200"
    answer = json.loads(body)
    assert answer["requestUID"].startswith(uid_prefix)
    if payload is None:  # bb's default text
        assert re.fullmatch(r"terminus at \[\d+\]", answer["payload"])
    else:
        assert answer["payload"] == payload
        assert "<" not in body  # Go's encoding/json escapes <, > and &
    assert workload.container_port == port


def test_percent_failure_100_fails_every_request() -> None:
    container = Container(
        name="c",
        image="buoyantio/bb",
        args=("terminus", "--h1-server-port", "80", "--percent-failure", "100"),
    )
    with start_workload(container) as workload:
        out = curl("-w", "%{http_code}", url(workload))
    assert out.stdout == (
        "error handling http request: this error was injected by [terminus-grpc:-1-h1:80]\n500"
    )


@pytest.mark.parametrize(
    ("image", "command", "args", "found"),
    [
        ("nginx:1.25", (), (), "this image is not emulated"),
        ("curlimages/curl", ("sh", "-c"), ("sleep infinity",), "this image is not emulated"),
        ("localhost:5000/buoyantio/bb:v1", (), ("terminus",), "this image is not emulated"),
        (
            "buoyantio/bb:v0.0.5",
            (),
            ("point-to-point-channel", "--h1-server-port", "80"),
            "bb mode 'point-to-point-channel'",
        ),
        ("buoyantio/bb", (), (), "bb mode '(none)'"),
        ("buoyantio/bb", (), ("terminus",), "no --h1-server-port or --grpc-server-port"),
        (
            "buoyantio/bb",
            (),
            ("terminus", "--h1-server-port", "80", "--bogus"),
            "unknown bb flag --bogus",
        ),
        (
            "buoyantio/bb",
            (),
            ("terminus", "--h1-server-port", "eighty"),
            "--h1-server-port 'eighty' is not an integer",
        ),
        (
            "buoyantio/bb",
            (),
            ("terminus", "--h1-server-port"),
            "flag --h1-server-port needs a value",
        ),
        (
            "buoyantio/bb",
            ("sh", "-c"),
            ("/out/bb terminus --h1-server-port 80 && sleep 1",),
            "shell operators ['&&']",
        ),
        ("buoyantio/bb", ("sh", "-c"), ("/out/bb terminus 'unclosed",), "cannot split the shell"),
        (
            "buoyantio/bb",
            ("/bin/echo",),
            ("terminus",),
            "command '/bin/echo terminus' does not run bb",
        ),
        (
            "buoyantio/bb",
            (),
            ("terminus", "--h1-server-port", "80", "--h1-downstream-server", "http://x"),
            "--h1-downstream-server: a terminus takes no downstream services",
        ),
        (
            "buoyantio/bb",
            (),
            ("terminus", "--h1-server-port", "80", "--terminate-after", "3"),
            "--terminate-after",
        ),
    ],
    ids=[
        "nginx",
        "curl-image",
        "other-registry",
        "other-bb-mode",
        "no-mode",
        "no-port",
        "unknown-flag",
        "non-integer-port",
        "flag-without-value",
        "shell-operators",
        "unbalanced-quote",
        "not-bb",
        "downstreams",
        "terminate-after",
    ],
)
def test_what_the_local_backend_cannot_run_is_refused(
    image: str, command: tuple[str, ...], args: tuple[str, ...], found: str
) -> None:
    container = Container(name="legacy-app", image=image, command=command, args=args)
    with pytest.raises(UnsupportedWorkload) as info:
        start_workload(container)
    message = str(info.value)
    assert message.startswith(f"container 'legacy-app' (image '{image}'): ")
    assert found in message
    assert message.endswith(CAN_RUN)
    assert "buoyantio/bb" in CAN_RUN and "terminus" in CAN_RUN


def test_parse_terminus_reads_the_guides_container() -> None:
    config = parse_terminus(GUIDE)
    assert config.h1_server_port == 80
    assert config.response_text == "You cannot go there right now"
    assert config.service_id == "terminus-grpc:-1-h1:80"


def test_close_joins_every_thread_and_frees_the_port() -> None:
    before = set(threading.enumerate())
    workload = start_workload(GUIDE)
    address = workload.address
    assert curl(url(workload)).returncode == 0
    workload.close()
    # grpc's own cancel-after-grace thread may still be ending: a bounded wait.
    assert threads_left(before) == []
    with pytest.raises(ConnectionRefusedError):
        socket.create_connection(address, timeout=5).close()
    workload.close()  # idempotent


def test_a_grpc_terminus_serves_the_function_and_refuses_other_services() -> None:
    from egresskit.grpcclient import call

    container = Container(
        name="legacy-grpc",
        image="buoyantio/bb:v0.0.5",
        args=("terminus", "--grpc-server-port", "9090", "--response-text", "inside"),
    )
    with start_workload(container) as w:
        assert w.container_port == 9090 and w.address_for(80) is None
        host, port = w.address
        connect_to = f"internal-grpc:9090:{host}:{port}"
        ok = call(
            "internal-grpc:9090", "buoyantio.bb.TheService/theFunction", connect_to=connect_to
        )
        assert ok.ok and ok.responses[0]["payload"] == "inside"
        assert ok.responses[0]["requestUID"].startswith("in:grpc-sid:terminus-grpc:9090-h1:-1-")
        other = call("internal-grpc:9090", "helloworld.Greeter/SayHello", connect_to=connect_to)
        # grpc-go's answer for a service it does not serve (bb is Go).
        assert (other.code, other.details) == (
            "UNIMPLEMENTED",
            "unknown service helloworld.Greeter",
        )
