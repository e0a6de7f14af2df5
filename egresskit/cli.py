"""The ``egresskit`` command: ``explain``, ``audit``, ``diff``, ``demo``, ``run``, ``cluster``.

Job: parse arguments the way a kubectl user expects, read manifests (:mod:`egresskit.sources`)
or a live cluster (:mod:`egresskit.liveread`), call the same functions the notebooks call,
and print text, JSON or YAML. Help texts are plain text (no markup), with the exit codes.
"""

from __future__ import annotations

import argparse
import os
import sys
from pathlib import Path
from typing import Any, TextIO

from egresskit.errors import BackendError, EgressKitError

EXIT_CODES = """\
exit codes:
  0  explain: every request is allowed or redirected; audit: no finding at or above
     --fail-on; diff: no request changes outcome or backend
  1  explain: a request is forbidden, invalid or fails; audit: a finding at or above
     --fail-on; diff: at least one request changes
  2  bad input: arguments, manifests (each problem names file, document, field) or URLs
  3  the cluster could not be read (kubeconfig, context, API server)
"""

REQUESTS_HELP = (
    "a file of requests, one per line: [METHOD] URL [-H 'name: value']...; # starts a comment"
)


class _Formatter(argparse.RawDescriptionHelpFormatter):
    pass


def main(argv: list[str] | None = None, *, stdin: TextIO | None = None) -> int:
    try:
        return _main(argv, stdin)
    except BrokenPipeError:
        # The reader (head, grep -q) stopped early: not an error of ours. Silence the flush
        # at exit as the Python docs advise (library/signal, "Note on SIGPIPE").
        os.dup2(os.open(os.devnull, os.O_WRONLY), sys.stdout.fileno())
        return 0
    except BackendError as exc:
        print(f"egresskit: {exc}", file=sys.stderr)
        return 3
    except EgressKitError as exc:
        # The kit's own errors already say where, what was expected and what was found.
        print(f"egresskit: {exc}", file=sys.stderr)
        return 2


def _source_options(p: argparse.ArgumentParser, *, files_help: str) -> None:
    p.add_argument("-f", "--filename", action="append", default=[], metavar="PATH", help=files_help)
    p.add_argument(
        "-R",
        "--recursive",
        action="store_true",
        help="read the directories given with -f and their subdirectories",
    )
    p.add_argument(
        "--context",
        default=None,
        help="read the objects from this kube context instead (read-only)",
    )
    p.add_argument("--kubeconfig", default=None, help="kubeconfig file (default $KUBECONFIG)")
    p.add_argument(
        "-n",
        "--namespace",
        default="default",
        help="the client's namespace, and the namespace of objects without one (default: default)",
    )
    p.add_argument(
        "-o",
        "--output",
        default="text",
        choices=["text", "json", "yaml"],
        help="text (default), or json/yaml carrying every decision in full",
    )


FILES = "a manifest file, a directory, or - for stdin; repeat for more"


