"""The kinds that are not routes: Namespace, Pod, Service, Deployment and EgressNetwork.

Job: read the fields egresskit uses from the core API kinds (with the API server's own
defaulting and validation) and from Linkerd's ``policy.linkerd.io`` EgressNetwork (its CRD
schema and the admission webhook's network checks: docs/facts/linkerd-egress.md section 1).
:data:`CORE_PARSERS` maps each (apiVersion, kind) to its parser.
"""

from __future__ import annotations

import ipaddress
from collections.abc import Mapping
from typing import Any

from egresskit.manifests.model import (
    Container,
    ContainerPort,
    Deployment,
    EgressNetwork,
    K8sObject,
    Namespace,
    Network,
    Pod,
    PodTemplate,
    Service,
    ServicePort,
    TrafficPolicy,
)
from egresskit.manifests.reader import (
    DNS_LABEL,
    DNS_LABEL_TEXT,
    Parser,
    Reader,
    at,
    or_default,
    show,
)

# ------------------------------------------------------------------- core kinds


def _namespace(r: Reader, doc: dict[str, Any], common: dict[str, Any]) -> K8sObject:
    return Namespace(**common)


def _containers(r: Reader, spec: Mapping[str, Any], path: str) -> tuple[Container, ...]:
    items = r.get_list(spec, path, "containers", required=True, min_items=1, noun="container")
    out = []
    for cpath, c in r.item_maps(items or [], at(path, "containers")):
        name = r.get_str(
            c, cpath, "name", required=True, pattern=DNS_LABEL, pattern_text=DNS_LABEL_TEXT
        )
        image = r.get_str(c, cpath, "image", required=True)
        ports = []
        for ppath, p in r.item_maps(r.get_list(c, cpath, "ports") or [], at(cpath, "ports")):
            number = r.get_int(p, ppath, "containerPort", required=True, lo=1, hi=65535)
            protocol = r.get_str(p, ppath, "protocol", enum=("TCP", "UDP", "SCTP")) or "TCP"
            if number is not None:
                ports.append(
                    ContainerPort(
                        container_port=number, name=r.get_str(p, ppath, "name"), protocol=protocol
                    )
                )
        out.append(
            Container(
                name=name or "",
                image=image or "",
                command=r.str_list(c, cpath, "command"),
                args=r.str_list(c, cpath, "args"),
                ports=tuple(ports),
            )
        )
    return tuple(out)


def _pod(r: Reader, doc: dict[str, Any], common: dict[str, Any]) -> K8sObject:
    spec = r.get_map(doc, "", "spec", required=True) or {}
    return Pod(**common, containers=_containers(r, spec, "spec"))


def _service(r: Reader, doc: dict[str, Any], common: dict[str, Any]) -> K8sObject:
    spec = r.get_map(doc, "", "spec", required=True) or {}
    types = ("ClusterIP", "NodePort", "LoadBalancer", "ExternalName")
    ports = []
    for ppath, p in r.item_maps(r.get_list(spec, "spec", "ports") or [], "spec.ports"):
        port = r.get_int(p, ppath, "port", required=True, lo=1, hi=65535)
        target = p.get("targetPort")
        if target is not None and not isinstance(target, str):
            target = r.get_int(p, ppath, "targetPort", lo=1, hi=65535)
        if port is not None:
            ports.append(
                ServicePort(
                    port=port,
                    name=r.get_str(p, ppath, "name"),
                    protocol=r.get_str(p, ppath, "protocol", enum=("TCP", "UDP", "SCTP")) or "TCP",
                    # The API server defaults targetPort to port.
                    target_port=port if target is None else target,
                    app_protocol=r.get_str(p, ppath, "appProtocol"),
                )
            )
    return Service(
        **common,
        type=r.get_str(spec, "spec", "type", enum=types) or "ClusterIP",
        selector=r.str_map(spec, "spec", "selector"),
        ports=tuple(ports),
        cluster_ip=r.get_str(spec, "spec", "clusterIP"),
    )


