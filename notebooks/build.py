"""Write the notebooks' sources from the cell lists below (``python notebooks/build.py``).

The notebooks teach the guide "Managing egress traffic". Each guide step that changes the
cluster follows the five-cell anatomy of ``design/notebook-step.md``: the goal (markdown),
the manifest as YAML in the cell that applies it with the kubectl command beside it
(``t.apply``), a prediction (``t.explain``: the engine's decision before and after the
change), an observation (``t.observe``: one curl and the proxy series it moved, or the
traffic), then "what happened, and why" (markdown). The YAML is embedded verbatim from
:mod:`egresskit.guide` (one source: tests/test_lessons.py compares the committed cells with
it); such cells are tagged ``manifest:<CONSTANT>``.

Cells tagged ``verify`` print one PASS line (or raise) and are compared exactly by nbval;
every other code cell's output is volatile (counts, times) and tagged
``nbval-ignore-output``. ``make notebooks`` runs this, then executes the notebooks with
papermill and saves them with their outputs (charts as static images), cleaned of what names
this machine (``egresskit.runner.refresh``, :mod:`egresskit.nbclean`).
"""

from __future__ import annotations

from pathlib import Path

import nbformat

from egresskit import audit, exercises, guide
from egresskit.lesson import default_routes_markdown
from egresskit.runner import KERNELSPEC

#: The kit's Linkerd facts (each with its upstream source), linked from a notebook in
#: notebooks/ or out/.
FACTS = "../docs/facts/linkerd-egress.md"

HERE = Path(__file__).resolve().parent
GUIDE = "https://linkerd.io/2-edge/tasks/managing-egress-traffic/"

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


def yaml_block(var: str, text: str) -> str:
    """``var = \"\"\"<text>\"\"\"``: the YAML verbatim, editable in the cell."""
    return f'{var} = """\\\n{text}"""'


def manifest(
    kubectl: str, *parts: tuple[str, str], call: str | None = None
) -> nbformat.NotebookNode:
    """A manifest cell: the kubectl command as a comment, each guide constant as an editable
    YAML string (tagged ``manifest:<CONSTANT>`` for the drift test), and one apply."""
    names = [var for var, _ in parts]
    body = "\n\n".join(yaml_block(var, getattr(guide, const)) for var, const in parts)
    arg = names[0] if len(names) == 1 else "[" + ", ".join(names) + "]"
    src = f"{kubectl}\n{body}\n\nt.apply({arg})" if call is None else f"{kubectl}\n{body}\n\n{call}"
    tags = tuple(f"manifest:{const}" for _, const in parts)
    return code(src, tags=tags)


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


KUBECTL_APPLY = "# kubectl apply -f - <<EOF ... EOF   (the YAML below; edit it and re-run the cell)"

DEFAULT_ROUTES = f"""
**The default routes.** For every EgressNetwork port, Linkerd's controller synthesizes a
default route and appends it *after* your routes, so it catches what none of them matches.
Its name says the traffic kind and the `trafficPolicy`:

{default_routes_markdown()}

`tls-egress-*` only exists on a port that has a TLSRoute, and `grpc-egress-*` on a port with
a GRPCRoute; without them, TLS bytes are simply "not HTTP" and fall to `tcp-egress-*`.
(Sources: sections 3 and 5.2 of [the kit's Linkerd facts](../docs/facts/linkerd-egress.md), each with its upstream source.)
"""


