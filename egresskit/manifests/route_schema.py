"""What differs between the route CRDs as egresskit reads them: a :class:`Flavor` per CRD.

Job: say, as data, how the Gateway API and ``policy.linkerd.io`` route CRDs (and CRD
versions) differ where the parsers build model values: CEL or not, fields a version lacks,
and which filter types Linkerd cannot convert. The defaults come from the CRDs themselves
(the parsers read the object as stored:
:func:`~egresskit.manifests.crd_validation.as_stored`), and no schema rule is repeated
here: :mod:`egresskit.manifests.crd_validation` has checked the document against the CRD's
own schema and CEL rules before a parser runs. ``tests/test_crd_schemas.py`` checks these
values against the CRDs.
"""

from __future__ import annotations

from dataclasses import dataclass, replace

#: Filter type -> the field holding its configuration.
FILTER_FIELDS = {
    "RequestHeaderModifier": "requestHeaderModifier",
    "ResponseHeaderModifier": "responseHeaderModifier",
    "RequestRedirect": "requestRedirect",
    "URLRewrite": "urlRewrite",
    "RequestMirror": "requestMirror",
    "ExtensionRef": "extensionRef",
}


@dataclass(frozen=True, kw_only=True)
class Flavor:
    """What differs between the route CRDs (and CRD versions) egresskit reads."""

    #: Gateway API CRD (its CEL rules apply) rather than Linkerd's policy.linkerd.io one.
    gateway: bool
    #: policy.linkerd.io HTTPRoute v1alpha1/v1beta1 backendRefs have only name, port,
    #: namespace (default "default") and filters: no group, kind or weight.
    legacy_backends: bool = False
    #: Filter types Linkerd cannot convert: recorded in ``unsupported``, not rejected
    #: (gateway-api-matching.md D11, D12 and section 3.2).
    unconvertible: tuple[str, ...] = ()


GATEWAY_HTTP = Flavor(
    gateway=True,
    unconvertible=("URLRewrite", "RequestMirror", "ExtensionRef"),
)
LINKERD_HTTP = Flavor(gateway=False)
LINKERD_HTTP_LEGACY = replace(LINKERD_HTTP, legacy_backends=True)
GATEWAY_GRPC = Flavor(
    gateway=True,
    unconvertible=("ResponseHeaderModifier", "RequestMirror", "ExtensionRef"),
)
GATEWAY_L4 = Flavor(gateway=True)
