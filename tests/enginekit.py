"""Helpers that let engine tests read like the spec: build objects, ask the engine."""

from __future__ import annotations

from typing import Any

from egresskit.explaining import with_cluster_ips
from egresskit.manifests import load_manifests
from egresskit.policy.decision import Decision, HttpRequest, TcpConnection, TlsConnection
from egresskit.policy.engine import decide
from egresskit.policy.snapshot import Snapshot

NS = "egress-test"
EN = "all-egress-traffic"
HTTPBIN_IP = "192.0.2.10"
GITHUB_IP = "192.0.2.30"


def egress_network(
    name: str = EN,
    *,
    namespace: str = NS,
    policy: str = "Allow",
    networks: list[dict[str, Any]] | None = None,
    created: str | None = None,
    annotations: dict[str, str] | None = None,
) -> dict[str, Any]:
    meta: dict[str, Any] = {"name": name, "namespace": namespace}
    if created:
        meta["creationTimestamp"] = created
    if annotations:
        meta["annotations"] = annotations
    spec: dict[str, Any] = {"trafficPolicy": policy}
    if networks is not None:
        spec["networks"] = networks
    return {
        "apiVersion": "policy.linkerd.io/v1alpha1",
        "kind": "EgressNetwork",
        "metadata": meta,
        "spec": spec,
    }


def en_parent(port: int, name: str = EN, namespace: str = NS) -> dict[str, Any]:
    return {
        "group": "policy.linkerd.io",
        "kind": "EgressNetwork",
        "name": name,
        "namespace": namespace,
        "port": port,
    }


def route(
    kind: str,
    name: str,
    *,
    port: int = 80,
    rules: list[dict[str, Any]] | None = None,
    hostnames: list[str] | None = None,
    namespace: str = NS,
    created: str | None = None,
    parent: str = EN,
    parent_namespace: str = NS,
) -> dict[str, Any]:
    version = {
        "HTTPRoute": "v1",
        "GRPCRoute": "v1",
        "TLSRoute": "v1alpha2",
        "TCPRoute": "v1alpha2",
    }[kind]
    meta: dict[str, Any] = {"name": name, "namespace": namespace}
    if created:
        meta["creationTimestamp"] = created
    spec: dict[str, Any] = {"parentRefs": [en_parent(port, parent, parent_namespace)]}
    if hostnames:
        spec["hostnames"] = hostnames
    if rules is not None:
        spec["rules"] = rules
    return {
        "apiVersion": f"gateway.networking.k8s.io/{version}",
        "kind": kind,
        "metadata": meta,
        "spec": spec,
    }


def service(name: str, port: int = 8080, namespace: str = NS) -> dict[str, Any]:
    return {
        "apiVersion": "v1",
        "kind": "Service",
        "metadata": {"name": name, "namespace": namespace},
        "spec": {"selector": {"app": name}, "ports": [{"port": port}]},
    }


def svc_backend(name: str, port: int = 8080) -> dict[str, Any]:
    return {"name": name, "port": port}


def en_backend(name: str = EN, port: int | None = None) -> dict[str, Any]:
    ref: dict[str, Any] = {"group": "policy.linkerd.io", "kind": "EgressNetwork", "name": name}
    if port is not None:
        ref["port"] = port
    return ref


def snapshot(*docs: dict[str, Any] | str) -> Snapshot:
    return Snapshot.build(with_cluster_ips(load_manifests(list(docs))))


def http(
    snap: Snapshot,
    path: str = "/",
    *,
    host: str = "httpbin.org",
    ip: str = HTTPBIN_IP,
    port: int = 80,
    method: str = "GET",
    headers: dict[str, str] | list[tuple[str, str]] | None = None,
    namespace: str = NS,
    version: str = "1.1",
    grpc: bool = False,
) -> Decision:
    pairs = list(headers.items()) if isinstance(headers, dict) else list(headers or [])
    return decide(
        snap,
        HttpRequest(
            client_namespace=namespace,
            dst_ip=ip,
            dst_port=port,
            method=method,
            path=path,
            host=host,
            headers=tuple(pairs),
            http_version=version,  # type: ignore[arg-type]
            grpc=grpc,
        ),
    )


def tls(
    snap: Snapshot,
    sni: str | None = "httpbin.org",
    *,
    ip: str = HTTPBIN_IP,
    port: int = 443,
    namespace: str = NS,
) -> Decision:
    return decide(
        snap, TlsConnection(client_namespace=namespace, dst_ip=ip, dst_port=port, sni=sni)
    )


def tcp(snap: Snapshot, *, ip: str = HTTPBIN_IP, port: int = 443, namespace: str = NS) -> Decision:
    return decide(snap, TcpConnection(client_namespace=namespace, dst_ip=ip, dst_port=port))
