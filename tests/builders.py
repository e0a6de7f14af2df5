"""The notebook builders (``notebooks/build*.py``, scripts rather than a package) loaded
as modules, so tests can hold each committed notebook to the cells its builder writes."""

from __future__ import annotations

import importlib.util
from pathlib import Path
from types import ModuleType

ROOT = Path(__file__).resolve().parent.parent


def load_builder(name: str) -> ModuleType:
    """``notebooks/NAME.py`` imported under ``NAME`` (its top level runs, as a script's)."""
    spec = importlib.util.spec_from_file_location(name, ROOT / "notebooks" / f"{name}.py")
    assert spec is not None and spec.loader is not None, f"notebooks/{name}.py"
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module