NOTEBOOKS: dict[str, list[nbformat.NotebookNode]] = {
    "01-visualizing-egress-traffic": [
        *header(
            "1. Visualizing egress traffic",
            "An `EgressNetwork` with `trafficPolicy: Allow` captures the namespace's egress "
            "traffic without changing it, so we can *see* it in the proxy's route metrics "
            f"before we restrict anything (guide: [Visualizing egress traffic]({GUIDE}))."
            "\n\nEach step below applies the guide's YAML from the cell that shows it: edit "
            "the YAML and re-run the cell to try a variation. A warning first, from the "
            "guide itself: a mesh alone gives no strong guarantee about egress, since a "
            "workload can bypass its proxy (notebook 4 shows it).",
        ),
        md(
            "## Step 1: an EgressNetwork that allows everything\n\n"
            "Create the `egress-test` namespace and one `EgressNetwork` in it. Expect both "
            "`created`, and Linkerd to mark the EgressNetwork `Accepted`."
        ),
        manifest(
            "# kubectl create ns egress-test\n" + KUBECTL_APPLY,
            ("namespace", "NAMESPACE"),
            ("egress_network", "EGRESS_NETWORK"),
        ),
        md(
            "**Predict.** What will Linkerd do with `curl http://httpbin.org/get` from a pod "
            "in this namespace? The policy engine answers from the objects now in force:"
        ),
        code('t.explain("http://httpbin.org/get")'),
        verify('t.verify_accepted("egressnetwork", "all-egress-traffic")'),
        md(
            "### What happened, and why\n\n"
            "- With no `networks` field, the EgressNetwork covers every address outside the "
            "cluster's own networks, so `httpbin.org` (here `192.0.2.10`) is *egress* for the "
            "namespace: its traffic now has a parent, `EgressNetwork egress-test/"
            "all-egress-traffic`, on the port it goes to.\n"
            "- No route of ours is attached, so the request takes the **default route** Linkerd "
            "synthesizes for the port: `http-egress-allow`, because `trafficPolicy` is `Allow`. "
            "It forwards to the original destination: nothing changes for the client, but "
            "every request is now counted under that route."
        ),
        md(
            "## Step 2: a meshed curl client\n\n"
            "Deploy the guide's curl pod with the Linkerd proxy injected. Expect "
            "`pod/client created`."
        ),
        manifest(KUBECTL_APPLY, ("client_pod", "CLIENT_POD")),
        md(
            "Before any traffic the proxy has no route series yet (checked, so the next "
            "check cannot pass vacuously):"
        ),
        verify('t.verify_no_series(route_name="http-egress-allow")'),
        md(
            "### What happened, and why\n\n"
            "`linkerd.io/inject: enabled` gives the pod a proxy that sees all its outbound "
            "traffic. The one line that is not in the guide is marked in the YAML: since "
            "Linkerd 2.18 the proxy leaves the `hostname` label of its metrics empty unless "
            "the pod asks for hostname labels, and the guide's metric output shows "
            '`hostname="httpbin.org"`.'
        ),
        md(
            "## Step 3: generate traffic and look at the metrics\n\n"
            "The guide's `while sleep 1; do curl -s http://httpbin.org/get; done` runs in the "
            "background. Expect HTTP 200s, counted under `http-egress-allow`."
        ),
        code('t.start_traffic("http://httpbin.org/get")\nt.run_for(duration)'),
        md(
            "**Observe** one request: what the client saw, and the proxy series it moved "
            "(`linkerd dg proxy-metrics -n egress-test po/client`, one label per line as the "
            "guide prints it):"
        ),
        code('t.observe("-sS", "http://httpbin.org/get")'),
        md('All of the proxy\'s series with `parent_kind="EgressNetwork"`, as a table:'),
        code('t.series(parent_kind="EgressNetwork")'),
        verify(
            't.verify_series(parent_kind="EgressNetwork", route_kind="default",\n'
            '                route_name="http-egress-allow", hostname="httpbin.org", http_status="200")'
        ),
        verify(
            't.verify_curl("http://httpbin.org/get", status=200, json_field=("url", "http://httpbin.org/get"))'
        ),
        md(
            "### What happened, and why\n\n"
            '- `parent_kind="EgressNetwork"` is how you find egress traffic in the metrics: '
            "every request leaving the cluster names the EgressNetwork that captured it and "
            'the port (`parent_port="80"`).\n'
            '- `route_kind="default"`, `route_name="http-egress-allow"`: a placeholder route '
            "that Linkerd's controller populates itself (no HTTPRoute object exists).\n"
            "- We used `http://`: plaintext HTTP is what the proxy can read, so it counts it "
            "per request with its status. HTTPS to port 443 is not HTTP to the proxy; it "
            "would be counted as a TCP connection under `tcp-egress-allow` instead.\n\n"
            + DEFAULT_ROUTES
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
            f"`httpbin.org` (guide: [Restricting egress traffic]({GUIDE})).",
        ),
        md(
            "Start where notebook 1 ended: the namespace, the EgressNetwork (`Allow`) and the "
            "client, from the same YAML (`egresskit.guide`)."
        ),
        code("t.create_egress_network()\nt.deploy_client()"),
        verify('t.verify_curl("http://httpbin.org/get", status=200)'),
        code(
            't.start_traffic(["http://httpbin.org/get", "http://httpbin.org/ip"])\nt.run_for(duration / 2)'
        ),
        md(
            "## Step 1: deny by default\n\n"
            "Patch the EgressNetwork's `trafficPolicy` to `Deny`. Expect every plaintext "
            "request to get HTTP 403 from the proxy."
        ),
        code(
            "# kubectl patch egressnetwork -n egress-test all-egress-traffic \\\n"
            '#   -p \'{"spec":{"trafficPolicy": "Deny"}}\' --type=merge\n'
            f"deny_patch = '{guide.DENY_PATCH_JSON}'\n\n"
            't.patch("egressnetwork", "all-egress-traffic", deny_patch)',
            tags=("manifest:DENY_PATCH_JSON",),
        ),
        md("**Predict**, before and after the patch:"),
        code('t.explain("http://httpbin.org/get")'),
        md("**Observe**:"),
        code('t.observe("-sS", "-i", "http://httpbin.org/get")'),
        code("t.run_for(duration / 2)"),
        verify('t.verify_curl("http://httpbin.org/get", status=403)'),
        verify(
            't.verify_series(route_name="http-egress-deny", hostname="httpbin.org", http_status="403", error="")'
        ),
        md(
            "### What happened, and why\n\n"
            "- Same parent, new default route: `http-egress-allow` became `http-egress-deny`. "
            "Its only rule matches everything (path prefix `/`, no hostnames) and carries a "
            "filter that makes **the proxy itself** answer `403 Forbidden` with the header "
            "`l5d-proxy-error: traffic not allowed` (visible above with `curl -i`). The request "
            'never leaves the pod, yet it is counted with `http_status="403"`.\n'
            "- On the `local` backend the change is in force before `t.patch` returns. On a "
            "real cluster it takes Linkerd's status controller and a policy push to every "
            "proxy: seconds (notebook 4 measures it), so a curl right after the patch may "
            "still get a 200."
        ),
        md(
            "## Step 2: allow `httpbin.org/get` with an HTTPRoute\n\n"
            "Attach an HTTPRoute to the EgressNetwork's port 80 with one rule: path `/get`. "
            "Expect it `Accepted`, `/get` to work again and `/ip` to stay forbidden. Before it "
            "exists there is no `httpbin-get` series:"
        ),
        verify('t.verify_no_series(route_name="httpbin-get")'),
        manifest(KUBECTL_APPLY, ("httpbin_get", "HTTPBIN_GET_ROUTE")),
        md("**Predict** three requests:"),
        code('t.explain("http://httpbin.org/get")'),
        code('t.explain("http://httpbin.org/ip")'),
        code('t.explain("http://google.com/get")'),
        md("**Observe**:"),
        code('t.observe("-sS", "http://httpbin.org/get")'),
        code("t.run_for(duration / 2)"),
        verify('t.verify_accepted("httproute", "httpbin-get")'),
        verify('t.verify_curl("http://httpbin.org/get", status=200)'),
        verify('t.verify_curl("http://httpbin.org/ip", status=403)'),
        verify(
            't.verify_series(route_kind="HTTPRoute", route_name="httpbin-get", http_status="200")'
        ),
        md(
            "### What happened, and why\n\n"
            "- **Why `/get` beats the default route.** Both `httpbin-get` (prefix `/get`) and "
            "`http-egress-deny` (prefix `/`) match `/get`. Linkerd picks the rule with the "
            "longest path match first (then more header matches, more query matches, a method "
            "match, then the older route); `/get` is longer than `/`. The default route is "
            "also always appended after explicit routes.\n"
            "- **Why `/ip` is still 403.** `httpbin-get` has no rule for `/ip`, so the only "
            "match left is the default route, still `http-egress-deny`. Routes do not switch "
            "the policy: they add exceptions to it.\n"
            '- `value: "/get"` with no `type` is a `PathPrefix` (the CRD\'s default), '
            "segment-aware: `/get/x` matches, `/getx` does not.\n"
            "- **A hole.** The route has no `hostnames`, so it matches `/get` on *every* "
            "external host: the prediction for `http://google.com/get` says ALLOWED. "
            "Exercise 1 (notebook 5) closes it.\n"
            '- The metrics now name the route: `route_kind="HTTPRoute"`, '
            '`route_name="httpbin-get"`, `route_group="gateway.networking.k8s.io"`.'
        ),
        md(
            "## Step 3: HTTPS is still denied, differently\n\n"
            "The guide then tries `curl https://httpbin.org/get`. Expect no HTTP answer at "
            "all: curl exits with code 35 (TLS connect error)."
        ),
        code('t.explain("https://httpbin.org/get")'),
        code('t.observe("-sS", "https://httpbin.org/get")'),
        verify('t.verify_curl("https://httpbin.org/get", exit_code=35)'),
        verify(
            't.verify_series("outbound_tcp_route_close_total", route_name="tcp-egress-deny", error="forbidden")'
        ),
        md(
            "### What happened, and why: a 403 for plaintext, a closed connection for HTTPS\n\n"
            "The proxy can only answer `403` to a request it can read. HTTPS is a TLS "
            'connection: port 443 has no TLSRoute, so the proxy detects "not HTTP" and '
            "treats the bytes as opaque TCP, whose default route under `Deny` is "
            "`tcp-egress-deny`. It can only close the connection, in the middle of the TLS "
            "handshake, hence curl's exit 35 and the `outbound_tcp_route_close_total` series "
            'with `error="forbidden"` (not the HTTP family, no status).'
        ),
        md(
            "## Step 4: allow HTTPS to `httpbin.org` with a TLSRoute\n\n"
            "A TLSRoute on port 443 with `hostnames: [httpbin.org]`, whose backend is the "
            'EgressNetwork itself ("go where the client was going"). Expect HTTPS to '
            "`httpbin.org` to work and HTTPS to `github.com` to be closed."
        ),
        manifest(KUBECTL_APPLY, ("tls_egress", "TLS_EGRESS_ROUTE")),
        code('t.explain("https://httpbin.org/get")'),
        code('t.explain("https://github.com/")'),
        code('t.observe("-sS", "https://github.com/")'),
        verify('t.verify_accepted("tlsroute", "tls-egress")'),
        verify('t.verify_curl("https://httpbin.org/get", status=200)'),
        verify(
            't.verify_series("outbound_tls_route_open_total", route_kind="TLSRoute", route_name="tls-egress", hostname="httpbin.org")'
        ),
        verify('t.verify_curl("https://github.com/", exit_code=35)'),
        verify(
            't.verify_series("outbound_tls_route_close_total", route_kind="default", route_name="tls-egress-deny", hostname="github.com", error="forbidden")'
        ),
        md(
            "### What happened, and why: SNI picks the TLSRoute\n\n"
            "- The proxy cannot read the encrypted request, but the first message of TLS, the "
            "`ClientHello`, carries the server name in clear: the **SNI** extension. With a "
            "TLSRoute on port 443 the proxy now requires it, and matches it against the "
            "routes' `hostnames`: `httpbin.org` matches `tls-egress`; `github.com` matches "
            "nothing and falls to the TLS default route, `tls-egress-deny`, which closes the "
            'connection (`error="forbidden"`, counted per `hostname`).\n'
            "- The port changed family: HTTPS on 443 is now counted in "
            "`outbound_tls_route_*`, no longer in `outbound_tcp_route_*`.\n"
            "- Plaintext on port 80 is untouched: each port of the EgressNetwork has its own "
            "routes and default route."
        ),
        md(
            "The guide's `linkerd dg proxy-metrics -n egress-test po/client | grep "
            "outbound_tls_route_close_total`. The proxy counts every TLS connection when it "
            'closes, with why: `error="forbidden"` is the policy closing it, `error=""` a '
            "normal close of an allowed one. Linkerd creates a route's series for all five "
            "`error` values at 0 as soon as the route is used, so the real output has zeros "
            f"the guide's printout leaves out ([facts 6.2]({FACTS}))."
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
            "other plaintext request is sent to an in-cluster service instead "
            f"(guide: [Redirecting egress traffic back to the cluster]({GUIDE})). The chart at "
            "the end tells the whole story: 200 vs 403 vs redirected over time.",
        ),
        md(
            "Start from notebook 2's `Deny` (same YAML and patch, from `egresskit.guide`) "
            "with traffic to four URLs:"
        ),
        code("t.create_egress_network()\nt.deploy_client()"),
        code(
            't.start_traffic(["http://httpbin.org/get", "http://httpbin.org/ip", "http://google.com/",\n'
            '                 "https://httpbin.org/get"])\nt.run_for(duration / 2)'
        ),
        code("t.deny()\nt.run_for(duration / 2)"),
        md(
            "## Step 1: the internal service\n\n"
            "`internal-egress`: a Service and a Deployment running `bb terminus`, which answers "
            "every request with *You cannot go there right now*. Expect both `created` (the "
            "`local` backend runs the `bb terminus` command line as a local server)."
        ),
        manifest(KUBECTL_APPLY, ("internal_egress", "INTERNAL_EGRESS")),
        md("Before the routes, `http://google.com` is forbidden, not redirected:"),
        verify('t.verify_curl("http://google.com", status=403)'),
        md(
            "## Step 2: the three routes\n\n"
            "`httpbin-get` as in notebook 2; `tls-egress` now **without** `hostnames` (all "
            "HTTPS allowed); and `unencrypted-http`, a rule with no matches whose `backendRefs` "
            "is the Service. Expect all three `Accepted`."
        ),
        manifest(KUBECTL_APPLY, ("httpbin_get", "HTTPBIN_GET_ROUTE")),
        manifest(KUBECTL_APPLY, ("tls_egress", "TLS_EGRESS_ROUTE_ALL")),
        manifest(KUBECTL_APPLY, ("unencrypted_http", "UNENCRYPTED_HTTP_ROUTE")),
        md("**Predict**: `google.com` before and after `unencrypted-http`, and `httpbin.org/get`:"),
        code('t.explain("http://google.com/")'),
        code('t.explain("http://httpbin.org/get")'),
        md(
            "**Observe**: the traffic live for a moment (the chart updates in place), then one request:"
        ),
        code("t.watch(duration)"),
        code('t.observe("-sS", "http://google.com/", backends=True)'),
        md("The guide's three checks, exactly as it runs them:"),
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
        md(
            "### What happened, and why\n\n"
            "- **A backend swap, not an HTTP redirect.** The client asked for `google.com` and "
            "got an answer with status 200 and the terminus's body: no `3xx`, no `Location`, "
            "the client does not know. The route's `backendRefs` told the proxy to send the "
            "request to `internal-egress:80` *instead of* the original destination; the "
            'metrics say so with `backend_kind="Service"`, `backend_name="internal-egress"`.\n'
            "- **Precedence again.** On port 80, `httpbin-get` (`/get`, 4 characters) beats "
            "`unencrypted-http` (no matches = prefix `/`), which ties with the default route "
            "`http-egress-deny` (`/`) and wins because explicit routes come first. So `/get` "
            "on *any* host goes out, everything else on port 80 goes to `internal-egress`, "
            "and `http-egress-deny` is never reached any more, although the policy is `Deny`.\n"
            "- **All HTTPS.** `tls-egress` without `hostnames` matches every SNI and comes "
            "before `tls-egress-deny`, so the TLS default route is shadowed completely.\n"
            "- **Mind the scheme.** `https://httpbin.org/ip` is TLS, so `tls-egress` (any SNI) "
            "forwards it to the real httpbin; `http://google.com` is plaintext, so "
            "`unencrypted-http` sends it to `internal-egress`. (One published version of the "
            "guide writes `https://` for all three checks: then every request goes through "
            f"`tls-egress` to the real destination; [facts 7.4]({FACTS}).)"
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
        md(
            "**Why.** The engine reads the same manifests the proxy enforces and decides as "
            "Linkerd does, without sending anything. `http://google.com/get` is *allowed* "
            "although only httpbin was meant: `httpbin-get` lists no `hostnames`, so its `/get` "
            "prefix matches on every host, and an explicit route beats the default "
            "`http-egress-deny`. Every other plaintext request goes to `unencrypted-http`, and "
            "every HTTPS one to `tls-egress`. That is the final state of the guide, under `Deny`."
        ),
        md("One request in full:"),
        code('audit.explain(final_state, "http://google.com/get", namespace="egress-test")'),
        md("### Findings a reviewer would flag, each proven by a request"),
        code('found = audit.findings(final_state, namespace="egress-test")\nfound'),
        verify('t.verify_finding(found, "HTTPRoute egress-test/httpbin-get", "no hostnames")'),
        md(
            "**Why these three.** A route without `hostnames` is a wildcard on its port: under "
            "`Deny` it re-opens that port for every external host, which is rarely what its "
            "author meant. Each finding's *proof* is a request to a host nobody listed, decided "
            "by the engine: run it with `t.explain(...)` or `curl` to see it for yourself. The "
            "fix is one field, as in Exercise 1 of notebook 5."
        ),
        md("### How long a policy change takes to be enforced"),
        code("t.create_egress_network()\nt.deploy_client()"),
        verify('t.verify_curl("http://httpbin.org/get", status=200)'),
        code('delay = t.enforcement_delay()\nprint(f"Deny enforced {delay:.3f}s after the patch")'),
        verify('t.verify_curl("http://httpbin.org/get", status=403)'),
        md(
            "**Why so fast here, and what to expect on a cluster.** The delay is measured the "
            "way a user feels it: patch, then curl until the first 403. On the `local` backend "
            "the change is in force almost at once. On a real cluster expect seconds: Linkerd's "
            "status controller must accept the change (it writes route status on change and "
            "on a 10 s tick), then the policy controller pushes it to every proxy. Until then, "
            "requests still get the old answer: an audit that checks right after a change can "
            "see the past."
        ),
        md(
            "### A mesh alone cannot stop a workload that bypasses its proxy\n\n"
            "The same request from the meshed client and from a pod without the proxy, under "
            "`Deny`. The pod is the client without `linkerd.io/inject: enabled`, so no proxy is "
            "injected into it:"
        ),
        code(
            "# kubectl apply -f - <<EOF ... EOF   (the YAML below; edit it and re-run the cell)\n"
            + yaml_block("bypass_pod", audit.BYPASS_POD.lstrip("\n"))
            + '\n\nbypass = t.bypass("http://httpbin.org/get", pod=bypass_pod)\nbypass'
        ),
        verify("t.verify_bypass(bypass)"),
        md(
            "**Why.** The EgressNetwork is enforced by each pod's own proxy; a pod without one "
            "sends its packets straight out, and no Linkerd metric counts them. The guide warns of "
            'exactly this: *"No service mesh can provide a strong security guarantee about '
            "egress traffic by itself; for example, a malicious actor could bypass the Linkerd "
            'sidecar"*; fully restricting egress *"typically requires a more comprehensive '
            'approach"*, for example a NetworkPolicy or firewall that sees every pod.'
        ),
        *cleanup(),
    ],
}


def exercise_cells() -> list[nbformat.NotebookNode]:
    cells: list[nbformat.NotebookNode] = []
    for ex in exercises.EXERCISES:
        n = ex.number
        cells.append(md(f"## Exercise {n}: {ex.title}\n\n{ex.task}"))
        cells.append(
            code(
                "# Your answer: edit the YAML, then run this cell and the check below.\n"
                + yaml_block(f"answer_{n}", ex.skeleton),
                tags=("exercise-skeleton",),
            )
        )
        check = nbformat.v4.new_code_cell(f"workshop.check({n}, answer_{n})")
        check.metadata["tags"] = ["exercise-check"]
        cells.append(check)
        cells.append(
            md(
                f"<details><summary><b>Solution {n}</b> (click to show)</summary>\n\n"
                f"```yaml\n{ex.solution}```\n\n"
                "Copy it into the answer cell, or set `solutions = True` in the parameters "
                "cell and run all: every check then uses its solution.\n</details>"
            )
        )
    return cells


NOTEBOOKS["05-exercises"] = [
    md(
        "# 5. Exercises\n\n"
        "Seven tasks, each solved by writing or editing a manifest. Every task starts from "
        "the same place: the namespace, the EgressNetwork with `trafficPolicy: Deny`, the "
        "client pod and `internal-egress` (applied below); whatever the previous check "
        "applied is deleted first.\n\n"
        "For each task: edit the YAML in the *answer* cell, run it, then run the *check* "
        "cell. The check applies your manifest (a YAML or schema error is a `FAIL` naming "
        "the field), sends the task's requests for real from the client pod through the "
        "proxy, and compares what the client saw and what the proxy counted with the task. "
        "On a mismatch it prints the request that went wrong and a hint from the policy "
        "engine's reasoning. The answers as given are deliberately incomplete: every check "
        "fails until you fix them.\n\n"
        "Stuck? Under each answer, *Solution* opens with one click; or set "
        "`solutions = True` in the parameters cell and run all to see every check pass.\n\n"
        "**Fields you will need** (notebooks 1-3 used only some of them; the "
        "[Gateway API reference](https://gateway-api.sigs.k8s.io/reference/spec/) has all):\n\n"
        "- `parentRefs[].port`: the port a route governs. A TCPRoute has no `matches`: its "
        "port alone picks the traffic.\n"
        "- `hostnames`: for an HTTPRoute or a GRPCRoute, the request's host; for a TLSRoute, "
        "the server name (SNI) the client sends in its ClientHello.\n"
        "- HTTPRoute `rules[].matches[]`: `path: {value: /post}` (a prefix unless `type: "
        "Exact`), `method: POST`, `headers: [{name: x-egress-ticket, value: ABC-123}]` (an "
        "exact value unless `type: RegularExpression`). The conditions of one match must all "
        "hold; the matches of a rule are alternatives.\n"
        "- GRPCRoute `rules[].matches[].method: {service: helloworld.Greeter, method: "
        "SayHello}`.\n"
        "- `backendRefs`: none on an HTTPRoute, or the EgressNetwork itself, sends the "
        "request on to where it was going; a `Service` (with its `port`) sends it into the "
        f"cluster instead ([facts 4.4]({FACTS})).\n\n"
        "Exercises 6 and 7 use a TCPRoute and a GRPCRoute: notebook 7 shows both at work, so "
        "take it first if those kinds are new to you."
    ),
    code(
        PARAMETERS + "\nsolutions = False  # True: the checks use the solutions",
        tags=("parameters",),
    ),
    code(
        SETUP + "\n\nfrom egresskit.exercises import Workshop\n\n"
        "# The base every exercise starts from; solutions=True checks the solutions instead.\n"
        "workshop = Workshop(t.lesson, use_solutions=solutions)\n"
        "workshop.base_report"
    ),
    *exercise_cells(),
    md("## Cleanup\n\n`kubectl delete ns egress-test`, then check that nothing is left."),
    verify("t.cleanup()"),
    code("t.close()"),
]


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
