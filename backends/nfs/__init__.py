"""FUSE mounts that behave like NFS clients of one shared directory (``backends/nfs/fs.py`` has the rules).

``with NfsServer() as server:`` makes the shared directory; ``server.client()`` mounts one more client
of it (each its own daemon process with its own caches), so processes working through different
mounts see each other the way NFS clients do: late (stale attributes and listings for ``ttl``
seconds), with one-second mtimes, ``.nfsXXXX`` files for unlinked open files, no symlinks, and
locks that work across clients. Needs ``/dev/fuse``, Debian's ``fuse3`` and PyPI's ``mfusepy``.
"""

from __future__ import annotations

import shutil
import tempfile
from pathlib import Path
from types import TracebackType
from typing import Any

from .._fuse import FuseMount

__all__ = ["NfsMount", "NfsServer"]


class NfsMount(FuseMount):
    """One NFS-like client: a daemon mounting ``export``.

    Args:
        export: The shared directory.
        ttl: Seconds cached attributes and listings may be stale.
    """

    name = "nfs"
    module = "backends.nfs"

    def __init__(self, export: Path, ttl: float = 1.0) -> None:
        super().__init__()
        self.export = export
        self.ttl = ttl

    def arguments(self) -> list[str]:
        """The export and the cache time."""
        return ["--export", str(self.export), "--ttl", str(self.ttl)]

    def report(self) -> dict[str, Any]:
        """Counters: ``silly_renames``, ``stale_handles``, ``open_files``."""
        return dict(self.command("report"))


class NfsServer:
    """A shared directory and the clients mounted on it; unmounts them all on exit.

    Args:
        ttl: Seconds each client's caches may be stale.
    """

    def __init__(self, ttl: float = 1.0) -> None:
        self.export = Path(tempfile.mkdtemp(prefix="ckptstore-nfs-export-"))
        self.ttl = ttl
        self.clients: list[NfsMount] = []

    def client(self) -> NfsMount:
        """Mount one more client and return it."""
        mount = NfsMount(self.export, self.ttl).start()
        assert isinstance(mount, NfsMount)
        self.clients.append(mount)
        return mount

    def stop(self) -> None:
        """Unmount every client and remove the export."""
        for mount in self.clients:
            mount.stop()
        self.clients.clear()
        shutil.rmtree(self.export, ignore_errors=True)

    def __enter__(self) -> NfsServer:
        return self

    def __exit__(
        self, exc_type: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None:
        self.stop()
