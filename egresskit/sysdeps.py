"""Install the Debian packages the kit drives for real (curl, chromium, wrk, nginx).

``python3 egresskit/sysdeps.py PKG...`` installs only the packages whose binary is missing,
with apt-get, when running as root (as on the development machines and CI). Anything else
gets a one-line instruction instead of a silent failure. Standard library only: it runs
before the virtualenv exists.
"""

from __future__ import annotations

import os
import shutil
import subprocess
import sys

#: Debian package -> the binary that proves it is installed.
BINARIES = {"curl": "curl", "chromium": "chromium", "wrk": "wrk", "nginx": "nginx"}


def missing(packages: list[str]) -> list[str]:
    out = []
    for pkg in packages:
        binary = BINARIES.get(pkg, pkg)
        if shutil.which(binary) is None and not os.path.exists(f"/usr/sbin/{binary}"):
            out.append(pkg)
    return out


def main(argv: list[str]) -> int:
    need = missing(argv)
    if not need:
        return 0
    if shutil.which("apt-get") is None or os.geteuid() != 0:
        print(
            f"sysdeps: missing {', '.join(need)}; install them with your package manager "
            f"(Debian: sudo apt-get install -y {' '.join(need)})",
            file=sys.stderr,
        )
        return 1
    print(f"sysdeps: installing Debian packages {', '.join(need)} ...", file=sys.stderr)
    env = dict(os.environ, DEBIAN_FRONTEND="noninteractive")
    subprocess.run(["apt-get", "update", "-qq"], check=True, env=env)
    subprocess.run(
        ["apt-get", "install", "-y", "-qq", "--no-install-recommends", *need],
        check=True,
        env=env,
        stdout=subprocess.DEVNULL,
    )
    still = missing(need)
    if still:
        print(f"sysdeps: {', '.join(still)} still missing after apt-get", file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
