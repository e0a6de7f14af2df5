"""The simulated DNS: default hosts, name normalisation, literals, stable allocation, Service
names and errors."""

from __future__ import annotations

import hashlib
import ipaddress
import re
from collections.abc import Callable

import pytest

from egresskit.dns import (
    ALLOCATION_NETWORK,
    DEFAULT_HOSTS,
    DNSEntry,
    SimulatedDNS,
)
from egresskit.errors import PolicyError

DOC_RANGES = [
    ipaddress.ip_network(n) for n in ("192.0.2.0/24", "198.51.100.0/24", "203.0.113.0/24")
]


def expected_slot(name: str) -> ipaddress.IPv4Address:
    """Where an empty table puts ``name``: the documented hash rule, restated."""
    size = ALLOCATION_NETWORK.num_addresses - 2
    start = int.from_bytes(hashlib.sha256(name.encode()).digest()[:8], "big") % size
    return ALLOCATION_NETWORK[1 + start]


# --- defaults -------------------------------------------------------------------------------


@pytest.mark.parametrize(("host", "ip"), list(DEFAULT_HOSTS.items()), ids=list(DEFAULT_HOSTS))
def test_default_hosts_resolve_to_fixed_documentation_addresses(host: str, ip: str) -> None:
    address = SimulatedDNS().resolve(host)
    assert address == ipaddress.ip_address(ip)
    assert any(address in net for net in DOC_RANGES[:2])  # 203.0.113.0/24 is for allocation


def test_defaults_cover_the_guide_and_are_distinct() -> None:
    assert {"httpbin.org", "google.com", "github.com", "postman-echo.com"} <= set(DEFAULT_HOSTS)
    assert len(DEFAULT_HOSTS) >= 12
    assert len(set(DEFAULT_HOSTS.values())) == len(DEFAULT_HOSTS)


def test_explicit_empty_table_has_no_defaults() -> None:
    dns = SimulatedDNS({})
    assert dns.entries() == ()
    assert dns.resolve("httpbin.org") in ALLOCATION_NETWORK


# --- normalisation and literals ---------------------------------------------------------------


@pytest.mark.parametrize(
    "host",
    ["httpbin.org", "HTTPBIN.ORG", "HttpBin.Org", "httpbin.org.", "HTTPBIN.ORG."],
    ids=["plain", "upper", "mixed", "trailing-dot", "upper-trailing-dot"],
)
def test_names_are_case_insensitive_with_optional_trailing_dot(host: str) -> None:
    assert SimulatedDNS().resolve(host) == ipaddress.ip_address("192.0.2.10")


@pytest.mark.parametrize(
    ("host", "expected"),
    [
        pytest.param("10.0.0.7", "10.0.0.7", id="ipv4"),
        pytest.param("192.0.2.10", "192.0.2.10", id="ipv4-of-a-default"),
        pytest.param("::1", "::1", id="ipv6"),
        pytest.param("[2001:db8::1]", "2001:db8::1", id="ipv6-bracketed"),
    ],
)
def test_ip_literals_resolve_to_themselves(host: str, expected: str) -> None:
    dns = SimulatedDNS(allocate_unknown=False)
    assert dns.resolve(host) == ipaddress.ip_address(expected)
    assert len(dns.entries()) == len(DEFAULT_HOSTS)  # nothing was added


# --- allocation ---------------------------------------------------------------------------


def test_unknown_names_get_a_stable_hashed_address() -> None:
    first, second = SimulatedDNS(), SimulatedDNS()
    address = first.resolve("unknown.example.net")
    assert address in ALLOCATION_NETWORK
    assert address == expected_slot("unknown.example.net")
    assert first.resolve("UNKNOWN.example.net.") == address  # remembered, normalised
    assert second.resolve("unknown.example.net") == address  # same table, same answer
    assert first.reverse(address) == "unknown.example.net"
    assert first.entries()[-1] == DNSEntry(
        name="unknown.example.net", address=address, source="allocated"
    )


