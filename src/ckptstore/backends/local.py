"""The local backend: local disk and NFS mounts.

It exists to put every POSIX durability rule in one place: files are fsynced before they are
published, directories are fsynced after an entry in them changes, publication is a rename onto a name
that does not exist, and small records (pointers, the store descriptor) are replaced with a temporary
file and ``os.replace``. NFS needs two more rules, both here: a rename whose reply was lost may report
an error after it succeeded (callers re-check the target), and ``rmtree`` may meet ``.nfsXXXX`` files
that vanish later (removal is best effort and retried by the next gc).
"""

from __future__ import annotations

import contextlib
import errno
import os
import shutil
import uuid
from collections.abc import Iterator
from pathlib import Path

from ..errors import StoreNotWritableError
from .base import Capabilities

__all__ = ["LocalBackend"]

try:  # POSIX advisory locks; absent on Windows.
    import fcntl
except ImportError:  # pragma: no cover - Windows
    fcntl = None  # type: ignore[assignment]


class LocalBackend:
    """File operations on a local (or NFS-mounted) store root.

    Args:
        root: The store's root directory.
    """

    def __init__(self, root: Path) -> None:
        self.root = root
        self._capabilities: Capabilities | None = None

    @property
    def url(self) -> str:
        """The root as a ``file://`` URL."""
        return self.root.as_uri()

    @property
    def capabilities(self) -> Capabilities:
        """What this directory supports; symlink support is probed once."""
        if self._capabilities is None:
            self._capabilities = Capabilities(
                atomic_rename=True,
                create_only=True,
                compare_and_swap=False,
                symlinks=self._probe_symlinks(),
                fsync=True,
            )
        return self._capabilities

    def _probe_symlinks(self) -> bool:
        probe = self.root / f".symlink-probe-{uuid.uuid4().hex}"
        try:
            os.symlink("epochs", probe)
        except OSError:
            return False
        with contextlib.suppress(OSError):
            os.unlink(probe)
        return True

    # -- paths ---------------------------------------------------------------------------------------
    def path(self, rel: str) -> Path:
        """Return the absolute path of ``rel`` (a store-internal, already trusted name)."""
        return self.root / rel

    # -- durability primitives ------------------------------------------------------------------------
    @staticmethod
    def fsync_dir(path: Path) -> None:
        """Flush a directory's entries (a rename or create in it) to stable storage."""
        try:
            fd = os.open(path, os.O_RDONLY | getattr(os, "O_DIRECTORY", 0))
        except OSError:  # pragma: no cover - platforms without directory fds
            return
        try:
            os.fsync(fd)
        except OSError as exc:  # pragma: no cover - some filesystems refuse fsync on a directory
            if exc.errno not in (errno.EINVAL, errno.EBADF, errno.ENOTSUP):
                raise
        finally:
            os.close(fd)

    def write_atomic(self, rel: str, data: bytes) -> None:
        """Replace ``rel`` with ``data`` in one step: temp file, fsync, ``os.replace``, fsync parent."""
        target = self.path(rel)
        target.parent.mkdir(parents=True, exist_ok=True)
        tmp = target.parent / f".{target.name}.{uuid.uuid4().hex}.tmp"
        try:
            self._write_new(tmp, data)
            os.replace(tmp, target)
        except BaseException:
            with contextlib.suppress(OSError):
                os.unlink(tmp)
            raise
        self.fsync_dir(target.parent)

    def create_exclusive(self, rel: str, data: bytes) -> bool:
        """Create ``rel`` with ``data`` only if it does not exist; the file appears whole or not at all.

        Returns:
            True if this call created it, False if it existed already.
        """
        target = self.path(rel)
        target.parent.mkdir(parents=True, exist_ok=True)
        tmp = target.parent / f".{target.name}.{uuid.uuid4().hex}.tmp"
        self._write_new(tmp, data)
        try:
            os.link(tmp, target)  # link(2) fails with EEXIST: create-only, and atomic on NFS too
        except FileExistsError:
            return False
        except OSError as exc:
            if exc.errno not in (errno.EPERM, errno.ENOTSUP, errno.EOPNOTSUPP):
                raise
            # No hard links (some FUSE/SMB mounts): fall back to O_EXCL on the final name.
            try:
                self._write_new(target, data)
            except FileExistsError:
                return False
        finally:
            with contextlib.suppress(OSError):
                os.unlink(tmp)
        self.fsync_dir(target.parent)
        return True

    @staticmethod
    def _write_new(path: Path, data: bytes) -> None:
        fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o644)
        try:
            view = memoryview(data)
            while view:
                view = view[os.write(fd, view) :]
            os.fsync(fd)
        finally:
            os.close(fd)

    def read_bytes(self, rel: str) -> bytes:
        """Return the content of ``rel``."""
        return self.path(rel).read_bytes()

    def replace_symlink(self, rel: str, target: str) -> None:
        """Point the symlink ``rel`` at ``target`` atomically (temp link + ``os.replace``)."""
        link = self.path(rel)
        tmp = link.parent / f".{link.name}.{uuid.uuid4().hex}.tmp"
        os.symlink(target, tmp)
        try:
            os.replace(tmp, link)
        except BaseException:
            with contextlib.suppress(OSError):
                os.unlink(tmp)
            raise
        self.fsync_dir(link.parent)

    def rename_dir(self, src: Path, dst: Path) -> None:
        """Rename a directory onto a name that must not exist, then fsync both parents.

        Raises:
            FileExistsError: ``dst`` exists (also for ENOTEMPTY, which Linux reports for a
                non-empty target directory).
        """
        if dst.exists():
            raise FileExistsError(errno.EEXIST, "target exists", str(dst))
        try:
            os.rename(src, dst)
        except OSError as exc:
            if exc.errno in (errno.EEXIST, errno.ENOTEMPTY):
                raise FileExistsError(errno.EEXIST, "target exists", str(dst)) from exc
            raise
        self.fsync_dir(dst.parent)
        if src.parent != dst.parent:
            self.fsync_dir(src.parent)

    @staticmethod
    def remove_tree(path: Path) -> bool:
        """Remove a directory tree, best effort.

        Returns:
            True if it is gone; False if something remained (NFS ``.nfsXXXX`` files of files still
            open elsewhere, permissions): the next gc tries again.
        """
        shutil.rmtree(path, ignore_errors=True)
        return not path.exists()

    @contextlib.contextmanager
    def lock(self, rel: str) -> Iterator[None]:
        """Hold an exclusive advisory lock (``flock``) on ``rel`` for the duration of the block.

        It serializes pointer updates between processes on one host (and between NFS clients where
        the server supports locks). Correctness does not rest on it alone: pointers only move
        forward and are repaired from the manifests.
        """
        path = self.path(rel)
        path.parent.mkdir(parents=True, exist_ok=True)
        fd = os.open(path, os.O_RDWR | os.O_CREAT, 0o644)
        try:
            if fcntl is not None:
                fcntl.flock(fd, fcntl.LOCK_EX)
            yield
        finally:
            os.close(fd)  # closing releases the lock

    def append_line(self, rel: str, line: str) -> None:
        """Append one line with a single ``write`` on an ``O_APPEND`` descriptor (no interleaving)."""
        fd = os.open(self.path(rel), os.O_WRONLY | os.O_CREAT | os.O_APPEND, 0o644)
        try:
            os.write(fd, (line.rstrip("\n") + "\n").encode("utf-8", "replace"))
        finally:
            os.close(fd)

    def check_writable(self) -> None:
        """Raise :class:`StoreNotWritableError` if the root cannot be written."""
        if not os.access(self.root, os.W_OK | os.X_OK):
            raise StoreNotWritableError(f"the store at {self.root} is not writable by this process")
