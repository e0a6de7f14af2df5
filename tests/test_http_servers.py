"""The servers behind the proxy are correct HTTP servers (issue 11, item 3).

Through the local mesh with real clients: curl -I (HEAD) on the echo site, on httpbin and on
the emulated ``bb terminus`` workload; a chunked request body accepted by the simulated
httpbin as httpbin.org (gunicorn) accepts it; a bad Host port answered 400 by the server
itself; and httpx against two dozen httpbin endpoints, answering as httpbin does.
"""

from __future__ import annotations

import base64
import json
import socket
import uuid
from collections.abc import Callable, Iterable, Iterator
from typing import Any
from wsgiref.types import StartResponse, WSGIEnvironment

import httpx
import pytest

import egresskit
from egresskit import guide
from egresskit.cluster.local import LocalCluster
from egresskit.mesh.internet import ECHO_BANNER, SimulatedInternet
from egresskit.mesh.wsgi_http import head_without_body, host_is_valid

NS = guide.NAMESPACE_NAME
WAIT = 10.0


@pytest.fixture(scope="module")
def mesh() -> Iterator[LocalCluster]:
    """The guide's cluster with the EgressNetwork in Allow: every request goes out."""
    with egresskit.connect("local") as cluster:
        assert isinstance(cluster, LocalCluster)
        cluster.apply([guide.NAMESPACE, guide.EGRESS_NETWORK, guide.CLIENT_POD])
        yield cluster


def curl(mesh: LocalCluster, *args: str) -> egresskit.cluster.base.CurlResult:
    return mesh.curl("-sS", "--max-time", "10", *args, pod="client", namespace=NS)


# ------------------------------------------------------------------------- HEAD


@pytest.mark.parametrize(
    ("url", "header"),
    [
        ("http://example.com/anything", "content-type: application/json"),
        ("http://httpbin.org/get", "access-control-allow-origin: *"),
    ],
    ids=["echo-site", "httpbin"],
)
def test_head_is_answered_without_a_body(mesh: LocalCluster, url: str, header: str) -> None:
    get = curl(mesh, url)
    head = curl(mesh, "-I", url)
    assert (head.exit_code, head.http_status) == (0, 200), head.stderr
    lines = head.stdout.lower().splitlines()
    assert header in lines
    # curl -I prints the head only; a body after it would be a protocol error (exit 8).
    assert head.stdout.endswith("\r\n\r\n")
    if "httpbin" in url:  # same headers as a GET (RFC 9110 9.3.2), the length included
        assert f"content-length: {len(get.stdout.encode())}" in lines


def test_head_on_the_bb_terminus_workload() -> None:
    with egresskit.connect("local") as cluster:
        cluster.apply(
            [
                guide.NAMESPACE,
                guide.EGRESS_NETWORK,
                guide.CLIENT_POD,
                guide.INTERNAL_EGRESS,
                guide.UNENCRYPTED_HTTP_ROUTE,  # every plaintext request -> internal-egress
            ]
        )
        get = cluster.curl("-sS", "http://example.com/x", pod="client", namespace=NS)
        assert get.http_status == 200 and '"requestUID":"in:http-sid:' in get.stdout
        head = cluster.curl("-sS", "-I", "http://example.com/x", pod="client", namespace=NS)
        assert (head.exit_code, head.http_status) == (0, 200), head.stderr
        assert "content-type: text/plain; charset=utf-8" in head.stdout.lower().splitlines()
        assert head.stdout.endswith("\r\n\r\n")


# ---------------------------------------------------------------- chunked bodies


def test_chunked_request_body_is_accepted_as_httpbin_org_accepts_it(mesh: LocalCluster) -> None:
    # The command: curl sends the body as a form, and httpbin reads it as one.
    chunked = ("-H", "Transfer-Encoding: chunked", "--data-binary", "hello")
    out = curl(mesh, *chunked, "http://httpbin.org/post")
    assert out.http_status == 200, out.stdout
    body = json.loads(out.stdout)
    assert (body["form"], body["headers"]["Transfer-Encoding"]) == ({"hello": ""}, "chunked")
    plain = curl(mesh, *chunked, "-H", "Content-Type: text/plain", "http://httpbin.org/post")
    assert json.loads(plain.stdout)["data"] == "hello"
    echo = curl(mesh, *chunked, "http://example.com/post")
    assert json.loads(echo.stdout)["body"] == "hello"


def test_bad_host_port_is_a_400_from_the_server_itself() -> None:
    # RFC 9112 3.2; the proxy in front should refuse it first (issue 11), but the server
    # must not crash on it either.
    with SimulatedInternet() as internet, socket.create_connection(internet.http_address) as s:
        s.settimeout(WAIT)
        s.sendall(b"GET / HTTP/1.1\r\nHost: example.com:MPLE\r\n\r\n")
        data = b""
        while b"\r\n\r\n" not in data:
            chunk = s.recv(4096)
            assert chunk, f"the server closed without a response after {data!r}"
            data += chunk
        assert data.startswith(b"HTTP/1.1 400 Bad Request\r\n")
        # ...and the server keeps serving; an empty port is a valid one (RFC 3986 3.2.3).
        with socket.create_connection(internet.http_address) as again:
            again.settimeout(WAIT)
            again.sendall(b"GET / HTTP/1.1\r\nHost: example.com:\r\nConnection: close\r\n\r\n")
            reply = b""
            while chunk := again.recv(65536):
                reply += chunk
        assert reply.startswith(b"HTTP/1.1 200 OK") and ECHO_BANNER.encode() in reply


