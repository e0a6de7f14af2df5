"""A real IPython kernel driven cell by cell, as JupyterLab drives it (for kernel tests).

The kernel is this Python (``egresskit.runner``'s mapping), over IPC; ``run`` executes
one cell and returns its status and outputs; ``interrupt`` is the toolbar's Interrupt.
"""

from __future__ import annotations

import os
import signal
import sys
from dataclasses import dataclass, field
from pathlib import Path
from queue import Empty
from typing import Any

from jupyter_client.kernelspec import KernelSpec
from jupyter_client.manager import KernelManager
from jupyter_core.utils import ensure_event_loop

BOUND = 90.0  # seconds any one cell may take


class _Manager(KernelManager):
    transport = "ipc"

    @property
    def kernel_spec(self) -> KernelSpec:
        return KernelSpec(
            argv=[sys.executable, "-m", "ipykernel_launcher", "-f", "{connection_file}"],
            display_name="egresskit",
            language="python",
            name="egresskit",
        )


@dataclass
class Cell:
    status: str  # "ok" or "error"
    text: str = ""  # stdout and text/plain of results and displays
    ename: str = ""
    traceback: list[str] = field(default_factory=list)
    displays: list[dict[str, Any]] = field(default_factory=list)


class Kernel:
    def __init__(self, cwd: Path) -> None:
        self.km = _Manager(kernel_name="egresskit")
        self.km.start_kernel(cwd=str(cwd))
        self.pid = self.km.provisioner.pid  # type: ignore[union-attr]
        self.kc = self.km.client()
        self.kc.start_channels()
        self.kc.wait_for_ready(timeout=60)

    def run(self, code: str) -> Cell:
        msg_id = self.kc.execute(code)
        cell = Cell(status="ok")
        while True:
            try:
                msg = self.kc.get_iopub_msg(timeout=BOUND)
            except Empty:
                raise AssertionError(f"no output within {BOUND:g}s running {code!r}") from None
            if msg["parent_header"].get("msg_id") != msg_id:
                continue
            kind, content = msg["msg_type"], msg["content"]
            if kind == "stream":
                cell.text += content["text"]
            elif kind in ("execute_result", "display_data", "update_display_data"):
                cell.displays.append(content["data"])
                cell.text += content["data"].get("text/plain", "") + "\n"
            elif kind == "error":
                cell.status, cell.ename, cell.traceback = (
                    "error",
                    content["ename"],
                    content["traceback"],
                )
            elif kind == "status" and content["execution_state"] == "idle":
                return cell

    def interrupt(self) -> None:
        """JupyterLab's Interrupt for an ipykernel ("signal" interrupt mode): SIGINT to the
        kernel's process group. Plain os calls, so any thread may do it (jupyter_client's
        own call leaves an unclosed event loop in the calling thread)."""
        os.killpg(os.getpgid(self.pid), signal.SIGINT)

    def close(self) -> None:
        self.kc.stop_channels()
        self.km.shutdown_kernel(now=False)
        # jupyter_client's blocking calls keep an event loop for this thread: close it.
        loop = ensure_event_loop()
        if not loop.is_running():
            loop.close()
