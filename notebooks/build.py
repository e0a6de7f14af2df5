"""Write the notebooks' sources from the cell lists below (``python notebooks/build.py``).

The notebooks are thin: each code cell is one call into :mod:`egresskit.tutorial`, the
same calls the tests make. Cells tagged ``verify`` print one PASS line (or raise) and are
compared exactly by nbval; every other code cell's output is volatile (counts, times) and
tagged ``nbval-ignore-output``. ``make notebooks`` runs this, then executes the notebooks
with papermill and saves them with their outputs, charts included as static images.
"""

from __future__ import annotations

from pathlib import Path

import nbformat

from egresskit.runner import KERNELSPEC

HERE = Path(__file__).resolve().parent

PARAMETERS = """\
# Parameters (papermill): the backend and where outputs go.
backend = "local"  # "local" (embedded mesh), "kind" or "kube"
kube_context = None  # for backend "kube": the kube context with Linkerd
output_dir = "../out"  # charts are written to output_dir/charts
rate = 4.0  # requests per second per URL of the client's loop
duration = 2.0  # seconds of traffic per step"""

SETUP = """\
from egresskit.tutorial import Tutorial

t = Tutorial(backend, kube_context=kube_context, output_dir=output_dir, rate=rate)"""


def md(text: str) -> nbformat.NotebookNode:
    return nbformat.v4.new_markdown_cell(text.strip())


def code(text: str, *, verify: bool = False, tags: tuple[str, ...] = ()) -> nbformat.NotebookNode:
    cell = nbformat.v4.new_code_cell(text.strip())
    all_tags = list(tags) + (["verify"] if verify else ["nbval-ignore-output"])
    cell.metadata["tags"] = all_tags
    return cell


def verify(text: str) -> nbformat.NotebookNode:
    return code(text, verify=True)


def header(title: str, story: str) -> list[nbformat.NotebookNode]:
    return [
        md(f"# {title}\n\n{story}"),
        code(PARAMETERS, tags=("parameters",)),
        code(SETUP),
    ]


def cleanup() -> list[nbformat.NotebookNode]:
    return [
        md("## Cleanup\n\n`kubectl delete ns egress-test`, then check that nothing is left."),
        verify("t.cleanup()"),
        code("t.close()"),
    ]


