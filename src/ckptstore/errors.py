"""The exceptions ckptstore raises.

Every error derives from :class:`CkptStoreError`, so ``except CkptStoreError`` catches all of them, and
each leaf also derives from the builtin it resembles (``FileNotFoundError``, ``FileExistsError``,
``ValueError``, ``PermissionError``, ``ImportError``), so code written against the builtins keeps
working. Messages name the thing at fault (epoch, file, URL) and, where there is one, the fix.
"""

from __future__ import annotations

__all__ = [
    "BackendAuthError",
    "BackendUnavailableError",
    "CheckpointNotFoundError",
    "ChecksumMismatchError",
    "CkptStoreError",
    "CommitConflictError",
    "CommitFailedError",
    "DestinationExistsError",
    "IncompleteCheckpointError",
    "InvalidArgumentError",
    "InvalidArgumentTypeError",
    "InvalidEpochError",
    "InvalidMetricError",
    "ManifestError",
    "MissingMetricError",
    "MonitorMismatchError",
    "PostCommitWarning",
    "SerializerError",
    "SingleWriterWarning",
    "StoreNotFoundError",
    "StoreNotWritableError",
    "StoreUnavailableError",
    "UnexpectedFileError",
    "UnsafeEntryError",
    "UnsafePathError",
    "UnsupportedURLError",
    "VerificationError",
]


class CkptStoreError(Exception):
    """Root of every error ckptstore raises."""


class CheckpointNotFoundError(CkptStoreError, FileNotFoundError):
    """The requested checkpoint (epoch, pointer, or any checkpoint at all) does not exist."""


class StoreNotFoundError(CkptStoreError, FileNotFoundError):
    """The store's root does not exist and ``create=False`` was given."""


class StoreNotWritableError(CkptStoreError, PermissionError):
    """The store cannot be written: read-only mount, missing permissions, or opened read-only."""


class StoreUnavailableError(CkptStoreError, ConnectionError):
    """The backend did not answer (refused, reset, timed out, 5xx) for longer than the retry policy allows.

    The last low-level error is the ``__cause__``. A save that fails this way committed nothing unless
    its commit record was written and only the reply was lost; ``store.get(epoch)`` tells once the
    backend is back. What was committed before is untouched.
    """


class CommitConflictError(CkptStoreError, FileExistsError):
    """The epoch is already committed (by this writer or another one); nothing was changed."""


class CommitFailedError(CkptStoreError, OSError):
    """The commit failed for a reason outside the caller's input (full disk, I/O error).

    Nothing was committed and the staging directory was removed.
    """


class UnsafeEntryError(CkptStoreError, PermissionError):
    """An internal file or folder of the store is a symlink, or a special file (FIFO, socket, device).

    ckptstore never follows a symlink inside the store and never opens a special file: the entry is
    refused without being read, written or deleted through. The message names it; remove it by hand.
    """


class InvalidArgumentError(CkptStoreError, ValueError):
    """An argument is malformed; nothing on disk was changed."""


class InvalidArgumentTypeError(InvalidArgumentError, TypeError):
    """An argument has the wrong type (``None`` for a URL, a string for a count); nothing was changed.

    It is both a ``ValueError`` (through :class:`InvalidArgumentError`) and the ``TypeError`` that
    plain Python raises for a wrongly typed argument, so either ``except`` keeps working.
    """


class InvalidEpochError(InvalidArgumentError):
    """The epoch is not a non-negative integer that fits the store's naming width."""


class InvalidMetricError(InvalidArgumentError):
    """A metric is not a finite real number, or its name is not a non-empty string."""


class MissingMetricError(InvalidArgumentError, KeyError):
    """The store monitors a metric that the caller did not pass."""

    def __str__(self) -> str:
        # KeyError's str() adds quotes around the message; keep the message readable.
        return str(self.args[0]) if self.args else ""


class MonitorMismatchError(InvalidArgumentError):
    """The store records another monitor (or mode) than the one given; rank by others with ``best(metric=...)``."""


class DestinationExistsError(InvalidArgumentError, FileExistsError):
    """A download's destination is in the way: it is a file where a folder goes, or a folder where a file goes.

    Nothing was written; choose another destination or remove what is there.
    """


class UnsafePathError(InvalidArgumentError):
    """A file name would escape the checkpoint directory or clash with a reserved name."""


class UnsupportedURLError(InvalidArgumentError):
    """The URL's scheme has no backend (yet)."""


class BackendUnavailableError(CkptStoreError, ImportError):
    """An optional package needed for this backend or serializer is not installed."""


class BackendAuthError(CkptStoreError, PermissionError):
    """The backend refused the credentials, or found none (names where credentials come from)."""


class PostCommitWarning(UserWarning):
    """A checkpoint WAS committed, but a step after the commit point failed (pointers, index, keep policy).

    The save returned its checkpoint: it is durable and verifiable. The pointers and ``index.json``
    are caches; the next call of the same store rebuilds them from the manifests (``restart()``
    recomputes them in a new process). The failure is in the message and in the log.
    """


class SingleWriterWarning(UserWarning):
    """The backend does not enforce create-only writes, so only one process may write to the store."""


class SerializerError(CkptStoreError, RuntimeError):
    """A serializer failed to save or load; the original exception is the ``__cause__``."""


class VerificationError(CkptStoreError):
    """A committed checkpoint does not match its manifest."""


class ChecksumMismatchError(VerificationError, ValueError):
    """A file's size or xxh3-128 digest differs from the manifest."""


class IncompleteCheckpointError(VerificationError, FileNotFoundError):
    """A file listed in the manifest, or the manifest itself, is missing."""


class UnexpectedFileError(VerificationError, ValueError):
    """A file that the manifest does not list was found in a committed checkpoint."""


class ManifestError(VerificationError, ValueError):
    """A manifest (or another store record) is not valid JSON or does not follow the schema."""
