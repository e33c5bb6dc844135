"""A backend wrapper that retries transient errors under a :class:`~ckptstore.retry.RetryPolicy`.

The store wraps every remote backend (S3, GCS, other fsspec filesystems) in it. Each operation is
repeated as a whole, so it must be safe to repeat; two are not quite, and get a check: a create-only
write whose reply was lost looks, on the next try, like someone else's object (the precondition
fails), so after a retried ``False`` the object is read back and counts as ours when it holds our
bytes (claims and commit records are unique to their writer). A compare-and-swap whose reply was lost
fails its next try the same way; the store's update loop then re-reads and finds its own value.
Streams (:meth:`open_read`, :meth:`open_write`) are retried when they are opened only: a transfer
that breaks half-way fails, and the store retries the whole file where it can (staged uploads).
"""

from __future__ import annotations

from collections.abc import Callable, Iterable, Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import IO, Any, TypeVar

from .._redact import redact_url
from ..retry import RetryPolicy, call
from .base import Backend, Capabilities, PendingUpload

__all__ = ["RetryingBackend"]

T = TypeVar("T")


class RetryingBackend(Backend):
    """``inner`` with every operation retried under ``policy``; other attributes pass through.

    Args:
        inner: The backend to wrap.
        policy: When to retry and when to give up.
    """

    def __init__(self, inner: Backend, policy: RetryPolicy) -> None:
        self.inner = inner
        self.policy = policy
        self.scheme = inner.scheme
        self.retries = 0  # tries after a transient failure, over this object's life

    def __getattr__(self, name: str) -> Any:
        return getattr(self.inner, name)

    def _retry(self, what: str, fn: Callable[[], T]) -> T:
        def counted(_attempt: int, _wait: float, _exc: BaseException) -> None:
            self.retries += 1

        return call(fn, self.policy, f"{what} at {self.url}", on_retry=counted)

    def _create(self, what: str, key: str, data: bytes, fn: Callable[[], bool]) -> bool:
        before = self.retries
        created = self._retry(what, fn)
        if created or self.retries == before:
            return created
        try:  # retried: the first try may have created it and lost the reply
            return self._retry(f"read back {key}", lambda: self.inner.read_bytes(key)) == data
        except FileNotFoundError:
            return False

    @property
    def url(self) -> str:
        """The wrapped backend's URL, redacted."""
        return redact_url(self.inner.url)

    @property
    def capabilities(self) -> Capabilities:
        """The wrapped backend's capabilities."""
        return self.inner.capabilities

    def local_path(self, key: str = "") -> Path | None:
        """The wrapped backend's local path (None for remote ones)."""
        return self.inner.local_path(key)

    def key_bytes(self, key: str) -> int:
        """The wrapped backend's key length."""
        return self.inner.key_bytes(key)

    def read_bytes(self, key: str) -> bytes:
        """Read, retried."""
        return self._retry(f"read {key}", lambda: self.inner.read_bytes(key))

    def read_many(self, keys: Iterable[str]) -> dict[str, bytes | None]:
        """Read several, retried as a batch."""
        wanted = list(keys)
        return self._retry(f"read {len(wanted)} objects", lambda: self.inner.read_many(wanted))

    def read_versioned(self, key: str) -> tuple[bytes, str] | None:
        """Read with a version, retried."""
        return self._retry(f"read {key}", lambda: self.inner.read_versioned(key))

    def write_if(self, key: str, data: bytes, version: str | None) -> bool:
        """Conditional write, retried; a retried create-only write checks whether it had landed."""
        if version is None:
            return self._create(f"create {key}", key, data, lambda: self.inner.write_if(key, data, None))
        return self._retry(f"replace {key}", lambda: self.inner.write_if(key, data, version))

    def create_only(self, key: str, data: bytes) -> bool:
        """Create-only write, retried with the same check."""
        return self._create(f"create {key}", key, data, lambda: self.inner.create_only(key, data))

    def write(self, key: str, data: bytes) -> None:
        """Unconditional write, retried."""
        self._retry(f"write {key}", lambda: self.inner.write(key, data))

    def exists(self, key: str) -> bool:
        """Existence, retried."""
        return self._retry(f"look up {key}", lambda: self.inner.exists(key))

    def listdir(self, prefix: str) -> list[str]:
        """Listing, retried."""
        return self._retry(f"list {prefix or '/'}", lambda: self.inner.listdir(prefix))

    def listdir_after(self, prefix: str, after: str) -> list[str]:
        """Listing from a name on, retried (the wrapped backend's own, efficient one)."""
        return self._retry(f"list {prefix or '/'} after {after}", lambda: self.inner.listdir_after(prefix, after))

    def walk(self, prefix: str) -> dict[str, int]:
        """Recursive listing, retried."""
        return self._retry(f"list {prefix or '/'}", lambda: self.inner.walk(prefix))

    def stat_files(self, prefix: str) -> dict[str, tuple[int, int]]:
        """Recursive listing with times, retried."""
        return self._retry(f"list {prefix or '/'}", lambda: self.inner.stat_files(prefix))

    def mtime_ns(self, key: str) -> int:
        """Modification time, retried."""
        return self._retry(f"stat {key}", lambda: self.inner.mtime_ns(key))

    def delete(self, key: str) -> None:
        """Delete, retried (deleting twice is fine)."""
        self._retry(f"delete {key}", lambda: self.inner.delete(key))

    def delete_tree(self, prefix: str, *, last: Iterable[str] = ()) -> bool:
        """Delete a tree, retried."""
        final = list(last)
        return self._retry(f"delete {prefix}", lambda: self.inner.delete_tree(prefix, last=final))

    def open_read(self, key: str) -> IO[bytes]:
        """Open for reading (the open is retried, the transfer is not)."""
        return self._retry(f"open {key}", lambda: self.inner.open_read(key))

    def open_write(self, key: str) -> IO[bytes]:
        """Open for writing (the open is retried, the transfer is not)."""
        return self._retry(f"open {key} for writing", lambda: self.inner.open_write(key))

    def append_log(self, line: str, writer: str) -> None:
        """Log, retried."""
        self._retry("append to the log", lambda: self.inner.append_log(line, writer))

    def read_log(self) -> list[str]:
        """Read the log, retried."""
        return self._retry("read the log", self.inner.read_log)

    @contextmanager
    def lock(self, key: str) -> Iterator[None]:
        """The wrapped backend's lock."""
        with self.inner.lock(key):
            yield

    def check_container(self) -> None:
        """The bucket check, retried."""
        self._retry("look up the bucket", self.inner.check_container)

    def check_writable(self) -> None:
        """The wrapped backend's writability check."""
        self.inner.check_writable()

    def pending_uploads(self, prefix: str) -> list[PendingUpload]:
        """Unfinished uploads, retried."""
        return self._retry(f"list uploads under {prefix}", lambda: self.inner.pending_uploads(prefix))

    def abort_upload(self, upload: PendingUpload) -> None:
        """Abort an upload, retried."""
        self._retry(f"abort the upload of {upload.key}", lambda: self.inner.abort_upload(upload))

    def describe(self) -> dict[str, Any]:
        """The wrapped backend's description plus the retry policy."""
        policy = {"max_attempts": self.policy.max_attempts, "deadline": self.policy.deadline}
        return {**self.inner.describe(), "url": self.url, "retry": policy}
