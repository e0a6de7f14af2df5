"""Every pinned version and bound the real-cluster path uses, in one place.

Rules: nothing else in the package hard-codes a release, an image, a URL of a release asset or
a wait bound for the kind path; the CI workflow (``.github/workflows/kind.yml``) reads the
values it needs from ``python -m egresskit.versions`` so the two never drift.
"""

from __future__ import annotations

import sys

#: kind release and the node image built for it. kind only supports the images listed in the
#: notes of its own release, pinned by digest (kind v0.30.0 notes; the same digest appears in
#: third-party pins of ``kindest/node:v1.34.0``).
KIND_VERSION = "v0.30.0"
KIND_NODE_IMAGE = (
    "kindest/node:v1.34.0@sha256:7416a61b42b1662ca6ca89f02028ac133a309a2a30ba309614e8ec94d976dc5a"
)
#: kubectl matching the node's minor version (skew policy: within one minor).
KUBECTL_VERSION = "v1.34.0"

#: Linkerd 2.19 = edge-25.10.7 (docs/facts/linkerd-egress.md section 0). Open-source Linkerd
#: ships as edge builds; the CLI decides what ``linkerd install`` renders.
LINKERD_RELEASE = "edge-25.10.7"
LINKERD_STABLE = "2.19"

#: Gateway API experimental channel: TLSRoute/TCPRoute are not in the standard channel, and
#: the CRDs must exist before the control plane starts (spec sections 7.2 and 4.1).
GATEWAY_API_VERSION = "v1.2.1"
GATEWAY_API_INSTALL_URL = (
    "https://github.com/kubernetes-sigs/gateway-api/releases/download/"
    f"{GATEWAY_API_VERSION}/experimental-install.yaml"
)

#: ``linkerd install`` values: hostname labels on, so metrics carry ``hostname="httpbin.org"``
#: as the guide shows (spec section 7.3 step 5 and 8.5).
LINKERD_INSTALL_SETS = ("proxy.metrics.hostnameLabels=true",)

#: Oldest ``kubernetes`` Python client the kube backend works with: ``ApiClient.param_serialize``
#: and the six-argument ``call_api(method, url, ...)`` first ship in 37.0.0 (36.0.3 has
#: neither). pyproject.toml and environment.yml require ``kubernetes>=`` this.
KUBERNETES_CLIENT_MIN = "37"

#: Name of the kind cluster ``egresskit cluster up`` creates; its context is ``kind-<name>``.
KIND_CLUSTER_NAME = "egresskit"

# ------------------------------------------------------------------------- bounds (seconds)

#: One HTTP request to the API server.
REQUEST_TIMEOUT = 30.0
#: ``apply``/``patch``/``delete`` waiting for their effect. Route status is written by
#: Linkerd's status controller on change and on a 10 s tick (spec sections 1 and 4.3); a pod
#: may first pull its image.
APPLY_WAIT_TIMEOUT = 180.0
#: A change confirmed by its effect (a curl from the client answering as the change says):
#: Linkerd's status tick and the push to the proxies (spec sections 1 and 4.3: about 10 s).
EFFECT_WAIT_TIMEOUT = 60.0
#: Pause between two polls of the same object while waiting.
POLL_INTERVAL = 0.5
#: ``kind create cluster --wait``.
KIND_CREATE_WAIT = "180s"
#: ``linkerd check --wait``.
LINKERD_CHECK_WAIT = "5m"
#: pytest's limit for one ``kube``-marked test on a real cluster (it covers teardown too): the
#: bounded waits one guide test may make in turn (its applies, the Deployment, the namespace
#: deletion), two effect probes, and a margin for its curls. Inner bounds run out first, so
#: a slow cluster fails with a WaitTimeout that says what it waited for.
KUBE_TEST_TIMEOUT = 5 * APPLY_WAIT_TIMEOUT + 2 * EFFECT_WAIT_TIMEOUT + 120.0
#: Bound on any one lifecycle step (a CLI invocation).
STEP_TIMEOUT = 600.0
#: Bound on one notebook cell under ``egresskit run`` (papermill's ``execution_timeout``):
#: a cell's own waits are bounded and run out first (at most what one guide test waits,
#: above); this catches a cell that would otherwise hang ``make run`` and CI for good.
CELL_TIMEOUT = KUBE_TEST_TIMEOUT


def as_env() -> dict[str, str]:
    """The pins as shell variables, for CI."""
    return {
        "KIND_VERSION": KIND_VERSION,
        "KIND_NODE_IMAGE": KIND_NODE_IMAGE,
        "KUBECTL_VERSION": KUBECTL_VERSION,
        "LINKERD_RELEASE": LINKERD_RELEASE,
        "GATEWAY_API_VERSION": GATEWAY_API_VERSION,
        "GATEWAY_API_INSTALL_URL": GATEWAY_API_INSTALL_URL,
        "KIND_CLUSTER_NAME": KIND_CLUSTER_NAME,
    }


def main() -> int:
    """Print ``NAME=value`` lines (append them to ``$GITHUB_ENV`` in CI)."""
    for key, value in as_env().items():
        sys.stdout.write(f"{key}={value}\n")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
