"""The local backend: local disk and NFS mounts.

It exists to put every POSIX durability rule in one place: files are fsynced before they are
published, directories are fsynced after an entry in them changes, publication is a rename onto a name
that does not exist, and small records (pointers, the store descriptor) are replaced with a temporary
file and ``os.replace``. NFS needs two more rules, both here: a rename whose reply was lost may report
an error after it succeeded (callers re-check the target), and ``rmtree`` may meet ``.nfsXXXX`` files
that vanish later (removal is best effort and retried by the next gc).

It also keeps the store's root a boundary (DESIGN.md section 3, guarantee 9): no key is ever reached
through a symlink below the root, and no symlink, FIFO, socket or device inside the store is followed
or opened; such an entry is refused with :class:`~ckptstore.errors.UnsafeEntryError` naming it. The
root itself may be a symlink, and the ``best``/``last`` pointer links are only ever replaced whole.
The directory-descriptor primitives these rules rest on are in :mod:`ckptstore.backends._localfs`.
"""

from __future__ import annotations

import contextlib
import errno
import os
import stat
import uuid
from collections.abc import Iterable, Iterator
from pathlib import Path
from typing import IO

from .._nofollow import NOFOLLOW, kind, open_regular, regular_files
from ..errors import StoreNotWritableError, UnsafeEntryError, UnsafePathError
from ._localfs import (
    DIR_FLAGS,
    checked_path,
    create_exclusive_at,
    fsync_fd,
    refuse_unsafe,
    remove_tree_at,
    rename_dir_at,
    replace_via_temp,
    step_into,
    write_new,
)
from .base import Backend, Capabilities

__all__ = ["PATH_MAX", "LocalBackend"]

