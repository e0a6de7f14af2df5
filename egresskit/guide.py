"""The guide's manifests, one constant per step of "Managing egress traffic".

Faithful to the Linkerd guide "Managing egress traffic" (linkerd/website,
``linkerd.io/2/tasks/managing-egress-traffic``; namespace ``egress-test``, names exactly as
there), with two deliberate changes, each marked by a YAML comment on its line
(``# egresskit: ...``) so the notebooks, which show these texts verbatim, say why:

1. ``CLIENT_POD`` carries ``config.linkerd.io/proxy-metrics-hostname-labels: "true"``:
   since Linkerd 2.18 the ``hostname`` metric label is empty unless this is set, and the
   guide's metric output shows it (docs/facts/linkerd-egress.md section 10, item 9).
2. HTTPRoutes use ``gateway.networking.k8s.io/v1``: Gateway API v1.1+ no longer serves
   ``v1alpha2`` HTTPRoutes, which the guide uses (linkerd-egress.md 7.4). The guide's
   literal text is kept as ``*_V1ALPHA2`` so tests can show the difference.

TLSRoute stays ``v1alpha2``: it is the only version the experimental channel serves.
"""

from __future__ import annotations

import json
from typing import Any

#: Change 2's YAML comment, on the apiVersion line of each HTTPRoute.
V1_COMMENT = "  # egresskit: the guide says v1alpha2, which Gateway API v1.1+ no longer serves"

NAMESPACE_NAME = "egress-test"
EGRESS_NETWORK_NAME = "all-egress-traffic"

# Step "Visualizing egress traffic": `kubectl create ns egress-test`.
NAMESPACE = """\
apiVersion: v1
kind: Namespace
metadata:
  name: egress-test
"""

EGRESS_NETWORK = """\
apiVersion: policy.linkerd.io/v1alpha1
kind: EgressNetwork
metadata:
  namespace: egress-test
  name: all-egress-traffic
spec:
  trafficPolicy: Allow
"""

# Change 1: the hostname-labels annotation (see module docstring).
CLIENT_POD = """\
apiVersion: v1
kind: Pod
metadata:
  name: client
  namespace: egress-test
  annotations:
    linkerd.io/inject: enabled
    config.linkerd.io/proxy-metrics-hostname-labels: "true"  # egresskit: not in the guide; since Linkerd 2.18 the hostname metric label is empty without it
spec:
  containers:
  - name: client
    image: curlimages/curl
    command:
      - "sh"
      - "-c"
      - "sleep infinity"
"""  # noqa: E501 (the YAML comment on the annotation line says why it is there)

# Step "Restricting egress traffic": the `kubectl patch --type=merge` body, as the guide
# writes it after `-p`, and as the dict the facade's `patch` takes.
DENY_PATCH_JSON = '{"spec":{"trafficPolicy": "Deny"}}'
DENY_PATCH: dict[str, Any] = json.loads(DENY_PATCH_JSON)

# Change 2: gateway.networking.k8s.io/v1 instead of the guide's v1alpha2.
HTTPBIN_GET_ROUTE = f"""\
apiVersion: gateway.networking.k8s.io/v1{V1_COMMENT}
kind: HTTPRoute
metadata:
  name: httpbin-get
  namespace: egress-test
spec:
  parentRefs:
    - name: all-egress-traffic
      kind: EgressNetwork
      group: policy.linkerd.io
      namespace: egress-test
      port: 80
  rules:
    - matches:
      - path:
          value: "/get"
"""

#: The guide's literal text (not served by Gateway API v1.1+).
HTTPBIN_GET_ROUTE_V1ALPHA2 = HTTPBIN_GET_ROUTE.replace(
    f"gateway.networking.k8s.io/v1{V1_COMMENT}\n", "gateway.networking.k8s.io/v1alpha2\n"
)

