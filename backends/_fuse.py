"""What the FUSE launchers share: a daemon child process, a control socket, mount and unmount.

A filesystem here is a class with mfusepy's operation methods. :func:`serve` runs one in the
foreground (the child's entry point) and answers commands on a Unix socket from a thread (``crash``,
``stats``...); :class:`FuseMount` starts that child, waits until the kernel shows the mount, sends
commands, and unmounts with ``fusermount3 -u``. Each mount has its own temporary directory for the
socket and the daemon's log.
"""

from __future__ import annotations

import os
import shutil
import signal
import subprocess
import sys
import threading
import time
from collections.abc import Callable, Sequence
from multiprocessing.connection import Client, Listener
from pathlib import Path
from typing import Any

from ._server import ChildProcess, ServerError

__all__ = ["FuseMount", "fuse_available", "serve"]

Command = Callable[[dict[str, Any]], Any]


def fuse_available() -> str | None:
    """None if FUSE mounts can be made here, else the reason (names the package to install)."""
    if not Path("/dev/fuse").exists():
        return "/dev/fuse is missing (no FUSE in this kernel or container)"
    if shutil.which("fusermount3") is None:
        return "fusermount3 is missing: run `python -m backends.system_packages` (tox does) or `apt-get install fuse3`"
    try:
        import mfusepy  # noqa: F401
    except (ImportError, OSError) as exc:
        return f"mfusepy or libfuse3 is missing ({exc}): pip install mfusepy; apt-get install fuse3"
    return None


def serve(operations: Any, mountpoint: str, control: str, commands: dict[str, Command], **options: Any) -> None:
    """Mount ``operations`` at ``mountpoint`` in the foreground, answering ``commands`` on ``control``.

    Args:
        operations: An object with mfusepy operation methods.
        mountpoint: An existing empty directory.
        control: The Unix socket path to listen on.
        commands: Command name -> function of the request's arguments; its result is sent back.
        **options: FUSE mount options (``attr_timeout=0``...).
    """
    import mfusepy

    listener = Listener(control, family="AF_UNIX")

    def answer() -> None:
        while True:
            try:
                conn = listener.accept()
            except OSError:
                return
            with conn:
                request = conn.recv()
                try:
                    reply: dict[str, Any] = {"ok": commands[request["command"]](request.get("args", {}))}
                except Exception as exc:  # reported to the caller, who raises it
                    reply = {"error": repr(exc)}
                conn.send(reply)

    threading.Thread(target=answer, daemon=True).start()
    signal.signal(signal.SIGTERM, lambda *_: subprocess.run(["fusermount3", "-u", "-z", mountpoint], check=False))
    try:
        mfusepy.FUSE(operations, mountpoint, foreground=True, **options)
    finally:
        listener.close()


class FuseMount(ChildProcess):
    """A FUSE daemon child process and its mount point.

    Subclasses name the daemon module (run with ``python -m``) and its extra arguments.

    Args:
        mountpoint: Where to mount; a fresh temporary directory if None.
    """

    name = "fuse"
    module = ""
    start_timeout = 30.0

    def __init__(self, mountpoint: Path | None = None) -> None:
        super().__init__()
        self.mountpoint = mountpoint or self.workdir / "mnt"
        self.mountpoint.mkdir(parents=True, exist_ok=True)
        self.control = str(self.workdir / "control.sock")

    def arguments(self) -> Sequence[str]:
        """Extra command-line arguments for the daemon."""
        return []

    def start(self) -> FuseMount:
        """Start the daemon and wait until the mount is there; raise :class:`ServerError` otherwise."""
        reason = fuse_available()
        if reason is not None:
            raise ServerError(f"cannot mount {self.name}: {reason}")
        root = Path(__file__).resolve().parent.parent
        log = open(self.log_path, "wb")  # noqa: SIM115 - owned by the child for its lifetime
        self.process = subprocess.Popen(
            [sys.executable, "-m", self.module, str(self.mountpoint), "--control", self.control, *self.arguments()],
            cwd=root,
            stdout=log,
            stderr=subprocess.STDOUT,
            start_new_session=True,
            env={**os.environ, "PYTHONPATH": os.pathsep.join(filter(None, [str(root), os.environ.get("PYTHONPATH")]))},
        )
        log.close()
        deadline = time.monotonic() + self.start_timeout
        while not (os.path.ismount(self.mountpoint) and Path(self.control).exists()):
            if self.process.poll() is not None:
                raise ServerError(f"{self.name} exited with {self.process.returncode}:\n{self.tail()}")
            if time.monotonic() > deadline:
                self.stop()
                raise ServerError(f"{self.name} did not mount within {self.start_timeout:.0f}s:\n{self.tail()}")
            time.sleep(0.05)  # polling for readiness, not synchronizing a test
        return self

    def command(self, name: str, **args: Any) -> Any:
        """Send a command to the daemon and return its answer."""
        with Client(self.control, family="AF_UNIX") as conn:
            conn.send({"command": name, "args": args})
            reply = conn.recv()
        if "error" in reply:
            raise ServerError(f"{self.name} command {name!r} failed: {reply['error']}")
        return reply["ok"]

    def stop(self) -> None:
        """Unmount, stop the daemon and remove the temporary directory."""
        subprocess.run(["fusermount3", "-u", "-z", str(self.mountpoint)], check=False, capture_output=True)
        self._terminate(grace=10)
        shutil.rmtree(self.workdir, ignore_errors=True)
