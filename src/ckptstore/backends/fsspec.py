"""Any fsspec filesystem as a ckptstore backend, and the base of the object-store backends.

Object stores have no rename and no append, so a store on them commits with a create-only
``MANIFEST.json`` written after the files, keeps its log as small objects under ``log/``, and updates
pointers by compare-and-swap where the backend can. This module holds what is common to every
fsspec filesystem; :mod:`.s3`, :mod:`.gcs` and :mod:`.memory` add the atomic conditional writes their
services offer. A filesystem that offers none (an arbitrary fsspec protocol) is declared without
create-only writes and compare-and-swap, so the store runs it in single-writer mode and says so.
"""

from __future__ import annotations

import contextlib
import datetime as _dt
import itertools
import logging
import time
from collections.abc import Iterable
from typing import IO, Any

import xxhash

from .._redact import redact_url
from ..errors import UnsafePathError
from ._parts import PartPool, TransferOptions
from ._prefetch import PrefetchReader
from .base import Backend, Capabilities

__all__ = ["PART_SIZE", "TRANSFER_OPTION_KEYS", "FsspecBackend"]

logger = logging.getLogger("ckptstore")

PART_SIZE = 8 * 1024 * 1024
"""Bytes buffered per streamed upload before a part is sent (S3's minimum part is 5 MiB)."""

_LOG_SEQ = itertools.count()
_BUCKET_SCHEMES = ("s3", "s3a", "gs", "gcs")


def info_mtime_ns(info: dict[str, Any]) -> int:
    """The modification time in an fsspec ``info`` dict, whichever key the filesystem uses."""
    for key in ("LastModified", "mtime", "updated", "last_modified", "created", "modified"):
        value = info.get(key)
        if value is None:
            continue
        if isinstance(value, _dt.datetime):
            if value.tzinfo is None:
                value = value.replace(tzinfo=_dt.timezone.utc)
            return int(value.timestamp() * 1_000_000_000)
        if isinstance(value, (int, float)):
            return int(value * 1_000_000_000) if value < 1e12 else int(value)
        if isinstance(value, str):
            with contextlib.suppress(ValueError):
                parsed = _dt.datetime.fromisoformat(value.replace("Z", "+00:00"))
                return int(parsed.timestamp() * 1_000_000_000)
    return 0


TRANSFER_OPTION_KEYS = ("part_size", "transfer_concurrency")
"""``storage_options`` keys that belong to ckptstore, not to the filesystem."""


def _take_transfer_options(fs: Any) -> dict[str, Any]:
    """Remove ckptstore's own keys from a filesystem's options (s3fs would hand them to botocore).

    The filesystem's session is created lazily, so taking the keys out before its first request is
    enough; its ``storage_options`` (used to re-create it, e.g. in another process) lose them too.
    """
    found: dict[str, Any] = {}
    for holder in (getattr(fs, "storage_options", None), getattr(fs, "kwargs", None)):
        if isinstance(holder, dict):
            for key in TRANSFER_OPTION_KEYS:
                if key in holder:
                    found[key] = holder.pop(key)
    return found


