"""egresskit: learn, demonstrate and audit Linkerd's egress policy.

The public surface is small and imported lazily (so ``import egresskit`` is cheap):

* :func:`connect` -- a cluster facade: ``"local"`` (the embedded mesh) or ``"kind"``/``"kube"``;
* :func:`explain` -- what Linkerd would do with a request, and why;
* :func:`load_manifests` -- parse, default and validate Kubernetes manifests;
* :func:`decide` and :class:`Snapshot` -- the pure policy engine.

Rule: no submodule has the name of a public function (``explain`` lives in
``egresskit.explaining``), because importing a submodule sets the package attribute of
that name to the module, and ``egresskit.explain(...)`` would then call a module.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

__version__ = "0.1.0"

if TYPE_CHECKING:
    from egresskit.backends import connect
    from egresskit.explaining import explain
    from egresskit.manifests import load_manifests
    from egresskit.policy.engine import decide
    from egresskit.policy.snapshot import Snapshot

_EXPORTS = {
    "connect": "egresskit.backends",
    "explain": "egresskit.explaining",
    "load_manifests": "egresskit.manifests",
    "decide": "egresskit.policy.engine",
    "Snapshot": "egresskit.policy.snapshot",
}

__all__ = ["Snapshot", "connect", "decide", "explain", "load_manifests"]


def __getattr__(name: str) -> Any:
    module = _EXPORTS.get(name)
    if module is None:
        raise AttributeError(f"module 'egresskit' has no attribute {name!r}")
    import importlib

    return getattr(importlib.import_module(module), name)
