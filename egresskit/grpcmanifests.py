"""The manifests of the GRPCRoute and TCPRoute step, one constant per step (YAML).

Job: the objects a learner applies in notebook 7 and the tests apply, written as a learner
would ``kubectl apply`` them, beside the targets they are about. The story and the calls
that go with them are in :mod:`egresskit.grpcguide`, which re-exports every name here.

Names and parent references follow the guide (namespace ``egress-test``, the EgressNetwork
``all-egress-traffic``); GRPCRoute is ``gateway.networking.k8s.io/v1`` and TCPRoute
``v1alpha2``, the versions Linkerd 2.18+ watches (docs/facts/linkerd-egress.md 4.1).
"""

from __future__ import annotations

GRPC_TARGET = "grpc.example.com:50051"
TCP_TARGET = "tcp.example.com:6379"
SAY_HELLO = "helloworld.Greeter/SayHello"
ECHO = "egresskit.echo.Echo/Unary"
BB = "buoyantio.bb.TheService/theFunction"
NAMESPACE = "egress-test"
POD = "client"

#: Deny everything by default (the guide's EgressNetwork after its patch).
EGRESS_NETWORK_DENY = """\
apiVersion: policy.linkerd.io/v1alpha1
kind: EgressNetwork
metadata:
  namespace: egress-test
  name: all-egress-traffic
spec:
  trafficPolicy: Deny
"""

#: Allow one gRPC method: Greeter/SayHello on port 50051, to the original destination.
GREETER_ROUTE = """\
apiVersion: gateway.networking.k8s.io/v1
kind: GRPCRoute
metadata:
  name: grpc-greeter
  namespace: egress-test
spec:
  parentRefs:
    - name: all-egress-traffic
      kind: EgressNetwork
      group: policy.linkerd.io
      namespace: egress-test
      port: 50051
  rules:
  - matches:
    - method:
        service: helloworld.Greeter
        method: SayHello
"""

#: Allow the Echo service only for calls that carry ``x-team: blue`` metadata.
TEAM_HEADER_ROUTE = """\
apiVersion: gateway.networking.k8s.io/v1
kind: GRPCRoute
metadata:
  name: grpc-echo-blue-team
  namespace: egress-test
spec:
  parentRefs:
    - name: all-egress-traffic
      kind: EgressNetwork
      group: policy.linkerd.io
      namespace: egress-test
      port: 50051
  rules:
  - matches:
    - method:
        service: egresskit.echo.Echo
      headers:
      - name: x-team
        value: blue
"""

#: An in-cluster gRPC service: bb's terminus with a gRPC port.
INTERNAL_GRPC = """\
apiVersion: v1
kind: Service
metadata:
  name: internal-grpc
  namespace: egress-test
spec:
  type: ClusterIP
  selector:
    app: internal-grpc
  ports:
  - port: 9090
    protocol: TCP
    name: grpc
---
apiVersion: apps/v1
kind: Deployment
metadata:
  namespace: egress-test
  name: internal-grpc
spec:
  replicas: 1
  selector:
    matchLabels:
      app: internal-grpc
  template:
    metadata:
      labels:
        app: internal-grpc
      annotations:
        linkerd.io/inject: enabled
    spec:
      containers:
        - name: legacy-grpc
          image: buoyantio/bb:v0.0.5
          command: [ "sh", "-c"]
          args:
          - "/out/bb terminus --grpc-server-port 9090 --response-text 'answered inside the cluster'"
          ports:
            - name: grpc-port
              containerPort: 9090
"""

#: Send every call to bb's TheService back into the cluster.
BB_REDIRECT_ROUTE = """\
apiVersion: gateway.networking.k8s.io/v1
kind: GRPCRoute
metadata:
  name: grpc-bb-internal
  namespace: egress-test
spec:
  parentRefs:
    - name: all-egress-traffic
      kind: EgressNetwork
      group: policy.linkerd.io
      namespace: egress-test
      port: 50051
  rules:
  - matches:
    - method:
        service: buoyantio.bb.TheService
    backendRefs:
    - kind: Service
      name: internal-grpc
      port: 9090
"""

#: Allow opaque TCP on 6379 to its original destination (TCPRoutes need one backendRef).
TCP_ALLOW_ROUTE = """\
apiVersion: gateway.networking.k8s.io/v1alpha2
kind: TCPRoute
metadata:
  name: tcp-6379
  namespace: egress-test
spec:
  parentRefs:
    - name: all-egress-traffic
      kind: EgressNetwork
      group: policy.linkerd.io
      namespace: egress-test
      port: 6379
  rules:
  - backendRefs:
    - kind: EgressNetwork
      group: policy.linkerd.io
      name: all-egress-traffic
"""

#: Send opaque TCP on 6379 to the guide's in-cluster ``internal-egress`` Service instead.
TCP_REDIRECT_ROUTE = """\
apiVersion: gateway.networking.k8s.io/v1alpha2
kind: TCPRoute
metadata:
  name: tcp-6379-internal
  namespace: egress-test
spec:
  parentRefs:
    - name: all-egress-traffic
      kind: EgressNetwork
      group: policy.linkerd.io
      namespace: egress-test
      port: 6379
  rules:
  - backendRefs:
    - kind: Service
      name: internal-egress
      port: 80
"""

#: Every manifest above, by name, in the order of the story.
ALL_MANIFESTS: dict[str, str] = {
    "EGRESS_NETWORK_DENY": EGRESS_NETWORK_DENY,
    "GREETER_ROUTE": GREETER_ROUTE,
    "TEAM_HEADER_ROUTE": TEAM_HEADER_ROUTE,
    "INTERNAL_GRPC": INTERNAL_GRPC,
    "BB_REDIRECT_ROUTE": BB_REDIRECT_ROUTE,
    "TCP_ALLOW_ROUTE": TCP_ALLOW_ROUTE,
    "TCP_REDIRECT_ROUTE": TCP_REDIRECT_ROUTE,
}
