"""What the S3 and GCS launchers share: free ports, a child process, readiness polling, clean-up."""

from __future__ import annotations

import contextlib
import os
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable, Sequence
from pathlib import Path
from types import TracebackType
from typing import Any

__all__ = ["ChildProcess", "ServerError", "ServerProcess", "find_executable", "free_ports"]


class ServerError(RuntimeError):
    """A server did not start or did not answer in time (the test run fails: no silent skips)."""


def free_ports(n: int) -> list[int]:
    """``n`` distinct TCP ports that are free on 127.0.0.1 right now."""
    sockets = []
    try:
        for _ in range(n):
            s = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
            s.bind(("127.0.0.1", 0))
            sockets.append(s)
        return [s.getsockname()[1] for s in sockets]
    finally:
        for s in sockets:
            s.close()


def find_executable(name: str) -> str:
    """The executable ``name`` next to this Python (a venv's bin) or on PATH."""
    beside = Path(sys.executable).parent / name
    if beside.exists():
        return str(beside)
    found = shutil.which(name)
    if found is None:
        raise ServerError(f"{name!r} is not installed (the test environment installs it; see tox.ini)")
    return found


class ChildProcess:
    """A child process (a server, a FUSE daemon) with its own temporary directory and log."""

    name = "child"

    def __init__(self) -> None:
        self.workdir = Path(tempfile.mkdtemp(prefix=f"ckptstore-{self.name}-"))
        self.log_path = self.workdir / f"{self.name}.log"
        self.process: subprocess.Popen[bytes] | None = None

    def start(self) -> Any:
        """Start the child and wait until it is ready."""
        raise NotImplementedError

    def stop(self) -> None:
        """Stop the child and remove its directory."""
        raise NotImplementedError

    def tail(self, lines: int = 30) -> str:
        """The end of the child's log."""
        try:
            return "\n".join(self.log_path.read_text(errors="replace").splitlines()[-lines:])
        except OSError:
            return "(no log)"

    def _terminate(self, grace: float) -> None:
        """SIGTERM the child's process group, SIGKILL it after ``grace`` seconds; forget the process."""
        process, self.process = self.process, None
        if process is not None and process.poll() is None:
            with contextlib.suppress(ProcessLookupError):
                os.killpg(process.pid, signal.SIGTERM)
            try:
                process.wait(timeout=grace)
            except subprocess.TimeoutExpired:
                with contextlib.suppress(ProcessLookupError):
                    os.killpg(process.pid, signal.SIGKILL)
                process.wait(timeout=15)

    def __enter__(self) -> Any:
        return self.start()

    def __exit__(
        self, exc_type: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None:
        self.stop()


class ServerProcess(ChildProcess):
    """A server child process with its own temporary directory and log.

    Subclasses set :meth:`command` and :meth:`ready`, and describe themselves with :meth:`env`.
    """

    name = "server"
    start_timeout = 90.0

    def command(self) -> Sequence[str]:
        """The command line to run."""
        raise NotImplementedError

    def ready(self) -> bool:
        """True once the server answers a real request."""
        raise NotImplementedError

    def env(self) -> dict[str, str]:
        """Environment variables a client needs."""
        return {}

    def start(self) -> ServerProcess:
        """Start the server and wait until it answers; raise :class:`ServerError` otherwise."""
        log = open(self.log_path, "ab")  # noqa: SIM115 - owned by the child for its lifetime
        self.process = subprocess.Popen(
            list(self.command()),
            cwd=self.workdir,
            stdout=log,
            stderr=subprocess.STDOUT,
            start_new_session=True,
            env={**os.environ, **self._child_env()},
        )
        log.close()
        self._wait(self.ready)
        return self

    def _child_env(self) -> dict[str, str]:
        return {}

    def _wait(self, check: Callable[[], bool]) -> None:
        deadline = time.monotonic() + self.start_timeout
        last: BaseException | None = None
        while time.monotonic() < deadline:
            if self.process is not None and self.process.poll() is not None:
                raise ServerError(f"{self.name} exited with {self.process.returncode}:\n{self.tail()}")
            try:
                if check():
                    return
            except Exception as exc:
                last = exc
            time.sleep(0.2)  # polling for readiness, not synchronizing a test
        self.stop()
        raise ServerError(f"{self.name} did not answer within {self.start_timeout:.0f}s ({last!r}):\n{self.tail()}")

    def halt(self, sig: int = signal.SIGKILL) -> None:
        """Stop the server abruptly (an outage), keeping its data: :meth:`start` brings it back as it was."""
        process, self.process = self.process, None
        if process is not None and process.poll() is None:
            with contextlib.suppress(ProcessLookupError):
                os.killpg(process.pid, sig)
            process.wait(timeout=30)

    def stop(self) -> None:
        """Stop the server (SIGTERM, then SIGKILL) and remove its directory."""
        self._terminate(grace=3)  # the data is throwaway: no need to wait for a clean shutdown
        shutil.rmtree(self.workdir, ignore_errors=True)


def serve_forever(server: ServerProcess, describe: Callable[[], str]) -> None:
    """Run ``server`` until Ctrl-C, printing how to reach it (the command-line entry of a launcher)."""
    with server:
        print(describe(), flush=True)
        try:
            while server.process is not None and server.process.poll() is None:
                time.sleep(1)
        except KeyboardInterrupt:
            pass
