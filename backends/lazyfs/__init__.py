"""A FUSE mount that keeps unsynced writes in memory and drops them on demand (a power cut).

``with LazyMount() as fs:`` mounts the filesystem of :mod:`backends.lazyfs.fs` at ``fs.mountpoint``;
``fs.power_cut()`` throws away every byte not fsynced and every directory change not committed by an
fsync of its directory, as a power failure would; ``fs.sync()`` makes everything durable. It needs
``/dev/fuse``, Debian's ``fuse3`` (``fusermount3``) and PyPI's ``mfusepy``; ``.ci/run`` installs them.
"""

from __future__ import annotations

from typing import Any

from .._fuse import FuseMount

__all__ = ["LazyMount"]


class LazyMount(FuseMount):
    """A LazyFS daemon and its mount point.

    Args:
        strict: A directory's fsync commits only the changes in that directory (default: the journal
            up to its last change there, as ext4 does).
    """

    name = "lazyfs"
    module = "backends.lazyfs"

    def __init__(self, strict: bool = False) -> None:
        super().__init__()
        self.strict = strict

    def arguments(self) -> list[str]:
        """``--strict`` when asked for."""
        return ["--strict"] if self.strict else []

    def power_cut(self) -> dict[str, Any]:
        """Drop everything not durable; returns the daemon's counters (``bytes_dropped``...)."""
        return dict(self.command("crash"))

    def sync(self) -> dict[str, Any]:
        """Make everything durable (``sync(1)``)."""
        return dict(self.command("sync"))

    def fail_fsync(self, suffix: str) -> dict[str, Any]:
        """Make the next ``fsync`` of a file whose path ends with ``suffix`` fail with ``EIO`` (once)."""
        return dict(self.command("fail_fsync", suffix=suffix))

    def report(self) -> dict[str, Any]:
        """Counters and what is waiting for a sync now (``journal``, ``unsynced_files``)."""
        return dict(self.command("report"))
