"""A filesystem that loses what was not synced, on demand (the daemon behind :class:`LazyMount`).

Everything lives in this process's memory, in two copies: what programs see, and what would survive
a power cut. The rules are those of a journaling filesystem in ordered mode, made as harsh as POSIX
allows:

* A file's data (writes, truncation) becomes durable only when that file is ``fsync``-ed.
* Namespace changes (create, mkdir, link, unlink, rename, rmdir, symlink) go into an ordered journal.
  ``fsync`` on a directory commits the journal up to and including the last change in that
  directory; nothing else commits it (not a file's ``fsync``, not ``close``). A rename is one journal
  entry, so a power cut never shows an entry in both places.
* With ``strict=True`` (``--strict``), a directory's ``fsync`` commits only the changes in that
  directory and the earlier changes they depend on (a rename counts for both of its directories and
  brings their earlier changes along), the least POSIX promises: a program must fsync every
  directory it changed, parents of new directories included.
* ``crash`` (the power cut) throws away every unsynced byte and every uncommitted namespace change;
  ``sync`` commits everything, like ``sync(1)``.

So a program that renames a file it never fsynced finds an empty file after the cut, and one that
renames without fsyncing the directory finds the old name. That is what LazyFS (Ramos et al.) does for
data; the journal model adds the directory rule, which LazyFS passes straight to the disk below.
"""

from __future__ import annotations

import argparse
import errno
import itertools
import os
import stat
import threading
import time
from collections.abc import Callable
from functools import wraps
from typing import Any, TypeVar

F = TypeVar("F", bound=Callable[..., Any])

ROOT = 1


class Node:
    """An inode: a file (``data``/``synced``), a directory (``entries``/``durable``) or a symlink."""

    __slots__ = ("data", "durable", "entries", "ino", "mode", "mtime_ns", "synced", "target")

    def __init__(self, ino: int, mode: int, target: str = "") -> None:
        self.ino = ino
        self.mode = mode
        self.data = bytearray()
        self.synced = b""  # the file's durable content
        self.entries: dict[str, int] = {}  # what programs see
        self.durable: dict[str, int] = {}  # what survives a power cut
        self.target = target
        self.mtime_ns = time.time_ns()


def _fuse_error(code: int) -> Exception:
    import mfusepy

    return mfusepy.FuseOSError(code)  # type: ignore[no-any-return]


def locked(method: F) -> F:
    """Run an operation under the filesystem's lock (FUSE calls and control commands interleave)."""

    @wraps(method)
    def run(self: LazyFS, *args: Any, **kwargs: Any) -> Any:
        with self.mutex:
            return method(self, *args, **kwargs)

    return run  # type: ignore[return-value]