NOTEBOOKS: dict[str, list[nbformat.NotebookNode]] = {
    "01-visualizing-egress-traffic": [
        *header(
            "1. Visualizing egress traffic",
            "An `EgressNetwork` with `trafficPolicy: Allow` captures the namespace's egress "
            "traffic without changing it, so we can *see* it in the proxy's route metrics "
            "before we restrict anything (guide: *Visualizing egress traffic*).",
        ),
        md(
            "Create the `egress-test` namespace and one `EgressNetwork` in it. Linkerd's status "
            "controller marks it `Accepted`."
        ),
        code("t.create_egress_network()"),
        verify('t.verify_accepted("egressnetwork", "all-egress-traffic")'),
        md(
            "Deploy the curl client (meshed, with hostname labels on). Before any traffic the "
            "proxy has no route series yet: checked, so the next check cannot pass vacuously."
        ),
        code("t.deploy_client()"),
        verify('t.verify_no_series(route_name="http-egress-allow")'),
        md(
            "Generate traffic like the guide's `while sleep 1; do curl -s http://httpbin.org/get; done`."
        ),
        code('t.start_traffic("http://httpbin.org/get")\nt.run_for(duration)'),
        md(
            "`linkerd dg proxy-metrics -n egress-test po/client | grep outbound_http_route_request_statuses_total`:"
        ),
        code('print(t.metrics("outbound_http_route_request_statuses_total"))'),
        md(
            'Filter on `parent_kind="EgressNetwork"`: the traffic goes through the synthesised '
            "default route `http-egress-allow`, as the guide shows."
        ),
        code('t.series(parent_kind="EgressNetwork")'),
        verify(
            't.verify_series(parent_kind="EgressNetwork", route_kind="default",\n'
            '                route_name="http-egress-allow", hostname="httpbin.org", http_status="200")'
        ),
        verify(
            't.verify_curl("http://httpbin.org/get", status=200, json_field=("url", "http://httpbin.org/get"))'
        ),
        md("The traffic over time, as the client saw it:"),
        code(
            't.stop_traffic()\nt.chart("01-visualizing", title="Egress with trafficPolicy Allow")'
        ),
        *cleanup(),
    ],
    "02-restricting-egress-traffic": [
        *header(
            "2. Restricting egress traffic",
            "Flip the `EgressNetwork` to `Deny`, then allow back only what we want with Gateway "
            "API routes: an `HTTPRoute` for `httpbin.org/get` and a `TLSRoute` for HTTPS to "
            "`httpbin.org` (guide: *Restricting egress traffic*).",
        ),
        code("t.create_egress_network()\nt.deploy_client()"),
        md("Before the change, plaintext HTTP is allowed:"),
        verify('t.verify_curl("http://httpbin.org/get", status=200)'),
        code(
            't.start_traffic(["http://httpbin.org/get", "http://httpbin.org/ip"])\nt.run_for(duration / 2)'
        ),
        md(
            '`kubectl patch egressnetwork -n egress-test all-egress-traffic -p \'{"spec":{"trafficPolicy": "Deny"}}\' --type=merge`'
        ),
        code("t.deny()\nt.run_for(duration / 2)"),
        verify('t.verify_curl("http://httpbin.org/get", status=403)'),
        verify(
            't.verify_series(route_name="http-egress-deny", hostname="httpbin.org", http_status="403", error="")'
        ),
        md(
            "Allow `/get` only, with the `httpbin-get` HTTPRoute (no hostnames, path prefix `/get`). "
            "Before it exists, there is no `httpbin-get` series:"
        ),
        verify('t.verify_no_series(route_name="httpbin-get")'),
        code("t.allow_httpbin_get()\nt.run_for(duration / 2)"),
        verify('t.verify_accepted("httproute", "httpbin-get")'),
        verify('t.verify_curl("http://httpbin.org/get", status=200)'),
        verify('t.verify_curl("http://httpbin.org/ip", status=403)'),
        verify(
            't.verify_series(route_kind="HTTPRoute", route_name="httpbin-get", http_status="200")'
        ),
        md(
            "HTTPS is still denied: without a TLSRoute, TLS on port 443 is opaque traffic and hits "
            "`tcp-egress-deny`; the proxy closes the connection (`curl: (35)`)."
        ),
        verify('t.verify_curl("https://httpbin.org/get", exit_code=35)'),
        verify(
            't.verify_series("outbound_tcp_route_close_total", route_name="tcp-egress-deny", error="forbidden")'
        ),
        md("Allow TLS to `httpbin.org` by SNI with the `tls-egress` TLSRoute:"),
        code("t.allow_tls_to_httpbin()"),
        verify('t.verify_accepted("tlsroute", "tls-egress")'),
        verify('t.verify_curl("https://httpbin.org/get", status=200)'),
        verify(
            't.verify_series("outbound_tls_route_open_total", route_kind="TLSRoute", route_name="tls-egress", hostname="httpbin.org")'
        ),
        md(
            "`github.com` is not in the TLSRoute's hostnames: the proxy reads the SNI and closes "
            "the connection on `tls-egress-deny`."
        ),
        verify('t.verify_curl("https://github.com/", exit_code=35)'),
        verify(
            't.verify_series("outbound_tls_route_close_total", route_kind="default", route_name="tls-egress-deny", hostname="github.com", error="forbidden")'
        ),
        code('print(t.metrics("outbound_tls_route_close_total"))'),
        code(
            't.stop_traffic()\nt.chart("02-restricting", title="Allow, then Deny, then httpbin-get")'
        ),
        *cleanup(),
    ],
    "03-redirecting-egress-traffic": [
        *header(
            "3. Redirecting egress traffic back to the cluster",
            "Plaintext HTTP may only reach `httpbin.org/get`; HTTPS may reach anything; every "
            "other plaintext request is redirected to an in-cluster service "
            "(guide: *Redirecting egress traffic back to the cluster*). The chart at the end "
            "tells the whole story: 200 vs 403 vs redirected over time.",
        ),
        code("t.create_egress_network()\nt.deploy_client()"),
        code(
            't.start_traffic(["http://httpbin.org/get", "http://httpbin.org/ip", "http://google.com/",\n'
            '                 "https://httpbin.org/get"])\nt.run_for(duration / 2)'
        ),
        code("t.deny()\nt.run_for(duration / 2)"),
        md(
            "The internal service: `internal-egress`, a `bb terminus` answering *You cannot go there right now*."
        ),
        code("t.deploy_internal_service()"),
        md("Before the routes, `http://google.com` is forbidden, not redirected:"),
        verify('t.verify_curl("http://google.com", status=403)'),
        md(
            "The three routes: `httpbin-get`, `tls-egress` (no hostnames: all TLS) and "
            "`unencrypted-http` (everything else on port 80 to `internal-egress`)."
        ),
        md("Watch the traffic live for a moment (the chart updates in place):"),
        code("t.redirect_plaintext()\nt.watch(duration)"),
        md("The guide's three checks (with `http://` where the guide means plaintext):"),
        verify(
            't.verify_curl("http://httpbin.org/get", status=200, json_field=("url", "http://httpbin.org/get"))'
        ),
        verify('t.verify_curl("https://httpbin.org/ip", status=200)'),
        verify(
            't.verify_curl("http://google.com", status=200, json_field=("payload", "You cannot go there right now"))'
        ),
        verify(
            't.verify_series("outbound_http_route_backend_requests_total", route_name="unencrypted-http", backend_kind="Service", backend_name="internal-egress")'
        ),
        code(
            't.stop_traffic()\nt.chart("03-redirecting", title="200 vs 403 vs redirected, the whole story")'
        ),
        verify("t.verify_reconciled()"),
        code('t.breakdown("03-redirecting")'),
        *cleanup(),
    ],
    "04-auditing-egress-policy": [
        *header(
            "4. Auditing egress policy",
            "Beyond the guide: what would happen to a request and why, what a reviewer would "
            "flag in the guide's own routes, how long a policy change takes to be enforced, and "
            "the guide's warning that a mesh alone cannot stop a workload that bypasses its proxy.",
        ),
        code(
            "from egresskit import audit, guide\n\n"
            'final_state = [guide.NAMESPACE, guide.EGRESS_NETWORK.replace("Allow", "Deny"), guide.INTERNAL_EGRESS,\n'
            "               guide.HTTPBIN_GET_ROUTE, guide.TLS_EGRESS_ROUTE_ALL, guide.UNENCRYPTED_HTTP_ROUTE]"
        ),
        md("### What would happen to each request, and why (the pure policy engine, no cluster)"),
        code(
            'table = audit.explain_table(final_state, ["http://httpbin.org/get", "http://httpbin.org/ip",\n'
            '    "http://google.com/get", "https://github.com/", "http://example.com/"], namespace="egress-test")\ntable'
        ),
        verify(
            't.verify_explained(table, "http://google.com/get", outcome="allowed", route="httpbin-get")'
        ),
        md("One request in full:"),
        code('audit.explain(final_state, "http://google.com/get", namespace="egress-test")'),
        md("### Findings a reviewer would flag, each proven by a request"),
        code('found = audit.findings(final_state, namespace="egress-test")\nfound'),
        verify('t.verify_finding(found, "HTTPRoute egress-test/httpbin-get", "no hostnames")'),
        md("### How long a policy change takes to be enforced"),
        code("t.create_egress_network()\nt.deploy_client()"),
        verify('t.verify_curl("http://httpbin.org/get", status=200)'),
        code('delay = t.enforcement_delay()\nprint(f"Deny enforced {delay:.3f}s after the patch")'),
        verify('t.verify_curl("http://httpbin.org/get", status=403)'),
        md(
            "### A mesh alone cannot stop a workload that bypasses its proxy\n\n"
            "The same request from the meshed client and from a pod without the proxy, under `Deny`:"
        ),
        code('bypass = t.bypass("http://httpbin.org/get")\nbypass'),
        verify("t.verify_bypass(bypass)"),
        *cleanup(),
    ],
}


def build() -> list[Path]:
    written = []
    for name, cells in NOTEBOOKS.items():
        nb = nbformat.v4.new_notebook()
        nb.cells = cells
        nb.metadata["kernelspec"] = dict(KERNELSPEC)  # what `make lab` registers
        nb.metadata["language_info"] = {"name": "python"}
        path = HERE / f"{name}.ipynb"
        existing = nbformat.read(path, as_version=4) if path.exists() else None
        if existing is not None and [c.source for c in existing.cells] == [c.source for c in cells]:
            continue  # unchanged: keep the saved outputs
        nbformat.write(nb, path)
        written.append(path)
    return written


if __name__ == "__main__":
    for p in build():
        print(f"wrote {p.relative_to(HERE.parent)}")
