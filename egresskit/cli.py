"""The ``egresskit`` command: ``run`` (the guide as notebooks), ``explain``, ``demo``,
``cluster up|down|status``."""

from __future__ import annotations

import argparse
import sys
from pathlib import Path


def main(argv: list[str] | None = None) -> int:
    from egresskit.errors import EgressKitError

    try:
        return _main(argv)
    except EgressKitError as exc:
        # The kit's own errors already say where, what was expected and what was found.
        print(f"egresskit: {exc}", file=sys.stderr)
        return 2


def _main(argv: list[str] | None) -> int:
    parser = argparse.ArgumentParser(prog="egresskit", description=__doc__)
    sub = parser.add_subparsers(dest="command", required=True)

    run = sub.add_parser("run", help="run every notebook with papermill into --out")
    run.add_argument("--backend", default="local", choices=["local", "kind", "kube"])
    run.add_argument("--context", default=None, help="kube context (backend kube)")
    run.add_argument("--out", default="out", type=Path)
    run.add_argument("--only", default=None, help="run only notebooks whose name contains this")

    ex = sub.add_parser("explain", help="what Linkerd would do with a request, and why")
    ex.add_argument("url")
    ex.add_argument("-f", "--filename", action="append", required=True, type=Path)
    ex.add_argument("-n", "--namespace", required=True)
    ex.add_argument("-X", "--method", default="GET")

    sub.add_parser("demo", help="the policy engine on the guide's manifests")

    cl = sub.add_parser("cluster", help="kind + Linkerd lifecycle: up, down, status")
    cl.add_argument("action", choices=["up", "down", "status"])

    args, rest = parser.parse_known_args(argv)
    if args.command == "demo":
        from egresskit.demo import run as demo

        return demo()
    if args.command == "explain":
        from egresskit.explaining import explain

        print(explain(args.filename, args.url, namespace=args.namespace, method=args.method))
        return 0
    if args.command == "cluster":
        from egresskit.cluster import lifecycle

        return lifecycle.main([args.action, *rest])
    from egresskit.runner import run_all

    return run_all(backend=args.backend, context=args.context, out=args.out, only=args.only)


if __name__ == "__main__":
    sys.exit(main())
