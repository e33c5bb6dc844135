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
from collections.abc import Iterable, Iterator
from pathlib import Path
from typing import IO

from ..errors import StoreNotWritableError
from .base import Backend, Capabilities

__all__ = ["LocalBackend"]

try:  # POSIX advisory locks; absent on Windows.
    import fcntl
except ImportError:  # pragma: no cover - Windows
    fcntl = None  # type: ignore[assignment]


class LocalBackend(Backend):
    """File operations on a local (or NFS-mounted) store root.

    Args:
        root: The store's root directory.
    """

    scheme = "file"

    def __init__(self, root: Path) -> None:
        self.root = root
        self._capabilities: Capabilities | None = None

    def local_path(self, key: str = "") -> Path:
        """The absolute path of ``key``."""
        return self.root / key if key else self.root

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
                mtime_resolution_ns=1,
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

    @classmethod
    def make_dirs(cls, path: Path) -> None:
        """``mkdir -p`` that makes each new directory durable: its parent is fsynced after it appears.

        POSIX does not promise that a new directory survives a power cut until its parent is fsynced
        (ext4 and XFS usually commit it with the next journal commit; the strict power-cut tests do
        not rely on that).
        """
        missing: list[Path] = []
        current = path
        while not current.is_dir():
            missing.append(current)
            if current.parent == current:
                break
            current = current.parent
        for directory in reversed(missing):
            try:
                directory.mkdir()
            except FileExistsError:
                if not directory.is_dir():
                    raise
                continue
            cls.fsync_dir(directory.parent)

    def write_atomic(self, rel: str, data: bytes) -> None:
        """Replace ``rel`` with ``data`` in one step: temp file, fsync, ``os.replace``, fsync parent."""
        target = self.path(rel)
        self.make_dirs(target.parent)
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
        self.make_dirs(target.parent)
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
    def lock(self, key: str) -> Iterator[None]:
        """Hold an exclusive advisory lock (``flock``) on ``rel`` for the duration of the block.

        It serializes pointer updates between processes on one host (and between NFS clients where
        the server supports locks). Correctness does not rest on it alone: pointers only move
        forward and are repaired from the manifests.
        """
        path = self.path(key)
        self.make_dirs(path.parent)
        fd = os.open(path, os.O_RDWR | os.O_CREAT, 0o644)
        try:
            if fcntl is not None:
                fcntl.flock(fd, fcntl.LOCK_EX)
            yield
        finally:
            os.close(fd)  # closing releases the lock

    # -- the Backend interface ----------------------------------------------------------------------
    def read_versioned(self, key: str) -> tuple[bytes, str] | None:
        """Return the content and a version (inode, mtime, size) of ``key``; None if absent."""
        try:
            with open(self.path(key), "rb") as f:
                st = os.fstat(f.fileno())
                return f.read(), f"{st.st_ino}:{st.st_mtime_ns}:{st.st_size}"
        except FileNotFoundError:
            return None

    def write_if(self, key: str, data: bytes, version: str | None) -> bool:
        """Create-only (``version`` None) or replace if unchanged; callers hold :meth:`lock`."""
        if version is None:
            return self.create_exclusive(key, data)
        current = self.read_versioned(key)
        if current is None or current[1] != version:
            return False
        self.write_atomic(key, data)
        return True

    def write(self, key: str, data: bytes) -> None:
        """Replace ``key`` atomically."""
        self.write_atomic(key, data)

    def exists(self, key: str) -> bool:
        """True if ``key`` exists (a symlink counts only if its target does)."""
        return self.path(key).exists()

    def listdir(self, prefix: str) -> list[str]:
        """Sorted entries of a directory; [] if it does not exist."""
        try:
            return sorted(os.listdir(self.path(prefix)))
        except (FileNotFoundError, NotADirectoryError):
            return []

    def walk(self, prefix: str) -> dict[str, int]:
        """Every regular file under ``prefix``: relative path -> size."""
        base = self.path(prefix)
        found: dict[str, int] = {}
        for dirpath, _dirnames, filenames in os.walk(base):
            for name in filenames:
                full = Path(dirpath, name)
                with contextlib.suppress(FileNotFoundError):
                    found[full.relative_to(base).as_posix()] = full.lstat().st_size
        return found

    def stat_files(self, prefix: str) -> dict[str, tuple[int, int]]:
        """Every regular file under ``prefix``: relative path -> (size, mtime ns); symlinks are skipped."""
        base = self.path(prefix)
        found: dict[str, tuple[int, int]] = {}
        for dirpath, _dirnames, filenames in os.walk(base):
            for name in filenames:
                full = Path(dirpath, name)
                with contextlib.suppress(FileNotFoundError):
                    st = full.lstat()
                    if not full.is_symlink():
                        found[full.relative_to(base).as_posix()] = (st.st_size, st.st_mtime_ns)
        return found

    def mtime_ns(self, key: str) -> int:
        """The file's mtime in ns."""
        return self.path(key).stat().st_mtime_ns

    def delete(self, key: str) -> None:
        """Unlink a file; no error if absent."""
        with contextlib.suppress(FileNotFoundError):
            os.unlink(self.path(key))

    def delete_tree(self, prefix: str, *, last: Iterable[str] = ()) -> bool:
        """Remove a directory tree, best effort (see :meth:`remove_tree`)."""
        del last  # a directory disappears with rmtree; callers rename it away first
        return self.remove_tree(self.path(prefix))

    def open_read(self, key: str) -> IO[bytes]:
        """Open a file for reading."""
        return open(self.path(key), "rb")

    def open_write(self, key: str) -> IO[bytes]:
        """Create a new file (it must not exist)."""
        target = self.path(key)
        self.make_dirs(target.parent)
        return open(target, "xb")

    def append_log(self, line: str, writer: str) -> None:
        """Append to ``ckpt.log``."""
        del writer
        self.append_line("ckpt.log", line)

    def read_log(self) -> list[str]:
        """The lines of ``ckpt.log``."""
        try:
            return self.path("ckpt.log").read_text(encoding="utf-8").splitlines()
        except FileNotFoundError:
            return []

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
