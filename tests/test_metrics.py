"""ProxyMetrics renders Linkerd's route families exactly (docs/facts/linkerd-egress.md 6.2/6.3).

Expected texts are written by hand from the guide's examples, with labels on one line in
the proxy's order, the crate's histogram layout (``_sum``, ``_count``, then ``_bucket``
with ``le`` first) and ``# EOF`` at the end.
"""

from __future__ import annotations

import threading

import pytest

from egresskit.mesh.metrics import (
    HOSTNAME_LABELS_ANNOTATION,
    ProxyMetrics,
    format_f64,
    hostname_labels_enabled,
)
from tests.guide_labels import route_labels

HTTP_ALLOW = route_labels(80, "default", "http-egress-allow")
HTTP_DENY = route_labels(80, "default", "http-egress-deny")
TLS_DENY = route_labels(443, "default", "tls-egress-deny")
TCP_ALLOW = route_labels(443, "default", "tcp-egress-allow")
HTTPBIN_GET = route_labels(80, "HTTPRoute", "httpbin-get")
UNENCRYPTED = route_labels(80, "HTTPRoute", "unencrypted-http")
GRPC_DENY = route_labels(8000, "default", "grpc-egress-deny")

BACKEND_EN = {
    "backend_group": "policy.linkerd.io",
    "backend_kind": "EgressNetwork",
    "backend_namespace": "egress-test",
    "backend_name": "all-egress-traffic",
    "backend_port": "80",
    "backend_section_name": "",
}
BACKEND_SERVICE = {
    "backend_group": "core",
    "backend_kind": "Service",
    "backend_namespace": "egress-test",
    "backend_name": "internal-egress",
    "backend_port": "80",
    "backend_section_name": "",
}

P80 = (
    'parent_group="policy.linkerd.io",parent_kind="EgressNetwork",'
    'parent_namespace="egress-test",parent_name="all-egress-traffic",parent_port="80",'
    'parent_section_name=""'
)
P443 = P80.replace('parent_port="80"', 'parent_port="443"')
R_DEFAULT = 'route_group="",route_kind="default",route_namespace="",route_name="{}"'
R_HTTPBIN_GET = (
    'route_group="gateway.networking.k8s.io",route_kind="HTTPRoute",'
    'route_namespace="egress-test",route_name="httpbin-get"'
)
R_UNENCRYPTED = R_HTTPBIN_GET.replace("httpbin-get", "unencrypted-http")
B_EN = (
    'backend_group="policy.linkerd.io",backend_kind="EgressNetwork",'
    'backend_namespace="egress-test",backend_name="all-egress-traffic",backend_port="80",'
    'backend_section_name=""'
)
B_SERVICE = (
    'backend_group="core",backend_kind="Service",backend_namespace="egress-test",'
    'backend_name="internal-egress",backend_port="80",backend_section_name=""'
)


def block(text: str, family: str) -> list[str]:
    """The lines of one family: its HELP line up to the next HELP line or ``# EOF``."""
    lines = text.splitlines()
    start = lines.index(next(line for line in lines if line.startswith(f"# HELP {family} ")))
    end = start + 1
    while not lines[end].startswith(("# HELP ", "# EOF")):
        end += 1
    return lines[start:end]


def test_empty_registry_prints_every_family_descriptor_then_eof() -> None:
    expected = """\
# HELP outbound_http_route_request_duration_seconds The time between request initialization and response completion.
# TYPE outbound_http_route_request_duration_seconds histogram
# UNIT outbound_http_route_request_duration_seconds seconds
# HELP outbound_http_route_request_statuses Completed request-response streams.
# TYPE outbound_http_route_request_statuses counter
# HELP outbound_http_route_backend_requests The total number of requests dispatched.
# TYPE outbound_http_route_backend_requests counter
# HELP outbound_http_route_backend_response_duration_seconds The time between request completion and response completion.
# TYPE outbound_http_route_backend_response_duration_seconds histogram
# UNIT outbound_http_route_backend_response_duration_seconds seconds
# HELP outbound_http_route_backend_response_statuses Completed responses.
# TYPE outbound_http_route_backend_response_statuses counter
# HELP outbound_grpc_route_request_duration_seconds The time between request initialization and response completion.
# TYPE outbound_grpc_route_request_duration_seconds histogram
# UNIT outbound_grpc_route_request_duration_seconds seconds
# HELP outbound_grpc_route_request_statuses Completed request-response streams.
# TYPE outbound_grpc_route_request_statuses counter
# HELP outbound_grpc_route_backend_requests The total number of requests dispatched.
# TYPE outbound_grpc_route_backend_requests counter
# HELP outbound_grpc_route_backend_response_duration_seconds The time between request completion and response completion.
# TYPE outbound_grpc_route_backend_response_duration_seconds histogram
# UNIT outbound_grpc_route_backend_response_duration_seconds seconds
# HELP outbound_grpc_route_backend_response_statuses Completed responses.
# TYPE outbound_grpc_route_backend_response_statuses counter
# HELP outbound_tls_route_open The number of connections opened.
# TYPE outbound_tls_route_open counter
# HELP outbound_tls_route_close The number of connections closed.
# TYPE outbound_tls_route_close counter
# HELP outbound_tcp_route_open The number of connections opened.
# TYPE outbound_tcp_route_open counter
# HELP outbound_tcp_route_close The number of connections closed.
# TYPE outbound_tcp_route_close counter
# EOF
"""  # noqa: E501 -- the real HELP lines are this long
    text = ProxyMetrics().render()
    assert text.splitlines() == expected.splitlines()
    assert text.endswith("# EOF\n")