TLS_EGRESS_ROUTE = """\
apiVersion: gateway.networking.k8s.io/v1alpha2
kind: TLSRoute
metadata:
  name: tls-egress
  namespace: egress-test
spec:
  hostnames:
  - httpbin.org
  parentRefs:
  - name: all-egress-traffic
    kind: EgressNetwork
    group: policy.linkerd.io
    namespace: egress-test
    port: 443
  rules:
  - backendRefs:
    - kind: EgressNetwork
      group: policy.linkerd.io
      name: all-egress-traffic
"""

# Step "Redirecting egress traffic back to the cluster".
INTERNAL_EGRESS = """\
apiVersion: v1
kind: Service
metadata:
  name: internal-egress
  namespace: egress-test
spec:
  type: ClusterIP
  selector:
    app: internal-egress
  ports:
  - port: 80
    protocol: TCP
    name: one
---
apiVersion: apps/v1
kind: Deployment
metadata:
  namespace: egress-test
  name: internal-egress
spec:
  replicas: 1
  selector:
    matchLabels:
      app: internal-egress
  template:
    metadata:
      labels:
        app: internal-egress
      annotations:
        linkerd.io/inject: enabled
    spec:
      containers:
        - name: legacy-app
          image: buoyantio/bb:v0.0.5
          command: [ "sh", "-c"]
          args:
          - "/out/bb terminus --h1-server-port 80 --response-text 'You cannot go there right now' --fire-and-forget"
          ports:
            - name: http-port
              containerPort: 80
"""  # noqa: E501 (the guide's args line, kept verbatim)

# The final section's TLSRoute: the same route without hostnames (all TLS allowed).
TLS_EGRESS_ROUTE_ALL = """\
apiVersion: gateway.networking.k8s.io/v1alpha2
kind: TLSRoute
metadata:
  name: tls-egress
  namespace: egress-test
spec:
  parentRefs:
  - name: all-egress-traffic
    kind: EgressNetwork
    group: policy.linkerd.io
    namespace: egress-test
    port: 443
  rules:
  - backendRefs:
    - kind: EgressNetwork
      group: policy.linkerd.io
      name: all-egress-traffic
"""

# Change 2 again.
UNENCRYPTED_HTTP_ROUTE = f"""\
apiVersion: gateway.networking.k8s.io/v1{V1_COMMENT}
kind: HTTPRoute
metadata:
  name: unencrypted-http
  namespace: egress-test
spec:
  parentRefs:
    - name: all-egress-traffic
      kind: EgressNetwork
      group: policy.linkerd.io
      namespace: egress-test
      port: 80
  rules:
  - backendRefs:
    - kind: Service
      name: internal-egress
      port: 80
"""

#: The guide's literal text (not served by Gateway API v1.1+).
UNENCRYPTED_HTTP_ROUTE_V1ALPHA2 = UNENCRYPTED_HTTP_ROUTE.replace(
    f"gateway.networking.k8s.io/v1{V1_COMMENT}\n", "gateway.networking.k8s.io/v1alpha2\n"
)

#: Every YAML constant above, by name, in the guide's order (for tests and notebooks).
ALL_MANIFESTS: dict[str, str] = {
    "NAMESPACE": NAMESPACE,
    "EGRESS_NETWORK": EGRESS_NETWORK,
    "CLIENT_POD": CLIENT_POD,
    "HTTPBIN_GET_ROUTE": HTTPBIN_GET_ROUTE,
    "HTTPBIN_GET_ROUTE_V1ALPHA2": HTTPBIN_GET_ROUTE_V1ALPHA2,
    "TLS_EGRESS_ROUTE": TLS_EGRESS_ROUTE,
    "INTERNAL_EGRESS": INTERNAL_EGRESS,
    "TLS_EGRESS_ROUTE_ALL": TLS_EGRESS_ROUTE_ALL,
    "UNENCRYPTED_HTTP_ROUTE": UNENCRYPTED_HTTP_ROUTE,
    "UNENCRYPTED_HTTP_ROUTE_V1ALPHA2": UNENCRYPTED_HTTP_ROUTE_V1ALPHA2,
}
