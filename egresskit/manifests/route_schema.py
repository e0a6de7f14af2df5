"""What the route CRDs fix: field patterns, enums, filter types and per-CRD differences.

Job: hold, as data, the parts of the Gateway API and ``policy.linkerd.io`` route CRD schemas
(and their CEL rules) the route parsers check against, and a :class:`Flavor` for each CRD
(and CRD version) saying where they differ. No parsing here; ``tests/test_crd_schemas.py``
checks these values against the real CRDs.
"""

from __future__ import annotations

import re
from dataclasses import dataclass, replace

from egresskit.manifests.model import GATEWAY_GROUP, POLICY_GROUP

HOSTNAME = re.compile(r"^(\*\.)?[a-z0-9]([-a-z0-9]*[a-z0-9])?(\.[a-z0-9]([-a-z0-9]*[a-z0-9])?)*$")
HOSTNAME_TEXT = 'a lowercase RFC 1123 hostname, optionally with a leading "*." (no IP address)'
GROUP = re.compile(r"^$|^[a-z0-9]([-a-z0-9]*[a-z0-9])?(\.[a-z0-9]([-a-z0-9]*[a-z0-9])?)*$")
GROUP_TEXT = 'an API group ("" or a lowercase DNS name)'
KIND = re.compile(r"^[a-zA-Z]([-a-zA-Z0-9]*[a-zA-Z0-9])?$")
HEADER_NAME = re.compile(r"^[A-Za-z0-9!#$%&'*+\-.^_`|~]+$")
HEADER_NAME_TEXT = "an HTTP header name (RFC 7230 token)"
#: Characters Gateway API allows in Exact/PathPrefix values (CEL on HTTPPathMatch).
PATH_CHARS = re.compile(r"^(?:[-A-Za-z0-9/._~!$&'()*+,;=:@]|[%][0-9a-fA-F]{2})+$")
GRPC_SERVICE = re.compile(r"^\.?[a-z_][a-z_0-9]*(\.[a-z_][a-z_0-9]*)*$", re.IGNORECASE)
GRPC_METHOD = re.compile(r"^[A-Za-z_][A-Za-z_0-9]*$")
METHODS = ("GET", "HEAD", "POST", "PUT", "DELETE", "CONNECT", "OPTIONS", "TRACE", "PATCH")
PATH_TYPES = ("Exact", "PathPrefix", "RegularExpression")
VALUE_TYPES = ("Exact", "RegularExpression")

#: Filter type -> the field holding its configuration.
FILTER_FIELDS = {
    "RequestHeaderModifier": "requestHeaderModifier",
    "ResponseHeaderModifier": "responseHeaderModifier",
    "RequestRedirect": "requestRedirect",
    "URLRewrite": "urlRewrite",
    "RequestMirror": "requestMirror",
    "ExtensionRef": "extensionRef",
    "CORS": "cors",
    "ExternalAuth": "externalAuth",
}
#: Gateway API CEL: these may appear at most once per filter list.
NOT_REPEATABLE = (
    "RequestHeaderModifier",
    "ResponseHeaderModifier",
    "RequestRedirect",
    "URLRewrite",
)


@dataclass(frozen=True, kw_only=True)
class Flavor:
    """What differs between the route CRDs (and CRD versions) egresskit reads."""

    #: Gateway API CRD (its CEL rules apply) rather than Linkerd's policy.linkerd.io one.
    gateway: bool
    #: CRD default of parentRefs[].group: Gateway API defaults it to its own group, Linkerd's
    #: HTTPRoute CRD to policy.linkerd.io; kind defaults to Gateway in both.
    parent_group: str
    #: policy.linkerd.io HTTPRoute v1alpha1/v1beta1 backendRefs have only name, port,
    #: namespace (default "default") and filters; the API server prunes group, kind, weight.
    legacy_backends: bool = False
    max_matches: int = 64
    rule_filters: tuple[str, ...] = ()
    backend_filters: tuple[str, ...] = ()
    #: Filter types Linkerd cannot convert: recorded in ``unsupported``, not rejected
    #: (gateway-api-matching.md D11, D12 and section 3.2).
    unconvertible: tuple[str, ...] = ()


_HTTP_FILTERS = ("RequestHeaderModifier", "ResponseHeaderModifier", "RequestRedirect")
GATEWAY_HTTP = Flavor(
    gateway=True,
    parent_group=GATEWAY_GROUP,
    rule_filters=_HTTP_FILTERS,
    backend_filters=_HTTP_FILTERS,
    unconvertible=("URLRewrite", "RequestMirror", "ExtensionRef", "CORS", "ExternalAuth"),
)
LINKERD_HTTP = Flavor(
    gateway=False,
    parent_group=POLICY_GROUP,
    max_matches=8,
    # Linkerd's CRD enums: rule filters lack ResponseHeaderModifier, backend filters have it.
    rule_filters=("RequestHeaderModifier", "RequestRedirect"),
    backend_filters=_HTTP_FILTERS,
)
LINKERD_HTTP_LEGACY = replace(LINKERD_HTTP, legacy_backends=True)
GATEWAY_GRPC = Flavor(
    gateway=True,
    parent_group=GATEWAY_GROUP,
    max_matches=8,
    rule_filters=("RequestHeaderModifier",),
    backend_filters=("RequestHeaderModifier",),
    unconvertible=("ResponseHeaderModifier", "RequestMirror", "ExtensionRef"),
)
GATEWAY_L4 = Flavor(gateway=True, parent_group=GATEWAY_GROUP)