def _deployment(r: Reader, doc: dict[str, Any], common: dict[str, Any]) -> K8sObject:
    spec = r.get_map(doc, "", "spec", required=True) or {}
    selector_map = r.get_map(spec, "spec", "selector", required=True) or {}
    selector = r.str_map(selector_map, "spec.selector", "matchLabels")
    template = r.get_map(spec, "spec", "template", required=True) or {}
    tmeta = r.get_map(template, "spec.template", "metadata") or {}
    labels = r.str_map(tmeta, "spec.template.metadata", "labels")
    # apps/v1 validation: the selector must select the template's own pods.
    if template and not set(selector) <= set(labels):
        wanted = ",".join(f"{k}={v}" for k, v in selector)
        r.problem(
            "spec.template.metadata.labels",
            f"labels matching spec.selector ({wanted})",
            ",".join(f"{k}={v}" for k, v in labels) or "none",
        )
    tspec = r.get_map(template, "spec.template", "spec", required=True) or {}
    return Deployment(
        **common,
        replicas=or_default(r.get_int(spec, "spec", "replicas", lo=0, hi=2**31 - 1), 1),
        selector=selector,
        template=PodTemplate(
            labels=labels,
            annotations=r.str_map(tmeta, "spec.template.metadata", "annotations"),
            containers=_containers(r, tspec, "spec.template.spec") if tspec else (),
        ),
    )


# ------------------------------------------------------------------ EgressNetwork

IPNetwork = ipaddress.IPv4Network | ipaddress.IPv6Network


def _cidr(r: Reader, value: Any, path: str) -> IPNetwork | None:
    # Linkerd parses a network first, then a bare address as a single host; host bits may
    # be set (ipnet is not strict): linkerd-egress.md section 1, network.rs `Cidr`.
    if isinstance(value, str):
        try:
            return ipaddress.ip_network(value, strict=False)
        except ValueError:
            pass
    r.problem(path, "a CIDR or IP address (10.0.0.0/8, 192.0.2.1, ::/0)", show(value))
    return None


def _egress_network(r: Reader, doc: dict[str, Any], common: dict[str, Any]) -> K8sObject:
    # The CRD's schema has been checked (spec and trafficPolicy required, the enum, each
    # network's cidr required): what is left is Linkerd's admission webhook.
    spec = doc["spec"]
    items = spec.get("networks")
    networks: tuple[Network, ...] | None = None
    if items is not None:
        if not items:
            # Admission webhook: "at least one network must be specified" (spec section 1).
            r.problem("spec.networks", "at least one network (or omit networks)", "[]")
        out = []
        for npath, n in r.item_maps(items, "spec.networks"):
            cidr = _cidr(r, n["cidr"], at(npath, "cidr"))
            excepts = n.get("except") or []
            normal = []
            for i, raw in enumerate(excepts):
                epath = at(at(npath, "except"), i)
                exc = _cidr(r, raw, epath)
                if exc is None or cidr is None:
                    continue
                # Webhook `validate_networks`: an except lies inside its cidr and does not
                # cover all of it (spec section 1).
                if exc.version != cidr.version or not exc.subnet_of(cidr):  # type: ignore[arg-type]
                    r.problem(epath, f"a network inside {cidr}", show(raw))
                elif exc == cidr:
                    r.problem(epath, f"a network smaller than {cidr} (not all of it)", show(raw))
                normal.append(str(exc))
            if cidr is not None:
                # Stored in canonical form ("192.0.2.1" -> "192.0.2.1/32", host bits cleared)
                # so the engine can use ipaddress.ip_network() on it as it is.
                out.append(Network(cidr=str(cidr), except_=tuple(normal)))
        networks = tuple(out)
    traffic_policy: TrafficPolicy = "Deny" if spec["trafficPolicy"] == "Deny" else "Allow"
    return EgressNetwork(**common, traffic_policy=traffic_policy, networks=networks)


CORE_PARSERS: dict[tuple[str, str], Parser] = {
    ("v1", "Namespace"): _namespace,
    ("v1", "Pod"): _pod,
    ("v1", "Service"): _service,
    ("apps/v1", "Deployment"): _deployment,
    ("policy.linkerd.io/v1alpha1", "EgressNetwork"): _egress_network,
}
