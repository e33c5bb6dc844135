"""Opening and listing files without following a symlink or opening a special file.

The store's root is a boundary (DESIGN.md section 3, guarantee 9): whatever a store or a staging
directory holds, ckptstore reads, writes and deletes only inside it. A symlink planted there would
lead a read, a write or ``rmtree`` outside; a named pipe would block the read that hashes it forever;
a device would be read as data. The primitives here refuse both from an ``lstat`` before anything is
opened, and close the race that remains (an entry swapped after the ``lstat``) with ``O_NOFOLLOW``,
``O_NONBLOCK`` and an ``fstat`` of what was actually opened.
"""

from __future__ import annotations

import errno
import os
import stat
from collections.abc import Iterator
from pathlib import Path

from .errors import UnsafeEntryError

__all__ = ["NOFOLLOW", "kind", "open_regular", "regular_files", "unsafe"]

NOFOLLOW = getattr(os, "O_NOFOLLOW", 0)
_NONBLOCK = getattr(os, "O_NONBLOCK", 0)
_EXTRA = getattr(os, "O_CLOEXEC", 0) | getattr(os, "O_BINARY", 0)


def kind(mode: int) -> str | None:
    """What an entry is, in words, if it is neither a regular file nor a directory; None if it is one."""
    if stat.S_ISREG(mode) or stat.S_ISDIR(mode):
        return None
    if stat.S_ISLNK(mode):
        return "a symlink"
    if stat.S_ISFIFO(mode):
        return "a named pipe (FIFO)"
    if stat.S_ISSOCK(mode):
        return "a socket"
    if stat.S_ISCHR(mode) or stat.S_ISBLK(mode):
        return "a device"
    return "a special file"


def unsafe(path: object, mode: int, error: type[Exception] = UnsafeEntryError, why: str | None = None) -> Exception:
    """The error refusing ``path``, a symlink or special file (``mode`` from its ``lstat``)."""
    if why is None:
        why = (
            "ckptstore never follows symlinks inside a store: remove it"
            if stat.S_ISLNK(mode)
            else "ckptstore never opens special files inside a store: remove it"
        )
    return error(f"{path} is {kind(mode) or 'not a regular file'}; {why}")


def _require_regular(mode: int, shown: object, error: type[Exception], why: str | None) -> None:
    if stat.S_ISDIR(mode):
        raise IsADirectoryError(errno.EISDIR, os.strerror(errno.EISDIR), str(shown))
    if not stat.S_ISREG(mode):
        raise unsafe(shown, mode, error, why)


def open_regular(
    path: str | os.PathLike[str],
    flags: int = os.O_RDONLY,
    mode: int = 0o644,
    *,
    dir_fd: int | None = None,
    label: object = None,
    error: type[Exception] = UnsafeEntryError,
    why: str | None = None,
) -> tuple[int, os.stat_result]:
    """Open a regular file, never through a symlink and never a FIFO, socket or device.

    Unless ``flags`` create the file exclusively (then nothing existing is ever opened), the entry is
    ``lstat``-ed first and anything but a regular file is refused before it is opened. The open itself
    adds ``O_NOFOLLOW`` (a symlink swapped in meanwhile fails) and ``O_NONBLOCK`` (a FIFO swapped in
    does not block), and the ``fstat`` of the descriptor must show a regular file; ``O_NONBLOCK`` is
    then cleared again.

    Args:
        path: The file (a name relative to ``dir_fd`` if given).
        flags: ``os.open`` flags.
        mode: Permissions of a file this call creates.
        dir_fd: A directory descriptor ``path`` is relative to.
        label: What to name in messages (default ``path``).
        error: The error class for a symlink or special file.
        why: The end of that error's message (default: "ckptstore never follows symlinks ...").

    Returns:
        The open descriptor (the caller closes it) and its ``fstat``.

    Raises:
        IsADirectoryError: it is a directory.
        FileNotFoundError: it does not exist (and ``flags`` do not create it).
    """
    shown = path if label is None else label
    if not (flags & os.O_CREAT and flags & os.O_EXCL):
        try:
            before = os.lstat(path, dir_fd=dir_fd)
        except FileNotFoundError:
            if not flags & os.O_CREAT:
                raise
        else:
            _require_regular(before.st_mode, shown, error, why)
    try:
        fd = os.open(path, flags | NOFOLLOW | _NONBLOCK | _EXTRA, mode, dir_fd=dir_fd)
    except OSError as exc:
        if exc.errno not in (errno.ELOOP, errno.EEXIST, errno.ENXIO, errno.EMLINK, errno.EISDIR):
            raise
        try:  # what is there? (ELOOP/EMLINK: a symlink; EEXIST: maybe one; ENXIO: a FIFO or socket)
            found = os.lstat(path, dir_fd=dir_fd).st_mode
        except OSError:
            raise exc from None
        if kind(found) is None:
            raise
        raise unsafe(shown, found, error, why) from None
    try:
        st = os.fstat(fd)
        _require_regular(st.st_mode, shown, error, why)
        if _NONBLOCK:
            os.set_blocking(fd, True)
    except BaseException:
        os.close(fd)
        raise
    return fd, st


def regular_files(
    base: str | Path, *, error: type[Exception] = UnsafeEntryError, why: str | None = None, skip: bool = False
) -> Iterator[os.DirEntry[str]]:
    """Every regular file below the directory ``base``, recursively; nothing is opened or followed.

    Entry types come from the directory listing (``d_type``; an ``lstat`` where the filesystem does
    not say), so this costs no system call per file on most filesystems.

    Args:
        base: A directory the caller has checked is not a symlink.
        error: The error class for a symlink or special file.
        why: The end of that error's message.
        skip: Skip symlinks and special files instead of raising (for files ckptstore did not write).

    Yields:
        The directory entry of each regular file (``entry.stat(follow_symlinks=False)`` for its size).
    """
    pending = [os.fspath(base)]
    while pending:
        folder = pending.pop()
        try:
            scan = os.scandir(folder)
        except FileNotFoundError:  # removed while listing
            continue
        with scan:
            for entry in scan:
                try:
                    mode = _entry_mode(entry)
                except FileNotFoundError:  # removed while listing
                    continue
                if stat.S_ISDIR(mode):
                    pending.append(entry.path)
                elif stat.S_ISREG(mode):
                    yield entry
                elif not skip:
                    raise unsafe(entry.path, mode, error, why)


def _entry_mode(entry: os.DirEntry[str]) -> int:
    """The file type of a directory entry, from ``d_type`` where the filesystem gives it (no system call)."""
    if entry.is_symlink():
        return stat.S_IFLNK
    if entry.is_dir(follow_symlinks=False):
        return stat.S_IFDIR
    if entry.is_file(follow_symlinks=False):
        return stat.S_IFREG
    return entry.stat(follow_symlinks=False).st_mode
