"""The simulated internet, end to end with real sockets and the real curl binary."""

from __future__ import annotations

import http.client
import json
import socket
import ssl
import subprocess
import threading
from collections.abc import Iterable, Iterator
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from wsgiref.types import StartResponse, WSGIApplication, WSGIEnvironment

import pytest

from egresskit.errors import BackendError
from egresskit.mesh.internet import ECHO_BANNER, LoopbackHTTPServer, SimulatedInternet
from egresskit.mesh.tlsca import LocalCA
from tests.resources import threads_left

CURL = "/usr/bin/curl"


def curl(*args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [CURL, "-sS", "--max-time", "20", *args],
        capture_output=True,
        text=True,
        timeout=30,
        check=False,
    )


def via(internet: SimulatedInternet, host: str, port: int) -> tuple[str, str]:
    """curl's --connect-to that sends host:port where upstream_for says."""
    ip, up_port = internet.upstream_for(host, "203.0.113.10", port)
    return "--connect-to", f"{host}:{port}:{ip}:{up_port}"


@pytest.fixture
def internet() -> Iterator[SimulatedInternet]:
    with SimulatedInternet() as net:
        yield net


def test_https_httpbin_get_is_real_httpbin(internet: SimulatedInternet) -> None:
    out = curl(
        "--cacert",
        str(internet.ca_file),
        *via(internet, "httpbin.org", 443),
        "https://httpbin.org/get?a=1",
    )
    assert out.returncode == 0, out.stderr
    body = json.loads(out.stdout)
    assert body["url"] == "https://httpbin.org/get?a=1"
    assert body["args"] == {"a": "1"}
    assert body["headers"]["Host"] == "httpbin.org"
    assert body["origin"] == "127.0.0.1"


def test_http_httpbin_ip_reports_the_loopback_origin(internet: SimulatedInternet) -> None:
    out = curl(*via(internet, "httpbin.org", 80), "http://httpbin.org/ip")
    assert out.returncode == 0, out.stderr
    assert json.loads(out.stdout) == {"origin": "127.0.0.1"}


@pytest.mark.parametrize(
    ("path", "status", "needle"),
    [
        ("/status/418", 418, "teapot"),
        ("/headers", 200, '"Host": "httpbin.org"'),
        ("/anything/x?q=1", 200, '"url": "http://httpbin.org/anything/x?q=1"'),
        ("/get", 200, '"url": "http://httpbin.org/get"'),
    ],
    ids=["status-418", "headers", "anything", "get"],
)
def test_httpbin_endpoints_behave_as_httpbin(
    internet: SimulatedInternet, path: str, status: int, needle: str
) -> None:
    out = curl(
        *via(internet, "httpbin.org", 80), "-w", "\n%{http_code}", f"http://httpbin.org{path}"
    )
    assert out.returncode == 0, out.stderr
    body, _, code = out.stdout.rpartition("\n")
    assert int(code) == status
    assert needle in body


def test_https_other_host_gets_the_echo_site_with_a_valid_certificate(
    internet: SimulatedInternet,
) -> None:
    out = curl(
        "--cacert",
        str(internet.ca_file),
        *via(internet, "github.com", 443),
        "-H",
        "X-Probe: 1",
        "https://github.com/some/path?x=y",
    )
    assert out.returncode == 0, out.stderr
    body = json.loads(out.stdout)
    assert body["simulated_internet"] == ECHO_BANNER
    assert (body["scheme"], body["host"], body["method"]) == ("https", "github.com", "GET")
    assert (body["path"], body["query"]) == ("/some/path", "x=y")
    assert body["headers"]["X-Probe"] == "1"


def test_plaintext_on_any_port_gets_the_echo_site(internet: SimulatedInternet) -> None:
    out = curl(*via(internet, "example.com", 8080), "-d", "hello", "http://example.com:8080/p")
    assert out.returncode == 0, out.stderr
    body = json.loads(out.stdout)
    assert (body["scheme"], body["host"], body["method"], body["body"]) == (
        "http",
        "example.com",
        "POST",
        "hello",
    )


def test_a_client_without_sni_gets_the_default_certificate(internet: SimulatedInternet) -> None:
    host, port = internet.https_address
    out = curl("--cacert", str(internet.ca_file), f"https://{host}:{port}/")
    assert out.returncode == 0, out.stderr
    assert json.loads(out.stdout)["host"] == "127.0.0.1"


def test_a_wrong_ca_fails_verification(internet: SimulatedInternet, tmp_path: Path) -> None:
    other = LocalCA().ca_pem_path(tmp_path)
    out = curl(
        "--cacert", str(other), *via(internet, "httpbin.org", 443), "https://httpbin.org/get"
    )
    assert out.returncode == 60, out.stderr