def test_different_names_get_different_addresses() -> None:
    dns = SimulatedDNS()
    names = [f"host{i}.example.net" for i in range(50)]
    addresses = {dns.resolve(name) for name in names}
    assert len(addresses) == len(names)
    assert all(a in ALLOCATION_NETWORK for a in addresses)
    assert all(a not in (ALLOCATION_NETWORK[0], ALLOCATION_NETWORK[-1]) for a in addresses)


def test_allocation_skips_addresses_already_taken() -> None:
    name = "collide.example.net"
    slot = expected_slot(name)
    following = ALLOCATION_NETWORK[1 + (int(slot) - int(ALLOCATION_NETWORK[1]) + 1) % 254]
    dns = SimulatedDNS({"squatter.test": str(slot)})
    assert dns.resolve(name) == following
    assert SimulatedDNS({"squatter.test": str(slot)}).resolve(name) == following


def test_allocation_fails_when_the_range_is_full() -> None:
    hosts = {f"h{i}.test": str(ALLOCATION_NETWORK[i]) for i in range(1, 255)}
    with pytest.raises(PolicyError, match=r"one-more\.test: no free address left in 203"):
        SimulatedDNS(hosts).resolve("one-more.test")


def test_allocation_can_be_turned_off() -> None:
    dns = SimulatedDNS(allocate_unknown=False)
    with pytest.raises(PolicyError, match=r"unknown\.example\.net: unknown host"):
        dns.resolve("unknown.example.net")
    assert dns.resolve("httpbin.org") == ipaddress.ip_address("192.0.2.10")


# --- add and reverse ------------------------------------------------------------------------


def test_add_overrides_and_updates_reverse() -> None:
    dns = SimulatedDNS()
    dns.add("HTTPBin.org.", "192.0.2.99")
    assert dns.resolve("httpbin.org") == ipaddress.ip_address("192.0.2.99")
    assert dns.reverse("192.0.2.10") is None
    assert dns.reverse("192.0.2.99") == "httpbin.org"


def test_add_ipv6_and_shared_address_reverse_keeps_first_name() -> None:
    dns = SimulatedDNS({})
    dns.add("v6.test", "2001:db8::10")
    dns.add("alias.test", "2001:db8::10")
    assert dns.resolve("v6.test") == ipaddress.ip_address("2001:db8::10")
    assert dns.reverse(ipaddress.ip_address("2001:db8::10")) == "v6.test"
    assert dns.reverse("203.0.113.200") is None


# --- Services -------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("host", "search_namespace"),
    [
        pytest.param("web.shop.svc.cluster.local", None, id="fqdn"),
        pytest.param("web.shop.svc.cluster.local.", None, id="fqdn-absolute"),
        pytest.param("WEB.shop.svc.cluster.local", None, id="fqdn-upper"),
        pytest.param("web.shop.svc", None, id="name-ns-svc"),
        pytest.param("web.shop", None, id="name-ns"),
        pytest.param("web.shop", "other", id="name-ns-from-other-namespace"),
        pytest.param("web", "shop", id="bare-name-in-namespace"),
    ],
)
def test_service_names_resolve_to_the_cluster_ip(host: str, search_namespace: str | None) -> None:
    dns = SimulatedDNS(allocate_unknown=False)
    dns.register_service("web", "shop", "10.96.0.10")
    assert dns.resolve(host, search_namespace=search_namespace) == ipaddress.ip_address(
        "10.96.0.10"
    )
    assert dns.reverse("10.96.0.10") == "web.shop.svc.cluster.local"


def test_service_wins_over_a_host_with_the_same_short_name() -> None:
    # A pod resolver tries the search list first (ndots:5), so "web.shop" is the Service.
    dns = SimulatedDNS({"web.shop": "198.51.100.77"})
    dns.register_service("web", "shop", "10.96.0.10")
    assert dns.resolve("web.shop") == ipaddress.ip_address("10.96.0.10")
    assert dns.resolve("web.shop.") == ipaddress.ip_address("198.51.100.77")  # absolute