def test_guide_http_egress_allow_200_on_httpbin() -> None:
    metrics = ProxyMetrics(hostname_labels=True)
    # Durations exactly representable in binary so the sum is exact: 2.28125.
    for duration in (0.03125, 0.25, 2.0):
        metrics.http_request(
            HTTP_ALLOW, hostname="httpbin.org", http_status=200, error="", duration_s=duration
        )
    text = metrics.render()

    labels = f'{P80},{R_DEFAULT.format("http-egress-allow")},hostname="httpbin.org"'
    assert block(text, "outbound_http_route_request_statuses") == [
        "# HELP outbound_http_route_request_statuses Completed request-response streams.",
        "# TYPE outbound_http_route_request_statuses counter",
        f'outbound_http_route_request_statuses_total{{{labels},http_status="200",error=""}} 3',
    ]
    name = "outbound_http_route_request_duration_seconds"
    assert block(text, name) == [
        f"# HELP {name} The time between request initialization and response completion.",
        f"# TYPE {name} histogram",
        f"# UNIT {name} seconds",
        f"{name}_sum{{{labels}}} 2.28125",
        f"{name}_count{{{labels}}} 3",
        f'{name}_bucket{{le="0.05",{labels}}} 1',
        f'{name}_bucket{{le="0.5",{labels}}} 2',
        f'{name}_bucket{{le="1.0",{labels}}} 2',
        f'{name}_bucket{{le="10.0",{labels}}} 3',
        f'{name}_bucket{{le="+Inf",{labels}}} 3',
    ]
    # A route-level answer touches no backend family.
    assert block(text, "outbound_http_route_backend_requests")[2:] == []


def test_guide_http_egress_deny_403_is_a_status_with_empty_error() -> None:
    metrics = ProxyMetrics(hostname_labels=True)
    metrics.http_request(
        HTTP_DENY, hostname="httpbin.org", http_status=403, error="", duration_s=0.001
    )
    labels = f'{P80},{R_DEFAULT.format("http-egress-deny")},hostname="httpbin.org"'
    assert block(metrics.render(), "outbound_http_route_request_statuses")[2:] == [
        f'outbound_http_route_request_statuses_total{{{labels},http_status="403",error=""}} 1'
    ]


def test_guide_tls_egress_deny_close_forbidden_on_github_with_four_zero_series() -> None:
    metrics = ProxyMetrics(hostname_labels=True)
    metrics.tls_open(TLS_DENY, hostname="github.com")
    metrics.tls_close(TLS_DENY, hostname="github.com", error="forbidden")
    text = metrics.render()

    labels = f'{P443},{R_DEFAULT.format("tls-egress-deny")},hostname="github.com"'
    assert block(text, "outbound_tls_route_open") == [
        "# HELP outbound_tls_route_open The number of connections opened.",
        "# TYPE outbound_tls_route_open counter",
        f"outbound_tls_route_open_total{{{labels}}} 1",
    ]
    assert block(text, "outbound_tls_route_close") == [
        "# HELP outbound_tls_route_close The number of connections closed.",
        "# TYPE outbound_tls_route_close counter",
        f'outbound_tls_route_close_total{{{labels},error=""}} 0',
        f'outbound_tls_route_close_total{{{labels},error="forbidden"}} 1',
        f'outbound_tls_route_close_total{{{labels},error="invalid_backend"}} 0',
        f'outbound_tls_route_close_total{{{labels},error="invalid_policy"}} 0',
        f'outbound_tls_route_close_total{{{labels},error="unexpected"}} 0',
    ]