# ------------------------------------------------------------ httpx vs httpbin


class ViaMesh(httpx.BaseTransport):
    """Sends each request to the client pod's port-80 listener with its URL's Host, as the
    pod's iptables would (curl's ``--connect-to``); redirects and cookies keep the real URL."""

    def __init__(self, port: int) -> None:
        self._inner = httpx.HTTPTransport()
        self._port = port

    def handle_request(self, request: httpx.Request) -> httpx.Response:
        assert request.url.scheme == "http" and request.url.port in (None, 80)
        sent = httpx.Request(
            request.method,
            request.url.copy_with(host="127.0.0.1", port=self._port),
            headers=request.headers,  # Host: httpbin.org, from the real URL
            stream=request.stream,
            extensions=request.extensions,
        )
        return self._inner.handle_request(sent)

    def close(self) -> None:
        self._inner.close()


@pytest.fixture(scope="module")
def client(mesh: LocalCluster) -> Iterator[httpx.Client]:
    port = mesh.outbound_ports("client", namespace=NS)[80]
    with httpx.Client(base_url="http://httpbin.org", transport=ViaMesh(port), timeout=WAIT) as c:
        yield c


def _chunks() -> Iterator[bytes]:
    yield b"hel"
    yield b"lo"


Check = Callable[[httpx.Client], None]


def _get(c: httpx.Client) -> None:
    r = c.get("/get", params={"a": "1"}, headers={"X-Egress": "yes"})
    body = r.json()
    assert (r.status_code, body["args"], body["url"]) == (
        200,
        {"a": "1"},
        "http://httpbin.org/get?a=1",
    )
    assert body["headers"]["X-Egress"] == "yes" and body["headers"]["Host"] == "httpbin.org"


def _method(name: str) -> Check:
    def check(c: httpx.Client) -> None:
        r = c.request(name.upper(), f"/{name}", content=b"payload")
        assert r.status_code == 200 and r.json()["data"] == "payload"
        assert r.json()["url"] == f"http://httpbin.org/{name}"

    return check


def _post_json(c: httpx.Client) -> None:
    r = c.post("/post", json={"route": "httpbin-get"})
    assert r.json()["json"] == {"route": "httpbin-get"}


def _post_form(c: httpx.Client) -> None:
    r = c.post("/anything", data={"k": "v"})
    assert (r.json()["form"], r.json()["method"]) == ({"k": "v"}, "POST")


def _post_chunked(c: httpx.Client) -> None:
    r = c.post("/post", content=_chunks())  # httpx sends an iterator chunked
    assert r.status_code == 200 and r.json()["data"] == "hello"
    assert r.json()["headers"]["Transfer-Encoding"] == "chunked"


def _status(code: int) -> Check:
    def check(c: httpx.Client) -> None:
        r = c.get(f"/status/{code}")
        assert r.status_code == code
        if code == 204:
            assert r.content == b""

    return check


def _ip(c: httpx.Client) -> None:
    assert c.get("/ip").json() == {"origin": "127.0.0.1"}


def _user_agent(c: httpx.Client) -> None:
    assert c.get("/user-agent").json()["user-agent"].startswith("python-httpx/")


def _response_headers(c: httpx.Client) -> None:
    r = c.get("/response-headers", params={"X-Answer": "42"})
    assert r.headers["X-Answer"] == "42"


def _redirects(c: httpx.Client) -> None:
    r = c.get("/redirect/3", follow_redirects=True)
    assert [h.status_code for h in r.history] == [302, 302, 302]
    assert str(r.url) == "http://httpbin.org/get" and r.json()["url"] == "http://httpbin.org/get"


def _redirect_to(c: httpx.Client) -> None:
    r = c.get("/redirect-to", params={"url": "/ip", "status_code": "307"})
    assert (r.status_code, r.headers["Location"]) == (307, "/ip")


def _cookies(c: httpx.Client) -> None:
    r = c.get("/cookies/set", params={"flavour": "oat"}, follow_redirects=True)
    assert r.json() == {"cookies": {"flavour": "oat"}}


def _basic_auth(c: httpx.Client) -> None:
    assert c.get("/basic-auth/u/p").status_code == 401
    r = c.get("/basic-auth/u/p", auth=("u", "p"))
    assert r.json() == {"authenticated": True, "user": "u"}


def _bytes(c: httpx.Client) -> None:
    r = c.get("/bytes/4096", params={"seed": "1"})
    assert len(r.content) == 4096 and r.content == c.get("/bytes/4096?seed=1").content


