"""CheckpointStore: save, keep, find, verify and restart from checkpoints.

The store owns everything around a framework's serializer. Its promises (DESIGN.md section 3):

* a checkpoint becomes visible in one atomic step, whole or not at all, even after ``kill -9`` or a
  power cut. Where the backend can rename (local disk, NFS), files are written and fsynced in a
  private ``work/<writer-id>`` directory, the manifest is written and fsynced last, and the directory
  is renamed onto ``epochs/NNNNNNNN``, which must not exist, before ``epochs/`` itself is fsynced.
  On object stores the writer claims ``epochs/NNNNNNNN/.claim`` with a create-only write, uploads the
  files, and commits by writing ``MANIFEST.json`` create-only: a folder without one is not a
  checkpoint. The strategy is chosen from the backend's capabilities, never from its type;
* nothing committed is overwritten: saving an existing epoch raises ``CommitConflictError``;
* the ``best`` and ``last`` pointers are replaced atomically, only after the commit (under a lock
  locally, by compare-and-swap on object stores), ``last`` only moves forward (except through
  :meth:`CheckpointStore.rollback`), and both are repaired from the manifests when missing or
  dangling; ``index.json`` is updated the same way and is only ever a cache;
* every file is hashed with xxh3-128 in the pass that writes it, and restart falls back to the newest
  checkpoint that verifies;
* keep policies never delete best, last, pinned or another run's checkpoints, and deletion is one
  step before any file is removed (a rename into ``trash/``; on object stores, deleting the
  manifest).
"""

from __future__ import annotations

import builtins
import contextlib
import datetime as _dt
import errno
import itertools
import json
import logging
import os
import platform
import re
import shutil
import sys
import tempfile
import threading
import time
import uuid
import warnings
import weakref
from collections.abc import Callable, Iterable, Iterator, Mapping
from concurrent.futures import Future, ThreadPoolExecutor
from pathlib import Path
from types import TracebackType
from typing import IO, Any, Literal

import attrs

from . import _crash
from ._boundary import CAS_ATTEMPTS, RecordLock
from ._boundary import backend_errors as _backend_errors
from ._boundary import parse_json as _parse_json
from ._boundary import pid_alive as _pid_alive
from ._nofollow import open_regular, regular_files
from ._progress import ProgressOption, make_progress
from ._redact import redact, redact_url
from ._validate import (
    RESERVED_NAMES,
    check_count,
    check_epoch,
    check_file_set,
    check_key_length,
    check_metadata,
    check_metrics,
    check_optional_int,
    check_optional_text,
    check_portable_name,
    check_relpath,
    clash_message,
    is_bool,
    is_choice,
    is_instance,
    is_int,
    is_keep_policy,
    is_name,
    is_progress,
    is_real,
    is_text,
)
from .backends.base import Backend, Capabilities, PendingUpload
from .backends.local import LocalBackend
from .backends.registry import open_backend
from .backends.retrying import RetryingBackend
from .catalog import best_of, ordered
from .checkpoint import EVALUATION_KEY, MANIFEST_FILE, METADATA_FILE, TRANSFER_THREADS, Checkpoint
from .checksum import HashingStream, HashingWriter, copy_hashing, hash_and_sync
from .errors import (
    CheckpointNotFoundError,
    CkptStoreError,
    CommitConflictError,
    CommitFailedError,
    InvalidArgumentError,
    InvalidArgumentTypeError,
    ManifestError,
    MonitorMismatchError,
    PostCommitWarning,
    SerializerError,
    SingleWriterWarning,
    StoreNotFoundError,
    StoreNotWritableError,
    StoreUnavailableError,
    UnsafeEntryError,
    UnsafePathError,
    VerificationError,
)
from .find import FileMatch, latest_match, value_match
from .index import Index
from .layout import POINTER_LOCK, POINTER_NAMES, Layout
from .manifest import FileEntry, Manifest, check_descriptor
from .manifests import Manifests
from .oplog import HOST, OpLog, fmt_metrics, human, render_table, stats_text
from .pointers import Pointers, pointer_monitor
from .policies import (
    CheckpointInfo,
    GcDecision,
    KeepPolicy,
    Mode,
    SaveDecision,
    SaveRules,
    all_,
    decide_save,
    plan_gc,
    resolve_mode,
)
from .retry import RetryPolicy
from .retry import call as retry_call
from .serializers import Serializer, get_serializer

__all__ = ["CheckpointStore", "GcReport", "SaveTransaction", "StoreConfig", "open_store"]

logger = logging.getLogger("ckptstore")

STORE_FILE = "ckptstore.json"
STORE_FORMAT = "ckptstore.store"
STORE_VERSION = 1
DEFAULT_WIDTH = 8
CLAIM_FILE = ".claim"
INDEX_FILE = "index.json"
_INTERNAL_FOLDERS = frozenset({"work", "trash", "retired", "pointers", "pins", "log", "probe"})
_INTERNAL_FILES = frozenset({STORE_FILE, INDEX_FILE, "ckpt.log"})
_HOST = HOST  # claims and staging folders record it (tests pose as another host by changing it)


@attrs.frozen(kw_only=True)
class StoreConfig:
    """How a store saves, keeps and restarts; every option of :func:`ckptstore.open`.

    Attributes:
        keep: The keep policy (``ckptstore.keep.linear(5)``, ...); None keeps everything.
        monitor: The metric that defines "best" (``val_loss``); None for no best tracking.
        mode: ``min``, ``max`` or ``auto`` (max for names with acc/auc/f1/precision/recall).
        skip_epochs: Do not save epochs below this number (CANDLE).
        save_interval: Save when ``epoch % save_interval == 0``; 0 disables saving (CANDLE).
        save_best_only: Save only when the monitored metric improves (Keras).
        initial_value_threshold: The first save must beat this value (Keras).
        run_id: The run this process belongs to; defaults to the store's own id, so a restarted job
            is the same run. Runs sharing a store pass their own.
        verify_on_load: Re-hash on ``load`` and ``restart`` (default True).
        gc_on_save: Apply the keep policy after every commit (default True).
        work_grace_seconds: Age after which another host's staging directory counts as abandoned.
        width: Digits in epoch directory names; used when the store is created.
        log_file: Write ``ckpt.log`` (object stores: ``log/`` objects); default True.
        progress: Progress bars for big uploads: None (default) on a terminal only, True, False,
            or a callable receiving ``(done_bytes, total_bytes, description)``.
    """

    keep: KeepPolicy | None = attrs.field(default=None, validator=is_keep_policy())
    monitor: str | None = attrs.field(default=None, validator=is_text(optional=True))
    mode: str = attrs.field(default="auto", validator=is_choice("min", "max", "auto"))
    skip_epochs: int = attrs.field(default=0, validator=is_int(0))
    save_interval: int = attrs.field(default=1, validator=is_int(0))
    save_best_only: bool = attrs.field(default=False, validator=is_bool())
    initial_value_threshold: float | None = attrs.field(default=None, validator=is_real(optional=True))
    run_id: str | None = attrs.field(default=None, validator=is_name(optional=True))
    verify_on_load: bool = attrs.field(default=True, validator=is_bool())
    gc_on_save: bool = attrs.field(default=True, validator=is_bool())
    work_grace_seconds: float = attrs.field(default=3600.0, validator=is_real(positive=True))
    width: int = attrs.field(default=DEFAULT_WIDTH, validator=is_int(1, 18))
    log_file: bool = attrs.field(default=True, validator=is_bool())
    progress: ProgressOption = attrs.field(default=None, eq=False, validator=is_progress())
    retry: RetryPolicy = attrs.field(
        factory=RetryPolicy, validator=is_instance(RetryPolicy, "ckptstore.RetryPolicy(max_attempts=..., deadline=...)")
    )

    def __attrs_post_init__(self) -> None:
        _ = self.save_rules  # validates the combination (save_best_only needs monitor, ...)

    @property
    def resolved_mode(self) -> Mode:
        """``mode`` with ``auto`` resolved for ``monitor``."""
        return resolve_mode(self.monitor, self.mode)

    @property
    def save_rules(self) -> SaveRules:
        """The save decision parameters."""
        return SaveRules(
            skip_epochs=self.skip_epochs,
            save_interval=self.save_interval,
            save_best_only=self.save_best_only,
            monitor=self.monitor,
            mode=self.resolved_mode,
            initial_value_threshold=self.initial_value_threshold,
        )


@attrs.frozen(kw_only=True)
class GcReport:
    """What :meth:`CheckpointStore.gc` decided (and, unless a dry run, did).

    Attributes:
        decisions: Keep or delete, with the reason, for every committed checkpoint.
        leftovers: ``(path, reason)`` of staging, trash and retired directories removed (or, in a
            dry run, that would be removed).
        dry_run: True if nothing was changed.
    """

    decisions: tuple[GcDecision, ...]
    leftovers: tuple[tuple[str, str], ...]
    dry_run: bool

    def __iter__(self) -> Iterator[GcDecision]:
        return iter(self.decisions)

    @property
    def deleted(self) -> builtins.list[int]:
        """Epochs deleted (or to be deleted)."""
        return [d.epoch for d in self.decisions if d.action == "delete"]

    @property
    def kept(self) -> builtins.list[int]:
        """Epochs kept."""
        return [d.epoch for d in self.decisions if d.action == "keep"]