class LazyFS:
    """The operations (mfusepy's interface) of an in-memory filesystem with a power-cut switch."""

    use_ns = True

    def __init__(self, strict: bool = False) -> None:
        self.strict = strict
        self.mutex = threading.RLock()
        self.counter = itertools.count(ROOT + 1)
        self.nodes: dict[int, Node] = {ROOT: Node(ROOT, stat.S_IFDIR | 0o755)}
        self.journal: list[tuple[Any, ...]] = []  # uncommitted namespace changes, oldest first
        self.handles: dict[int, int] = {}  # fh -> ino
        self.fhs = itertools.count(1)
        self.stats = {
            "crashes": 0,
            "bytes_dropped": 0,
            "changes_dropped": 0,
            "fsyncs": 0,
            "dir_fsyncs": 0,
            "fsync_failures": 0,
        }
        self.failing: list[str] = []  # path suffixes: the next fsync of a matching file fails with EIO

    # -- names ---------------------------------------------------------------------------------------
    def _lookup(self, path: str) -> Node:
        node = self.nodes[ROOT]
        for part in filter(None, path.split("/")):
            if not stat.S_ISDIR(node.mode):
                raise _fuse_error(errno.ENOTDIR)
            ino = node.entries.get(part)
            if ino is None:
                raise _fuse_error(errno.ENOENT)
            node = self.nodes[ino]
        return node

    def _parent(self, path: str) -> tuple[Node, str]:
        head, _, name = path.rstrip("/").rpartition("/")
        parent = self._lookup(head or "/")
        if not stat.S_ISDIR(parent.mode):
            raise _fuse_error(errno.ENOTDIR)
        return parent, name

    def _node(self, path: str | None, fh: int | None) -> Node:
        if fh is not None and fh in self.handles:
            return self.nodes[self.handles[fh]]
        if path is None:
            raise _fuse_error(errno.EBADF)
        return self._lookup(path)

    def _add(self, parent: Node, name: str, node: Node) -> None:
        if name in parent.entries:
            raise _fuse_error(errno.EEXIST)
        self.nodes[node.ino] = node
        parent.entries[name] = node.ino
        parent.mtime_ns = time.time_ns()
        self.journal.append(("link", parent.ino, name, node.ino))

    # -- the journal -----------------------------------------------------------------------------------
    def _apply(self, change: tuple[Any, ...]) -> None:
        kind = change[0]
        if kind == "link":
            _, parent, name, ino = change
            self.nodes[parent].durable[name] = ino
        elif kind == "unlink":
            _, parent, name = change
            self.nodes[parent].durable.pop(name, None)
        else:  # rename
            _, old_parent, old, new_parent, new, ino = change
            self.nodes[old_parent].durable.pop(old, None)
            self.nodes[new_parent].durable[new] = ino

    def _commit(self, upto: int) -> None:
        for change in self.journal[:upto]:
            self._apply(change)
        del self.journal[:upto]

    @staticmethod
    def _dirs(change: tuple[Any, ...]) -> set[int]:
        """The directories a journal entry changes (a rename changes two)."""
        return {change[1], change[3]} if change[0] == "rename" else {change[1]}

    # -- control commands ------------------------------------------------------------------------------
    @locked
    def crash(self, _args: dict[str, Any]) -> dict[str, int]:
        """The power cut: every unsynced byte and uncommitted change is gone."""
        self.stats["changes_dropped"] += len(self.journal)
        self.journal.clear()
        self.handles.clear()
        reachable = {ROOT}
        stack = [ROOT]
        while stack:
            node = self.nodes[stack.pop()]
            if stat.S_ISDIR(node.mode):
                node.entries = dict(node.durable)
                for ino in node.durable.values():
                    if ino not in reachable:
                        reachable.add(ino)
                        stack.append(ino)
            elif stat.S_ISREG(node.mode):
                if bytes(node.data) != node.synced:
                    self.stats["bytes_dropped"] += max(len(node.data) - len(node.synced), 0) or 1
                node.data = bytearray(node.synced)
        self.nodes = {ino: node for ino, node in self.nodes.items() if ino in reachable}
        self.stats["crashes"] += 1
        return dict(self.stats)

    @locked
    def sync(self, _args: dict[str, Any]) -> dict[str, int]:
        """``sync(1)``: everything becomes durable."""
        self._commit(len(self.journal))
        for node in self.nodes.values():
            node.synced = bytes(node.data)
        return dict(self.stats)

    @locked
    def fail_fsync(self, args: dict[str, Any]) -> dict[str, int]:
        """Arm a disk error: the next ``fsync`` of a file whose path ends with ``args["suffix"]`` fails.

        It returns ``EIO`` once and leaves the file's data unsynced (a power cut drops it), as a disk
        that failed the write-back would.
        """
        self.failing.append(str(args["suffix"]))
        return dict(self.stats)

    @locked
    def report(self, _args: dict[str, Any]) -> dict[str, int]:
        """The counters, plus how much is waiting for a sync right now."""
        unsynced: list[str] = []
        stack: list[tuple[str, Node]] = [("", self.nodes[ROOT])]
        while stack:
            prefix, directory = stack.pop()
            for name, ino in directory.entries.items():
                node = self.nodes[ino]
                if stat.S_ISDIR(node.mode):
                    stack.append((f"{prefix}{name}/", node))
                elif stat.S_ISREG(node.mode) and bytes(node.data) != node.synced:
                    unsynced.append(prefix + name)
        pending = {"journal": len(self.journal), "unsynced_files": sorted(unsynced), "inodes": len(self.nodes)}
        return {**self.stats, **pending}

    # -- FUSE operations -----------------------------------------------------------------------------
    @locked
    def getattr(self, path: str | None, fh: int | None = None) -> dict[str, Any]:
        node = self._node(path, fh)
        size = len(node.data) if stat.S_ISREG(node.mode) else len(node.target) if node.target else 4096
        links = 1 if not stat.S_ISDIR(node.mode) else 2
        return {
            "st_mode": node.mode,
            "st_ino": node.ino,
            "st_nlink": links,
            "st_size": size,
            "st_uid": os.getuid(),
            "st_gid": os.getgid(),
            "st_mtime": node.mtime_ns,
            "st_ctime": node.mtime_ns,
            "st_atime": node.mtime_ns,
            "st_blocks": (size + 511) // 512,
        }

    @locked
    def readdir(self, path: str, fh: int) -> list[str]:
        node = self._lookup(path)
        return [".", "..", *node.entries]

    @locked
    def mkdir(self, path: str, mode: int) -> int:
        parent, name = self._parent(path)
        self._add(parent, name, Node(next(self.counter), stat.S_IFDIR | (mode & 0o7777)))
        return 0

    @locked
    def create(self, path: str, mode: int, fi: Any = None) -> int:
        parent, name = self._parent(path)
        node = Node(next(self.counter), stat.S_IFREG | (mode & 0o7777))
        self._add(parent, name, node)
        fh = next(self.fhs)
        self.handles[fh] = node.ino
        return fh

    @locked
    def open(self, path: str, flags: int) -> int:
        node = self._lookup(path)
        if flags & os.O_TRUNC:
            node.data = bytearray()
        fh = next(self.fhs)
        self.handles[fh] = node.ino
        return fh

    @locked
    def read(self, path: str | None, size: int, offset: int, fh: int) -> bytes:
        return bytes(self._node(path, fh).data[offset : offset + size])

    @locked
    def write(self, path: str | None, data: bytes, offset: int, fh: int) -> int:
        node = self._node(path, fh)
        if offset > len(node.data):
            node.data.extend(b"\0" * (offset - len(node.data)))
        node.data[offset : offset + len(data)] = data
        node.mtime_ns = time.time_ns()
        return len(data)

    @locked
    def truncate(self, path: str | None, length: int, fh: int | None = None) -> int:
        node = self._node(path, fh)
        del node.data[length:]
        node.data.extend(b"\0" * (length - len(node.data)))
        node.mtime_ns = time.time_ns()
        return 0

    @locked
    def fsync(self, path: str | None, datasync: int, fh: int) -> int:
        node = self._node(path, fh)
        for i, suffix in enumerate(self.failing):
            if path is not None and path.endswith(suffix):
                del self.failing[i]
                self.stats["fsync_failures"] += 1
                raise _fuse_error(errno.EIO)
        node.synced = bytes(node.data)
        self.stats["fsyncs"] += 1
        return 0

    @locked
    def fsyncdir(self, path: str | None, datasync: int, fh: int) -> int:
        node = self._lookup(path or "/")
        if self.strict:
            # The changes in this directory, plus every earlier change in a directory they touch
            # (a rename out of work/ needs work/'s earlier entries first): never an impossible state.
            chosen: set[int] = set()
            dirs = {node.ino}
            for i in range(len(self.journal) - 1, -1, -1):
                touched = self._dirs(self.journal[i])
                if touched & dirs:
                    chosen.add(i)
                    dirs |= touched
            for i in sorted(chosen):
                self._apply(self.journal[i])
            self.journal = [c for i, c in enumerate(self.journal) if i not in chosen]
        else:
            last = max((i for i, change in enumerate(self.journal) if node.ino in self._dirs(change)), default=-1)
            self._commit(last + 1)
        self.stats["dir_fsyncs"] += 1
        return 0

    @locked
    def release(self, path: str | None, fh: int) -> int:
        self.handles.pop(fh, None)
        return 0

    @locked
    def unlink(self, path: str) -> int:
        parent, name = self._parent(path)
        node = self._lookup(path)
        if stat.S_ISDIR(node.mode):
            raise _fuse_error(errno.EISDIR)
        del parent.entries[name]
        self.journal.append(("unlink", parent.ino, name))
        return 0

    @locked
    def rmdir(self, path: str) -> int:
        parent, name = self._parent(path)
        node = self._lookup(path)
        if not stat.S_ISDIR(node.mode):
            raise _fuse_error(errno.ENOTDIR)
        if node.entries:
            raise _fuse_error(errno.ENOTEMPTY)
        del parent.entries[name]
        self.journal.append(("unlink", parent.ino, name))
        return 0

    @locked
    def rename(self, old: str, new: str) -> int:
        old_parent, old_name = self._parent(old)
        new_parent, new_name = self._parent(new)
        node = self._lookup(old)
        existing = new_parent.entries.get(new_name)
        if existing is not None:
            target = self.nodes[existing]
            if stat.S_ISDIR(target.mode):
                if not stat.S_ISDIR(node.mode):
                    raise _fuse_error(errno.EISDIR)
                if target.entries:
                    raise _fuse_error(errno.ENOTEMPTY)
            elif stat.S_ISDIR(node.mode):
                raise _fuse_error(errno.ENOTDIR)
        del old_parent.entries[old_name]
        new_parent.entries[new_name] = node.ino
        old_parent.mtime_ns = new_parent.mtime_ns = time.time_ns()
        self.journal.append(("rename", old_parent.ino, old_name, new_parent.ino, new_name, node.ino))
        return 0

    @locked
    def link(self, target: str, source: str) -> int:
        node = self._lookup(source)
        parent, name = self._parent(target)
        if name in parent.entries:
            raise _fuse_error(errno.EEXIST)
        parent.entries[name] = node.ino
        self.journal.append(("link", parent.ino, name, node.ino))
        return 0

    @locked
    def symlink(self, target: str, source: str) -> int:
        parent, name = self._parent(target)
        self._add(parent, name, Node(next(self.counter), stat.S_IFLNK | 0o777, target=source))
        return 0

    @locked
    def readlink(self, path: str) -> str:
        node = self._lookup(path)
        if not stat.S_ISLNK(node.mode):
            raise _fuse_error(errno.EINVAL)
        return node.target

    @locked
    def utimens(self, path: str | None, times: tuple[int, int] | None = None) -> int:
        node = self._lookup(path or "/")
        node.mtime_ns = times[1] if times else time.time_ns()
        return 0

    @locked
    def chmod(self, path: str | None, mode: int) -> int:
        node = self._lookup(path or "/")
        node.mode = stat.S_IFMT(node.mode) | (mode & 0o7777)
        return 0

    def chown(self, path: str | None, uid: int, gid: int) -> int:
        return 0

    def statfs(self, path: str) -> dict[str, int]:
        return {"f_bsize": 4096, "f_frsize": 4096, "f_blocks": 1 << 20, "f_bfree": 1 << 19, "f_bavail": 1 << 19}


def main(argv: list[str] | None = None) -> None:
    """Mount a LazyFS in the foreground (``python -m backends.lazyfs MOUNTPOINT --control SOCK``)."""
    from .._fuse import serve

    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0] if __doc__ else None)
    parser.add_argument("mountpoint")
    parser.add_argument("--control", required=True, help="Unix socket for crash/sync/report")
    parser.add_argument("--strict", action="store_true", help="a directory fsync commits only its own changes")
    args = parser.parse_args(argv)
    fs = LazyFS(strict=args.strict)
    commands = {"crash": fs.crash, "sync": fs.sync, "report": fs.report, "fail_fsync": fs.fail_fsync}
    serve(
        fs,
        args.mountpoint,
        args.control,
        commands,
        nothreads=True,
        direct_io=True,
        hard_remove=True,
        attr_timeout=0,
        entry_timeout=0,
        negative_timeout=0,
    )
