"""Pod manifests for clients the guide's curl-only client pod cannot run.

Job: the meshed ``grpc-client`` pod that :meth:`KubeCluster.grpc
<egresskit.cluster.kube.KubeCluster.grpc>` and :meth:`~egresskit.cluster.kube.KubeCluster.tcp`
exec into on a real cluster: ``python:3.11-slim`` (pinned by tag) running the kit's own gRPC
client, :mod:`egresskit.grpcclient` with :mod:`egresskit.grpcproto`, so a call on kind is the
same program as on the local backend.

How the client gets into the pod, and why this way:

* The kit is not on PyPI and no image has it; a ConfigMap would be the natural carrier of
  the two source files, but the kit's manifest loader (and so ``cluster.apply``) accepts only
  the guide's kinds. The source therefore travels in the Pod itself, as environment
  variables of an init container that writes it to an ``emptyDir`` (about 15 kB; a Pod may
  be far larger), and it is the source of the installed kit, read when this module loads, so
  the pod and the local backend never run different clients.
* grpcio, grpcio-health-checking and protobuf come from PyPI (``pip install --target``, exact
  versions below) in the same init container. That needs the internet, which CI's kind job
  has. It must not depend on the egress policy the lesson is changing (under ``Deny`` the
  pod's own proxy would refuse files.pythonhosted.org), so the init container runs as the
  proxy's user, UID 2102, whose packets linkerd-init's iptables rules send straight out
  (``--proxy-uid``; the proxy's own connections must not loop back into it). Assumption:
  this is linkerd2-proxy-init's rule as we know it; it has not been run on kind this session.
* The main container only sleeps; ``kubectl exec`` runs the client in it. Its readiness probe
  imports the client, so ``apply`` (which waits for Pods Ready) returns only once the
  client can run.
"""

from __future__ import annotations

from importlib.resources import files

import yaml

__all__ = [
    "GRPC_CLIENT_CONTAINER",
    "GRPC_CLIENT_IMAGE",
    "GRPC_CLIENT_POD",
    "GRPC_CLIENT_POD_NAME",
    "GRPC_CLIENT_REQUIREMENTS",
    "grpc_client_pod",
]

GRPC_CLIENT_POD_NAME = "grpc-client"
GRPC_CLIENT_CONTAINER = "grpc-client"
#: Pinned by tag: Python 3.11, the kit's own version (pyproject ``requires-python``).
GRPC_CLIENT_IMAGE = "python:3.11-slim"
#: What the client imports, at the versions this kit is tested with (pyproject lists the
#: lower bounds; exact pins keep a pod started next month the same program).
GRPC_CLIENT_REQUIREMENTS = (
    "grpcio==1.85.3",
    "grpcio-health-checking==1.85.1",
    "protobuf==7.36.2",
)
#: Where the init container puts the packages and the kit's two modules.
SITE = "/opt/egresskit"
#: The proxy's UID (Linkerd's default ``proxy.uid``), skipped by linkerd-init's redirect.
PROXY_UID = 2102

_SOURCES = {"grpcclient.py": "EGRESSKIT_GRPCCLIENT_PY", "grpcproto.py": "EGRESSKIT_GRPCPROTO_PY"}

# Writes egresskit/__init__.py (empty: the in-pod package is just the client) and the two
# modules from the environment.
_WRITE_SOURCES = (
    "import os, pathlib; d = pathlib.Path(os.environ['SITE']) / 'egresskit'; "
    "d.mkdir(parents=True, exist_ok=True); (d / '__init__.py').write_text(''); "
    + "; ".join(f"(d / {name!r}).write_text(os.environ[{env!r}])" for name, env in _SOURCES.items())
)


def grpc_client_pod(namespace: str = "egress-test", name: str = GRPC_CLIENT_POD_NAME) -> str:
    """The pod as YAML, meshed like the guide's client pod (same two annotations)."""
    source = files("egresskit")
    env = [{"name": "SITE", "value": SITE}, {"name": "HOME", "value": "/tmp"}]
    env += [{"name": var, "value": source.joinpath(f).read_text()} for f, var in _SOURCES.items()]
    install = (
        f"pip install --quiet --no-cache-dir --disable-pip-version-check --target {SITE} "
        + " ".join(GRPC_CLIENT_REQUIREMENTS)
        + f' && python -c "{_WRITE_SOURCES}"'
    )
    pod = {
        "apiVersion": "v1",
        "kind": "Pod",
        "metadata": {
            "name": name,
            "namespace": namespace,
            "annotations": {
                "linkerd.io/inject": "enabled",
                "config.linkerd.io/proxy-metrics-hostname-labels": "true",
            },
        },
        "spec": {
            "initContainers": [
                {
                    "name": "install",
                    "image": GRPC_CLIENT_IMAGE,
                    "command": ["sh", "-c", install],
                    "env": env,
                    "securityContext": {"runAsUser": PROXY_UID},
                    "volumeMounts": [{"name": "site", "mountPath": SITE}],
                }
            ],
            "containers": [
                {
                    "name": GRPC_CLIENT_CONTAINER,
                    "image": GRPC_CLIENT_IMAGE,
                    "command": ["sh", "-c", "sleep infinity"],
                    "env": [{"name": "PYTHONPATH", "value": SITE}],
                    "volumeMounts": [{"name": "site", "mountPath": SITE}],
                    "readinessProbe": {
                        "exec": {"command": ["python", "-c", "import egresskit.grpcclient"]},
                        "periodSeconds": 2,
                    },
                }
            ],
            "volumes": [{"name": "site", "emptyDir": {}}],
        },
    }
    return yaml.safe_dump(pod, sort_keys=False)


#: The guide's namespace, as ``kubectl apply -f`` would take it.
GRPC_CLIENT_POD = grpc_client_pod()