def test_guide_tcp_open_on_https_without_tlsroute_carries_target_ip_and_port() -> None:
    metrics = ProxyMetrics(hostname_labels=True)
    metrics.tcp_open(TCP_ALLOW, target_ip="54.243.23.111", target_port=443)
    text = metrics.render()

    labels = f"{P443},{R_DEFAULT.format('tcp-egress-allow')},"
    labels += 'target_ip="54.243.23.111",target_port="443"'
    assert block(text, "outbound_tcp_route_open")[2:] == [
        f"outbound_tcp_route_open_total{{{labels}}} 1"
    ]
    # The five close series exist at 0 as soon as the route's service is built (6.2).
    assert block(text, "outbound_tcp_route_close")[2:] == [
        f'outbound_tcp_route_close_total{{{labels},error="{error}"}} 0'
        for error in ("", "forbidden", "invalid_backend", "invalid_policy", "unexpected")
    ]

    metrics.tcp_close(TCP_ALLOW, target_ip="54.243.23.111", target_port=443, error="")
    closes = block(metrics.render(), "outbound_tcp_route_close")[2:]
    assert closes[0] == f'outbound_tcp_route_close_total{{{labels},error=""}} 1'


@pytest.mark.parametrize(
    ("route_labels", "route_text", "backend_labels", "backend_text", "status"),
    [
        pytest.param(HTTPBIN_GET, R_HTTPBIN_GET, BACKEND_EN, B_EN, 200, id="egress-network"),
        pytest.param(
            UNENCRYPTED, R_UNENCRYPTED, BACKEND_SERVICE, B_SERVICE, 200, id="service-internal"
        ),
    ],
)
def test_guide_backend_series(
    route_labels: dict[str, str],
    route_text: str,
    backend_labels: dict[str, str],
    backend_text: str,
    status: int,
) -> None:
    metrics = ProxyMetrics(hostname_labels=True)
    metrics.http_backend_request(route_labels, backend_labels)
    metrics.http_backend_response(
        route_labels, backend_labels, http_status=status, error="", duration_s=0.0625
    )
    text = metrics.render()

    labels = f"{P80},{route_text},{backend_text}"
    assert block(text, "outbound_http_route_backend_requests")[2:] == [
        f"outbound_http_route_backend_requests_total{{{labels}}} 1"
    ]
    assert block(text, "outbound_http_route_backend_response_statuses")[2:] == [
        f"outbound_http_route_backend_response_statuses_total"
        f'{{{labels},http_status="{status}",error=""}} 1'
    ]
    name = "outbound_http_route_backend_response_duration_seconds"
    cumulative = {"0.025": 0, "0.05": 0, "0.1": 1, "0.25": 1, "0.5": 1, "1.0": 1, "10.0": 1}
    assert block(text, name)[3:] == [
        f"{name}_sum{{{labels}}} 0.0625",
        f"{name}_count{{{labels}}} 1",
        *(f'{name}_bucket{{le="{le}",{labels}}} {n}' for le, n in cumulative.items()),
        f'{name}_bucket{{le="+Inf",{labels}}} 1',
    ]


def test_label_values_are_escaped() -> None:
    metrics = ProxyMetrics(hostname_labels=True)
    metrics.tls_open(TLS_DENY, hostname='we"ird\\host\nname')
    line = block(metrics.render(), "outbound_tls_route_open")[2]
    assert 'hostname="we\\"ird\\\\host\\nname"} 1' in line
    assert "\n" not in line


def test_hostname_labels_off_records_an_empty_hostname() -> None:
    metrics = ProxyMetrics()  # Linkerd 2.18+ default (spec 6.2)
    metrics.http_request(
        HTTP_ALLOW, hostname="httpbin.org", http_status=200, error="", duration_s=0.01
    )
    metrics.http_request(
        HTTP_ALLOW, hostname="example.com", http_status=200, error="", duration_s=0.01
    )
    lines = block(metrics.render(), "outbound_http_route_request_statuses")[2:]
    # Both hosts fold into one series with hostname="".
    labels = f'{P80},{R_DEFAULT.format("http-egress-allow")},hostname=""'
    assert lines == [
        f'outbound_http_route_request_statuses_total{{{labels},http_status="200",error=""}} 2'
    ]


@pytest.mark.parametrize("host", ["54.243.23.111", "[2001:db8::1]", "2001:db8::1"], ids=str)
def test_ip_literal_hosts_are_recorded_empty(host: str) -> None:
    metrics = ProxyMetrics(hostname_labels=True)
    metrics.tls_open(TLS_DENY, hostname=host)
    assert 'hostname=""} 1' in block(metrics.render(), "outbound_tls_route_open")[2]