@pytest.mark.parametrize("scheme", ["http", "https"])
def test_two_urls_in_one_curl_reuse_the_connection(
    internet: SimulatedInternet, scheme: str
) -> None:
    port = 443 if scheme == "https" else 80
    out = curl(
        "--cacert",
        str(internet.ca_file),
        *via(internet, "httpbin.org", port),
        "-o",
        "/dev/null",
        "-o",
        "/dev/null",
        "-w",
        "%{num_connects} ",
        f"{scheme}://httpbin.org/get",
        f"{scheme}://httpbin.org/ip",
    )
    assert out.returncode == 0, out.stderr
    assert out.stdout.split() == ["1", "0"]


def test_concurrent_tls_clients_are_all_served(internet: SimulatedInternet) -> None:
    ip, port = internet.https_address
    ctx = internet.ca.client_context()

    def fetch(i: int) -> tuple[int, str]:
        conn = http.client.HTTPSConnection(ip, port, context=ctx, timeout=20)
        conn.sock = ctx.wrap_socket(
            socket.create_connection((ip, port), timeout=20), server_hostname=f"h{i}.example"
        )
        try:
            conn.request("GET", f"/n/{i}", headers={"Host": f"h{i}.example"})
            resp = conn.getresponse()
            return resp.status, json.loads(resp.read())["host"]
        finally:
            conn.close()

    with ThreadPoolExecutor(8) as pool:
        results = list(pool.map(fetch, range(24)))
    assert results == [(200, f"h{i}.example") for i in range(24)]


# ------------------------------------------------------------------ upstream_for


def _app(text: str) -> WSGIApplication:
    def app(environ: WSGIEnvironment, start_response: StartResponse) -> Iterable[bytes]:
        start_response("200 OK", [("Content-Type", "text/plain")])
        return [text.encode()]

    return app


@pytest.fixture
def overrides() -> Iterator[tuple[LoopbackHTTPServer, LoopbackHTTPServer]]:
    with (
        LoopbackHTTPServer(_app("any-port"), name="api") as api,
        LoopbackHTTPServer(_app("port-8443"), name="api8443") as api8443,
    ):
        yield api, api8443


def test_upstream_overrides_answer_for_their_hostname(
    overrides: tuple[LoopbackHTTPServer, LoopbackHTTPServer],
) -> None:
    api, api8443 = overrides
    upstreams = {
        "API.example.com.": "{}:{}".format(*api.address),
        "api.example.com:8443": "{}:{}".format(*api8443.address),
    }
    with SimulatedInternet(upstreams=upstreams) as net:
        assert net.upstream_for("api.example.com", "198.51.100.1", 80) == api.address
        assert net.upstream_for("api.example.com", "198.51.100.1", 443) == api.address
        assert net.upstream_for("api.example.com", "198.51.100.1", 8443) == api8443.address
        out = curl(*via(net, "api.example.com", 80), "http://api.example.com/")
        assert (out.returncode, out.stdout) == (0, "any-port")
        out = curl(*via(net, "api.example.com", 8443), "http://api.example.com:8443/")
        assert (out.returncode, out.stdout) == (0, "port-8443")


@pytest.mark.parametrize(
    ("host", "ip", "port", "tls", "expected"),
    [
        ("httpbin.org", "1.2.3.4", 80, None, "http"),
        ("httpbin.org", "1.2.3.4", 443, None, "https"),
        ("httpbin.org", "1.2.3.4", 8443, True, "https"),
        ("httpbin.org", "1.2.3.4", 443, False, "http"),
        (None, "1.2.3.4", 5000, None, "http"),
        (None, "1.2.3.4", 443, None, "https"),
        ("other.org", "192.0.2.7", 443, None, "ip-override"),
        ("x.org", "192.0.2.8", 9000, None, "ip-port-override"),
        ("x.org", "192.0.2.8", 9001, None, "http"),
    ],
    ids=[
        "port-80-plaintext",
        "port-443-tls",
        "marked-tls",
        "marked-plaintext-on-443",
        "no-host",
        "no-host-443",
        "ip-override",
        "ip-port-override",
        "ip-port-override-other-port",
    ],
)
def test_upstream_rule(
    host: str | None, ip: str, port: int, tls: bool | None, expected: str
) -> None:
    upstreams = {"192.0.2.7": "127.0.0.1:7", "192.0.2.8:9000": "127.0.0.1:8"}
    with SimulatedInternet(upstreams=upstreams) as net:
        where = {
            "http": net.http_address,
            "https": net.https_address,
            "ip-override": ("127.0.0.1", 7),
            "ip-port-override": ("127.0.0.1", 8),
        }[expected]
        assert net.upstream_for(host, ip, port, tls=tls) == where


