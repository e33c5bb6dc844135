"""The directory-descriptor primitives under :class:`~ckptstore.backends.local.LocalBackend`.

They live apart from the backend so that ``local.py`` reads as the policy (which key goes where, which
error a caller sees) and this module as the mechanism: each function works on a directory descriptor
(or the root path and a key's components) and never on a path string that a symlink could redirect.

What they guarantee, for the backend's durability and boundary rules (DESIGN.md section 3):

- a folder below the root is entered one component at a time with ``O_NOFOLLOW``: a symlink, FIFO,
  socket or device on the way is refused with :class:`~ckptstore.errors.UnsafeEntryError`, never
  followed or opened; a folder created on the way is made durable by an fsync of its parent;
- a new file is fsynced before it is published, and the folder is fsynced after an entry in it is
  created, replaced or renamed, in that order (the NFS and power-cut tests check it);
- publication is create-only (``link(2)``, or ``O_EXCL`` where hard links are missing) or a rename
  onto a name that does not exist; a small record is replaced with a temporary entry and ``os.replace``;
- removing a tree never deletes anything outside it (``shutil.rmtree``'s descriptor-based walk).
"""

from __future__ import annotations

import contextlib
import errno
import os
import shutil
import stat
import uuid
from collections.abc import Callable
from pathlib import Path

from .._nofollow import NOFOLLOW, kind, open_regular, unsafe

__all__ = [
    "DIR_FLAGS",
    "checked_path",
    "create_exclusive_at",
    "fsync_fd",
    "refuse_unsafe",
    "remove_tree_at",
    "rename_dir_at",
    "replace_via_temp",
    "step_into",
    "write_new",
]

DIR_FLAGS = os.O_RDONLY | getattr(os, "O_DIRECTORY", 0) | NOFOLLOW | getattr(os, "O_CLOEXEC", 0)
"""The flags to open a folder below the root: a directory, never through a symlink."""


def replace_via_temp(dir_fd: int, name: str, make: Callable[[str], None]) -> None:
    """Make a temporary entry with ``make(tmp)`` beside ``name``, ``os.replace`` it onto ``name``, fsync the folder."""
    tmp = f".{name}.{uuid.uuid4().hex}.tmp"
    try:
        make(tmp)
        os.replace(tmp, name, src_dir_fd=dir_fd, dst_dir_fd=dir_fd)
    except BaseException:
        with contextlib.suppress(OSError):
            os.unlink(tmp, dir_fd=dir_fd)
        raise
    fsync_fd(dir_fd)


def fsync_fd(fd: int) -> None:
    """Fsync a descriptor; a filesystem that refuses fsync on a directory is not an error."""
    try:
        os.fsync(fd)
    except OSError as exc:  # pragma: no cover - some filesystems refuse fsync on a directory
        if exc.errno not in (errno.EINVAL, errno.EBADF, errno.ENOTSUP):
            raise


def checked_path(root: Path, parts: list[str], *, whole: bool = False) -> tuple[str, os.stat_result | None]:
    """``root/parts``, once ``lstat`` showed that no folder on the way to it is a symlink or special file.

    Args:
        root: The store's root (it may itself be a symlink).
        parts: The key's components (already free of ``..``).
        whole: Check the entry itself too (a regular file or a real folder) and return its ``lstat``.

    Returns:
        The path, and with ``whole`` its ``lstat`` (None if it or a folder on the way is missing;
        for the root, its ``stat``).

    Raises:
        UnsafeEntryError: a component is a symlink or a special file.
        NotADirectoryError: a folder on the way is a file.
    """
    base = os.fspath(root)
    full = "/".join((base, *parts))
    found: os.stat_result | None = os.stat(base) if whole and not parts else None
    path = base
    folders = len(parts) - 1
    for i in range(len(parts) if whole else folders):
        path = f"{path}/{parts[i]}"
        try:
            found = os.lstat(path)
        except FileNotFoundError:
            return full, None  # nothing below a missing folder exists either
        mode = found.st_mode
        if stat.S_ISDIR(mode):
            continue
        if kind(mode) is not None:
            raise unsafe(path, mode)
        if i < folders:
            raise NotADirectoryError(errno.ENOTDIR, os.strerror(errno.ENOTDIR), path)
    return full, found


def step_into(parent: int, name: str, path: Path, create: bool) -> int:
    """A descriptor of the folder ``name`` in ``parent`` (shown as ``path``), opened without following a symlink.

    Args:
        parent: The descriptor of the folder that holds it.
        name: Its name there.
        path: Its full path, for messages.
        create: Create it if missing, made durable by an fsync of ``parent``.

    Raises:
        UnsafeEntryError: it is a symlink or a special file.
        NotADirectoryError: it is a file.
        FileNotFoundError: it is missing and ``create`` is False.
    """
    try:
        return os.open(name, DIR_FLAGS, dir_fd=parent)
    except FileNotFoundError:
        if not create:
            raise FileNotFoundError(errno.ENOENT, os.strerror(errno.ENOENT), str(path)) from None
    except OSError as exc:
        if exc.errno not in (errno.ELOOP, errno.ENOTDIR, errno.EMLINK):
            raise
        mode = os.lstat(name, dir_fd=parent).st_mode
        if kind(mode) is not None:
            raise unsafe(path, mode) from None
        raise NotADirectoryError(errno.ENOTDIR, os.strerror(errno.ENOTDIR), str(path)) from None
    with contextlib.suppress(FileExistsError):
        os.mkdir(name, 0o777, dir_fd=parent)
        fsync_fd(parent)
    return step_into(parent, name, path, False)


