"""What an NFS client sees, over a local directory (the daemon behind :class:`NfsMount`).

Each mount is one client of a shared "server" directory; mount the same directory several times to
get several clients. Per client, as the Linux NFS client does by default:

* **Close-to-open**: ``open`` asks the server (the file's current content and attributes); a file
  deleted by another client since this one looked it up gives ``ESTALE``.
* **Attribute and name caching**: ``stat`` answers and directory listings, positive and negative,
  are served from a cache for ``ttl`` seconds, so another client's creates, deletes and renames show
  up late. This client's own changes, and its failed attempts (the server's ``EEXIST`` answers),
  drop the cached entries they touch.
* **One-second mtimes** (``mtime_resolution``), as on servers that keep seconds only.
* **Silly renames**: unlinking a file this client has open renames it to ``.nfsXXXXXXXXXXXXXXXX``
  in the same directory, removed at the last close; ``rmdir`` of that directory fails with
  ``ENOTEMPTY`` until then.
* **No symlinks** (``symlink`` fails with ``EPERM``, as on many NAS exports); hard links work.
* **Locks** (``flock``) are taken on the server's file, so they exclude other clients (NFSv4).
"""

from __future__ import annotations

import argparse
import contextlib
import errno
import fcntl
import os
import threading
import time
import uuid
from typing import Any

CACHE_FIELDS = ("st_mode", "st_ino", "st_nlink", "st_size", "st_uid", "st_gid", "st_blocks")


def _fuse_error(code: int) -> Exception:
    import mfusepy

    return mfusepy.FuseOSError(code)  # type: ignore[no-any-return]


