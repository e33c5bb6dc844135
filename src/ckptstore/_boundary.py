"""Where the store meets its backend: failures become typed errors, records are read leniently.

Every call the store makes to a backend runs inside :func:`backend_errors`, so a refused credential,
an outage that escaped the retries, a read-only file system or a malformed request surfaces as one of
the store's typed errors (with secrets scrubbed from it and its cause chain), never as a library's own
exception. Small JSON records (pointers, claims, the index) are caches or hints: :func:`parse_json`
reads them without ever raising.
"""

from __future__ import annotations

import contextlib
import errno
import json
import os
import threading
from collections.abc import Iterator
from typing import Any

from ._redact import redact_url, scrub_exception
from .backends.base import Backend
from .errors import (
    BackendAuthError,
    CkptStoreError,
    InvalidArgumentError,
    StoreNotWritableError,
    StoreUnavailableError,
)
from .retry import describe_error, http_status, is_auth_failure, is_transient

__all__ = ["CAS_ATTEMPTS", "RecordLock", "backend_errors", "enforces_create_only", "parse_json", "pid_alive"]

CAS_ATTEMPTS = 50
"""How often a compare-and-swap of a shared record (pointer, index, claim, metadata) is retried."""


_AUTH_HINTS = {
    "s3": "set AWS_ACCESS_KEY_ID and AWS_SECRET_ACCESS_KEY (or AWS_PROFILE), or pass "
    "storage_options={'key': ..., 'secret': ...} (S3-compatible servers also need "
    "storage_options={'endpoint_url': ...} or AWS_ENDPOINT_URL)",
    "gs": "set GOOGLE_APPLICATION_CREDENTIALS, or pass storage_options={'token': ...} ('anon' for a local emulator)",
}


@contextlib.contextmanager
def backend_errors(backend: Backend, doing: str) -> Iterator[None]:
    """Type a backend failure, and keep the secrets out of it.

    Every error that passes is first scrubbed of secrets in place, its cause chain included. Refused
    credentials become :class:`BackendAuthError` (naming the fix), an outage that escaped the retries
    :class:`StoreUnavailableError`, a read-only file system or a server that refuses writes
    :class:`StoreNotWritableError`, a request the client library refused as malformed
    :class:`InvalidArgumentError`. Typed errors and ``FileNotFoundError`` pass on (scrubbed).
    """
    try:
        yield
    except Exception as exc:
        scrub_exception(exc)
        if isinstance(exc, (CkptStoreError, FileNotFoundError)):
            raise
        url, what = redact_url(backend.url), describe_error(exc)
        if is_transient(exc):  # what escaped the retries (a stream that broke half-way)
            raise StoreUnavailableError(f"{url}: could not {doing}: the backend stopped answering ({what})") from exc
        if is_auth_failure(exc):
            scheme = "gs" if backend.scheme in ("gs", "gcs") else backend.scheme
            hint = _AUTH_HINTS.get(scheme, "check the credentials in storage_options")
            raise BackendAuthError(
                f"{url}: could not {doing}: the {backend.scheme} backend refused the credentials "
                f"or found none ({type(exc).__name__}); {hint}"
            ) from None
        if isinstance(exc, OSError) and exc.errno == errno.EROFS:
            raise StoreNotWritableError(
                f"{url}: could not {doing}: {exc.filename or 'the store'} is on a read-only file system; "
                "open an existing store there with create=False to read it, or write to a writable place"
            ) from None
        status = http_status(exc)
        if status in (405, 501):
            raise StoreNotWritableError(
                f"{url}: could not {doing}: the {backend.scheme} server does not accept writes ({what}); "
                "a store served there can only be read: open an existing one with create=False"
            ) from None
        if type(exc).__name__ == "ParamValidationError":
            raise InvalidArgumentError(
                f"{url}: could not {doing}: the {backend.scheme} client refused the request as malformed ({what})"
            ) from None
        raise


def parse_json(raw: bytes) -> dict[str, Any]:
    """A JSON object from ``raw``, or {} when it is not one (records are caches or hints)."""
    try:
        value = json.loads(raw)
    except (ValueError, RecursionError):  # RecursionError: nested deeper than the parser goes
        return {}
    return value if isinstance(value, dict) else {}


def pid_alive(pid: int) -> bool:
    """True if a process with this id exists on this host (one we may not signal counts)."""
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True


class RecordLock:
    """The one lock every writer of a shared record takes: pointers, pins, the index, metadata, gc's deletions.

    Locally a ``flock`` on ``pointers/.lock`` between processes (object stores add compare-and-swap on
    every write, and their lock is a no-op). Re-entrant within a thread, so each writer of a record can
    take it itself, also when its caller holds it already.

    Args:
        backend: The store's backend (its :meth:`~ckptstore.backends.base.Backend.lock`).
        key: The lock's key.
    """

    def __init__(self, backend: Backend, key: str) -> None:
        self._backend = backend
        self._key = key
        self._thread_lock = threading.RLock()
        self._held = threading.local()

    @contextlib.contextmanager
    def __call__(self) -> Iterator[None]:
        """Hold the lock for the ``with`` block."""
        if getattr(self._held, "depth", 0):
            self._held.depth += 1
            try:
                yield
            finally:
                self._held.depth -= 1
            return
        with self._thread_lock, self._backend.lock(self._key):
            self._held.depth = 1
            try:
                yield
            finally:
                self._held.depth = 0


def enforces_create_only(backend: Backend, key: str) -> bool:
    """True if ``backend`` refuses a second create-only write of ``key`` (a probe object, removed after).

    Some S3-compatible servers and emulators accept the precondition and ignore it; a store on such a
    backend must run in single-writer mode.
    """
    try:
        first = backend.create_only(key, b"1")
        second = backend.create_only(key, b"2")
    finally:
        backend.delete(key)
    return first and not second