def _parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="egresskit",
        description="Learn, demonstrate and audit Linkerd's egress policy.",
        epilog=EXIT_CODES,
        formatter_class=_Formatter,
    )
    sub = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")

    ex = sub.add_parser(
        "explain",
        help="what Linkerd would do with a request, and why",
        description="What Linkerd's proxy does with each request from a pod in -n, and why.\n"
        "URLs: http://host[:port]/path, https://host[:port]/ (TLS, SNI = host),\n"
        "grpc://host:port/package.Service/Method (-H adds metadata), tcp://host:port.",
        epilog=EXIT_CODES + "\nexample:\n  egresskit explain http://httpbin.org/ip -f manifests/ "
        "-n egress-test",
        formatter_class=_Formatter,
    )
    ex.add_argument("url", nargs="+")
    _source_options(ex, files_help=FILES)
    ex.add_argument("-X", "--method", default="GET", help="HTTP method (default GET)")
    ex.add_argument(
        "-H",
        "--header",
        action="append",
        default=[],
        metavar="'NAME: VALUE'",
        help="a request header (gRPC: metadata); repeat for more",
    )

    au = sub.add_parser(
        "audit",
        help="findings, each with its proof, and the explain table (a CI gate)",
        description="Findings a reviewer would flag, each with the request that proves it,\n"
        "and the engine's answer for a set of requests (the URLs given, --requests,\n"
        "or by default one per hostname and path the routes name).",
        epilog=EXIT_CODES + "\nexample (CI):\n  egresskit audit -f policy/ -R -n egress-test "
        "--fail-on warning",
        formatter_class=_Formatter,
    )
    au.add_argument("url", nargs="*")
    _source_options(au, files_help=FILES)
    au.add_argument("--requests", type=Path, default=None, metavar="FILE", help=REQUESTS_HELP)
    au.add_argument(
        "--fail-on",
        default=None,
        choices=["info", "warning", "error"],
        help="exit 1 when a finding is at least this serious",
    )

    di = sub.add_parser(
        "diff",
        help="which requests a proposed change would break, allow or redirect",
        description="For each request, the outcome under the current policy (-f or --context)\n"
        "and under it with the proposed manifests applied (-p, as kubectl apply would);\n"
        "only the requests that change, grouped: newly forbidden, newly allowed,\n"
        "newly redirected, backend changed, newly failing.\n"
        "Requests: --requests FILE, or --from-traffic: the route metrics of the meshed\n"
        "pods in -n on the --context cluster (what the metrics do not record is listed).",
        epilog=EXIT_CODES + "\nexample:\n  egresskit diff --context kind-egresskit -n egress-test "
        "-p deny.yaml -p httpbin-get.yaml --from-traffic",
        formatter_class=_Formatter,
    )
    _source_options(di, files_help="the current policy: " + FILES)
    di.add_argument(
        "-p",
        "--proposed",
        action="append",
        required=True,
        metavar="PATH",
        help="proposed manifests (file, directory or -); repeat for more",
    )
    req = di.add_mutually_exclusive_group(required=True)
    req.add_argument("--requests", type=Path, default=None, metavar="FILE", help=REQUESTS_HELP)
    req.add_argument(
        "--from-traffic",
        action="store_true",
        help="the requests the proxies counted (needs --context)",
    )

    sub.add_parser("demo", help="the policy engine on the guide's manifests")

    run = sub.add_parser("run", help="run every notebook with papermill into --out")
    run.add_argument("--backend", default="local", choices=["local", "kind", "kube"])
    run.add_argument("--context", default=None, help="kube context (backend kube)")
    run.add_argument("--out", default="out", type=Path)
    run.add_argument("--only", default=None, help="run only notebooks whose name contains this")

    cl = sub.add_parser("cluster", help="kind + Linkerd lifecycle: up, down, status")
    cl.add_argument("action", choices=["up", "down", "status"])
    return parser


def _main(argv: list[str] | None, stdin: TextIO | None) -> int:
    parser = _parser()
    args, rest = parser.parse_known_args(argv)
    if rest and args.command != "cluster":
        parser.error(f"unrecognized arguments: {' '.join(rest)}")
    if args.command == "explain":
        return _explain(args, stdin)
    if args.command == "audit":
        return _audit(args, stdin)
    if args.command == "diff":
        return _diff(args, stdin)
    if args.command == "demo":
        from egresskit.demo import run as demo

        return demo()
    if args.command == "cluster":
        from egresskit.cluster import lifecycle

        return lifecycle.main([args.action, *rest])
    from egresskit.runner import run_all

    return run_all(backend=args.backend, context=args.context, out=args.out, only=args.only)


def _objects(args: argparse.Namespace, stdin: TextIO | None) -> list[Any]:
    """The current objects: from -f, or from --context (one of them)."""
    from egresskit.errors import PolicyError

    if args.filename and args.context:
        raise PolicyError("-f and --context: expected one source of objects, found both")
    if args.context:
        from egresskit.liveread import read_live

        live = read_live(args.context, kubeconfig=args.kubeconfig)
        for kind in live.not_served:
            print(f"egresskit: {live.context} does not serve {kind}: none read", file=sys.stderr)
        for problem in live.skipped:
            print(f"egresskit: left out (cannot be read): {problem}", file=sys.stderr)
        return live.objects
    if not args.filename:
        raise PolicyError("expected -f PATH (file, directory or -) or --context, found neither")
    from egresskit.sources import read_filenames

    return read_filenames(
        args.filename, recursive=args.recursive, namespace=args.namespace, stdin=stdin
    )


