"""Write and execute notebook 6, "Before you restrict: what would break?" (``python
notebooks/build_audit.py``).

The section's cells live in :data:`egresskit.whatbreaks.CELLS` (the same calls the tests
make); this script only frames them as a notebook (title, papermill parameters), executes it
with papermill in place so the committed copy carries its outputs for nbval, and strips what
the run says about this machine (:mod:`egresskit.nbclean`). ``notebooks/build.py`` is not
involved: it owns notebooks 1 to 4.
"""

from __future__ import annotations

from pathlib import Path

import nbformat

from egresskit.runner import KERNELSPEC, refresh
from egresskit.whatbreaks import CELLS

HERE = Path(__file__).resolve().parent
NAME = "06-what-would-break"

PARAMETERS = """\
# Parameters (papermill): the backend and where outputs go.
backend = "local"  # "local" (embedded mesh), "kind" or "kube"
kube_context = None  # for backend "kube": the kube context with Linkerd
output_dir = "../out"  # unused here; every notebook takes it"""


def cells() -> list[nbformat.NotebookNode]:
    out = [
        nbformat.v4.new_markdown_cell(
            "# 6. Before you restrict: what would break?\n\n"
            "Beyond the guide: the impact of a policy change, predicted from the traffic the "
            "proxies saw and checked against the traffic that follows."
        ),
        nbformat.v4.new_code_cell(PARAMETERS),
    ]
    out[1].metadata["tags"] = ["parameters", "nbval-ignore-output"]
    for kind, source, tags in CELLS:
        if kind == "markdown":
            out.append(nbformat.v4.new_markdown_cell(source))
            continue
        cell = nbformat.v4.new_code_cell(source)
        cell.metadata["tags"] = list(tags) if "verify" in tags else ["nbval-ignore-output"]
        out.append(cell)
    return out


def build() -> Path:
    nb = nbformat.v4.new_notebook()
    nb.cells = cells()
    nb.metadata["kernelspec"] = dict(KERNELSPEC)
    nb.metadata["language_info"] = {"name": "python"}
    path = HERE / f"{NAME}.ipynb"
    nbformat.write(nb, path)
    return path


if __name__ == "__main__":
    written = build()
    refresh(written.stem)  # executes in place on the egresskit kernel, then cleans
    print(f"wrote {written.relative_to(HERE.parent)}")
