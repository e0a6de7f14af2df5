"""Every name in ``egresskit.__all__`` stays what it is: callable any number of times, in any
order, before and after importing every submodule of the package (issue 13, item 1)."""

from __future__ import annotations

import subprocess
import sys
import textwrap

SCRIPT = textwrap.dedent(
    """
    import importlib, pkgutil, random, sys
    import egresskit
    from egresskit import guide

    MANIFESTS = [guide.NAMESPACE, guide.EGRESS_NETWORK]

    def call(name):
        fn = getattr(egresskit, name)
        assert callable(fn), f"egresskit.{name} is {fn!r}, not callable"
        if name == "explain":
            d = fn(MANIFESTS, "http://httpbin.org/get", namespace="egress-test")
            assert d.outcome == "allowed", d
        elif name == "load_manifests":
            assert len(fn(MANIFESTS)) == 2
        elif name == "Snapshot":
            assert fn.build(egresskit.load_manifests(MANIFESTS)).objects
        elif name == "decide":
            from egresskit.policy.decision import HttpRequest
            snap = egresskit.Snapshot.build(egresskit.load_manifests(MANIFESTS))
            req = HttpRequest(client_namespace="egress-test", dst_ip="192.0.2.10", dst_port=80)
            assert fn(snap, req).outcome == "allowed"
        elif name == "connect":
            with fn("local") as cluster:
                assert cluster.name == "local"
        else:
            raise AssertionError(f"no call written for egresskit.{name}: add one")

    rng = random.Random(int(sys.argv[1]))
    names = list(egresskit.__all__)
    for name in rng.sample(names, len(names)):
        call(name)
    modules = sorted(m.name for m in pkgutil.walk_packages(egresskit.__path__, "egresskit."))
    rng.shuffle(modules)
    for i, module in enumerate(modules):
        importlib.import_module(module)
        if i % 7 == 0:  # calls interleaved with imports, in a new order each time
            for name in rng.sample(names, len(names)):
                if name != "connect":
                    call(name)
    for _ in range(2):
        for name in rng.sample(names, len(names)):
            call(name)
    print(len(modules), "modules imported")
    """
)


def test_public_names_survive_every_submodule_import() -> None:
    for seed in (1, 2):
        done = subprocess.run(
            [sys.executable, "-c", SCRIPT, str(seed)], capture_output=True, text=True, timeout=110
        )
        assert done.returncode == 0, done.stderr[-3000:]
        assert int(done.stdout.split()[0]) > 40, done.stdout