def test_http_stream_error_has_empty_status() -> None:
    metrics = ProxyMetrics(hostname_labels=True)
    metrics.http_request(
        HTTPBIN_GET,
        hostname="httpbin.org",
        http_status=None,
        error="REQUEST_TIMEOUT",
        duration_s=10.5,
    )
    text = metrics.render()
    statuses = block(text, "outbound_http_route_request_statuses")[2]
    assert statuses.endswith('hostname="httpbin.org",http_status="",error="REQUEST_TIMEOUT"} 1')
    durations = block(text, "outbound_http_route_request_duration_seconds")
    assert durations[-2].startswith('outbound_http_route_request_duration_seconds_bucket{le="10.0"')
    assert durations[-2].endswith("} 0")
    assert durations[-1].endswith("} 1")


def test_grpc_families_use_grpc_status_names() -> None:
    metrics = ProxyMetrics(hostname_labels=True)
    metrics.grpc_request(
        GRPC_DENY, hostname="color", grpc_status="PERMISSION_DENIED", error="", duration_s=0.001
    )
    metrics.grpc_request(
        GRPC_DENY, hostname="color", grpc_status=None, error="FAIL_FAST", duration_s=0.001
    )
    metrics.grpc_backend_request(GRPC_DENY, BACKEND_EN)
    metrics.grpc_backend_response(
        GRPC_DENY, BACKEND_EN, grpc_status="OK", error="", duration_s=0.001
    )
    text = metrics.render()
    labels = P80.replace('"80"', '"8000"') + "," + R_DEFAULT.format("grpc-egress-deny")
    assert block(text, "outbound_grpc_route_request_statuses")[2:] == [
        f"outbound_grpc_route_request_statuses_total"
        f'{{{labels},hostname="color",grpc_status="PERMISSION_DENIED",error=""}} 1',
        f"outbound_grpc_route_request_statuses_total"
        f'{{{labels},hostname="color",grpc_status="UNKNOWN",error="FAIL_FAST"}} 1',
    ]
    assert block(text, "outbound_grpc_route_backend_response_statuses")[2:] == [
        f"outbound_grpc_route_backend_response_statuses_total"
        f'{{{labels},{B_EN},grpc_status="OK",error=""}} 1'
    ]
    assert block(text, "outbound_http_route_request_statuses")[2:] == []


def test_a_duration_on_a_bound_counts_in_that_bucket() -> None:
    metrics = ProxyMetrics()
    metrics.http_request(HTTP_ALLOW, hostname="h", http_status=200, error="", duration_s=0.05)
    lines = block(metrics.render(), "outbound_http_route_request_duration_seconds")
    assert lines[5].startswith('outbound_http_route_request_duration_seconds_bucket{le="0.05"')
    assert lines[5].endswith("} 1")


def _misplaced() -> dict[str, str]:
    labels = dict(HTTP_ALLOW)
    name = labels.pop("parent_name")
    labels["parent_name"] = name
    return labels


def _without(key: str) -> dict[str, str]:
    return {k: v for k, v in HTTP_ALLOW.items() if k != key}


