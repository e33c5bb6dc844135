"""The backend boundary: what a storage backend can do, and the few operations the store needs.

A store never asks what type its backend is. It reads the backend's :class:`Capabilities` and picks a
commit strategy (rename a staged directory, or write a create-only commit record) and a pointer
strategy (a lock and an atomic replace, or compare-and-swap) from them. Every backend speaks in
store-relative keys (``epochs/00000003/MANIFEST.json``, always ``/``-separated), so the store's logic
is the same on local disk, NFS, S3, GCS and memory.
"""

from __future__ import annotations

import abc
import contextlib
from collections.abc import Iterable, Iterator
from pathlib import Path
from typing import IO, Any

import attrs

__all__ = ["Backend", "Capabilities", "PendingUpload"]


@attrs.frozen(kw_only=True)
class Capabilities:
    """The properties of a storage backend that the commit and pointer strategies depend on.

    Attributes:
        atomic_rename: A directory can be renamed in one atomic step onto a name that does not exist
            (local disk, NFS); commits then stage in ``work/`` and rename. Without it, a commit is
            a create-only ``MANIFEST.json`` written after the files (object stores).
        create_only: A write can be made to fail if the object exists (O_EXCL, If-None-Match,
            ifGenerationMatch=0). Probed once per store where claimed.
        compare_and_swap: An object can be replaced only if it is unchanged since it was read
            (If-Match, generation match). Without it, pointer updates rely on a lock (local) or on
            there being a single writer.
        symlinks: Relative symlinks can be created (the ``best``/``last`` links).
        fsync: Files and directories can be flushed to stable storage.
        mtime_resolution_ns: Granularity of modification times (1 s on S3 and some NFS servers).
        multipart: Large uploads go in parts that can be left behind by a killed writer and must
            be aborted by gc.
        max_key_bytes: The longest full name of one file the backend accepts, in UTF-8 bytes, as
            :meth:`Backend.key_bytes` counts it (S3 and GCS object keys: 1024; a local path:
            ``PATH_MAX`` less its NUL, 4095). None: no limit known. Longer names are refused when
            written, with :class:`~ckptstore.errors.UnsafePathError`.
    """

    atomic_rename: bool
    create_only: bool
    compare_and_swap: bool
    symlinks: bool
    fsync: bool
    mtime_resolution_ns: int = 1
    multipart: bool = False
    max_key_bytes: int | None = None


@attrs.frozen(kw_only=True)
class PendingUpload:
    """An unfinished multipart upload (left by a writer that died mid-upload).

    Attributes:
        key: The store-relative key being uploaded.
        upload_id: The backend's identifier for the upload.
        initiated_ns: When it started (ns since the epoch, UTC).
    """

    key: str
    upload_id: str
    initiated_ns: int