class NfsClientFS:
    """mfusepy operations of one NFS-like client over ``export``.

    Args:
        export: The shared directory (the server's export).
        ttl: Seconds that cached attributes and listings may be stale.
        mtime_resolution: Seconds to which mtimes are truncated.
    """

    use_ns = True

    def __init__(self, export: str, ttl: float = 1.0, mtime_resolution: int = 1) -> None:
        self.export = os.path.realpath(export)
        self.ttl = ttl
        self.resolution_ns = max(1, int(mtime_resolution * 1_000_000_000))
        self.mutex = threading.Lock()
        self.attrs: dict[str, tuple[float, dict[str, Any] | None]] = {}  # None: cached "does not exist"
        self.listings: dict[str, tuple[float, list[tuple[str, dict[str, int], int]]]] = {}
        self.handles: dict[int, tuple[int, str]] = {}  # fh -> (server fd, client path)
        self.stats = {"silly_renames": 0, "stale_handles": 0}

    # -- helpers ---------------------------------------------------------------------------------------
    def _server(self, path: str) -> str:
        return os.path.join(self.export, path.lstrip("/"))

    def _attrs(self, st: os.stat_result) -> dict[str, Any]:
        """What a client sees of ``st``: times truncated to the server's resolution."""
        attrs: dict[str, Any] = {name: getattr(st, name) for name in CACHE_FIELDS}
        for name in ("st_mtime", "st_ctime", "st_atime"):
            ns = getattr(st, f"{name}_ns")
            attrs[name] = ns - ns % self.resolution_ns
        return attrs

    def _fresh_attrs(self, path: str) -> dict[str, Any] | None:
        try:
            return self._attrs(os.lstat(self._server(path)))
        except (FileNotFoundError, NotADirectoryError):
            return None

    def _forget(self, *paths: str) -> None:
        """Drop cached answers about ``paths``, their parents and (for directories) what is below."""
        with self.mutex:
            for path in paths:
                parent = os.path.dirname(path.rstrip("/")) or "/"
                for cache in (self.attrs, self.listings):
                    cache.pop(path, None)
                    cache.pop(parent, None)
                    for key in [k for k in cache if k.startswith(path.rstrip("/") + "/")]:
                        del cache[key]

    def _open_count(self, path: str) -> int:
        return sum(1 for _fd, open_path in self.handles.values() if open_path == path)

    # -- control commands ------------------------------------------------------------------------------
    def report(self, _args: dict[str, Any]) -> dict[str, Any]:
        """Counters: silly renames made, stale handles met."""
        with self.mutex:
            return {**self.stats, "open_files": len(self.handles)}

    # -- FUSE operations -------------------------------------------------------------------------------
    def getattr(self, path: str | None, fh: int | None = None) -> dict[str, Any]:
        if fh is not None and fh in self.handles:
            return self._attrs(os.fstat(self.handles[fh][0]))
        assert path is not None
        now = time.monotonic()
        with self.mutex:
            cached = self.attrs.get(path)
        if cached is not None and now - cached[0] < self.ttl:
            attrs: dict[str, Any] | None = cached[1]  # possibly stale: that is the point
        else:
            attrs = self._fresh_attrs(path)
            with self.mutex:
                self.attrs[path] = (now, attrs)
        if attrs is None:
            raise _fuse_error(errno.ENOENT)
        return attrs

    def readdir(self, path: str, fh: int) -> list[tuple[str, dict[str, int], int]]:
        now = time.monotonic()
        with self.mutex:
            cached = self.listings.get(path)
        if cached is not None and now - cached[0] < self.ttl:
            entries = cached[1]
        else:
            entries = []
            try:  # with use_ino, an entry needs its inode number (glibc hides d_ino 0) and its type
                with os.scandir(self._server(path)) as scan:
                    for entry in scan:
                        try:
                            mode = entry.stat(follow_symlinks=False).st_mode
                        except FileNotFoundError:  # removed while listing
                            continue
                        entries.append((entry.name, {"st_ino": entry.inode(), "st_mode": mode}, 0))
            except FileNotFoundError as exc:
                raise _fuse_error(errno.ESTALE) from exc
            with self.mutex:
                self.listings[path] = (now, entries)
        return entries

    def open(self, path: str, flags: int) -> int:
        with self.mutex:
            cached = self.attrs.get(path)
        try:
            fd = os.open(self._server(path), flags & ~os.O_CREAT)
        except FileNotFoundError as exc:
            if cached is not None and cached[1] is not None:  # a handle this client knew, gone
                self.stats["stale_handles"] += 1
                self._forget(path)
                raise _fuse_error(errno.ESTALE) from exc
            raise
        with self.mutex:
            self.handles[fd] = (fd, path)
            self.attrs.pop(path, None)  # close-to-open: the next stat asks the server
        return fd

    def create(self, path: str, mode: int, fi: Any = None) -> int:
        try:
            fd = os.open(self._server(path), os.O_WRONLY | os.O_CREAT | os.O_EXCL, mode)
        finally:
            self._forget(path)  # the server's answer, success or EEXIST, refreshes what we knew
        with self.mutex:
            self.handles[fd] = (fd, path)
        return fd

    def read(self, path: str | None, size: int, offset: int, fh: int) -> bytes:
        return os.pread(fh, size, offset)

    def write(self, path: str | None, data: bytes, offset: int, fh: int) -> int:
        return os.pwrite(fh, data, offset)

    def truncate(self, path: str | None, length: int, fh: int | None = None) -> int:
        if fh is not None and fh in self.handles:
            os.ftruncate(fh, length)
        else:
            assert path is not None
            os.truncate(self._server(path), length)
            self._forget(path)
        return 0

    def fsync(self, path: str | None, datasync: int, fh: int) -> int:
        os.fsync(fh)
        return 0

    def fsyncdir(self, path: str | None, datasync: int, fh: int) -> int:
        return 0  # NFS commits directory operations on the server before it answers

    def flush(self, path: str | None, fh: int) -> int:
        # close(2) waits for FLUSH but not for RELEASE (the kernel sends that one in the background), so
        # the last close of a silly-renamed file removes it here, before close() returns, as an NFS
        # client does; release() only closes the descriptor (and catches a file flush never saw).
        with self.mutex:
            _fd, open_path = self.handles.get(fh, (fh, ""))
            last = bool(open_path) and self._open_count(open_path) == 1
        if last:
            self._remove_silly(open_path)
        return 0

    def release(self, path: str | None, fh: int) -> int:
        with self.mutex:
            _fd, open_path = self.handles.pop(fh, (fh, ""))
            last = bool(open_path) and self._open_count(open_path) == 0
        os.close(fh)
        if last:
            self._remove_silly(open_path)
        return 0

    def _remove_silly(self, open_path: str) -> None:
        if os.path.basename(open_path).startswith(".nfs"):
            with contextlib.suppress(FileNotFoundError):
                os.unlink(self._server(open_path))
            self._forget(open_path)

    def flock(self, path: str | None, fh: int, op: int) -> int:
        fcntl.flock(fh, op)
        return 0

    def unlink(self, path: str) -> int:
        with self.mutex:
            busy = self._open_count(path) > 0
        if busy:  # the silly rename: the file lives on under a hidden name until the last close
            silly = os.path.join(os.path.dirname(path), f".nfs{uuid.uuid4().hex[:16]}")
            os.rename(self._server(path), self._server(silly))
            with self.mutex:
                for fh, (fd, open_path) in list(self.handles.items()):
                    if open_path == path:
                        self.handles[fh] = (fd, silly)
                self.stats["silly_renames"] += 1
            self._forget(path, silly)
            return 0
        try:
            os.unlink(self._server(path))
        finally:
            self._forget(path)
        return 0

    def mkdir(self, path: str, mode: int) -> int:
        try:
            os.mkdir(self._server(path), mode)
        finally:
            self._forget(path)
        return 0

    def rmdir(self, path: str) -> int:
        try:
            os.rmdir(self._server(path))
        finally:
            self._forget(path)
        return 0

    def rename(self, old: str, new: str) -> int:
        try:
            os.rename(self._server(old), self._server(new))
        except OSError:
            self._forget(old, new)
            raise
        with self.mutex:
            for fh, (fd, open_path) in list(self.handles.items()):
                if open_path == old or open_path.startswith(old.rstrip("/") + "/"):
                    self.handles[fh] = (fd, new + open_path[len(old) :])
        self._forget(old, new)
        return 0

    def link(self, target: str, source: str) -> int:
        try:
            os.link(self._server(source), self._server(target))
        finally:
            self._forget(target, source)
        return 0

    def symlink(self, target: str, source: str) -> int:
        raise _fuse_error(errno.EPERM)

    def readlink(self, path: str) -> str:
        raise _fuse_error(errno.EINVAL)

    def chmod(self, path: str | None, mode: int) -> int:
        assert path is not None
        os.chmod(self._server(path), mode)
        self._forget(path)
        return 0

    def chown(self, path: str | None, uid: int, gid: int) -> int:
        return 0

    def utimens(self, path: str | None, times: tuple[int, int] | None = None) -> int:
        assert path is not None
        os.utime(self._server(path), ns=times)
        self._forget(path)
        return 0

    def statfs(self, path: str) -> dict[str, int]:
        st = os.statvfs(self.export)
        return {name: getattr(st, name) for name in ("f_bsize", "f_frsize", "f_blocks", "f_bfree", "f_bavail")}


def main(argv: list[str] | None = None) -> None:
    """``python -m backends.nfs MOUNTPOINT --control SOCK --export DIR [--ttl S]``: one client."""
    from .._fuse import serve

    parser = argparse.ArgumentParser(description="an NFS-like client of a shared directory")
    parser.add_argument("mountpoint")
    parser.add_argument("--control", required=True)
    parser.add_argument("--export", required=True, help="the shared directory (the server's export)")
    parser.add_argument("--ttl", type=float, default=1.0, help="seconds cached attributes may be stale")
    parser.add_argument("--mtime-resolution", type=int, default=1)
    args = parser.parse_args(argv)
    fs = NfsClientFS(args.export, ttl=args.ttl, mtime_resolution=args.mtime_resolution)
    serve(
        fs,
        args.mountpoint,
        args.control,
        {"report": fs.report},
        use_ino=True,  # the server's inode numbers, stable as NFS file ids are
        direct_io=True,
        hard_remove=True,
        attr_timeout=0,
        entry_timeout=0,
        negative_timeout=0,
    )