class SaveTransaction:
    """One checkpoint being written; use it as a context manager from :meth:`CheckpointStore.save`.

    Inside the block, write files into :attr:`path` (a private local staging directory) or stream
    them through :meth:`open` (on object stores straight into the bucket). Leaving the block commits;
    an exception inside it aborts, removes what was staged or uploaded, and commits nothing.

    Attributes:
        epoch: The epoch being saved.
        decision: Why the store saves (or skips) this epoch.
    """

    def __init__(
        self,
        store: CheckpointStore,
        epoch: int,
        *,
        metrics: dict[str, float],
        metadata: dict[str, Any],
        step: int | None,
        batch: int | None,
        decision: SaveDecision,
        blocking: bool,
        serializer: Serializer | None = None,
    ) -> None:
        self._store = store
        self.epoch = epoch
        self.metrics = metrics
        self.metadata = metadata
        self.step = step
        self.batch = batch
        self.decision = decision
        self.blocking = blocking
        self.serializer = serializer
        self._work: Path | None = None
        self._claimed = False
        self._entries: dict[str, FileEntry] = {}
        self._open_writers: dict[str, HashingWriter | HashingStream] = {}
        self._folders: dict[str, str] = {}  # every folder of a tx.open() name -> one name below it
        self._future: Future[Checkpoint] | None = None
        self._checkpoint: Checkpoint | None = None
        self._started = time.monotonic()

    @property
    def skipped(self) -> bool:
        """True if the store's save rules decided not to save this epoch (see :attr:`decision`)."""
        return not self.decision.save

    @property
    def path(self) -> Path:
        """The local staging directory; write files here. Exists only inside the ``with`` block."""
        if self._work is None:
            raise InvalidArgumentError("tx.path is only available inside the 'with store.save(...)' block")
        return self._work

    @property
    def _streams_to_backend(self) -> bool:
        return self._claimed

    def open(self, name: str, mode: str = "wb") -> IO[Any]:
        """Create a file in the checkpoint and return a write-only stream that hashes what it writes.

        The stream does not seek (``torch.save``, ``np.save``, ``np.savez`` and ``pickle.dump``
        work with it). Locally, closing it fsyncs the file; on object stores the bytes go straight
        to the bucket as a multipart upload holding one part in memory. Writers that must seek use
        :attr:`path`.

        Args:
            name: Relative path inside the checkpoint (``/`` separates folders).
            mode: ``"wb"`` (default) or ``"w"`` for UTF-8 text.

        Raises:
            UnsafePathError: the name escapes the checkpoint, is reserved, was written already, is
                a file and a folder at once (``a`` and ``a/b``), is not valid UTF-8, or is longer
                than the backend accepts (``capabilities.max_key_bytes``, counting the store's path).
        """
        if mode not in ("wb", "w", "xb", "x"):
            raise InvalidArgumentError(f"tx.open() writes new files; mode must be 'wb' or 'w', got {mode!r}")
        rel = check_portable_name(check_relpath(name))
        target = self.path / rel
        fs, key = self._store._fs, f"{self._store._epoch_key(self.epoch)}/{rel}"
        check_key_length(rel, key, fs.key_bytes(key), fs.capabilities.max_key_bytes)
        if not self._streams_to_backend and fs.local_path() is not None:
            check_key_length(rel, str(target), len(os.fsencode(target)), fs.capabilities.max_key_bytes)
        if rel in self._entries or rel in self._open_writers:
            raise UnsafePathError(f"{rel!r} was already written in this checkpoint")
        if rel in self._folders or target.is_dir():
            raise UnsafePathError(clash_message(rel, self._folders.get(rel, f"{rel}/... in tx.path")))
        folder = rel.rpartition("/")[0]
        while folder:
            if folder in self._entries or folder in self._open_writers or (self.path / folder).is_file():
                raise UnsafePathError(clash_message(folder, rel))
            folder = folder.rpartition("/")[0]
        if target.exists():
            raise UnsafePathError(f"{rel!r} was already written in this checkpoint")

        def done(size: int, digest: str) -> None:
            self._entries[rel] = FileEntry(path=rel, size=size, xxh3_128=digest)
            self._open_writers.pop(rel, None)

        writer: HashingWriter | HashingStream
        if self._streams_to_backend:
            key = f"{self._store._epoch_key(self.epoch)}/{rel}"
            writer = HashingStream(self._store._fs.open_write(key), f"{self._store.url}/{key}", on_close=done)
        else:
            target.parent.mkdir(parents=True, exist_ok=True)
            writer = HashingWriter(target, on_close=done)
        self._open_writers[rel] = writer
        folder = rel.rpartition("/")[0]
        while folder and folder not in self._folders:
            self._folders[folder] = rel
            folder = folder.rpartition("/")[0]
        if "b" in mode:
            return writer  # type: ignore[return-value]
        return _TextWriter(writer)  # type: ignore[return-value]

    @property
    def checkpoint(self) -> Checkpoint | None:
        """The committed checkpoint (waits for a non-blocking commit); None if the save was skipped."""
        if self._future is not None:
            return self._future.result()
        return self._checkpoint

    def __enter__(self) -> SaveTransaction:
        self._store._begin(self)
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        if exc_type is not None or self.skipped:
            self._abort(f"aborted by {exc_type.__name__}" if exc_type is not None else None)
            return
        if self.blocking:
            self._checkpoint = self._store._commit(self)
        else:
            self._future = self._store._submit(self)

    def _abort(self, why: str | None) -> None:
        for writer in list(self._open_writers.values()):
            writer.abort()
        self._open_writers.clear()
        self._store._discard(self)
        if why is not None:
            self._store._log("ABORT", f"epoch={self.epoch} {why}; nothing committed")
        else:
            self._store._log("SKIP", f"epoch={self.epoch} {self.decision.reason}")


class _TextWriter:
    """A minimal UTF-8 text facade over :class:`HashingWriter` for ``tx.open(name, "w")``."""

    def __init__(self, raw: HashingWriter | HashingStream) -> None:
        self._raw = raw

    def write(self, text: str) -> int:
        self._raw.write(text.encode("utf-8"))
        return len(text)

    def close(self) -> None:
        self._raw.close()

    def __enter__(self) -> _TextWriter:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()


