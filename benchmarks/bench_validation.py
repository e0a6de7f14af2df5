"""Manifest validation against the pinned CRDs: what a notebook cell pays per ``apply``.

Rules of the measurement (egresskit issue 10, item 4):

* ``index_s``: reading the six pinned CRD files once (libyaml when PyYAML has it), in a
  fresh state (the cache is cleared first).
* ``first_guide_s``: the first ``load_manifests`` of all the kit's own manifests (the guide's
  documents) after that: includes compiling every jsonschema validator and CEL program used.
* ``cold_ms_per_doc``: ``crd_validation.validate`` over N distinct generated routes (the
  engine benchmark's HTTPRoutes and TLSRoutes, so every document is new to every cache but
  the compiled ones); ``warm_ms_per_doc``: the same documents again (the per-document cache,
  as when a notebook re-applies a cell, or the local backend reads an apply twice).
* ``load_ms_per_doc``: ``load_manifests`` (validation plus parsing into model values) over
  the same documents, cold again.
"""

from __future__ import annotations

import random
import time
from typing import Any

from benchmarks import bench_engine
from egresskit import guide
from egresskit.manifests import cel_rules, crd_validation, crds, load_manifests

TITLE = "Manifest validation: CRD schema and CEL rules per document"

SIZES = (100, 1_000)
QUICK_SIZES = (20,)


def _clear() -> None:
    crds.crd_index.cache_clear()
    crd_validation._validator.cache_clear()
    crd_validation._SEEN.clear()
    cel_rules._MEMO.clear()
    cel_rules.program.cache_clear()


def _timed(fn: Any, *args: Any) -> float:
    start = time.perf_counter()
    fn(*args)
    return time.perf_counter() - start


def measure(n: int) -> dict[str, Any]:
    _clear()
    index_s = _timed(crds.crd_index)
    kit = [text for name, text in guide.ALL_MANIFESTS.items() if not name.endswith("_V1ALPHA2")]
    first_guide_s = _timed(load_manifests, kit)
    docs = bench_engine.manifests(bench_engine.route_specs(n // 2, random.Random(2)))[1:]
    cold = _timed(lambda: [crd_validation.validate(d) for d in docs])
    warm = _timed(lambda: [crd_validation.validate(d) for d in docs])
    crd_validation._SEEN.clear()
    cel_rules._MEMO.clear()
    load = _timed(load_manifests, docs)
    return {
        "documents": len(docs),
        "index_s": round(index_s, 3),
        "first_guide_s": round(first_guide_s, 3),
        "cold_ms_per_doc": round(cold / len(docs) * 1000, 3),
        "warm_ms_per_doc": round(warm / len(docs) * 1000, 3),
        "load_ms_per_doc": round(load / len(docs) * 1000, 3),
    }


def run(*, quick: bool = False) -> list[dict[str, Any]]:
    return [measure(n) for n in (QUICK_SIZES if quick else SIZES)]


def summarize(rows: list[dict[str, Any]]) -> list[str]:
    last = rows[-1]
    return [
        f"first apply of the guide's manifests: {last['index_s'] + last['first_guide_s']:.2f} s "
        f"(CRD files {last['index_s']:.2f} s); then {last['cold_ms_per_doc']:.2f} ms per new "
        f"document, {last['warm_ms_per_doc']:.3f} ms per repeated one"
    ]