@pytest.mark.parametrize(
    ("host", "search_namespace", "message"),
    [
        pytest.param("web", None, "web: expected a Service or a known host", id="bare-no-ns"),
        pytest.param("web", "other", "expected a Service in namespace other", id="bare-wrong-ns"),
        pytest.param("api.shop.svc", None, "api.shop.svc: no such Service", id="unknown-svc"),
        pytest.param(
            "api.shop.svc.cluster.local",
            None,
            "no such Service \\(registered: web.shop.svc.cluster.local\\)",
            id="unknown-fqdn",
        ),
        pytest.param("web.shop.", None, "web.shop.: unknown host", id="absolute-skips-search"),
    ],
)
def test_unknown_cluster_names_are_errors_never_allocated(
    host: str, search_namespace: str | None, message: str
) -> None:
    dns = SimulatedDNS(allocate_unknown=False)
    dns.register_service("web", "shop", "10.96.0.10")
    with pytest.raises(PolicyError, match=message):
        dns.resolve(host, search_namespace=search_namespace)


def test_cluster_names_are_not_allocated_even_when_allocation_is_on() -> None:
    dns = SimulatedDNS()
    with pytest.raises(PolicyError, match="no such Service"):
        dns.resolve("web.shop.svc.cluster.local")
    assert all(entry.source != "allocated" for entry in dns.entries())


# --- input validation -----------------------------------------------------------------------


@pytest.mark.parametrize(
    ("call", "message"),
    [
        pytest.param(
            lambda d: d.add("bad.test", "999.1.1.1"),
            "bad.test: expected an IPv4 or IPv6 address, found '999.1.1.1'",
            id="bad-ip",
        ),
        pytest.param(lambda d: d.add("bad.test", ""), "found ''", id="empty-ip"),
        pytest.param(
            lambda d: d.add("bad host.test", "192.0.2.1"), "found 'bad host'", id="space-in-name"
        ),
        pytest.param(lambda d: d.add("-x.test", "192.0.2.1"), "found '-x'", id="leading-hyphen"),
        pytest.param(lambda d: d.add("a..b", "192.0.2.1"), "found ''", id="empty-label"),
        pytest.param(lambda d: d.add("", "192.0.2.1"), "1 to 253 characters", id="empty-name"),
        pytest.param(
            lambda d: d.add("a" * 64 + ".test", "192.0.2.1"), "1 to 63 characters", id="long-label"
        ),
        pytest.param(
            lambda d: d.add("192.0.2.5", "192.0.2.1"), "found an IP address", id="name-is-ip"
        ),
        pytest.param(
            lambda d: d.register_service("Web", "shop", "10.96.0.1"),
            "service shop/Web: service name: expected an RFC 1123 label",
            id="service-uppercase",
        ),
        pytest.param(
            lambda d: d.register_service("web", "shop.x", "10.96.0.1"),
            "namespace: expected an RFC 1123 label",
            id="namespace-dotted",
        ),
        pytest.param(
            lambda d: d.register_service("web", "shop", "10.96.0.300"),
            "web.shop.svc.cluster.local: expected an IPv4 or IPv6 address, found '10.96.0.300'",
            id="service-bad-ip",
        ),
        pytest.param(lambda d: d.resolve("no_such..name"), "found ''", id="resolve-bad-name"),
        pytest.param(lambda d: d.reverse("nope"), "found 'nope'", id="reverse-bad-ip"),
    ],
)
def test_bad_input_is_a_policy_error_naming_host_and_value(
    call: Callable[[SimulatedDNS], object], message: str
) -> None:
    with pytest.raises(PolicyError, match=re.escape(message)):
        call(SimulatedDNS())


def test_bad_hosts_mapping_is_rejected_at_construction() -> None:
    with pytest.raises(PolicyError, match=r"api\.test: expected an IPv4 or IPv6 address"):
        SimulatedDNS({"ok.test": "192.0.2.1", "api.test": "not-an-ip"})