@pytest.mark.parametrize(
    ("key", "value", "message"),
    [
        ("a.example", "127.0.0.1", "'a.example': expected 'host:port' with a port 1-65535"),
        ("a.example", "127.0.0.1:0", "found '127.0.0.1:0'"),
        ("a.example", 9000, "found 9000"),
        ("a.example:x", "127.0.0.1:1", "'a.example:x': key: expected a port 1-65535, found 'x'"),
    ],
    ids=["no-port", "port-zero", "not-a-string", "bad-key-port"],
)
def test_bad_overrides_are_refused(key: str, value: object, message: str) -> None:
    with pytest.raises(BackendError, match="SimulatedInternet") as info:
        SimulatedInternet(upstreams={key: value})  # type: ignore[dict-item]
    assert message in str(info.value)


# ------------------------------------------------------------------ lifecycle


def test_close_joins_every_thread_frees_the_ports_and_removes_the_ca() -> None:
    before = set(threading.enumerate())
    net = SimulatedInternet().start()
    addresses = [net.http_address, net.https_address]
    ca_file = net.ca_file
    # Leave a keep-alive connection open across close(): close() must still end it.
    idle = socket.create_connection(addresses[0], timeout=5)
    idle.sendall(b"GET /get HTTP/1.1\r\nHost: httpbin.org\r\n\r\n")
    assert idle.recv(12).startswith(b"HTTP/1.1 200")
    assert ca_file.is_file()
    assert set(threading.enumerate()) - before, "the servers' threads run"
    net.close()
    idle.close()
    # grpc's own cancel-after-grace thread may still be ending: a bounded wait.
    assert threads_left(before) == []
    assert not ca_file.exists()
    for address in addresses:
        with pytest.raises(ConnectionRefusedError):
            socket.create_connection(address, timeout=5).close()
    net.close()  # idempotent


def test_close_during_a_request_in_flight_and_with_a_silent_client() -> None:
    entered, release = threading.Event(), threading.Event()

    def slow(environ: WSGIEnvironment, start_response: StartResponse) -> Iterable[bytes]:
        entered.set()
        release.wait(5)
        start_response("200 OK", [("Content-Type", "text/plain")])
        return [b"late"]

    before = set(threading.enumerate())
    ca = LocalCA()
    server = LoopbackHTTPServer(slow, name="slow", ssl_context=ca.server_context()).start()
    # A client that never sends its ClientHello blocks neither other clients nor close().
    with socket.create_connection(server.address, timeout=5) as silent:
        client = ca.client_context().wrap_socket(
            socket.create_connection(server.address, timeout=5), server_hostname="x.example"
        )
        with client:
            client.sendall(b"GET / HTTP/1.1\r\nHost: x.example\r\n\r\n")
            assert entered.wait(5)
            timer = threading.Timer(0.2, release.set)  # the app finishes while close() waits
            timer.start()
            server.close()
            timer.join(5)
        assert silent.recv(1) == b""  # closed by the server
    assert threads_left(before, within=0) == []  # close() joined them


def test_addresses_before_start_say_so() -> None:
    net = SimulatedInternet()
    with pytest.raises(BackendError, match="not started"):
        _ = net.ca_file
    with pytest.raises(BackendError, match="not started"):
        _ = net.https_address


# ------------------------------------------------------------------ the CA


def test_local_ca_issues_a_certificate_per_sni_name(tmp_path: Path) -> None:
    ca = LocalCA()
    with LoopbackHTTPServer(_app("ok"), name="tls", ssl_context=ca.server_context()) as srv:
        ctx = ssl.create_default_context(cafile=str(ca.ca_pem_path(tmp_path)))
        for name in ("github.com", "Sub.Example.ORG"):
            with (
                socket.create_connection(srv.address, timeout=5) as raw,
                ctx.wrap_socket(raw, server_hostname=name) as tls,
            ):
                cert = tls.getpeercert()
                assert cert is not None
                sans = cert["subjectAltName"]
                assert sans == (("DNS", name.lower()),)
                assert tls.selected_alpn_protocol() in (None, "http/1.1")


def test_local_ca_caches_contexts_and_is_thread_safe() -> None:
    ca = LocalCA(max_cached_hosts=2)
    with ThreadPoolExecutor(8) as pool:
        contexts = list(pool.map(lambda _: ca.context_for("same.example"), range(16)))
    assert all(c is contexts[0] for c in contexts)
    ca.context_for("b.example")
    ca.context_for("c.example")  # evicts same.example, the least recently used
    assert ca.context_for("SAME.example.") is not contexts[0]
