"""Notebook 7 is what notebooks/build_grpc.py writes, and its YAML is the kit's own
(egresskit.grpcmanifests, what the gRPC/TCP tests apply): one source, no drift."""

from __future__ import annotations

from pathlib import Path
from types import ModuleType

import nbformat

from egresskit import grpcmanifests as gm
from tests.builders import load_builder

ROOT = Path(__file__).resolve().parents[1]


def builder() -> ModuleType:
    return load_builder("build_grpc")


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
        gm.INTERNAL_GRPC,
    ):
        assert yaml in sources
