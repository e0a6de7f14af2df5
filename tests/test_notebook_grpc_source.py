"""Notebook 7 is what notebooks/build_grpc.py writes, and its YAML is the kit's own
(egresskit.grpcmanifests, what the gRPC/TCP tests apply): one source, no drift."""

from __future__ import annotations

import importlib.util
from pathlib import Path
from types import ModuleType

import nbformat

from egresskit import grpcmanifests as gm

ROOT = Path(__file__).resolve().parents[1]


def builder() -> ModuleType:
    spec = importlib.util.spec_from_file_location(
        "build_grpc", ROOT / "notebooks" / "build_grpc.py"
    )
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def test_the_committed_notebook_is_what_the_builder_writes() -> None:
    committed = nbformat.read(ROOT / "notebooks" / "07-grpc-and-tcp.ipynb", as_version=4)
    built = builder().CELLS
    assert [c.source for c in committed.cells] == [c.source for c in built], (
        "run: .venv/bin/python notebooks/build_grpc.py && .venv/bin/python -m egresskit.runner 07"
    )


def test_every_route_the_notebook_applies_is_the_kits_own_text() -> None:
    sources = "\n".join(c.source for c in builder().CELLS)
    for yaml in (
        gm.GREETER_ROUTE,
        gm.TEAM_HEADER_ROUTE,
        gm.BB_REDIRECT_ROUTE,
        gm.TCP_ALLOW_ROUTE,
        gm.TCP_REDIRECT_ROUTE,
    ):
        assert yaml in sources