class CheckpointStore:
    """A directory of checkpoints with atomic commits, pointers, keep policies and verification.

    Open one with :func:`ckptstore.open`. Usable as a context manager; ``close()`` waits for a
    non-blocking save to commit.

    Args:
        root: The store's root: a local path, or any URL :func:`ckptstore.open` accepts.
        config: The store's options.
        create: Create the store if it does not exist (the default).
        storage_options: Options for the fsspec filesystem of a URL (endpoint, credentials, ...).
        backend: An already opened backend (overrides ``root``).
    """

    def __init__(
        self,
        root: str | os.PathLike[str],
        config: StoreConfig | None = None,
        *,
        create: bool = True,
        storage_options: Mapping[str, Any] | None = None,
        backend: Backend | None = None,
    ) -> None:
        self.config = config or StoreConfig()
        self._fs: Backend = backend if backend is not None else open_backend(root, storage_options)
        if self._fs.local_path() is None:  # remote: retry what fails in passing, up to a deadline
            self._fs = RetryingBackend(self._fs, self.config.retry)
        self._lock = threading.RLock()
        self._record_lock = RecordLock(self._fs, POINTER_LOCK)
        self._caches_stale = False  # a step after a commit failed: repair pointers and index on the next call
        self._executor: ThreadPoolExecutor | None = None
        self._pending: Future[Checkpoint] | None = None
        self._background_error: BaseException | None = None
        self._parent: int | None = None
        self._seq = itertools.count()
        self._writer_id = f"{_HOST}.{os.getpid()}.{uuid.uuid4().hex[:8]}"
        self._active_work: set[str] = set()
        self._stats = {"saved": 0, "bytes": 0, "seconds": 0.0, "skipped": 0, "deleted": 0}
        self._writable = True
        self._probed = False
        self._oplog = OpLog(
            self._fs,
            self._quick_fs,
            self.url,
            self._writer_id,
            enabled=self.config.log_file,
            writable=lambda: self._writable,
        )
        self._descriptor = self._open_or_create(create)
        self.single_writer = not self._caps.create_only
        self.width: int = self._descriptor["width"]
        self._layout = Layout(self.width)
        self._manifests = Manifests(self._fs, self._layout, self.url, self)
        self._index = Index(self._fs, self._layout, self.url, self._record_lock, self._manifests)
        self.store_id: str = self._descriptor["store_id"]
        self.run_id: str = self.config.run_id or self.store_id
        self.mode: Mode = self.config.resolved_mode
        self._pointers = Pointers(
            self._fs,
            self._layout,
            self.url,
            self._writer_id,
            self._record_lock,
            self._oplog,
            self._manifests,
            (self.config.monitor, self.mode),
        )
        self._rules = self.config.save_rules
        self._keep: KeepPolicy = self.config.keep or all_()

    @property
    def root(self) -> Path:
        """The root directory of a local or NFS store.

        Raises:
            InvalidArgumentError: the store is on an object store (use :attr:`url`).
        """
        local = self._fs.local_path()
        if local is None:
            raise InvalidArgumentError(f"{self.url} is not on a local filesystem; it has no root directory")
        return local

    @property
    def backend(self) -> Backend:
        """The storage backend (for the conformance suite and for tools; not needed to use a store)."""
        return self._fs

    @property
    def capabilities(self) -> Capabilities:
        """What the backend can do; decides the commit and pointer strategies."""
        return self._fs.capabilities

    @property
    def _caps(self) -> Capabilities:
        return self._fs.capabilities

    # -- opening ------------------------------------------------------------------------------------
    def _open_or_create(self, create: bool) -> dict[str, Any]:
        with _backend_errors(self._fs, "open the store"):
            local = self._fs.local_path()
            if local is not None:
                self._prepare_local_root(local, create)
            raw = None
            with contextlib.suppress(FileNotFoundError):
                raw = self._fs.read_bytes(STORE_FILE)
            if raw is None:
                if not self._writable:
                    raise StoreNotWritableError(f"{self.url} is not a ckptstore store and cannot be written")
                if not create:
                    raise StoreNotFoundError(f"{self.url} is not a ckptstore store (no {STORE_FILE})")
                descriptor = {
                    "format": STORE_FORMAT,
                    "version": STORE_VERSION,
                    "store_id": uuid.uuid4().hex,
                    "created_at": _dt.datetime.now(_dt.timezone.utc).isoformat(),
                    "width": self.config.width,
                }
                if self.config.monitor is not None:  # best is bound to its metric from the start
                    descriptor["monitor"] = self.config.monitor
                    descriptor["mode"] = self.config.resolved_mode
                try:
                    self._fs.check_container()
                    self._fs.create_only(STORE_FILE, json.dumps(descriptor, indent=1).encode())
                except FileNotFoundError as exc:
                    raise StoreNotFoundError(
                        f"cannot create a store at {self.url}: its bucket or parent does not exist "
                        f"({redact(str(exc))}); create the bucket first"
                    ) from None
                raw = self._fs.read_bytes(STORE_FILE)
        where = f"{self.url}/{STORE_FILE}"
        try:
            descriptor = json.loads(raw)
            if not isinstance(descriptor, dict):
                raise ManifestError(f"{where} is not a JSON object")
            if descriptor.get("format") != STORE_FORMAT or descriptor.get("version") != STORE_VERSION:
                raise ManifestError(f"{where} is not a version-{STORE_VERSION} ckptstore descriptor")
            check_descriptor(descriptor, where)  # width: an int 1..18, not a bool; store_id: a string
        except (ValueError, RecursionError) as exc:
            if isinstance(exc, ManifestError):
                raise
            raise ManifestError(f"{where} is not valid JSON: {exc}") from None
        descriptor = self._bind_monitor(descriptor)
        if local is not None and self._writable:
            for sub in ("epochs", "work", "pointers", "pins", "trash", "retired"):
                self._fs.make_dir(sub)  # type: ignore[attr-defined]  # refuses a symlink: never followed
        result: dict[str, Any] = descriptor
        return result

    def _bind_monitor(self, descriptor: dict[str, Any]) -> dict[str, Any]:
        """Bind this store to the monitor and mode recorded in ``ckptstore.json``; record them on first use.

        ``best`` means one thing per store: a store records its monitor and mode when it is created with
        one, or at the first open that names one (by compare-and-swap, so two first opens agree). A later
        open without ``monitor=`` uses them; one with another monitor (or an explicit other mode) is
        refused before anything is written.

        Returns:
            The descriptor as it is on the backend now.

        Raises:
            MonitorMismatchError: ``monitor``/``mode`` differ from what the store recorded.
            ManifestError: the recorded values are malformed.
        """
        where = f"{self.url}/{STORE_FILE}"
        for _attempt in range(CAS_ATTEMPTS):
            recorded, recorded_mode = descriptor.get("monitor"), descriptor.get("mode")
            if recorded is not None and (
                not isinstance(recorded, str) or not recorded or recorded_mode not in ("min", "max")
            ):
                raise ManifestError(
                    f"{where}: 'monitor' must be a metric name and 'mode' 'min' or 'max' "
                    f"(found {recorded!r}, {recorded_mode!r}); fix or remove them"
                )
            legacy = None
            if recorded is None:  # stores made before the descriptor kept it: what the best pointer records
                legacy = pointer_monitor(self._fs)
                if legacy is not None:
                    recorded, recorded_mode = legacy
            wanted, wanted_mode = self.config.monitor, self.config.mode
            if recorded is not None:
                if wanted is not None and wanted != recorded:
                    raise MonitorMismatchError(
                        f"the store at {self.url} ranks checkpoints by {recorded!r} ({recorded_mode}), as recorded in "
                        f"{STORE_FILE}; it cannot be opened with monitor={wanted!r}. Open it without monitor= (or "
                        f"with monitor={recorded!r}), and rank by another metric with store.best(metric={wanted!r}) "
                        f"or store.list(sort_by={wanted!r})"
                    )
                if wanted_mode != "auto" and wanted_mode != recorded_mode:
                    raise MonitorMismatchError(
                        f"the store at {self.url} ranks {recorded!r} with mode={recorded_mode!r}, as recorded in "
                        f"{STORE_FILE}; it cannot be opened with mode={wanted_mode!r}. Open it with mode='auto' or "
                        f"{recorded_mode!r}; rank the other way with store.list(sort_by={recorded!r}, order=...)"
                    )
                self.config = attrs.evolve(self.config, monitor=recorded, mode=str(recorded_mode))
                if legacy is None or not self._writable:
                    return descriptor
            elif wanted is None or not self._writable:
                return descriptor
            updated = {**descriptor, "monitor": self.config.monitor, "mode": self.config.resolved_mode}
            with _backend_errors(self._fs, f"record the monitor in {STORE_FILE}"), self._pointer_lock():
                current = self._fs.read_versioned(STORE_FILE)
                if current is None:
                    raise StoreNotFoundError(f"{where} disappeared while the store was being opened")
                unchanged = _parse_json(current[0]) == descriptor
                if unchanged and self._fs.write_if(STORE_FILE, json.dumps(updated, indent=1).encode(), current[1]):
                    self._log("MONITOR", f"best is chosen by {updated['monitor']} ({updated['mode']})")
                    return updated
                descriptor = _parse_json(current[0])  # another process recorded one first: check against it
        raise CommitFailedError(errno.EAGAIN, f"could not record the monitor in {where}: too many concurrent opens")

    def _prepare_local_root(self, root: Path, create: bool) -> None:
        if not root.exists():
            if not create:
                raise StoreNotFoundError(f"no store at {root} (pass create=True to make one)")
            try:
                LocalBackend.make_dirs(root)
            except PermissionError as exc:
                raise StoreNotWritableError(f"cannot create the store at {root}: {exc}") from None
            except FileExistsError:
                raise InvalidArgumentError(f"{root} exists and is not a directory") from None
        if not root.is_dir():
            raise InvalidArgumentError(f"{root} is not a directory")
        self._writable = os.access(root, os.W_OK | os.X_OK)

    def _probe_create_only(self) -> None:
        """Check once that the backend refuses a second create-only write; warn and go single-writer if not."""
        if self._probed or not self._caps.create_only or self._caps.atomic_rename:
            self._probed = True
            return
        self._probed = True
        key = f"probe/{self._writer_id}.{uuid.uuid4().hex[:8]}"
        with _backend_errors(self._fs, "probe create-only writes"):
            try:
                first = self._fs.create_only(key, b"1")
                second = self._fs.create_only(key, b"2")
            finally:
                self._fs.delete(key)
        if first and not second:
            self.single_writer = False
            return
        self.single_writer = True
        message = (
            f"the {self._fs.scheme} backend at {self.url} claims create-only writes but did not enforce one "
            "(a second create-only write of a probe object succeeded); running in single-writer mode: "
            "do not let two processes save to this store at once"
        )
        warnings.warn(message, SingleWriterWarning, stacklevel=5)
        logger.warning("%s", message)

    # -- naming -------------------------------------------------------------------------------------
    def _name(self, epoch: int) -> str:
        return f"{epoch:0{self.width}d}"

    def _epoch_key(self, epoch: int) -> str:
        return f"epochs/{self._name(epoch)}"

    def _epoch_dir(self, epoch: int) -> Path:
        return self.root / "epochs" / self._name(epoch)

    @property
    def url(self) -> str:
        """The store's root as a URL, redacted: a password or a token in it shows as ``***``."""
        return redact_url(self._fs.url)

    # -- logging ------------------------------------------------------------------------------------
    def _log(self, event: str, message: str, level: int = logging.INFO) -> None:
        self._oplog(event, message, level)

    def log(self) -> builtins.list[str]:
        """Return the store's log lines, oldest first (``ckpt.log``, or the ``log/`` objects)."""
        return self._oplog.lines()

    # -- background commits -------------------------------------------------------------------------
    def _raise_background_error(self) -> None:
        error, self._background_error = self._background_error, None
        if error is not None:
            raise error

    def wait(self) -> Checkpoint | None:
        """Wait for a non-blocking save to commit; raise its error if it failed.

        Returns:
            The checkpoint it committed, or None if nothing was in flight.
        """
        pending, self._pending = self._pending, None
        result = None
        if pending is not None:
            with contextlib.suppress(BaseException):
                result = pending.result()
        self._raise_background_error()
        return result

    def close(self) -> None:
        """Wait for any save in flight and release the background thread."""
        try:
            self.wait()
        finally:
            if self._executor is not None:
                self._executor.shutdown(wait=True)
                self._executor = None

    def __enter__(self) -> CheckpointStore:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def _submit(self, tx: SaveTransaction) -> Future[Checkpoint]:
        if self._executor is None:
            self._executor = ThreadPoolExecutor(max_workers=1, thread_name_prefix="ckptstore-commit")

        def run() -> Checkpoint:
            try:
                return self._commit(tx)
            except BaseException as exc:
                self._background_error = exc
                raise

        future = self._executor.submit(run)
        self._pending = future
        return future

    # -- saving -------------------------------------------------------------------------------------
    def should_save(self, epoch: int, metrics: Mapping[str, Any] | None = None) -> SaveDecision:
        """Decide whether ``epoch`` would be saved under the store's save rules.

        The decision is truthy when the epoch should be saved; ``.reason`` says why. The best value
        so far is read from the store, so ``save_best_only`` survives a restart.

        Raises:
            InvalidEpochError, InvalidMetricError: bad input.
            MissingMetricError: the store monitors a metric that ``metrics`` lacks.
        """
        epoch = check_epoch(epoch, self.width)
        clean = check_metrics(metrics)
        return decide_save(self._rules, epoch, clean, self._best_value())

    def _best_value(self) -> float | None:
        if self.config.monitor is None:
            return None
        with contextlib.suppress(CheckpointNotFoundError):
            return self.best().metrics.get(self.config.monitor)
        return None

    def save(
        self,
        epoch: int,
        *,
        metrics: Mapping[str, Any] | None = None,
        metadata: Mapping[str, Any] | None = None,
        step: int | None = None,
        batch: int | None = None,
        blocking: bool = True,
        force: bool = False,
    ) -> SaveTransaction:
        """Start a checkpoint for ``epoch``; use the result as a context manager.

        ``with store.save(3, metrics={"val_loss": 0.2}) as tx:`` -- write into ``tx.path`` or
        through ``tx.open(name)``; leaving the block commits, and ``tx.checkpoint`` is the result.

        The store's save rules (``save_interval``, ``skip_epochs``, ``save_best_only``, ...) apply:
        when they decide against saving, ``tx.skipped`` is True, the block still runs in a scratch
        directory and nothing is committed. Check ``store.should_save(epoch, metrics)`` first to
        avoid serializing in vain, or pass ``force=True``.

        Args:
            epoch: The epoch (or step) number; the directory name.
            metrics: Finite metric values; must include the store's monitor, if any.
            metadata: JSON-serializable user metadata.
            step: Optional global step.
            batch: Optional batch index within the epoch (batch-level saves).
            blocking: False commits in a background thread after the block (at most one in flight;
                a second save waits for the first; an error surfaces on the next call).
            force: Save whatever the save rules say.

        Raises:
            CommitConflictError: the epoch is already committed.
            StoreNotWritableError: the store cannot be written.
            InvalidArgumentError: bad epoch, metrics, metadata (subclasses name which).
        """
        self.wait()
        tx = self._prepare(epoch, metrics, metadata, step, batch, blocking, force, None)
        return tx

    def save_state(
        self,
        epoch: int,
        state: Any,
        *,
        serializer: str | Serializer = "numpy",
        metrics: Mapping[str, Any] | None = None,
        metadata: Mapping[str, Any] | None = None,
        step: int | None = None,
        batch: int | None = None,
        blocking: bool = True,
        force: bool = False,
    ) -> Checkpoint | None:
        """Serialize ``state`` with a named serializer and commit it as ``epoch``.

        With ``blocking=False`` the state is serialized before this returns (so it may change
        afterwards) and the commit (fsync, rename, pointers, gc) runs in the background.

        Returns:
            The committed checkpoint; None if the save rules skipped it (or, when not blocking,
            before it commits: see :meth:`wait`).

        Raises:
            SerializerError: the serializer raised; nothing was committed.
            See :meth:`save` for the rest.
        """
        impl = get_serializer(serializer)
        self.wait()
        tx = self._prepare(epoch, metrics, metadata, step, batch, blocking, force, impl)
        if tx.skipped:
            self._log("SKIP", f"epoch={tx.epoch} {tx.decision.reason}")
            self._stats["skipped"] += 1
            return None
        with tx:
            try:
                impl.save(state, tx)
            except CkptStoreError:
                raise
            except Exception as exc:
                raise SerializerError(f"serializer {impl.name!r} failed to save epoch {tx.epoch}: {exc}") from exc
        return tx.checkpoint if blocking else None

    def _prepare(
        self,
        epoch: int,
        metrics: Mapping[str, Any] | None,
        metadata: Mapping[str, Any] | None,
        step: int | None,
        batch: int | None,
        blocking: bool,
        force: bool,
        serializer: Serializer | None,
    ) -> SaveTransaction:
        epoch = check_epoch(epoch, self.width)
        clean_metrics = check_metrics(metrics)
        clean_metadata = check_metadata(metadata)
        step = check_optional_int("step", step)
        batch = check_optional_int("batch", batch)
        decision = decide_save(self._rules, epoch, clean_metrics, self._best_value())
        if force and not decision.save:
            decision = SaveDecision(save=True, reason="forced", improved=decision.improved)
        if decision.save:
            self._check_writable()
            key = self._epoch_key(epoch)
            with _backend_errors(self._fs, f"check epoch {epoch}"):
                taken = self._fs.exists(key) if self._caps.atomic_rename else self._fs.exists(f"{key}/{MANIFEST_FILE}")
            if taken:
                raise CommitConflictError(
                    f"epoch {epoch} is already committed at {self.url}/{key}; "
                    "choose another epoch or roll back with store.rollback()"
                )
        return SaveTransaction(
            self,
            epoch,
            metrics=clean_metrics,
            metadata=clean_metadata,
            step=step,
            batch=batch,
            decision=decision,
            blocking=blocking,
            serializer=serializer,
        )

    def _check_writable(self) -> None:
        if not self._writable:
            raise StoreNotWritableError(f"the store at {self.url} is not writable by this process")
        self._fs.check_writable()
        self._probe_create_only()

    # -- the two commit strategies -------------------------------------------------------------------
    def _begin(self, tx: SaveTransaction) -> None:
        """Open a transaction: a staging directory, and on object stores the claim on the epoch."""
        if self._caps.atomic_rename and not tx.skipped:
            name = f"{self._writer_id}.{next(self._seq)}"
            work = self.root / "work" / name
            try:
                self._fs.make_dir(f"work/{name}")  # type: ignore[attr-defined]  # refuses a symlinked work/
            except CkptStoreError:
                raise
            except PermissionError as exc:
                raise StoreNotWritableError(f"cannot create a staging directory in {self.root}: {exc}") from None
            self._active_work.add(name)
            tx._work = work
            return
        tx._work = Path(tempfile.mkdtemp(prefix=f"ckptstore-{self._name(tx.epoch)}-"))
        if not tx.skipped:
            try:
                self._claim(tx.epoch)
            except BaseException:
                shutil.rmtree(tx._work, ignore_errors=True)
                tx._work = None
                raise
            tx._claimed = True
            with _CLAIMS_LOCK:
                _CLAIMING.add(tx)

    def _claim_record(self, epoch: int) -> bytes:
        return json.dumps(
            {
                "writer": self._writer_id,
                "host": _HOST,
                "pid": os.getpid(),
                "run_id": self.run_id,
                "epoch": epoch,
                "claimed_at_ns": time.time_ns(),
            }
        ).encode()

    def _claim(self, epoch: int) -> None:
        """Claim ``epochs/NNN/`` with a create-only ``.claim``; take over a claim whose writer is gone."""
        key = f"{self._epoch_key(epoch)}/{CLAIM_FILE}"
        with _backend_errors(self._fs, f"claim epoch {epoch}"):
            if self._fs.create_only(key, self._claim_record(epoch)):
                return
            if self._fs.exists(f"{self._epoch_key(epoch)}/{MANIFEST_FILE}"):
                raise CommitConflictError(f"epoch {epoch} is already committed at {self.url}/{self._epoch_key(epoch)}")
            current = self._fs.read_versioned(key)
            if current is None:  # released between our two requests: try once more
                if self._fs.create_only(key, self._claim_record(epoch)):
                    return
                raise CommitConflictError(f"epoch {epoch} was claimed by another writer at the same moment")
            info = _parse_json(current[0])
            why = self._claim_abandoned(info, time.time_ns())
            if why is None:
                raise CommitConflictError(
                    f"epoch {epoch} is being written by {info.get('writer', 'another writer')} "
                    f"(claimed {_age(info)} ago); choose another epoch, or wait until it commits or its claim "
                    f"is older than work_grace_seconds={self.config.work_grace_seconds:g}"
                )
            if not self._fs.write_if(key, self._claim_record(epoch), current[1]):
                raise CommitConflictError(f"epoch {epoch}: another writer took over the abandoned claim first")
            self._log("TAKEOVER", f"epoch={epoch} claim of {info.get('writer', '?')} ({why})", logging.WARNING)
            for rel in self._fs.walk(self._epoch_key(epoch)):
                if rel != CLAIM_FILE:
                    self._fs.delete(f"{self._epoch_key(epoch)}/{rel}")

    def _claim_abandoned(self, info: Mapping[str, Any], now_ns: int, *, for_gc: bool = False) -> str | None:
        """Why a claim (or a staging directory) counts as abandoned; None while its writer may live.

        A claim that gc took over to remove an abandoned save (``"gc": true``) is abandoned for another
        gc at once (finishing the removal twice is harmless), for a writer only once that gc is gone.
        """
        host, pid = info.get("host"), info.get("pid")
        if info.get("gc") is True:
            if for_gc:
                return "left by a gc that took it over"
            if host == _HOST and isinstance(pid, int) and not _pid_alive(pid):
                return f"left by a gc, process {pid} on this host, which is gone"
            host = pid = None  # a live gc's claim: only its age decides
        if host == _HOST and isinstance(pid, int) and pid != os.getpid() and not _pid_alive(pid):
            return f"its writer, process {pid} on this host, is gone"
        if host == _HOST and pid == os.getpid() and not _claim_in_flight(info.get("writer"), info.get("epoch")):
            return "its save in this process ended without committing (its clean-up failed: an outage?)"
        claimed = info.get("claimed_at_ns")
        if isinstance(claimed, int):
            age = (now_ns - claimed) / 1e9
            if age > self.config.work_grace_seconds:
                return f"claimed {age:.0f}s ago (grace {self.config.work_grace_seconds:.0f}s)"
        elif not info:
            return "unreadable claim"
        return None

    def _reap(self, name: str) -> bool:
        """Remove the uncommitted folder ``epochs/<name>`` of an abandoned save; never break a commit.

        gc first takes the claim over by compare-and-swap (re-read right here, so a claim refreshed or
        retaken since the listing is left alone), so the old writer can no longer commit: it checks its
        claim before writing its manifest and again after, and withdraws a manifest written in between.
        Then gc re-checks that no manifest exists, deletes the files it lists (never a manifest), and
        drops its claim only if still no manifest appeared.

        Returns:
            True if the folder is gone.
        """
        prefix = f"epochs/{name}"
        claim, manifest = f"{prefix}/{CLAIM_FILE}", f"{prefix}/{MANIFEST_FILE}"
        tombstone = json.dumps(
            {
                "writer": f"gc.{self._writer_id}",
                "gc": True,
                "host": _HOST,
                "pid": os.getpid(),
                "epoch": int(name) if name.isdigit() else None,
                "claimed_at_ns": time.time_ns(),
            }
        ).encode()
        current = self._fs.read_versioned(claim)
        if current is None:
            if self._fs.exists(manifest) or not self._fs.create_only(claim, tombstone):
                return False
        else:
            if self._claim_abandoned(_parse_json(current[0]), time.time_ns(), for_gc=True) is None:
                return False  # its writer refreshed or a new writer took it since the listing
            if not self._fs.write_if(claim, tombstone, current[1]):
                return False  # someone else changed it first: leave it to them
        if self._fs.exists(manifest):
            self._log("GC", f"{prefix} was committed while gc looked at it: left alone", logging.WARNING)
            return False
        for rel in self._fs.walk(prefix):
            if rel not in (CLAIM_FILE, MANIFEST_FILE):
                self._fs.delete(f"{prefix}/{rel}")
        if self._fs.exists(manifest):  # its writer raced us: it sees our claim and withdraws the manifest
            return False
        self._fs.delete(claim)
        return True

    def _holds_claim(self, epoch: int, fs: Backend | None = None) -> bool:
        try:
            raw = (fs or self._fs).read_bytes(f"{self._epoch_key(epoch)}/{CLAIM_FILE}")
        except FileNotFoundError:
            return False
        return _parse_json(raw).get("writer") == self._writer_id

    @property
    def _quick_fs(self) -> Backend:
        """The backend without retries, for best-effort steps (log lines, clean-up after a failure)."""
        return self._fs.inner if isinstance(self._fs, RetryingBackend) else self._fs

    def _discard(self, tx: SaveTransaction) -> None:
        """Remove everything an aborted transaction staged, uploaded or claimed (best effort).

        Clean-up does not retry: gc removes what an outage leaves behind.
        """
        work, tx._work = tx._work, None
        if work is not None:
            if self._caps.atomic_rename and work.parent == self.root / "work":
                self._active_work.discard(work.name)
                self._fs.delete_tree(f"work/{work.name}")
            else:
                shutil.rmtree(work, ignore_errors=True)
        if tx._claimed:
            tx._claimed = False
            fs = self._quick_fs
            with contextlib.suppress(Exception), _backend_errors(fs, "clean up"):
                if self._holds_claim(tx.epoch, fs) and not fs.exists(f"{self._epoch_key(tx.epoch)}/{MANIFEST_FILE}"):
                    fs.delete_tree(self._epoch_key(tx.epoch), last=[CLAIM_FILE])

    def _commit(self, tx: SaveTransaction) -> Checkpoint:
        started = time.monotonic()
        if tx._open_writers:
            names = ", ".join(sorted(tx._open_writers))
            tx._abort("file(s) opened with tx.open() were not closed")
            raise InvalidArgumentError(f"file(s) opened with tx.open() were not closed: {names}")
        commit = self._commit_by_rename if self._caps.atomic_rename else self._commit_by_record
        checkpoint = commit(tx)
        # The commit point is behind us: from here on nothing may look like "nothing was saved".
        manifest = checkpoint.manifest
        elapsed = time.monotonic() - tx._started
        size = manifest.total_size
        rate = size / max(time.monotonic() - started, 1e-9) / 1e6
        self._stats["saved"] += 1
        self._stats["bytes"] += size
        self._stats["seconds"] += elapsed
        self._log(
            "COMMIT",
            f"epoch={tx.epoch} files={len(manifest.files)} size={human(size)} "
            f"in {elapsed:.3f}s ({rate:.0f} MB/s commit) {fmt_metrics(manifest.metrics)}",
        )
        try:
            self._after_commit(checkpoint, tx.decision)
        except Exception as exc:
            self._caches_stale = True
            message = (
                f"epoch {tx.epoch} is committed at {checkpoint.url}, but a step after the commit failed "
                f"({type(exc).__name__}: {exc}); the best/last pointers, index.json or the keep policy may lag "
                "until the next call of this store, which repairs them from the manifests"
            )
            self._log("WARNING", message, logging.WARNING)
            warnings.warn(message, PostCommitWarning, stacklevel=4)
        return checkpoint

    def _commit_by_rename(self, tx: SaveTransaction) -> Checkpoint:
        """Local disk and NFS: fsync everything in ``work/``, then rename it onto ``epochs/NNN``."""
        work = tx.path
        try:
            manifest = self._seal(tx, work)
        except BaseException:
            tx._abort("commit failed before publishing")
            raise
        target = self._epoch_dir(tx.epoch)
        _crash.point("before_rename")
        try:
            self._fs.rename_dir(work, target)  # type: ignore[attr-defined]
        except FileExistsError:
            if not self._committed_by(tx.epoch, manifest.commit_id):
                tx._abort("the epoch was committed by another writer")
                raise CommitConflictError(
                    f"epoch {tx.epoch} was committed by another writer while this one was saving; "
                    "nothing of this save was kept"
                ) from None
        except OSError as exc:
            if not self._committed_by(tx.epoch, manifest.commit_id):
                tx._abort(f"rename failed: {exc}")
                raise CommitFailedError(exc.errno, f"could not publish epoch {tx.epoch}: {exc}") from exc
        self._active_work.discard(work.name)
        tx._work = None
        _crash.point("after_rename")
        return Checkpoint(self, self._epoch_key(tx.epoch), manifest)

    def _commit_by_record(self, tx: SaveTransaction) -> Checkpoint:
        """Object stores: upload what was written into ``tx.path``, then write the manifest create-only."""
        prefix = self._epoch_key(tx.epoch)
        try:
            self._upload_staged(tx, prefix)
            _crash.point("after_files")
            manifest = self._build_manifest(tx)
            with _backend_errors(self._fs, f"commit epoch {tx.epoch}"):
                if not self._holds_claim(tx.epoch):
                    raise CommitConflictError(
                        f"epoch {tx.epoch}: this writer's claim was taken over while it was uploading "
                        "(it was older than work_grace_seconds); nothing of this save was kept"
                    )
                _crash.point("before_rename")
                created = self._fs.create_only(f"{prefix}/{MANIFEST_FILE}", manifest.to_json())
        except BaseException as exc:
            if isinstance(exc, CommitConflictError):
                tx._claimed = False  # the prefix belongs to another writer now: leave it alone
            tx._abort(f"commit failed before publishing: {exc}")
            raise
        if not created and not self._committed_by(tx.epoch, manifest.commit_id):
            tx._claimed = False
            tx._abort("the epoch was committed by another writer")
            raise CommitConflictError(
                f"epoch {tx.epoch} was committed by another writer while this one was saving "
                "(the backend does not enforce create-only claims: single-writer mode)"
            )
        self._confirm_claim_after_commit(tx, prefix, manifest)
        _crash.point("after_rename")
        if tx._work is not None:
            shutil.rmtree(tx._work, ignore_errors=True)
            tx._work = None
        tx._claimed = False
        return Checkpoint(self, prefix, manifest)

    def _confirm_claim_after_commit(self, tx: SaveTransaction, prefix: str, manifest: Manifest) -> None:
        """Check the claim once more after the manifest is written; withdraw the commit if it was taken over.

        gc (or another writer) may take over a claim it judges abandoned between this writer's last
        check and its manifest write, and then delete the files. The taker changes the claim before it
        deletes anything, so a claim that is still ours here means the commit stands; otherwise the
        manifest is withdrawn and the save fails: a writer never reports a commit it cannot vouch for.
        """
        try:
            with _backend_errors(self._fs, f"confirm the commit of epoch {tx.epoch}"):
                if self._holds_claim(tx.epoch):
                    return
                if self._committed_by(tx.epoch, manifest.commit_id):
                    self._fs.delete(f"{prefix}/{MANIFEST_FILE}")
        except StoreUnavailableError as exc:
            raise StoreUnavailableError(
                f"{exc}; epoch {tx.epoch} may or may not be committed: store.get({tx.epoch}) tells once the "
                "backend is back"
            ) from exc
        tx._claimed = False  # the prefix is the taker's now
        tx._abort("the claim was taken over while committing; the manifest was withdrawn")
        raise CommitConflictError(
            f"epoch {tx.epoch}: this writer's claim was taken over (by gc or another writer, because it was older "
            f"than work_grace_seconds={self.config.work_grace_seconds:g}) while it committed; the commit was "
            "withdrawn and nothing of this save was kept. Raise work_grace_seconds above the longest save."
        )

    def _upload_staged(self, tx: SaveTransaction, prefix: str) -> None:
        """Upload the files written into ``tx.path`` in parallel, hashing each in its one read."""
        staged = self._staged_files(tx, tx.path)
        total = sum(path.stat().st_size for _, path in staged)
        bar = make_progress(self.config.progress, total, f"upload epoch {tx.epoch}")

        def upload(item: tuple[str, Path]) -> tuple[str, tuple[int, str]]:
            rel, path = item
            key = f"{prefix}/{rel}"
            fd, _ = open_regular(path, error=UnsafePathError, why="checkpoints hold regular files only")
            with os.fdopen(fd, "rb") as src:
                sink = self._fs.open_write(key)
                try:
                    result = copy_hashing(src, sink, bar)
                except BaseException:
                    discard = getattr(sink, "discard", None)
                    with contextlib.suppress(Exception):
                        discard() if callable(discard) else sink.close()
                    raise
                sink.close()
            return rel, result

        try:
            with (
                _backend_errors(self._fs, f"upload epoch {tx.epoch}"),
                ThreadPoolExecutor(max_workers=TRANSFER_THREADS, thread_name_prefix="ckptstore-put") as pool,
            ):
                results = list(
                    pool.map(
                        lambda item: retry_call(
                            lambda: upload(item), self.config.retry, f"upload {prefix}/{item[0]} to {self.url}"
                        ),
                        staged,
                    )
                )
        finally:
            if bar is not None:
                bar.close()
        for rel, (size, digest) in results:
            tx._entries[rel] = FileEntry(path=rel, size=size, xxh3_128=digest)

    def _staged_files(self, tx: SaveTransaction, work: Path) -> builtins.list[tuple[str, Path]]:
        """The regular files written into ``work`` (not through ``tx.open``), each checked.

        Nothing is opened here: a symlink, FIFO, socket or device anywhere in ``work`` is refused from its
        directory entry (a FIFO would block the read that hashes it forever).
        """
        found: builtins.list[tuple[str, Path]] = []
        for entry in regular_files(work, error=UnsafePathError, why="checkpoints hold regular files only"):
            full = Path(entry.path)
            rel = full.relative_to(work).as_posix()
            if rel in RESERVED_NAMES:
                raise UnsafePathError(f"{rel!r} is reserved for ckptstore's own records")
            check_relpath(rel)
            if rel not in tx._entries:
                found.append((rel, full))
            elif tx._claimed:
                raise UnsafePathError(f"{rel!r} was written both through tx.open() and into tx.path")
        check_file_set([*tx._entries, *(rel for rel, _ in found)])  # before any upload: `a` beside `a/b`, ...
        return found

    def _build_manifest(self, tx: SaveTransaction) -> Manifest:
        names = sorted(tx._entries)
        check_file_set(names)  # `a` beside `a/b`, names not UTF-8: no disk could restore them
        prefix, limit = self._epoch_key(tx.epoch), self._caps.max_key_bytes
        for name in names:
            check_key_length(name, f"{prefix}/{name}", self._fs.key_bytes(f"{prefix}/{name}"), limit)
        serializer = None
        if tx.serializer is not None:
            serializer = {"name": str(tx.serializer.name), "version": str(tx.serializer.version())}
        return Manifest(
            epoch=tx.epoch,
            run_id=self.run_id,
            commit_id=uuid.uuid4().hex,
            writer={"id": self._writer_id, "host": _HOST, "pid": os.getpid()},
            committed_at_ns=time.time_ns(),
            files=tuple(sorted(tx._entries.values(), key=lambda e: e.path)),
            metrics=tx.metrics,
            metadata=tx.metadata,
            step=tx.step,
            batch=tx.batch,
            serializer=serializer,
            framework_versions=_framework_versions(),
            parent=self._parent,
        )

    def _seal(self, tx: SaveTransaction, work: Path) -> Manifest:
        """Hash and fsync every file, then write and fsync the manifest (the commit record)."""
        to_hash = self._staged_files(tx, work)
        dirs = [Path(dirpath) for dirpath, _, _ in os.walk(work)]
        try:
            if to_hash:
                with ThreadPoolExecutor(max_workers=2, thread_name_prefix="ckptstore-seal") as pool:
                    hashed = list(pool.map(lambda item: (item[0], hash_and_sync(item[1])), to_hash))
                for rel, (size, digest) in hashed:
                    tx._entries[rel] = FileEntry(path=rel, size=size, xxh3_128=digest)
            _crash.point("after_files")
            manifest = self._build_manifest(tx)
            LocalBackend._write_new(work / MANIFEST_FILE, manifest.to_json())
            for directory in reversed(dirs):
                LocalBackend.fsync_dir(directory)
        except OSError as exc:
            raise CommitFailedError(exc.errno, f"could not write epoch {tx.epoch}: {exc}") from exc
        _crash.point("after_manifest")
        return manifest

    def _committed_by(self, epoch: int, commit_id: str) -> bool:
        """True if ``epoch`` holds this very commit (an NFS rename or a PUT whose reply was lost)."""
        try:
            raw = self._fs.read_bytes(f"{self._epoch_key(epoch)}/{MANIFEST_FILE}")
            return Manifest.from_json(raw).commit_id == commit_id
        except (OSError, ManifestError):
            return False

    def _after_commit(self, checkpoint: Checkpoint, decision: SaveDecision) -> None:
        self._repair_if_stale()
        with _backend_errors(self._fs, f"update pointers after epoch {checkpoint.epoch}"), self._pointer_lock():
            self._pointers.advance_last(checkpoint.epoch)
            _crash.point("after_last")
            self._pointers.offer_best(checkpoint)
            self._index.update(add=[checkpoint])
        _crash.point("after_pointers")
        if self.config.gc_on_save and self.config.keep is not None:
            self.gc()

    # -- pointers and the index ---------------------------------------------------------------------
    def _pointer_lock(self) -> contextlib.AbstractContextManager[None]:
        """The store's record lock (see :class:`~ckptstore._boundary.RecordLock`)."""
        return self._record_lock()

    def recorded_monitor(self) -> tuple[str, Mode] | None:
        """The metric and mode that define ``best`` in this store (recorded in ``ckptstore.json``), or None."""
        if self.config.monitor is None:
            return None
        return self.config.monitor, self.mode

    def reindex(self) -> dict[str, Any]:
        """Rebuild ``index.json`` from the manifests (it is a cache; this is always safe).

        Returns:
            The rebuilt index.
        """
        self._check_writable()
        with _backend_errors(self._fs, "rebuild the index"), self._pointer_lock():
            record = self._index.update(rebuild=True)
        self._log("REINDEX", f"{len(record.get('checkpoints', {}))} checkpoint(s)")
        return record

    def index(self) -> dict[str, Any]:
        """The current ``index.json`` (rebuilt in memory from the manifests if it is missing or invalid)."""
        return self._index.document()

    def _update_metadata(
        self, checkpoint: Checkpoint, change: Callable[[dict[str, Any]], dict[str, Any]], what: str
    ) -> dict[str, Any]:
        """Apply ``change`` to a checkpoint's ``METADATA.json`` by compare-and-swap, then to the index."""
        self._check_writable()
        key = f"{checkpoint.key}/{METADATA_FILE}"
        with _backend_errors(self._fs, f"update metadata of epoch {checkpoint.epoch}"), self._pointer_lock():
            for _attempt in range(CAS_ATTEMPTS):
                current, version, exists = checkpoint._read_metadata()
                updated = check_metadata(change(dict(current)))
                if self._fs.write_if(key, json.dumps(updated, indent=1).encode(), version if exists else None):
                    break
            else:
                raise CommitFailedError(errno.EAGAIN, f"could not update metadata of epoch {checkpoint.epoch}")
            if not self._fs.exists(f"{checkpoint.key}/{MANIFEST_FILE}"):  # deleted meanwhile: leave nothing
                self._fs.delete(key)
                raise CheckpointNotFoundError(f"epoch {checkpoint.epoch} was deleted while its metadata changed")
            self._index.update(metadata={checkpoint.name: updated})
        checkpoint._metadata = updated
        self._log("METADATA", f"epoch {checkpoint.epoch}: {what}")
        return updated

    # -- reading ------------------------------------------------------------------------------------
    def _scan(self, *, use_index: bool = True) -> tuple[list[Checkpoint], list[tuple[str, Exception]]]:
        """Every committed checkpoint, and folders under ``epochs/`` that are not valid ones (see Manifests.scan)."""
        return self._manifests.scan(self._index.entries() if use_index else None)

    def get(self, epoch: int, *, verify: bool = False) -> Checkpoint:
        """Return the committed checkpoint of ``epoch``.

        Args:
            epoch: The epoch.
            verify: Re-hash its files before returning.

        Raises:
            CheckpointNotFoundError: no such checkpoint.
            VerificationError: its manifest is invalid (or, with ``verify``, a file is wrong).
        """
        checkpoint = self._manifests.get(epoch)
        return checkpoint.verify() if verify else checkpoint

    def list(
        self,
        sort_by: str | None = None,
        order: Literal["asc", "desc"] | None = None,
        limit: int | None = None,
    ) -> builtins.list[Checkpoint]:
        """Committed checkpoints, sorted (Determined's ``list_checkpoints``).

        Costs one listing of ``epochs/`` and one read of ``index.json``, however many checkpoints
        there are.

        Args:
            sort_by: ``"epoch"``, ``"time"`` (commit time), or a metric name (save-time metrics and
                those recorded by :meth:`evaluate`). None: the store's monitor, best first; a store
                without a monitor sorts by epoch.
            order: ``"asc"`` or ``"desc"``. None: best first for a metric (by the store's mode for its
                monitor, else by the metric's name: ``acc`` and friends descending), ascending for
                ``epoch`` and ``time``.
            limit: At most this many (Determined's ``max_results``).

        Returns:
            The checkpoints; those without the metric come last, by epoch.

        Raises:
            InvalidArgumentError: bad ``order`` or a negative ``limit``.
            InvalidArgumentTypeError: ``limit`` is not an int or ``sort_by`` not a string.
        """
        sort_by = check_optional_text("sort_by", sort_by)
        if order not in (None, "asc", "desc"):
            raise InvalidArgumentError(f"order must be 'asc' or 'desc', got {order!r}")
        if limit is not None:
            limit = check_count("limit", limit)
        checkpoints = sorted(self._scan()[0], key=lambda c: c.epoch)
        key = sort_by if sort_by is not None else self.config.monitor or "epoch"
        if key == "epoch":
            result = checkpoints if order != "desc" else checkpoints[::-1]
        elif key == "time":
            result = sorted(checkpoints, key=lambda c: (c.manifest.committed_at_ns, c.epoch), reverse=order == "desc")
        else:
            mode = self.mode if key == self.config.monitor else resolve_mode(key, "auto")
            direction = order or ("asc" if mode == "min" else "desc")
            result = ordered(checkpoints, by=lambda c: c.all_metrics.get(key), order=direction)
        return result if limit is None else result[:limit]

    def top(self, n: int, metric: str | None = None) -> builtins.list[Checkpoint]:
        """The best ``n`` checkpoints by the store's monitor (or ``metric``), best first.

        Raises:
            InvalidArgumentError: no monitor and no ``metric``, or a negative ``n``.
            InvalidArgumentTypeError: ``n`` is not an int or ``metric`` not a string.
        """
        n = check_count("top() n", n)
        metric = check_optional_text("metric", metric) or self.config.monitor
        if metric is None:
            raise InvalidArgumentError("top() needs a metric: pass metric= or open the store with monitor=")
        return [c for c in self.list(sort_by=metric) if metric in c.all_metrics][:n]

    def epochs(self) -> builtins.list[int]:
        """The committed epochs, ascending."""
        return sorted(c.epoch for c in self._scan()[0])

    # -- finding, evaluating, fetching ----------------------------------------------------------------
    def _committed_files(self) -> tuple[dict[str, tuple[int, int]], dict[str, int]]:
        """Files of committed checkpoints and files outside ckptstore's own folders: path -> (size, mtime)."""
        committed = {c.name: c.epoch for c in self._scan()[0]}
        files: dict[str, tuple[int, int]] = {}
        owner: dict[str, int] = {}
        with _backend_errors(self._fs, "list files"):
            stats = self._fs.stat_files("")
        for path, stat in stats.items():
            parts = path.split("/")
            if parts[0] == "epochs":
                if len(parts) < 3 or parts[1] not in committed or parts[-1] in RESERVED_NAMES:
                    continue
                owner[path] = committed[parts[1]]
            elif parts[0] in _INTERNAL_FOLDERS or path in _INTERNAL_FILES or parts[0] in POINTER_NAMES:
                continue
            files[path] = stat
        return files, owner

    def resolve_latest(self, pattern: str | re.Pattern[str]) -> FileMatch:
        """The newest file in the store matching a Keras template, glob or regex (see :func:`ckptstore.resolve_latest`).

        Searches the files of committed checkpoints and files placed in the store by other tools;
        never ckptstore's own records or uncommitted saves.

        Raises:
            CheckpointNotFoundError: no file matches.
        """
        files, owner = self._committed_files()
        return latest_match(self._fs, files, pattern, owner)

    def _select(self, regex: str | re.Pattern[str], mode: str) -> FileMatch:
        files, owner = self._committed_files()
        return value_match(self._fs, files, regex, mode, owner)

    def select_min(self, regex: str | re.Pattern[str]) -> FileMatch:
        """Guild's select-min over the store's files: the smallest number in the regex's first group."""
        return self._select(regex, "min")

    def select_max(self, regex: str | re.Pattern[str]) -> FileMatch:
        """Guild's select-max over the store's files: the largest number in the regex's first group."""
        return self._select(regex, "max")

    def evaluate(
        self,
        fn: Callable[[Any], Any],
        metric: str = "test_acc",
        mode: Literal["min", "max", "auto"] = "max",
        *,
        load: bool = True,
        serializer: str | Serializer | None = None,
    ) -> builtins.list[tuple[Checkpoint, float]]:
        """Evaluate every checkpoint with ``fn``, record the result as metadata, and rank them.

        The loop of the TensorFlow post (seed 001) done once, right: each checkpoint is verified first
        (one that fails is skipped, logged and warned about, never evaluated), ``fn`` gets the loaded
        state (``load=True``, with the recorded or given serializer) or a verified local directory,
        and its result is stored under ``metadata["evaluation"][metric]`` without touching the commit
        record, so ``store.best(metric=metric)`` and ``store.list(sort_by=metric)`` use it.

        Args:
            fn: Returns the metric as a number (or a mapping holding ``metric``).
            metric: The name to record the result under.
            mode: Which end is best for the ranking.
            load: Pass the loaded state (True) or a local path (False).
            serializer: Override the recorded serializer.

        Returns:
            ``(checkpoint, value)`` pairs, best first.

        Raises:
            InvalidMetricError: ``fn`` returned something that is not a finite number.
        """
        resolved = resolve_mode(metric, mode)
        results: builtins.list[tuple[Checkpoint, float]] = []
        for checkpoint in self.list(sort_by="epoch"):
            try:  # verified in the same read that loads or downloads it
                if load:
                    outcome = fn(checkpoint.load(serializer))
                else:
                    with checkpoint.local_path() as path:
                        outcome = fn(path)
            except VerificationError as exc:
                self._log(
                    "EVALUATE", f"epoch {checkpoint.epoch} skipped: it fails verification: {exc}", logging.WARNING
                )
                warnings.warn(f"epoch {checkpoint.epoch} skipped: {exc}", stacklevel=2)
                continue
            if isinstance(outcome, Mapping):
                outcome = outcome.get(metric)
            value = check_metrics({metric: outcome})[metric]
            evaluation = checkpoint.metadata.get(EVALUATION_KEY)
            merged = {**(evaluation if isinstance(evaluation, dict) else {}), metric: value}
            checkpoint.add_metadata({EVALUATION_KEY: merged})
            self._log("EVALUATE", f"epoch {checkpoint.epoch} {metric}={value:.6g}")
            results.append((checkpoint, value))
        results.sort(key=lambda item: (item[1], item[0].epoch), reverse=resolved == "max")
        return results

    def download(
        self,
        dest: str | os.PathLike[str],
        which: Literal["best", "latest"] | int = "best",
        *,
        top_n: int | None = None,
        metric: str | None = None,
        progress: ProgressOption = None,
    ) -> builtins.list[Path]:
        """Download checkpoints into ``dest/<epoch>/``, verified while reading (Determined's download).

        Args:
            dest: The parent directory.
            which: ``"best"``, ``"latest"`` or an epoch.
            top_n: Download the best ``top_n`` instead (by ``metric`` or the monitor).
            metric: The metric for ``best`` and ``top_n``.
            progress: See :meth:`Checkpoint.download`.

        Returns:
            The directories written, in the order chosen.
        """
        if top_n is not None:
            chosen = self.top(top_n, metric)
        elif which == "best":
            chosen = [self.best(metric)]
        elif which == "latest":
            chosen = [self.latest()]
        elif isinstance(which, int) and not isinstance(which, bool):
            chosen = [self.get(which)]
        else:
            raise InvalidArgumentError(f"which must be 'best', 'latest' or an epoch, got {which!r}")
        return [c.download(Path(dest) / c.name, progress=progress) for c in chosen]

    def __iter__(self) -> Iterator[Checkpoint]:
        return iter(self.list(sort_by="epoch"))

    def __len__(self) -> int:
        return len(self._scan()[0])

    def __contains__(self, epoch: object) -> bool:
        if isinstance(epoch, bool) or not isinstance(epoch, int) or epoch < 0:
            return False
        return self._fs.exists(f"{self._epoch_key(epoch)}/{MANIFEST_FILE}")

    def latest(self) -> Checkpoint:
        """The most recent checkpoint: the ``last`` pointer, else the highest committed epoch.

        The ``last`` pointer if its target has a valid manifest (no re-hash) and no higher epoch is
        committed; otherwise the highest committed epoch, the rule the pointer itself follows, so the
        answer never depends on the writers' clocks. A missing, dangling or stale pointer is repaired.

        Raises:
            CheckpointNotFoundError: the store holds no checkpoint.
        """
        self._repair_if_stale()
        pointed = self._pointers.checkpoint("last")
        newer = self._manifests.highest_above(pointed.epoch if pointed is not None else -1)
        if newer is None:
            if pointed is None:
                raise CheckpointNotFoundError(f"the store at {self.url} holds no checkpoint")
            return pointed
        # No pointer, or a writer died between its commit and its pointer update: repair it.
        self._repair("last", newer.epoch, stale=pointed is not None)
        return newer

    def best(self, metric: str | None = None, mode: str | None = None) -> Checkpoint:
        """The best checkpoint by the store's monitor (or by ``metric``).

        Args:
            metric: Another metric than the store's monitor.
            mode: ``min``/``max``/``auto`` for ``metric`` (default: the store's mode for its
                monitor, else auto).

        Raises:
            InvalidArgumentError: neither a monitor nor ``metric``.
            CheckpointNotFoundError: no checkpoint has the metric.
        """
        self._repair_if_stale()
        monitor = metric or self.config.monitor
        if monitor is None:
            raise InvalidArgumentError("best() needs a metric: pass metric= or open the store with monitor=")
        if mode is not None:
            resolved = resolve_mode(monitor, mode)
        elif monitor == self.config.monitor:
            resolved = self.mode
        else:
            resolved = resolve_mode(monitor, "auto")
        if monitor == self.config.monitor and resolved == self.mode:
            pointed = self._pointers.checkpoint("best")
            if pointed is not None and monitor in pointed.metrics:
                return pointed
        scored = [c for c in self._scan()[0] if monitor in c.all_metrics]
        if not scored:
            raise CheckpointNotFoundError(f"no checkpoint in {self.url} has the metric {monitor!r}")
        winner = best_of(scored, lambda c: c.all_metrics[monitor], resolved)
        if monitor == self.config.monitor and resolved == self.mode:
            self._repair("best", winner.epoch)
        return winner

    def _repair(self, name: str, epoch: int, *, stale: bool = False) -> None:
        if self._writable:
            self._pointers.repair(name, epoch, stale=stale)

    # -- restart and rollback -----------------------------------------------------------------------
    def restart(
        self, mode: Literal["auto", "required", "off"] = "auto", *, verify: bool | None = None
    ) -> Checkpoint | None:
        """Find the checkpoint to resume from (CANDLE's ``restart_mode``).

        ``auto`` returns the newest checkpoint that verifies, or None on an empty store;
        ``required`` raises instead of returning None; ``off`` returns None. Corrupt checkpoints
        newer than the one returned are moved out of ``epochs/`` (into ``retired/``, kept until gc),
        so the resumed run can write those epochs again; each is logged with the reason. Later saves
        record the returned epoch as their parent.

        Raises:
            CheckpointNotFoundError: ``required`` and no checkpoint verifies.
            InvalidArgumentError: unknown mode.
        """
        if mode not in ("auto", "required", "off"):
            raise InvalidArgumentError(f"restart mode must be 'auto', 'required' or 'off', got {mode!r}")
        if mode == "off":
            self._log("RESTART", "restart_mode=off: starting from scratch")
            return None
        check = self.config.verify_on_load if verify is None else verify
        self.wait()
        # Decided from the manifests only (index.json is a cache and may lie): the listing of epochs/,
        # highest first -- the rule the last pointer follows -- each candidate read from its own manifest.
        with _backend_errors(self._fs, "list checkpoints"):
            names = sorted((n for n in self._fs.listdir("epochs") if n.isdigit()), key=int, reverse=True)
        failed: builtins.list[tuple[str, Exception]] = []
        chosen: Checkpoint | None = None
        for name in names:
            key = f"epochs/{name}"
            try:
                candidate = Checkpoint(self, key, self._manifests.read(key))
                chosen = candidate.verify() if check else candidate
                break
            except CheckpointNotFoundError:
                continue  # object stores: a save in progress (no manifest yet), or deleted meanwhile
            except VerificationError as exc:
                failed.append((key, exc))
                self._log("VERIFY", f"epoch {int(name)} fails verification, skipped: {exc}", logging.WARNING)
        if chosen is None:
            if mode == "required":
                raise CheckpointNotFoundError(f"restart_mode=required but no checkpoint in {self.url} verifies")
            self._log("RESTART", "no valid checkpoint: starting from scratch")
            return None
        if self._writable:
            with _backend_errors(self._fs, "retire corrupt checkpoints"), self._pointer_lock():
                for key, _problem in failed:  # all newer than the chosen one, by construction
                    try:
                        self._retire(key, "corrupt")
                    except UnsafeEntryError as exc:  # a symlinked epoch: never moved or deleted through
                        self._log("RETIRE", f"{key} left in place: {exc}", logging.WARNING)
                if failed or self._pointers.read("last") != chosen.epoch:
                    self._pointers.write("last", chosen.epoch)
                self._recompute_best()
                self._caches_stale = False
        self._parent = chosen.epoch
        self._log("RESTART", f"resuming from epoch {chosen.epoch}")
        return chosen

    def _retire(self, key: str, why: str) -> None:
        """Take an epoch out of ``epochs/`` in one step so its number can be written again.

        Locally it is renamed into ``retired/`` (kept until the next gc); on object stores, where a
        copy would cost a full upload, its manifest is deleted (it stops being a checkpoint) and
        then its files.
        """
        name = _tail(key)
        if name.isdigit():  # index first, as in gc
            self._index.update(remove={int(name): f"retired ({why})"})
        if self._caps.atomic_rename:
            dest = self.root / "retired" / f"{name}.{why}.{uuid.uuid4().hex[:8]}"
            with contextlib.suppress(FileNotFoundError):
                self._fs.rename_dir(self._fs.local_path(key), dest)  # type: ignore[attr-defined]
                self._log("RETIRE", f"{name} -> retired/{dest.name} ({why})")
        else:
            self._fs.delete(f"{key}/{MANIFEST_FILE}")
            self._fs.delete_tree(key, last=[CLAIM_FILE])
            self._log("RETIRE", f"{name} deleted ({why}; object stores keep no retired copy)")
        if name.isdigit():  # the pin goes with its checkpoint
            self._pointers.unpin(int(name), " (retired)")

    def _recompute_best(self) -> None:
        self._pointers.recompute_best(self._scan()[0])

    def rollback(self, epoch: int, *, verify: bool = True) -> Checkpoint:
        """Re-point ``last`` to ``epoch`` and retire every later epoch.

        Later epochs are moved out of ``epochs/`` into ``retired/`` (kept until the next gc), so a
        resumed run can write those epoch numbers again. ``best`` is recomputed from what remains.

        Raises:
            CheckpointNotFoundError: no such epoch.
            VerificationError: it does not verify (pass ``verify=False`` to roll back anyway).
        """
        self.wait()
        self._check_writable()
        target = self.get(epoch, verify=verify)
        with _backend_errors(self._fs, "roll back"), self._pointer_lock():
            for name in self._fs.listdir("epochs"):
                if name.isdigit() and int(name) > target.epoch:
                    self._retire(f"epochs/{name}", f"rollback-to-{target.epoch}")
            self._pointers.write("last", target.epoch)
            self._recompute_best()
        self._parent = target.epoch
        self._log("ROLLBACK", f"last -> epoch {target.epoch}")
        return target

    # -- pins ---------------------------------------------------------------------------------------
    def pin(self, epoch: int) -> None:
        """Protect ``epoch`` from every keep policy and gc until :meth:`unpin`.

        Raises:
            CheckpointNotFoundError: no such epoch.
        """
        self._check_writable()
        self._pointers.pin(self.get(epoch))

    def unpin(self, epoch: int) -> None:
        """Remove the protection of :meth:`pin` (no error if it was not pinned)."""
        self._check_writable()
        self._pointers.unpin(check_epoch(epoch, self.width))

    def pinned(self) -> builtins.list[int]:
        """The pinned epochs."""
        return self._pointers.pinned()

    # -- keep policy and garbage collection ----------------------------------------------------------

    def gc(self, *, dry_run: bool = False) -> GcReport:
        """Apply the keep policy and remove leftovers.

        Deletes this run's checkpoints that the keep policy does not keep (never best, last, pinned
        or another run's), staging directories of writers that are gone, retired epochs and trash.
        Each checkpoint disappears in one step (a rename into ``trash/``) before its files are
        removed. ``dry_run=True`` only reports.

        Returns:
            A :class:`GcReport` with keep/delete and the reason for every checkpoint.
        """
        if not dry_run:
            self._check_writable()
        with self._lock:
            if not dry_run:
                self._repair_if_stale()
            checkpoints = {c.epoch: c for c in self.list(sort_by="epoch")}
            confirmed: set[int] = set()
            while True:  # plan from the index (cheap), then confirm every deletion from its manifest
                decisions = self._plan_gc(builtins.list(checkpoints.values()))
                doubtful = [d.epoch for d in decisions if d.action == "delete" and d.epoch not in confirmed]
                if not doubtful:
                    break
                fresh = self._confirm([checkpoints[e] for e in doubtful])
                for epoch in doubtful:
                    confirmed.add(epoch)
                    found = fresh[epoch]
                    if found is None:
                        del checkpoints[epoch]  # gone meanwhile, or no valid manifest: not gc's to decide
                    else:
                        checkpoints[epoch] = found
            leftovers = self._leftovers()
            if dry_run:
                return GcReport(decisions=tuple(decisions), leftovers=tuple(leftovers), dry_run=True)
            with _backend_errors(self._fs, "collect garbage"):
                deleted = {d.epoch: d.reason for d in decisions if d.action == "delete"}
                if deleted:
                    with self._pointer_lock():  # serialized with commits, pins and every index update
                        protected = self._pointers.protected()  # a pin or pointer that moved since the plan wins
                        deleted = {e: why for e, why in deleted.items() if e not in protected}
                        # The index first: a crash after it leaves unindexed checkpoints, read from their
                        # manifests, never an entry without one.
                        self._index.update(remove=deleted, prune=True)
                        for epoch, reason in deleted.items():
                            self._delete(epoch, reason)
                for rel, why in leftovers:
                    if self._remove_leftover(rel):
                        self._log("GC", f"removed {rel} ({why})")
            decisions = [
                d
                if d.action != "delete" or d.epoch in deleted
                else GcDecision(epoch=d.epoch, action="keep", reason="protected since the plan")
                for d in decisions
            ]
            return GcReport(decisions=tuple(decisions), leftovers=tuple(leftovers), dry_run=False)

    def _plan_gc(self, checkpoints: builtins.list[Checkpoint]) -> builtins.list[GcDecision]:
        """Keep or delete for each checkpoint; the best by the monitor is protected besides the pointer."""
        infos = [
            CheckpointInfo(
                epoch=c.epoch,
                metrics=c.metrics,
                run_id=c.run_id,
                committed_at_ns=c.manifest.committed_at_ns,
                size=c.size,
            )
            for c in sorted(checkpoints, key=lambda c: c.epoch)
        ]
        protected = self._pointers.protected()
        if self._parent is not None:
            protected.setdefault(self._parent, "this run resumed from it")
        monitor = self.config.monitor
        scored = [c for c in checkpoints if monitor is not None and monitor in c.metrics]
        if monitor is not None and scored:
            sign = 1 if self.mode == "min" else -1
            winner = min(scored, key=lambda c: (sign * c.metrics[monitor], c.epoch)).epoch
            protected.setdefault(winner, "best")  # even when the best pointer is stale or missing
        return plan_gc(infos, self._keep, run_id=self.run_id, protected=protected, monitor=monitor, mode=self.mode)

    def _confirm(self, checkpoints: Iterable[Checkpoint]) -> dict[int, Checkpoint | None]:
        """Re-read each checkpoint from its own manifest; repair index entries that disagree with it.

        Returns:
            ``{epoch: checkpoint from its manifest, or None if it has no valid manifest}``.
        """
        fresh, differ = self._manifests.confirm(checkpoints)
        for c in differ:
            self._log("REPAIR", f"index.json entry of epoch {c.epoch} disagreed with its manifest", logging.WARNING)
        if differ and self._writable:
            with contextlib.suppress(OSError, CkptStoreError):
                self._index.update(add=differ)
        return fresh

    def _repair_if_stale(self) -> None:
        """After a failure past a commit point: rebuild the index and the pointers from the manifests."""
        if not self._caches_stale or not self._writable:
            return
        try:
            with self._pointer_lock():
                self._index.update(rebuild=True)
                newest = self._manifests.highest_above(-1)
                if newest is not None:
                    self._pointers.advance_last(newest.epoch)
                self._recompute_best()
        except (OSError, CkptStoreError) as exc:
            logger.warning("%s: pointers and index.json still need a repair: %s", self.url, exc)
            return
        self._caches_stale = False
        self._log("REPAIR", "pointers and index.json rebuilt from the manifests after an earlier failure")

    def _remove_leftover(self, rel: str) -> bool:
        if rel.startswith("upload:"):
            key, _, upload_id = rel[len("upload:") :].rpartition("#")
            self._fs.abort_upload(PendingUpload(key=key, upload_id=upload_id, initiated_ns=0))
            return True
        if not self._caps.atomic_rename:
            return self._reap(_tail(rel))
        path = self.root / rel
        if rel.startswith(("work/", "retired/")):
            trash = self.root / "trash" / f"{path.name}.{uuid.uuid4().hex[:8]}"
            with contextlib.suppress(FileNotFoundError):
                self._fs.rename_dir(path, trash)  # type: ignore[attr-defined]
                path = trash
        return self._fs.delete_tree(path.relative_to(self.root).as_posix())

    def _delete(self, epoch: int, reason: str) -> None:
        """Delete one checkpoint: it stops existing in one step, then its files go."""
        key = self._epoch_key(epoch)
        if self._caps.atomic_rename:
            trash = f"trash/{self._name(epoch)}.{uuid.uuid4().hex[:8]}"
            try:
                self._fs.rename_dir(self._epoch_dir(epoch), self.root / trash)  # type: ignore[attr-defined]
            except FileNotFoundError:
                return
        else:
            trash = key
            self._fs.delete(f"{key}/{MANIFEST_FILE}")
        _crash.point("gc_after_trash")
        self._stats["deleted"] += 1
        self._log("DELETE", f"epoch {epoch}: {reason}")
        self._fs.delete_tree(trash, last=[CLAIM_FILE])

    def _leftovers(self) -> builtins.list[tuple[str, str]]:
        if not self._caps.atomic_rename:
            return self._object_leftovers()
        found: builtins.list[tuple[str, str]] = []
        now = time.time()
        for name in self._fs.listdir("work"):  # a symlinked work/, retired/ or trash/ is refused here
            if name in self._active_work:
                continue
            why = self._abandoned(name, f"work/{name}", now)
            if why:
                found.append((f"work/{name}", why))
        for folder, why in (
            ("retired", "retired by rollback or restart"),
            ("trash", "deleted checkpoint not yet fully removed"),
        ):
            for name in self._fs.listdir(folder):
                with contextlib.suppress(FileNotFoundError):  # a symlink or special file: refused before gc
                    self._fs.entry_stat(f"{folder}/{name}")  # type: ignore[attr-defined]  # removes anything
                    found.append((f"{folder}/{name}", why))
        return found

    def _object_leftovers(self) -> builtins.list[tuple[str, str]]:
        """Claimed folders without a manifest whose writer is gone, and their unfinished uploads."""
        found: builtins.list[tuple[str, str]] = []
        now = time.time_ns()
        with _backend_errors(self._fs, "look for leftovers"):
            committed = {c.name for c in self._scan()[0]}  # the index: no manifest read per checkpoint
            names = [n for n in self._fs.listdir("epochs") if n.isdigit()]
            pending = [n for n in names if n not in committed]
            claims = self._fs.read_many(f"epochs/{n}/{CLAIM_FILE}" for n in pending)
            abandoned: set[str] = set()
            for name in pending:
                raw = claims.get(f"epochs/{name}/{CLAIM_FILE}")
                if raw is None:
                    if not self._fs.walk(f"epochs/{name}"):
                        continue  # an empty folder marker (servers with real directories keep them)
                    why: str | None = "files without a claim or a manifest (an interrupted delete)"
                else:
                    why = self._claim_abandoned(_parse_json(raw), now, for_gc=True)
                if why is not None:
                    abandoned.add(name)
                    found.append((f"epochs/{name}", f"uncommitted save: {why}"))
            grace_ns = int(self.config.work_grace_seconds * 1e9)
            for upload in self._fs.pending_uploads("epochs"):
                epoch_name = upload.key.split("/")[1] if upload.key.count("/") >= 2 else ""
                if epoch_name in abandoned:
                    why = "its save was abandoned"
                elif epoch_name in committed:
                    why = "its checkpoint is committed without it"
                elif now - upload.initiated_ns > grace_ns:
                    why = f"started {(now - upload.initiated_ns) / 1e9:.0f}s ago"
                else:
                    continue
                found.append((f"upload:{upload.key}#{upload.upload_id}", f"unfinished multipart upload: {why}"))
        return found

    def _abandoned(self, name: str, rel: str, now: float) -> str | None:
        try:  # a symlink or special file is refused, never followed
            mtime: float = self._fs.entry_stat(rel).st_mtime  # type: ignore[attr-defined]
        except FileNotFoundError:
            return None
        parts = name.split(".")
        if len(parts) >= 3 and parts[-3].isdigit():
            host, pid = ".".join(parts[:-3]), int(parts[-3])
            if host == _HOST:
                if pid == os.getpid():
                    return "staging directory of an earlier store in this process"
                if not _pid_alive(pid):
                    return f"staging directory of process {pid}, which is gone"
                return None
        age = now - mtime
        if age > self.config.work_grace_seconds:
            return f"staging directory untouched for {age:.0f}s (grace {self.config.work_grace_seconds:.0f}s)"
        return None

    # -- verification and reporting ------------------------------------------------------------------
    def verify(self, epoch: int | None = None) -> builtins.list[Checkpoint]:
        """Re-hash one checkpoint (``epoch``) or all of them.

        Returns:
            The checkpoints that verified.

        Raises:
            VerificationError: the first failure (``ChecksumMismatchError`` naming the file, ...);
                every failure is logged.
        """
        if epoch is not None:
            return [self.get(epoch, verify=True)]
        good, bad = self._scan()
        failures: builtins.list[Exception] = [exc for _, exc in bad]
        verified = []
        fresh = self._confirm(good)  # what the manifests say, never what the index says
        for listed in sorted(good, key=lambda c: c.epoch):
            try:
                checkpoint = fresh[listed.epoch] or self.get(listed.epoch)
                verified.append(checkpoint.verify())
            except CheckpointNotFoundError:
                continue  # deleted since the listing
            except VerificationError as exc:
                failures.append(exc)
                self._log("VERIFY", f"epoch {listed.epoch} failed: {exc}", logging.WARNING)
        if failures:
            first = failures[0]
            if len(failures) > 1:
                raise type(first)(f"{first} (and {len(failures) - 1} more failure(s); see ckpt.log)") from first
            raise first
        return verified

    def report(self, *, file: IO[str] | None = None) -> dict[str, Any]:
        """Print (to ``file``, default stdout; pass ``False``-y to skip) and return a summary.

        It covers what the store holds (count, size, best, last, pinned) and what this process did
        (saves, bytes, seconds, skipped, deleted).
        """
        checkpoints = self.list(sort_by="epoch")
        summary: dict[str, Any] = {
            "url": self.url,
            "checkpoints": len(checkpoints),
            "total_size": sum(c.size for c in checkpoints),
            "last": self._pointers.read("last"),
            "best": self._pointers.read("best"),
            "monitor": self.config.monitor,
            "pinned": self.pinned(),
            "this_process": dict(self._stats),
        }
        if file is not None:
            print(stats_text(self.url, summary, self._stats), file=file)
        return summary

    def marks(self) -> dict[int, builtins.list[str]]:
        """The epochs that carry a mark: ``best``, ``last``, ``pinned`` (read once from the pointers and pins)."""
        last, best, pins = self._pointers.read("last"), self._pointers.read("best"), set(self.pinned())
        marks: dict[int, builtins.list[str]] = {}
        for epoch in sorted({e for e in (last, best) if e is not None} | pins):
            marks[epoch] = [
                m for m, on in (("best", epoch == best), ("last", epoch == last), ("pinned", epoch in pins)) if on
            ]
        return marks

    def table(self) -> str:
        """A plain-text table of every checkpoint with best, last and pinned marked."""
        return render_table(self.list(sort_by="epoch"), self.marks())