def _headers(values: list[str]) -> dict[str, str]:
    from egresskit.errors import PolicyError

    out = {}
    for value in values:
        name, sep, text = value.partition(":")
        if not sep or not name.strip():
            raise PolicyError(f"-H {value!r}: expected 'name: value'")
        out[name.strip()] = text.strip()
    return out


def _request_lines(path: Path) -> list[str]:
    from egresskit.errors import PolicyError

    try:
        return path.read_text(encoding="utf-8").splitlines()
    except (OSError, UnicodeDecodeError) as exc:
        raise PolicyError(f"{path}: expected a readable UTF-8 file of requests: {exc}") from exc


def _explain(args: argparse.Namespace, stdin: TextIO | None) -> int:
    from egresskit.explaining import explain, snapshot_of
    from egresskit.rendering import decision_dict, dump

    snap = snapshot_of(_objects(args, stdin))
    headers = _headers(args.header)
    decided = [
        (u, explain(snap, u, namespace=args.namespace, method=args.method, headers=headers))
        for u in args.url
    ]
    if args.output == "text":
        print("\n\n".join(f"{url}\n{d}" if len(decided) > 1 else str(d) for url, d in decided))
    else:
        items = [decision_dict(u, d) for u, d in decided]
        print(dump({"namespace": args.namespace, "items": items}, args.output), end="")
    passing = all(d.outcome in ("allowed", "redirected") for _, d in decided)
    return 0 if passing else 1


def _audit(args: argparse.Namespace, stdin: TextIO | None) -> int:
    from egresskit.audit import audit
    from egresskit.probes import probes_from_lines
    from egresskit.rendering import decision_dict, dump, plain

    urls: list[str] | None = list(args.url) or None
    if args.requests is not None:
        probes = probes_from_lines(_request_lines(args.requests), source=str(args.requests))
        urls = (urls or []) + [p.url for p in probes]
    result = audit(_objects(args, stdin), urls, namespace=args.namespace)
    if args.output == "text":
        print(result.text())
    else:
        data = {
            "namespace": result.namespace,
            "worst": result.worst(),
            "findings": [
                {**plain(f), "proof_decision": decision_dict(f.proof_url, f.proof_decision)}
                if f.proof_url and f.proof_decision
                else plain(f)
                for f in result.findings
            ],
            "requests": [decision_dict(u, d) for u, d in result.requests],
        }
        print(dump(data, args.output), end="")
    return 1 if result.fails(args.fail_on) else 0


def _diff(args: argparse.Namespace, stdin: TextIO | None) -> int:
    from egresskit.errors import PolicyError
    from egresskit.explaining import snapshot_of
    from egresskit.impact import impact
    from egresskit.probes import probes_from_lines, probes_from_traffic
    from egresskit.rendering import dump, impact_dict
    from egresskit.sources import overlay, read_filenames

    if "-" in args.filename and "-" in args.proposed:
        raise PolicyError("-f - and -p -: expected stdin for one of them, found both")
    current = _objects(args, stdin)
    proposed = overlay(
        current,
        read_filenames(
            args.proposed, recursive=args.recursive, namespace=args.namespace, stdin=stdin
        ),
    )
    lost: list[str] = []
    if args.from_traffic:
        if not args.context:
            raise PolicyError("--from-traffic: expected --context (traffic is read from a cluster)")
        from egresskit.liveread import live_metrics
        from egresskit.seen import series_seen

        series, errors = series_seen(
            live_metrics(args.context, args.namespace, kubeconfig=args.kubeconfig)
        )
        for error in errors:
            print(f"egresskit: metrics: {error}", file=sys.stderr)
        probes, lost = probes_from_traffic(series, [snapshot_of(current), snapshot_of(proposed)])
    else:
        probes = probes_from_lines(_request_lines(args.requests), source=str(args.requests))
    result = impact(current, proposed, probes, namespace=args.namespace, lost=lost)
    if args.output == "text":
        print(result.text())
    else:
        print(dump(impact_dict(result), args.output), end="")
    return 1 if result.changes else 0


if __name__ == "__main__":
    sys.exit(main())