def refuse_unsafe(dir_fd: int, name: str, shown: Path) -> None:
    """Raise :class:`UnsafeEntryError` if ``name`` in ``dir_fd`` is a symlink or special file."""
    try:
        mode = os.lstat(name, dir_fd=dir_fd).st_mode
    except FileNotFoundError:
        return
    if kind(mode) is not None:
        raise unsafe(shown, mode)


def write_new(path: str | os.PathLike[str], data: bytes, *, dir_fd: int | None = None, label: object = None) -> None:
    """Create ``path`` (it must not exist, as a file or a symlink), write ``data`` and fsync it."""
    fd, _ = open_regular(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o644, dir_fd=dir_fd, label=label)
    try:
        view = memoryview(data)
        while view:
            view = view[os.write(fd, view) :]
        os.fsync(fd)
    finally:
        os.close(fd)


def create_exclusive_at(dir_fd: int, name: str, data: bytes, shown: Path) -> bool:
    """Create ``name`` in ``dir_fd`` with ``data`` only if it does not exist; it appears whole or not at all.

    The data goes to a fsynced temporary file that is hard-linked onto ``name`` (``link(2)`` fails
    with EEXIST: create-only, and atomic on NFS too), then the folder is fsynced.

    Returns:
        True if this call created it, False if it existed already.

    Raises:
        UnsafeEntryError: ``name`` is a symlink or special file.
    """
    tmp = f".{name}.{uuid.uuid4().hex}.tmp"
    write_new(tmp, data, dir_fd=dir_fd)
    try:
        os.link(tmp, name, src_dir_fd=dir_fd, dst_dir_fd=dir_fd, follow_symlinks=False)
    except FileExistsError:
        refuse_unsafe(dir_fd, name, shown)
        return False
    except OSError as exc:
        if exc.errno not in (errno.EPERM, errno.ENOTSUP, errno.EOPNOTSUPP):
            raise
        # No hard links (some FUSE/SMB mounts): fall back to O_EXCL on the final name.
        try:
            write_new(name, data, dir_fd=dir_fd, label=shown)
        except FileExistsError:
            return False
    finally:
        with contextlib.suppress(OSError):
            os.unlink(tmp, dir_fd=dir_fd)
    fsync_fd(dir_fd)
    return True


def rename_dir_at(
    src_fd: int, src_name: str, dst_fd: int, dst_name: str, *, src_shown: Path, dst_shown: Path, same_folder: bool
) -> None:
    """Rename the real directory ``src_name`` onto ``dst_name``, which must not exist, then fsync both folders.

    Args:
        src_fd: The descriptor of the folder that holds ``src_name``.
        src_name: The directory to move.
        dst_fd: The descriptor of the folder to move it into.
        dst_name: Its new name.
        src_shown: The full path of the source, for messages.
        dst_shown: The full path of the target, for messages.
        same_folder: Both descriptors are of the same folder (fsynced once).

    Raises:
        FileExistsError: the target exists (also for ENOTEMPTY).
        FileNotFoundError: the source does not exist.
        UnsafeEntryError: the source is a symlink or special file.
        NotADirectoryError: the source is a file.
    """
    try:
        os.lstat(dst_name, dir_fd=dst_fd)
    except FileNotFoundError:
        pass
    else:
        raise FileExistsError(errno.EEXIST, "target exists", str(dst_shown))
    try:
        mode = os.lstat(src_name, dir_fd=src_fd).st_mode
    except FileNotFoundError:
        raise FileNotFoundError(errno.ENOENT, os.strerror(errno.ENOENT), str(src_shown)) from None
    if kind(mode) is not None:
        raise unsafe(src_shown, mode)
    if not stat.S_ISDIR(mode):
        raise NotADirectoryError(errno.ENOTDIR, os.strerror(errno.ENOTDIR), str(src_shown))
    try:
        os.rename(src_name, dst_name, src_dir_fd=src_fd, dst_dir_fd=dst_fd)
    except OSError as exc:
        if exc.errno in (errno.EEXIST, errno.ENOTEMPTY):
            raise FileExistsError(errno.EEXIST, "target exists", str(dst_shown)) from exc
        raise
    fsync_fd(dst_fd)
    if not same_folder:
        fsync_fd(src_fd)


def remove_tree_at(dir_fd: int, name: str, shown: Path) -> bool:
    """Remove the tree (or file) ``name`` in ``dir_fd``, best effort; a symlink in it is unlinked, never followed.

    Returns:
        True if it is gone (or was never there); False if something remained.

    Raises:
        UnsafeEntryError: ``name`` itself is a symlink or a special file.
        FileNotFoundError: the file vanished while it was being unlinked (the caller counts it gone).
    """
    try:
        mode = os.lstat(name, dir_fd=dir_fd).st_mode
    except FileNotFoundError:
        return True
    if kind(mode) is not None:
        raise unsafe(shown, mode)
    if stat.S_ISDIR(mode):
        shutil.rmtree(name, ignore_errors=True, dir_fd=dir_fd)
    else:
        os.unlink(name, dir_fd=dir_fd)
    try:
        os.lstat(name, dir_fd=dir_fd)
    except FileNotFoundError:
        return True
    return False