def _tail(key: str) -> str:
    return key.rstrip("/").rsplit("/", 1)[-1]


def _age(info: Mapping[str, Any]) -> str:
    claimed = info.get("claimed_at_ns")
    if not isinstance(claimed, int):
        return "an unknown time"
    return f"{(time.time_ns() - claimed) / 1e9:.0f}s"


_CLAIMS_LOCK = threading.Lock()
_CLAIMING: weakref.WeakSet[SaveTransaction] = weakref.WeakSet()
"""Transactions of this process that hold (or held) a claim; a claim is in flight while ``_claimed``."""


def _claim_in_flight(writer: object, epoch: object) -> bool:
    """True if a save of this process still holds the claim of ``writer`` on ``epoch``."""
    with _CLAIMS_LOCK:
        return any(t._claimed and t._store._writer_id == writer and t.epoch == epoch for t in list(_CLAIMING))


def _framework_versions() -> dict[str, str]:
    versions = {"python": platform.python_version()}
    for name in ("numpy", "torch", "keras", "jax", "safetensors"):
        module = sys.modules.get(name)
        version = getattr(module, "__version__", None)
        if isinstance(version, str):
            versions[name] = version
    from ._version import __version__

    versions["ckptstore"] = __version__
    return versions


def open_store(
    url: str | os.PathLike[str],
    *,
    create: bool = True,
    storage_options: Mapping[str, Any] | None = None,
    **options: Any,
) -> CheckpointStore:
    """Open (or create) the store at ``url``.

    Args:
        url: A local path, ``file://``, ``s3://bucket/prefix``, ``gs://bucket/prefix``,
            ``memory://name`` or any other fsspec URL (see the backend pages of the docs).
        create: Create the store if missing (default True).
        storage_options: Options for the fsspec filesystem: endpoint, credentials, ... (S3 also
            reads the usual ``AWS_*`` variables, GCS ``GOOGLE_APPLICATION_CREDENTIALS``).
        **options: The fields of :class:`StoreConfig` (``keep``, ``monitor``, ``mode``, ...).

    Raises:
        UnsupportedURLError: no backend serves the URL's scheme, the URL names an invalid bucket, or
            it carries credentials or a query string where none can go (messages show it redacted).
        BackendUnavailableError: the backend's package is missing (names the extra to install).
        BackendAuthError: the backend refused the credentials, found none, or could not read them.
        StoreUnavailableError: the backend, or the token endpoint of its credentials, did not answer.
        StoreNotWritableError: a new store cannot be written there (read-only file system or server).
        InvalidArgumentError: an option is out of range; nothing was written.
        InvalidArgumentTypeError: the URL, or an option, is unknown or of the wrong type (also a ``TypeError``).
    """
    fields = attrs.fields_dict(StoreConfig)
    unknown = sorted(name for name in options if name not in fields)
    if unknown:
        raise InvalidArgumentTypeError(
            f"unknown option(s) for ckptstore.open: {', '.join(unknown)}; the options are create, storage_options, "
            f"{', '.join(fields)}"
        )
    if not isinstance(create, bool):
        raise InvalidArgumentTypeError(f"option create must be True or False, got {create!r}")
    try:
        config = StoreConfig(**options)
    except CkptStoreError:
        raise
    except TypeError as exc:
        raise InvalidArgumentTypeError(f"mistyped option for ckptstore.open: {exc}") from None
    except (ValueError, ArithmeticError) as exc:
        raise InvalidArgumentError(f"invalid option for ckptstore.open: {exc}") from None
    return CheckpointStore(url, config, create=create, storage_options=storage_options)