class FsspecBackend(Backend):
    """A store root on an fsspec filesystem.

    Args:
        fs: The filesystem instance.
        root: The root path in the filesystem's own notation (``bucket/prefix``), no trailing slash.
        url: The store's URL as the user gave it, for messages: shown redacted (a password or a token
            in it becomes ``***``).
        part_size: Bytes per uploaded part and per downloaded range (object stores); default: the
            filesystem's ``storage_options['part_size']``, else 8 MiB.
        concurrency: Parts or ranges in flight at once for the whole store; default:
            ``storage_options['transfer_concurrency']``, else 8.

    Raises:
        InvalidArgumentTypeError: ``part_size`` or ``concurrency`` is not an int.
        InvalidArgumentError: one of them is out of the service's range.
    """

    #: The service whose part-size rules apply (``"s3"``, ``"gs"``); None: no parallel transfers.
    transfer_service: str | None = None

    def __init__(
        self, fs: Any, root: str, url: str, *, part_size: int | None = None, concurrency: int | None = None
    ) -> None:
        self.fs = fs
        self.root = root.rstrip("/")
        self._url = redact_url(url)
        self.scheme = url.split("://", 1)[0] if "://" in url else "?"
        self._max_key_bytes: int | None = None  # from the capabilities, on first use (0: no limit)
        options = _take_transfer_options(fs)
        if part_size is not None:
            options["part_size"] = part_size
        if concurrency is not None:
            options["transfer_concurrency"] = concurrency
        self.transfer = TransferOptions.from_storage_options(options, self.transfer_service or "", self._url)
        self._parts = PartPool(self.transfer)

    @property
    def url(self) -> str:
        """The store root as a URL, redacted (never holds a password or a token)."""
        return self._url

    @property
    def capabilities(self) -> Capabilities:
        """A generic fsspec filesystem promises no atomic conditional writes."""
        return Capabilities(
            atomic_rename=False,
            create_only=False,
            compare_and_swap=False,
            symlinks=False,
            fsync=False,
            mtime_resolution_ns=1_000_000_000,
        )

    def _p(self, key: str) -> str:
        path = f"{self.root}/{key}".rstrip("/") if key else self.root
        if key:
            self._check_key(key, path)
        return path

    def _check_key(self, key: str, path: str) -> None:
        """Refuse a key this filesystem cannot hold (not UTF-8, too long) before any request is sent."""
        try:
            size = len(self._object_key(path).encode("utf-8"))
        except UnicodeEncodeError:
            raise UnsafePathError(
                f"{self.url}/{key!r}: the name is not valid UTF-8 (a lone surrogate); no object store can hold it"
            ) from None
        limit = self._max_key_bytes
        if limit is None:
            limit = self._max_key_bytes = self.capabilities.max_key_bytes or 0
        if limit and size > limit:
            raise UnsafePathError(
                f"{self.url}/{key}: the object key is {size} bytes long, and {self.scheme} accepts at most "
                f"{limit} bytes; shorten the file name (or the store's prefix)"
            )

    def _object_key(self, path: str) -> str:
        """The key of ``path`` inside its bucket (bucket-based filesystems) or the path itself."""
        if self.scheme in _BUCKET_SCHEMES:
            return path.partition("/")[2]
        return path

    def key_bytes(self, key: str) -> int:
        """The length of the object key of ``key`` inside its bucket (the store's prefix included)."""
        return len(self._object_key(f"{self.root}/{key}").encode("utf-8", "surrogatepass"))

    def _rel(self, path: str) -> str:
        path = path.rstrip("/")
        base = self.root + "/"
        return path[len(base) :] if path.startswith(base) else path

    def check_container(self) -> None:
        """For bucket-based filesystems: the bucket must exist."""
        if self.scheme in _BUCKET_SCHEMES:
            bucket = self.root.split("/", 1)[0]
            self._invalidate()
            if not self.fs.exists(bucket):
                raise FileNotFoundError(f"the bucket {bucket!r} does not exist")

    # -- small objects --------------------------------------------------------------------------------
    def read_bytes(self, key: str) -> bytes:
        """Return the content of ``key``."""
        data: bytes = self.fs.cat_file(self._p(key))
        return data

    def read_many(self, keys: Iterable[str]) -> dict[str, bytes | None]:
        """Read several objects in one concurrent batch (async filesystems)."""
        wanted = list(keys)
        if not wanted:
            return {}
        paths = [self._p(k) for k in wanted]
        raw = self.fs.cat(paths, on_error="return")
        if not isinstance(raw, dict):  # a single path comes back bare
            raw = {paths[0]: raw}
        out: dict[str, bytes | None] = {}
        for key, path in zip(wanted, paths, strict=True):
            value = raw.get(path)
            if value is None:
                value = raw.get(self.fs._strip_protocol(path))
            if isinstance(value, FileNotFoundError) or value is None:
                out[key] = None
            elif isinstance(value, BaseException):
                raise value
            else:
                out[key] = bytes(value)
        return out

    def read_versioned(self, key: str) -> tuple[bytes, str] | None:
        """Content and a content hash as its version (not atomic: single-writer backends only)."""
        try:
            data = self.read_bytes(key)
        except FileNotFoundError:
            return None
        return data, xxhash.xxh3_64_hexdigest(data)

    def write_if(self, key: str, data: bytes, version: str | None) -> bool:
        """Check, then write: correct only with a single writer (this backend's capabilities say so)."""
        current = self.read_versioned(key)
        if (current is None) != (version is None) or (current is not None and current[1] != version):
            return False
        self.write(key, data)
        return True

    def write(self, key: str, data: bytes) -> None:
        """Replace ``key`` with one PUT (object stores replace whole objects atomically)."""
        self.fs.pipe_file(self._p(key), data)

    # -- listing ----------------------------------------------------------------------------------------
    def _invalidate(self, key: str = "") -> None:
        with contextlib.suppress(Exception):
            self.fs.invalidate_cache(self._p(key))

    def exists(self, key: str) -> bool:
        """True if ``key`` is an object or a non-empty prefix."""
        self._invalidate(key)
        return bool(self.fs.exists(self._p(key)))

    def listdir(self, prefix: str) -> list[str]:
        """Names of the direct children of ``prefix``."""
        self._invalidate(prefix)
        try:
            entries = self.fs.ls(self._p(prefix), detail=False)
        except (FileNotFoundError, NotADirectoryError):
            return []
        base = self._p(prefix).rstrip("/") + "/"
        names = set()
        for entry in entries:
            path = self.fs._strip_protocol(entry).rstrip("/")
            if path.startswith(base):
                names.add(path[len(base) :].split("/", 1)[0])
        return sorted(n for n in names if n)

    def walk(self, prefix: str) -> dict[str, int]:
        """Every object under ``prefix`` with its size."""
        self._invalidate(prefix)
        try:
            found = self.fs.find(self._p(prefix), detail=True, withdirs=False)
        except FileNotFoundError:
            return {}
        base = self._p(prefix).rstrip("/") + "/"
        out: dict[str, int] = {}
        for path, info in found.items():
            path = self.fs._strip_protocol(path)
            if path.startswith(base) and info.get("type", "file") != "directory":
                out[path[len(base) :]] = int(info.get("size") or 0)
        return out

    def stat_files(self, prefix: str) -> dict[str, tuple[int, int]]:
        """Every object under ``prefix`` with its size and modification time, from one listing."""
        self._invalidate(prefix)
        try:
            found = self.fs.find(self._p(prefix), detail=True, withdirs=False)
        except FileNotFoundError:
            return {}
        base = self._p(prefix).rstrip("/") + "/" if prefix or self.root else ""
        out: dict[str, tuple[int, int]] = {}
        for path, info in found.items():
            path = self.fs._strip_protocol(path)
            if path.startswith(base) and info.get("type", "file") != "directory":
                out[path[len(base) :]] = (int(info.get("size") or 0), info_mtime_ns(info))
        return out

    def mtime_ns(self, key: str) -> int:
        """LastModified (S3: one-second resolution) in ns."""
        modified = self.fs.modified(self._p(key))
        return int(modified.timestamp() * 1_000_000_000)

    # -- removal ----------------------------------------------------------------------------------------
    def delete(self, key: str) -> None:
        """Remove one object."""
        with contextlib.suppress(FileNotFoundError):
            self.fs.rm_file(self._p(key))

    def delete_tree(self, prefix: str, *, last: Iterable[str] = ()) -> bool:
        """Remove every object under ``prefix``; those in ``last`` after the others."""
        keep_for_last = {self._p(f"{prefix}/{name}") for name in last}
        paths = [self._p(f"{prefix}/{rel}") for rel in self.walk(prefix)]
        first = [p for p in paths if p not in keep_for_last]
        final = [p for p in paths if p in keep_for_last]
        for batch in (first, final):
            if batch:
                with contextlib.suppress(FileNotFoundError):
                    self.fs.rm(batch)
        self._invalidate(prefix)
        return not self.walk(prefix)

    # -- streams ----------------------------------------------------------------------------------------
    def open_read(self, key: str) -> IO[bytes]:
        """A buffered reader; on object stores, large sequential reads fetch ranges ahead in parallel."""
        path = self._p(key)
        stream: IO[bytes] = self.fs.open(path, "rb")
        size = getattr(stream, "size", None)
        if self.transfer_service is None or not getattr(self.fs, "async_impl", False) or not isinstance(size, int):
            return stream
        if size <= self.transfer.part_size:
            return stream
        fs = self.fs

        async def fetch(start: int, end: int) -> bytes:
            data: bytes = await fs._cat_file(path, start=start, end=end)
            return data

        return PrefetchReader(stream, size, fetch, fs.loop, self._parts)  # type: ignore[return-value]

    def open_write(self, key: str) -> IO[bytes]:
        """A writer that buffers one part at a time (``part_size``; :data:`PART_SIZE` by default)."""
        block = self.transfer.part_size if self.transfer_service is not None else PART_SIZE
        stream: IO[bytes] = self.fs.open(self._p(key), "wb", block_size=block)
        return stream

    def describe(self) -> dict[str, Any]:
        """The base description, plus the part size and concurrency of parallel transfers (object stores)."""
        out = super().describe()
        if self.transfer_service is not None:
            out["transfer"] = {"part_size": self.transfer.part_size, "concurrency": self.transfer.concurrency}
        return out

    # -- log --------------------------------------------------------------------------------------------
    def append_log(self, line: str, writer: str) -> None:
        """Write the line as its own small object ``log/<time>-<writer>-<seq>``."""
        key = f"log/{time.time_ns():020d}-{writer}-{next(_LOG_SEQ):06d}"
        self.write(key, (line.rstrip("\n") + "\n").encode("utf-8", "replace"))

    def read_log(self) -> list[str]:
        """Every log object, in name (= time) order."""
        names = self.listdir("log")
        contents = self.read_many(f"log/{n}" for n in names)
        lines: list[str] = []
        for name in names:
            data = contents.get(f"log/{name}")
            if data:
                lines.extend(data.decode("utf-8", "replace").splitlines())
        return lines