class Backend(abc.ABC):
    """Storage operations on one store root, addressed by store-relative keys.

    Implementations must make :meth:`write_if` atomic where they declare ``create_only`` or
    ``compare_and_swap``; everything else is plain I/O. Errors are builtin ``OSError`` subclasses
    (``FileNotFoundError`` for a missing key); the store turns them into typed errors.
    """

    #: The scheme this backend serves, for messages ("s3", "gs", "file", "memory").
    scheme: str = "?"

    @property
    @abc.abstractmethod
    def url(self) -> str:
        """The store root as a URL."""

    @property
    @abc.abstractmethod
    def capabilities(self) -> Capabilities:
        """What this backend can do."""

    def local_path(self, key: str = "") -> Path | None:
        """The local filesystem path of ``key``, or None when the backend is not a local disk."""
        del key
        return None

    def key_bytes(self, key: str) -> int:
        """The length in bytes of the full name the backend gives ``key``, to compare with ``max_key_bytes``.

        That is the object key inside the bucket (the store's prefix included) on object stores, and
        the absolute path on local disk; by default the store-relative key itself.
        """
        return len(key.encode("utf-8", "surrogatepass"))

    # -- small objects --------------------------------------------------------------------------------
    @abc.abstractmethod
    def read_bytes(self, key: str) -> bytes:
        """Return the content of ``key``; ``FileNotFoundError`` if absent."""

    def read_many(self, keys: Iterable[str]) -> dict[str, bytes | None]:
        """Read several small objects (concurrently where the backend can); None for a missing one."""
        out: dict[str, bytes | None] = {}
        for key in keys:
            try:
                out[key] = self.read_bytes(key)
            except FileNotFoundError:
                out[key] = None
        return out

    @abc.abstractmethod
    def read_versioned(self, key: str) -> tuple[bytes, str] | None:
        """Return ``(content, version)`` of ``key`` for a later :meth:`write_if`; None if absent."""

    @abc.abstractmethod
    def write_if(self, key: str, data: bytes, version: str | None) -> bool:
        """Write ``key`` whole, only if it is unchanged since it was read.

        Args:
            key: The object.
            data: Its new content.
            version: The version from :meth:`read_versioned`; None means "only if it does not
                exist" (create-only).

        Returns:
            True if written; False if the precondition failed (someone else wrote first).
        """

    def create_only(self, key: str, data: bytes) -> bool:
        """Create ``key`` whole only if it does not exist; True if this call created it."""
        return self.write_if(key, data, None)

    @abc.abstractmethod
    def write(self, key: str, data: bytes) -> None:
        """Replace ``key`` whole (readers see the old or the new content, never a mix)."""

    # -- listing ----------------------------------------------------------------------------------------
    @abc.abstractmethod
    def exists(self, key: str) -> bool:
        """True if ``key`` is an object (or, locally, a file or directory)."""

    @abc.abstractmethod
    def listdir(self, prefix: str) -> list[str]:
        """Names of the direct children of ``prefix`` (files and folders), sorted; [] if none."""

    def listdir_after(self, prefix: str, after: str) -> list[str]:
        """The names :meth:`listdir` gives that sort after ``after`` (by code point), sorted.

        Epoch folders are zero-padded to the store's width, so for them this order is numeric order:
        ``listdir_after("epochs", "00000007")`` lists the epochs above 7. Object stores start their
        listing there (S3 ``StartAfter``, GCS ``startOffset``), so the cost follows what is returned,
        not what the folder holds; this default filters a full listing.

        Args:
            prefix: The folder.
            after: A name; "" lists every child.
        """
        return [name for name in self.listdir(prefix) if name > after]

    @abc.abstractmethod
    def walk(self, prefix: str) -> dict[str, int]:
        """Every object under ``prefix``, recursively: relative key -> size."""

    @abc.abstractmethod
    def stat_files(self, prefix: str) -> dict[str, tuple[int, int]]:
        """Every file under ``prefix``, recursively: relative key -> (size, mtime in ns); one listing."""

    @abc.abstractmethod
    def mtime_ns(self, key: str) -> int:
        """Modification time of ``key`` in ns (at the backend's resolution)."""

    # -- removal ----------------------------------------------------------------------------------------
    @abc.abstractmethod
    def delete(self, key: str) -> None:
        """Remove one object; no error if it is absent."""

    @abc.abstractmethod
    def delete_tree(self, prefix: str, *, last: Iterable[str] = ()) -> bool:
        """Remove everything under ``prefix``, the keys named in ``last`` after all the others.

        Returns:
            True if nothing remains (local removal is best effort: NFS ``.nfsXXXX`` files).
        """

    # -- streams ----------------------------------------------------------------------------------------
    @abc.abstractmethod
    def open_read(self, key: str) -> IO[bytes]:
        """A binary stream reading ``key``."""

    @abc.abstractmethod
    def open_write(self, key: str) -> IO[bytes]:
        """A binary stream creating ``key``; the object appears when the stream is closed.

        Object stores buffer at most one part (multipart upload), so memory stays bounded.
        """

    # -- log -------------------------------------------------------------------------------------------
    @abc.abstractmethod
    def append_log(self, line: str, writer: str) -> None:
        """Add one line to the store's log (``ckpt.log`` or a ``log/`` object)."""

    @abc.abstractmethod
    def read_log(self) -> list[str]:
        """Every log line, oldest first."""

    # -- coordination -----------------------------------------------------------------------------------
    @contextlib.contextmanager
    def lock(self, key: str) -> Iterator[None]:
        """A best-effort exclusive lock between processes (local ``flock``); a no-op elsewhere."""
        del key
        yield

    def check_container(self) -> None:  # noqa: B027 - optional hook
        """Raise ``FileNotFoundError`` if the store's bucket (or volume) does not exist.

        Called before a new store is created, so a typo in a bucket name is an error rather than a
        new bucket (on servers that create buckets on first write).
        """

    def check_writable(self) -> None:  # noqa: B027 - optional hook
        """Raise :class:`~ckptstore.errors.StoreNotWritableError` if the root cannot be written."""

    def pending_uploads(self, prefix: str) -> list[PendingUpload]:
        """Unfinished multipart uploads under ``prefix`` (empty where there are none)."""
        del prefix
        return []

    def abort_upload(self, upload: PendingUpload) -> None:  # noqa: B027 - optional hook
        """Abort one unfinished multipart upload."""

    def describe(self) -> dict[str, Any]:
        """What to show about this backend in reports and logs (never credentials)."""
        return {"url": self.url, "scheme": self.scheme, "capabilities": attrs.asdict(self.capabilities)}