PATH_MAX = 4096
"""The longest path (with its terminating NUL) that Linux system calls accept."""

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
                max_key_bytes=PATH_MAX - 1,
            )
        return self._capabilities

    def key_bytes(self, key: str) -> int:
        """The length of the absolute path of ``key`` (what ``PATH_MAX`` limits)."""
        return len(os.fsencode(self.local_path(key)))

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

    # -- the boundary: nothing below the root is reached through a symlink ------------------------------
    # Reads check the folders on the way with ``lstat`` and open the file itself with ``O_NOFOLLOW``
    # (a few system calls); whatever creates, replaces, renames or deletes goes through directory
    # descriptors opened one component at a time with ``O_NOFOLLOW``, so not even a folder swapped for
    # a symlink while it runs leads it outside. The root itself may be a symlink (``runs -> /data/runs``).
    def _parts(self, rel: str) -> list[str]:
        """The components of a store-relative key; ``..``, which would leave the root, is refused."""
        parts = [p for p in rel.split("/") if p not in ("", ".")]
        if ".." in parts:
            raise UnsafePathError(f"{rel!r} would leave the store at {self.root}")
        return parts

    def _split(self, rel: str) -> tuple[str, str]:
        """``(folder, name)`` of an entry below the root."""
        parts = self._parts(rel)
        if not parts:
            raise UnsafePathError(f"{rel!r} names the root of the store at {self.root}, not an entry in it")
        return "/".join(parts[:-1]), parts[-1]

    def _rel(self, path: Path | str) -> str:
        """The store-relative key of ``path`` (an absolute path below the root, or a key already)."""
        if isinstance(path, str):
            return path
        try:
            return path.relative_to(self.root).as_posix()
        except ValueError:
            raise UnsafePathError(f"{path} is outside the store at {self.root}") from None

    def _checked(self, rel: str, *, whole: bool = False) -> tuple[str, os.stat_result | None]:
        """``root/rel``, once ``lstat`` showed no symlink or special file on the way (see :func:`checked_path`)."""
        return checked_path(self.root, self._parts(rel), whole=whole)

    def _open(self, rel: str, flags: int) -> tuple[int, os.stat_result]:
        """Open the regular file ``rel`` (see :func:`~ckptstore._nofollow.open_regular`)."""
        path, _ = self._checked(rel)
        return open_regular(path, flags)

    @contextlib.contextmanager
    def _folder(self, rel: str, *, create: bool = False) -> Iterator[int]:
        """A descriptor of the folder ``root/rel``, reached one component at a time, never through a symlink.

        Args:
            rel: The folder ("" for the root).
            create: Create missing folders, each made durable by an fsync of its parent.

        Raises:
            UnsafeEntryError: a component is a symlink or a special file.
            FileNotFoundError: a component is missing and ``create`` is False.
        """
        fd = os.open(self.root, DIR_FLAGS & ~NOFOLLOW)  # the root itself may be a symlink
        try:
            path = self.root
            for part in self._parts(rel):
                path = path / part
                inner = step_into(fd, part, path, create)
                os.close(fd)
                fd = inner
            yield fd
        finally:
            os.close(fd)

    def _not_our_link(self, rel: str, mode: int) -> UnsafeEntryError:
        what = "a folder" if stat.S_ISDIR(mode) else kind(mode) or "a file"
        return UnsafeEntryError(
            f"{self.root / rel} is {what}, not ckptstore's {rel} pointer link; ckptstore never replaces or deletes "
            "it: move it away to get the link back"
        )

    def make_dir(self, rel: str) -> None:
        """``mkdir -p`` of a folder inside the store; each new folder is made durable, none is a symlink.

        Raises:
            UnsafeEntryError: a folder on the way (or ``rel`` itself) is a symlink or a special file.
        """
        with self._folder(rel, create=True):
            pass

    def entry_stat(self, rel: str) -> os.stat_result:
        """The ``lstat`` of a regular file or real folder inside the store.

        Raises:
            FileNotFoundError: it does not exist.
            UnsafeEntryError: it, or a folder on the way, is a symlink or a special file.
        """
        path, found = self._checked(rel, whole=True)
        if found is None:
            raise FileNotFoundError(errno.ENOENT, os.strerror(errno.ENOENT), str(path))
        return found

    # -- durability primitives ------------------------------------------------------------------------
    @staticmethod
    def fsync_dir(path: Path) -> None:
        """Flush a directory's entries (a rename or create in it) to stable storage."""
        try:
            fd = os.open(path, os.O_RDONLY | getattr(os, "O_DIRECTORY", 0))
        except OSError:  # pragma: no cover - platforms without directory fds
            return
        try:
            fsync_fd(fd)
        finally:
            os.close(fd)

    @classmethod
    def make_dirs(cls, path: Path) -> None:
        """``mkdir -p`` of the store's root (and the folders above it, which may be symlinks).

        Folders inside the store are made with :meth:`make_dir`, which never follows a symlink. Each
        new directory is durable: its parent is fsynced after it appears (POSIX does not promise that
        a new directory survives a power cut until then; ext4 and XFS usually commit it with the next
        journal commit, and the strict power-cut tests do not rely on that).
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
        """Replace ``rel`` with ``data`` in one step: temp file, fsync, ``os.replace``, fsync parent.

        Raises:
            UnsafeEntryError: ``rel`` or a folder on the way is a symlink or special file (it is
                neither replaced nor written through).
        """
        folder, name = self._split(rel)
        with self._folder(folder, create=True) as dir_fd:
            refuse_unsafe(dir_fd, name, self.root / rel)
            replace_via_temp(dir_fd, name, lambda tmp: write_new(tmp, data, dir_fd=dir_fd))

    def create_exclusive(self, rel: str, data: bytes) -> bool:
        """Create ``rel`` with ``data`` only if it does not exist; the file appears whole or not at all.

        Returns:
            True if this call created it, False if it existed already.

        Raises:
            UnsafeEntryError: ``rel`` or a folder on the way is a symlink or special file.
        """
        folder, name = self._split(rel)
        shown = self.root / rel
        with self._folder(folder, create=True) as dir_fd:
            return create_exclusive_at(dir_fd, name, data, shown)

    _write_new = staticmethod(write_new)

    def read_bytes(self, rel: str) -> bytes:
        """Return the content of ``rel``; a symlink or special file is refused without being opened."""
        fd, _ = self._open(rel, os.O_RDONLY)
        with os.fdopen(fd, "rb", buffering=0) as f:
            return f.readall()

    def replace_symlink(self, rel: str, target: str) -> None:
        """Point the symlink ``rel`` at ``target`` atomically (temp link + ``os.replace``).

        Raises:
            UnsafeEntryError: something else than a symlink is at ``rel`` (a file or folder someone
                put there); it is left alone.
        """
        folder, name = self._split(rel)
        with self._folder(folder) as dir_fd:
            with contextlib.suppress(FileNotFoundError):
                mode = os.lstat(name, dir_fd=dir_fd).st_mode
                if not stat.S_ISLNK(mode):
                    raise self._not_our_link(rel, mode)
            replace_via_temp(dir_fd, name, lambda tmp: os.symlink(target, tmp, dir_fd=dir_fd))

    def remove_symlink(self, rel: str) -> None:
        """Remove the symlink ``rel`` (no error if absent); never a file or folder found there.

        Raises:
            UnsafeEntryError: something else than a symlink is at ``rel``; it is left alone.
        """
        folder, name = self._split(rel)
        with self._folder(folder) as dir_fd:
            try:
                mode = os.lstat(name, dir_fd=dir_fd).st_mode
            except FileNotFoundError:
                return
            if not stat.S_ISLNK(mode):
                raise self._not_our_link(rel, mode)
            with contextlib.suppress(FileNotFoundError):
                os.unlink(name, dir_fd=dir_fd)

    def rename_dir(self, src: Path | str, dst: Path | str) -> None:
        """Rename a real directory onto a name that must not exist, then fsync both parents.

        ``src`` and ``dst`` are keys or paths below the root. Both parents are reached through
        descriptors that never follow a symlink, and ``src`` must be a directory, not a symlink to
        one: a rename never moves anything across the root's boundary.

        Raises:
            FileExistsError: ``dst`` exists (also for ENOTEMPTY, which Linux reports for a
                non-empty target directory).
            FileNotFoundError: ``src`` does not exist.
            UnsafeEntryError: ``src`` or a folder on the way is a symlink or special file.
        """
        src_rel, dst_rel = self._rel(src), self._rel(dst)
        src_folder, src_name = self._split(src_rel)
        dst_folder, dst_name = self._split(dst_rel)
        with self._folder(src_folder) as src_fd, self._folder(dst_folder, create=True) as dst_fd:
            rename_dir_at(
                src_fd,
                src_name,
                dst_fd,
                dst_name,
                src_shown=self.root / src_rel,
                dst_shown=self.root / dst_rel,
                same_folder=src_folder == dst_folder,
            )

    @contextlib.contextmanager
    def lock(self, key: str) -> Iterator[None]:
        """Hold an exclusive advisory lock (``flock``) on ``rel`` for the duration of the block.

        It serializes pointer updates between processes on one host (and between NFS clients where
        the server supports locks). Correctness does not rest on it alone: pointers only move
        forward and are repaired from the manifests. A lock file that is a symlink or special file
        is refused, never created or opened through.
        """
        folder, name = self._split(key)
        with self._folder(folder, create=True) as dir_fd:
            fd, _ = open_regular(name, os.O_RDWR | os.O_CREAT, 0o644, dir_fd=dir_fd, label=self.root / key)
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
            fd, st = self._open(key, os.O_RDONLY)
        except FileNotFoundError:
            return None
        with os.fdopen(fd, "rb", buffering=0) as f:
            return f.readall(), f"{st.st_ino}:{st.st_mtime_ns}:{st.st_size}"

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
        """True if ``key`` is a file or folder; a symlink or special file there is refused, not followed."""
        return self._checked(key, whole=True)[1] is not None

    def listdir(self, prefix: str) -> list[str]:
        """Sorted entries of a folder; [] if it does not exist. A symlinked folder is refused."""
        try:
            path, found = self._checked(prefix, whole=True)
            if found is None or not stat.S_ISDIR(found.st_mode):
                return []
            return sorted(os.listdir(path))
        except (FileNotFoundError, NotADirectoryError):
            return []

    def walk(self, prefix: str) -> dict[str, int]:
        """Every regular file under ``prefix``: relative path -> size.

        Raises:
            UnsafeEntryError: ``prefix``, a folder on the way or an entry below it is a symlink or a
                special file (nothing is followed or opened).
        """
        base, found = self._checked(prefix, whole=True)
        if found is None or not stat.S_ISDIR(found.st_mode):
            return {}
        sizes: dict[str, int] = {}
        cut = len(base) + 1
        for entry in regular_files(base):
            with contextlib.suppress(FileNotFoundError):
                sizes[entry.path[cut:]] = entry.stat(follow_symlinks=False).st_size
        return sizes

    def stat_files(self, prefix: str) -> dict[str, tuple[int, int]]:
        """Every regular file under ``prefix``: relative path -> (size, mtime ns).

        Symlinks and special files below ``prefix`` are skipped (this lists files ckptstore did not
        write too), never followed or opened.
        """
        base, found = self._checked(prefix, whole=True)
        if found is None or not stat.S_ISDIR(found.st_mode):
            return {}
        stats: dict[str, tuple[int, int]] = {}
        cut = len(base) + 1
        for entry in regular_files(base, skip=True):
            with contextlib.suppress(FileNotFoundError):
                st = entry.stat(follow_symlinks=False)
                stats[entry.path[cut:]] = (st.st_size, st.st_mtime_ns)
        return stats

    def mtime_ns(self, key: str) -> int:
        """The mtime in ns of a file or folder (never of a symlink's target)."""
        return self.entry_stat(key).st_mtime_ns

    def delete(self, key: str) -> None:
        """Unlink a file (a symlink itself, never its target); no error if absent."""
        folder, name = self._split(key)
        with contextlib.suppress(FileNotFoundError), self._folder(folder) as dir_fd:
            os.unlink(name, dir_fd=dir_fd)

    def delete_tree(self, prefix: str, *, last: Iterable[str] = ()) -> bool:
        """Remove a directory tree inside the store, best effort.

        The tree's parent is reached through descriptors that never follow a symlink, and
        ``shutil.rmtree``'s descriptor-based walk unlinks a symlink met inside the tree without
        following it: nothing outside the root is ever deleted, whatever the tree holds.

        Returns:
            True if it is gone; False if something remained (NFS ``.nfsXXXX`` files of files still
            open elsewhere, permissions): the next gc tries again.

        Raises:
            UnsafeEntryError: ``prefix`` or a folder on the way is a symlink or a special file.
        """
        del last  # a directory disappears with rmtree; callers rename it away first
        folder, name = self._split(prefix)
        try:
            with self._folder(folder) as dir_fd:
                return remove_tree_at(dir_fd, name, self.root / prefix)
        except FileNotFoundError:
            return True

    def open_read(self, key: str) -> IO[bytes]:
        """Open a regular file for reading (never through a symlink; a special file is refused unopened)."""
        fd, _ = self._open(key, os.O_RDONLY)
        return os.fdopen(fd, "rb")

    def open_write(self, key: str) -> IO[bytes]:
        """Create a new file (it must not exist, as a file or a symlink)."""
        folder, name = self._split(key)
        with self._folder(folder, create=True) as dir_fd:
            fd, _ = open_regular(
                name, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o644, dir_fd=dir_fd, label=self.root / key
            )
        return os.fdopen(fd, "wb")

    def append_log(self, line: str, writer: str) -> None:
        """Append to ``ckpt.log``."""
        del writer
        self.append_line("ckpt.log", line)

    def read_log(self) -> list[str]:
        """The lines of ``ckpt.log``."""
        try:
            return self.read_bytes("ckpt.log").decode("utf-8").splitlines()
        except FileNotFoundError:
            return []

    def append_line(self, rel: str, line: str) -> None:
        """Append one line with a single ``write`` on an ``O_APPEND`` descriptor (no interleaving).

        Raises:
            UnsafeEntryError: the file is a symlink or special file (nothing is appended to it).
        """
        fd, _ = self._open(rel, os.O_WRONLY | os.O_CREAT | os.O_APPEND)
        try:
            os.write(fd, (line.rstrip("\n") + "\n").encode("utf-8", "replace"))
        finally:
            os.close(fd)

    def check_writable(self) -> None:
        """Raise :class:`StoreNotWritableError` if the root cannot be written."""
        if not os.access(self.root, os.W_OK | os.X_OK):
            raise StoreNotWritableError(f"the store at {self.root} is not writable by this process")