@pytest.mark.parametrize(
    ("call", "error", "match"),
    [
        pytest.param(
            lambda m: m.tls_open(_without("route_name"), hostname="h"),
            ValueError,
            "route_labels: missing key 'route_name'",
            id="missing-key",
        ),
        pytest.param(
            lambda m: m.tls_open(_misplaced(), hostname="h"),
            ValueError,
            "route_labels: key 'parent_port' is misplaced: position 3 must hold 'parent_name'",
            id="misplaced-key",
        ),
        pytest.param(
            lambda m: m.tls_open({**HTTP_ALLOW, "hostname": "x"}, hostname="h"),
            ValueError,
            "route_labels: unexpected key 'hostname'",
            id="unexpected-key",
        ),
        pytest.param(
            lambda m: m.http_backend_request(HTTP_ALLOW, {**BACKEND_EN, "backend_port": 80}),
            TypeError,
            r"backend_labels\['backend_port'\]: expected a str label value, found int 80",
            id="non-str-value",
        ),
        pytest.param(
            lambda m: m.http_backend_request(HTTP_ALLOW, dict(reversed(BACKEND_EN.items()))),
            ValueError,
            "backend_labels: key 'backend_section_name' is misplaced: position 0",
            id="backend-order",
        ),
        pytest.param(
            lambda m: m.http_request(
                HTTP_ALLOW, hostname="h", http_status=200, error="oops", duration_s=0
            ),
            ValueError,
            "error: expected one of .*; found 'oops'",
            id="http-error",
        ),
        pytest.param(
            lambda m: m.http_request(
                HTTP_ALLOW, hostname="h", http_status=99, error="", duration_s=0
            ),
            ValueError,
            "http_status: expected an int in 100..599 or None, found 99",
            id="http-status",
        ),
        pytest.param(
            lambda m: m.grpc_request(
                HTTP_ALLOW, hostname="h", grpc_status="permission_denied", error="", duration_s=0
            ),
            ValueError,
            "grpc_status: expected an upper-case gRPC code name",
            id="grpc-status",
        ),
        pytest.param(
            lambda m: m.http_request(
                HTTP_ALLOW, hostname="h", http_status=200, error="", duration_s=-1.0
            ),
            ValueError,
            "duration_s: expected a finite number >= 0, found -1.0",
            id="duration",
        ),
        pytest.param(
            lambda m: m.tls_close(HTTP_ALLOW, hostname="h", error="FORBIDDEN"),
            ValueError,
            "error: expected one of \"\", forbidden, .*; found 'FORBIDDEN'",
            id="transport-error",
        ),
        pytest.param(
            lambda m: m.tcp_open(HTTP_ALLOW, target_ip="1.2.3.4", target_port="443"),
            TypeError,
            "target_port: expected an int, found '443'",
            id="target-port",
        ),
    ],
)
def test_bad_input_is_rejected_with_a_precise_message(
    call: object, error: type[Exception], match: str
) -> None:
    metrics = ProxyMetrics()
    with pytest.raises(error, match=match):
        call(metrics)  # type: ignore[operator]
    # Nothing was recorded by the failed call.
    assert "_total{" not in metrics.render()


@pytest.mark.parametrize(
    ("value", "text"),
    [
        pytest.param(0.0, "0.0", id="zero"),
        pytest.param(1.0, "1.0", id="integer"),
        pytest.param(10.0, "10.0", id="ten"),
        pytest.param(0.05, "0.05", id="bucket-bound"),
        pytest.param(0.025, "0.025", id="backend-bound"),
        pytest.param(2.28125, "2.28125", id="fraction"),
        pytest.param(0.000012, "0.000012", id="small-positional"),
        pytest.param(1e-7, "1e-7", id="tiny-exponent"),
        pytest.param(1.5e-7, "1.5e-7", id="tiny-mantissa"),
        pytest.param(123456.0, "123456.0", id="large-integer"),
        pytest.param(1e22, "1e22", id="huge"),
    ],
)
def test_format_f64_follows_dtoa(value: float, text: str) -> None:
    assert format_f64(value) == text


@pytest.mark.parametrize(
    ("pod", "namespace", "enabled"),
    [
        pytest.param({}, None, False, id="default-off"),
        pytest.param({HOSTNAME_LABELS_ANNOTATION: "true"}, None, True, id="pod-on"),
        pytest.param({HOSTNAME_LABELS_ANNOTATION: "false"}, None, False, id="pod-off"),
        pytest.param({}, {HOSTNAME_LABELS_ANNOTATION: "true"}, True, id="namespace-on"),
        pytest.param(
            {HOSTNAME_LABELS_ANNOTATION: "false"},
            {HOSTNAME_LABELS_ANNOTATION: "true"},
            False,
            id="pod-wins",
        ),
    ],
)
def test_hostname_labels_annotation(
    pod: dict[str, str], namespace: dict[str, str] | None, enabled: bool
) -> None:
    assert hostname_labels_enabled(pod, namespace) is enabled


def test_recording_from_many_threads_loses_nothing() -> None:
    metrics = ProxyMetrics(hostname_labels=True)

    def work() -> None:
        for _ in range(500):
            metrics.http_request(
                HTTP_ALLOW, hostname="httpbin.org", http_status=200, error="", duration_s=0.1
            )
            metrics.tls_open(TLS_DENY, hostname="github.com")

    threads = [threading.Thread(target=work, name=f"recorder-{i}") for i in range(8)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(timeout=60)
    assert not any(thread.is_alive() for thread in threads)
    text = metrics.render()
    assert block(text, "outbound_http_route_request_statuses")[2].endswith("} 4000")
    assert block(text, "outbound_tls_route_open")[2].endswith("} 4000")


def test_each_proxy_has_its_own_registry() -> None:
    one, two = ProxyMetrics(), ProxyMetrics()
    one.tls_open(TLS_DENY, hostname="github.com")
    assert "outbound_tls_route_open_total{" in one.render()
    assert "outbound_tls_route_open_total{" not in two.render()
