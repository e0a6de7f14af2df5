"""What this process holds: live threads and listening TCP sockets, read from /proc.

Used by lifecycle tests to check that closing something leaves nothing behind.
"""

from __future__ import annotations

import os
import threading
import time
from pathlib import Path

WAIT = 10.0  # bound on waiting for threads to end after a close


def listening_sockets() -> set[int]:
    """Inodes of TCP sockets this process has open in state LISTEN (0A in /proc/net/tcp)."""
    mine = set()
    for fd in Path(f"/proc/{os.getpid()}/fd").iterdir():
        try:
            target = os.readlink(fd)
        except OSError:
            continue  # closed while we looked
        if target.startswith("socket:["):
            mine.add(int(target[8:-1]))
    listening = set()
    for table in ("/proc/net/tcp", "/proc/net/tcp6"):
        for line in Path(table).read_text().splitlines()[1:]:
            fields = line.split()
            if fields[3] == "0A" and int(fields[9]) in mine:
                listening.add(int(fields[9]))
    return listening


def threads_left(before: set[threading.Thread], within: float = WAIT) -> list[str]:
    """Names of threads started since ``before`` still alive after a bounded wait."""
    deadline = time.monotonic() + within
    while True:
        left = [t.name for t in threading.enumerate() if t not in before and t.is_alive()]
        if not left or time.monotonic() >= deadline:
            return left
        time.sleep(0.02)
