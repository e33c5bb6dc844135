"""Install the system packages the test run needs but PyPI cannot give (``python -m backends.system_packages``).

Today that is Debian's ``fuse3`` (``fusermount3`` and libfuse3, for the FUSE mounts in
``backends/lazyfs`` and ``backends/nfs``). tox runs this before the tests, so a fresh machine needs no
set-up by hand. It does nothing when the tools are there, uses ``apt-get`` as root (or through
``sudo -n``), and exits non-zero with the reason when it cannot install: the FUSE tests would then
fail, not skip, under ``CKPTSTORE_REQUIRE_SERVERS=1``.
"""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
from pathlib import Path

PACKAGES = {"fuse3": lambda: shutil.which("fusermount3") is not None and _libfuse3()}


def _libfuse3() -> bool:
    return any(
        Path(d).glob("libfuse3.so*") for d in ("/usr/lib/x86_64-linux-gnu", "/usr/lib/aarch64-linux-gnu", "/usr/lib")
    )


def main() -> int:
    """Install what is missing; return the exit code."""
    missing = [name for name, present in PACKAGES.items() if not present()]
    if not missing:
        return 0
    apt = shutil.which("apt-get")
    if apt is None:
        print(f"cannot install {missing}: no apt-get; install them with your package manager", file=sys.stderr)
        return 1
    prefix = [] if os.geteuid() == 0 else ["sudo", "-n"]
    env = {**os.environ, "DEBIAN_FRONTEND": "noninteractive"}
    command = [*prefix, apt, "install", "-y", "--no-install-recommends", *missing]
    result = subprocess.run(command, env=env, capture_output=True, text=True, check=False)
    if result.returncode != 0:  # the package lists may be missing on a fresh machine
        subprocess.run([*prefix, apt, "update"], env=env, capture_output=True, check=False)
        result = subprocess.run(command, env=env, capture_output=True, text=True, check=False)
    if result.returncode != 0:
        print(f"`{' '.join(command)}` failed:\n{result.stdout[-2000:]}{result.stderr[-2000:]}", file=sys.stderr)
        return result.returncode
    print(f"installed {', '.join(missing)}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