def _stream(c: httpx.Client) -> None:
    with c.stream("GET", "/stream/5") as r:
        lines = [json.loads(line) for line in r.iter_lines() if line]
    assert [line["id"] for line in lines] == [0, 1, 2, 3, 4]


def _gzip(c: httpx.Client) -> None:
    r = c.get("/gzip")
    assert r.headers["Content-Encoding"] == "gzip" and r.json()["gzipped"] is True


def _deflate(c: httpx.Client) -> None:
    r = c.get("/deflate")
    assert r.headers["Content-Encoding"] == "deflate" and r.json()["deflated"] is True


def _json(c: httpx.Client) -> None:
    assert c.get("/json").json()["slideshow"]["author"] == "Yours Truly"


def _html(c: httpx.Client) -> None:
    r = c.get("/html")
    assert r.headers["Content-Type"].startswith("text/html") and "Herman Melville" in r.text


def _base64(c: httpx.Client) -> None:
    encoded = base64.urlsafe_b64encode(b"egress").decode()
    assert c.get(f"/base64/{encoded}").text == "egress"


def _uuid(c: httpx.Client) -> None:
    assert uuid.UUID(c.get("/uuid").json()["uuid"]).version == 4


def _head(c: httpx.Client) -> None:
    got, head = c.get("/get"), c.head("/get")
    assert head.status_code == 200 and head.content == b""
    assert head.headers["Content-Length"] == got.headers["Content-Length"]


def _etag(c: httpx.Client) -> None:
    assert c.get("/etag/abc", headers={"If-None-Match": '"abc"'}).status_code == 304
    assert c.get("/etag/abc").headers["ETag"] == "abc"  # httpbin sends it unquoted


def _range(c: httpx.Client) -> None:
    r = c.get("/range/100", headers={"Range": "bytes=10-19"})
    assert (r.status_code, r.content) == (206, b"klmnopqrst")
    assert r.headers["Content-Range"] == "bytes 10-19/100"


def _delay(c: httpx.Client) -> None:
    r = c.get("/delay/0")
    assert r.status_code == 200 and r.json()["url"] == "http://httpbin.org/delay/0"


ENDPOINTS: list[tuple[str, Check]] = [
    ("get", _get),
    ("post", _method("post")),
    ("put", _method("put")),
    ("patch", _method("patch")),
    ("delete", _method("delete")),
    ("post-json", _post_json),
    ("anything-form", _post_form),
    ("post-chunked", _post_chunked),
    ("status-418", _status(418)),
    ("status-204", _status(204)),
    ("status-503", _status(503)),
    ("ip", _ip),
    ("user-agent", _user_agent),
    ("response-headers", _response_headers),
    ("redirect-3", _redirects),
    ("redirect-to", _redirect_to),
    ("cookies", _cookies),
    ("basic-auth", _basic_auth),
    ("bytes", _bytes),
    ("stream", _stream),
    ("gzip", _gzip),
    ("deflate", _deflate),
    ("json", _json),
    ("html", _html),
    ("base64", _base64),
    ("uuid", _uuid),
    ("head", _head),
    ("etag", _etag),
    ("range", _range),
    ("delay-0", _delay),
]


@pytest.mark.parametrize("check", [e[1] for e in ENDPOINTS], ids=[e[0] for e in ENDPOINTS])
def test_httpbin_endpoint_through_the_mesh_answers_as_httpbin(
    client: httpx.Client, check: Check
) -> None:
    check(client)


# ----------------------------------------------------------- the WSGI wrappers alone


@pytest.mark.parametrize(
    ("host", "valid"),
    [
        ("example.com", True),
        ("example.com:8080", True),
        ("example.com:", True),  # RFC 3986: port = *DIGIT, so empty is allowed
        ("[::1]:80", True),
        ("192.0.2.1:443", True),
        ("example.com:MPLE", False),
        ("example.com:80x", False),
        ("example.com:99999", False),
        ("[::1]:http", False),
    ],
)
def test_host_port_validity(host: str, valid: bool) -> None:
    assert host_is_valid(host) is valid


def test_head_keeps_the_length_a_get_would_have_and_drops_the_body() -> None:
    def app(environ: WSGIEnvironment, start_response: StartResponse) -> Iterable[bytes]:
        start_response("200 OK", [("Content-Type", "text/plain")])  # no Content-Length
        return [b"twelve", b" bytes"]

    seen: list[tuple[str, list[tuple[str, str]]]] = []

    def start_response(status: str, headers: list[tuple[str, str]], exc: Any = None) -> Any:
        seen.append((status, headers))
        return lambda data: None

    body = head_without_body(app)({"REQUEST_METHOD": "HEAD"}, start_response)
    assert list(body) == []
    assert seen == [("200 OK", [("Content-Type", "text/plain"), ("Content-Length", "12")])]
    assert list(head_without_body(app)({"REQUEST_METHOD": "GET"}, start_response)) == [
        b"twelve",
        b" bytes",
    ]
