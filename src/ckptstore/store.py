"""CheckpointStore: save, keep, find, verify and restart from checkpoints.

The store owns everything around a framework's serializer. Its promises (DESIGN.md section 3):

* a checkpoint becomes visible in one atomic step, whole or not at all, even after ``kill -9`` or a
  power cut: files are written and fsynced in a private ``work/<writer-id>`` directory, the manifest
  is written and fsynced last, and the directory is renamed onto ``epochs/NNNNNNNN``, which must not
  exist, before ``epochs/`` itself is fsynced;
* nothing committed is overwritten: saving an existing epoch raises ``CommitConflictError``;
* the ``best`` and ``last`` pointers are replaced atomically, only after the commit, ``last`` only
  moves forward (except through :meth:`CheckpointStore.rollback`), and both are repaired from the
  manifests when missing or dangling;
* every file is hashed with xxh3-128 in the pass that writes it, and restart falls back to the newest
  checkpoint that verifies;
* keep policies never delete best, last, pinned or another run's checkpoints, and deletion is one
  rename into ``trash/`` before any file is removed.
"""

from __future__ import annotations

import builtins
import contextlib
import datetime as _dt
import itertools
import json
import logging
import os
import platform
import socket
import sys
import threading
import time
import uuid
from collections.abc import Iterator, Mapping
from concurrent.futures import Future, ThreadPoolExecutor
from pathlib import Path
from types import TracebackType
from typing import IO, Any, Literal

import attrs

from . import _crash
from ._validate import (
    RESERVED_NAMES,
    check_epoch,
    check_metadata,
    check_metrics,
    check_optional_int,
    check_relpath,
)
from .backends.local import LocalBackend
from .checkpoint import MANIFEST_FILE, Checkpoint
from .checksum import HashingWriter, hash_and_sync
from .errors import (
    CheckpointNotFoundError,
    CkptStoreError,
    CommitConflictError,
    CommitFailedError,
    InvalidArgumentError,
    ManifestError,
    SerializerError,
    StoreNotFoundError,
    StoreNotWritableError,
    UnsafePathError,
    UnsupportedURLError,
    VerificationError,
)
from .manifest import FileEntry, Manifest
from .policies import (
    CheckpointInfo,
    GcDecision,
    KeepPolicy,
    Mode,
    SaveDecision,
    SaveRules,
    all_,
    decide_save,
    is_better,
    plan_gc,
    resolve_mode,
)
from .resolve import natural_key
from .serializers import Serializer, get_serializer

__all__ = ["CheckpointStore", "GcReport", "SaveTransaction", "StoreConfig", "open_store"]

logger = logging.getLogger("ckptstore")

STORE_FILE = "ckptstore.json"
STORE_FORMAT = "ckptstore.store"
STORE_VERSION = 1
DEFAULT_WIDTH = 8
_POINTER_NAMES = ("best", "last")
_HOST = socket.gethostname()


def _positive_float(_: object, attribute: attrs.Attribute[float], value: float) -> None:
    if not value > 0:
        raise InvalidArgumentError(f"{attribute.name} must be > 0, got {value!r}")


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
        log_file: Write ``ckpt.log`` (default True).
    """

    keep: KeepPolicy | None = None
    monitor: str | None = attrs.field(
        default=None, validator=attrs.validators.optional(attrs.validators.instance_of(str))
    )
    mode: str = attrs.field(default="auto", validator=attrs.validators.in_(("min", "max", "auto")))
    skip_epochs: int = attrs.field(default=0, validator=attrs.validators.ge(0))
    save_interval: int = attrs.field(default=1, validator=attrs.validators.ge(0))
    save_best_only: bool = False
    initial_value_threshold: float | None = None
    run_id: str | None = None
    verify_on_load: bool = True
    gc_on_save: bool = True
    work_grace_seconds: float = attrs.field(default=3600.0, validator=_positive_float)
    width: int = attrs.field(default=DEFAULT_WIDTH, validator=[attrs.validators.ge(1), attrs.validators.le(18)])
    log_file: bool = True

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
    them through :meth:`open`. Leaving the block commits; an exception inside it aborts, removes the
    staging directory and commits nothing.

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
        self._entries: dict[str, FileEntry] = {}
        self._open_writers: dict[str, HashingWriter] = {}
        self._future: Future[Checkpoint] | None = None
        self._checkpoint: Checkpoint | None = None
        self._started = time.monotonic()

    @property
    def skipped(self) -> bool:
        """True if the store's save rules decided not to save this epoch (see :attr:`decision`)."""
        return not self.decision.save

    @property
    def path(self) -> Path:
        """The staging directory (local); write files here. Exists only inside the ``with`` block."""
        if self._work is None:
            raise InvalidArgumentError("tx.path is only available inside the 'with store.save(...)' block")
        return self._work

    def open(self, name: str, mode: str = "wb") -> IO[Any]:
        """Create a file in the checkpoint and return a write-only stream that hashes what it writes.

        The stream does not seek (``torch.save``, ``np.save``, ``np.savez`` and ``pickle.dump``
        work with it); closing it fsyncs the file. Writers that must seek use :attr:`path`.

        Args:
            name: Relative path inside the checkpoint (``/`` separates folders).
            mode: ``"wb"`` (default) or ``"w"`` for UTF-8 text.

        Raises:
            UnsafePathError: the name escapes the checkpoint, is reserved, or was written already.
        """
        if mode not in ("wb", "w", "xb", "x"):
            raise InvalidArgumentError(f"tx.open() writes new files; mode must be 'wb' or 'w', got {mode!r}")
        rel = check_relpath(name)
        target = self.path / rel
        if rel in self._entries or rel in self._open_writers or target.exists():
            raise UnsafePathError(f"{rel!r} was already written in this checkpoint")
        target.parent.mkdir(parents=True, exist_ok=True)

        def done(size: int, digest: str) -> None:
            self._entries[rel] = FileEntry(path=rel, size=size, xxh3_128=digest)
            self._open_writers.pop(rel, None)

        writer = HashingWriter(target, on_close=done)
        self._open_writers[rel] = writer
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
        self._work = self._store._new_work_dir()
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
        if self._work is not None:
            self._store._discard_work(self._work)
        if why is not None:
            self._store._log("ABORT", f"epoch={self.epoch} {why}; nothing committed")
        else:
            self._store._log("SKIP", f"epoch={self.epoch} {self.decision.reason}")


class _TextWriter:
    """A minimal UTF-8 text facade over :class:`HashingWriter` for ``tx.open(name, "w")``."""

    def __init__(self, raw: HashingWriter) -> None:
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
        root: The store's root directory.
        config: The store's options.
        create: Create the root if it does not exist (the default).
    """

    def __init__(
        self,
        root: str | os.PathLike[str],
        config: StoreConfig | None = None,
        *,
        create: bool = True,
    ) -> None:
        self.config = config or StoreConfig()
        self.root = Path(root).absolute()
        self._fs = LocalBackend(self.root)
        self._lock = threading.RLock()
        self._executor: ThreadPoolExecutor | None = None
        self._pending: Future[Checkpoint] | None = None
        self._background_error: BaseException | None = None
        self._parent: int | None = None
        self._seq = itertools.count()
        self._writer_id = f"{_HOST}.{os.getpid()}.{uuid.uuid4().hex[:8]}"
        self._active_work: set[str] = set()
        self._stats = {"saved": 0, "bytes": 0, "seconds": 0.0, "skipped": 0, "deleted": 0}
        self._writable = True
        self._descriptor = self._open_or_create(create)
        self.width: int = self._descriptor["width"]
        self.store_id: str = self._descriptor["store_id"]
        self.run_id: str = self.config.run_id or self.store_id
        self.mode: Mode = self.config.resolved_mode
        self._rules = self.config.save_rules
        self._keep: KeepPolicy = self.config.keep or all_()

    # -- opening ------------------------------------------------------------------------------------
    def _open_or_create(self, create: bool) -> dict[str, Any]:
        descriptor_path = self.root / STORE_FILE
        if not self.root.exists():
            if not create:
                raise StoreNotFoundError(f"no store at {self.root} (pass create=True to make one)")
            try:
                self.root.mkdir(parents=True, exist_ok=True)
            except PermissionError as exc:
                raise StoreNotWritableError(f"cannot create the store at {self.root}: {exc}") from None
            except FileExistsError:
                raise InvalidArgumentError(f"{self.root} exists and is not a directory") from None
        if not self.root.is_dir():
            raise InvalidArgumentError(f"{self.root} is not a directory")
        self._writable = os.access(self.root, os.W_OK | os.X_OK)
        if not descriptor_path.exists():
            if not self._writable:
                raise StoreNotWritableError(f"{self.root} is not a ckptstore store and cannot be written")
            if not create:
                raise StoreNotFoundError(f"{self.root} is not a ckptstore store (no {STORE_FILE})")
            descriptor = {
                "format": STORE_FORMAT,
                "version": STORE_VERSION,
                "store_id": uuid.uuid4().hex,
                "created_at": _dt.datetime.now(_dt.timezone.utc).isoformat(),
                "width": self.config.width,
            }
            self._fs.create_exclusive(STORE_FILE, json.dumps(descriptor, indent=1).encode())
        try:
            descriptor = json.loads(descriptor_path.read_bytes())
            if descriptor.get("format") != STORE_FORMAT or descriptor.get("version") != STORE_VERSION:
                raise ManifestError(f"{descriptor_path} is not a version-{STORE_VERSION} ckptstore descriptor")
            if not isinstance(descriptor.get("width"), int) or not isinstance(descriptor.get("store_id"), str):
                raise ManifestError(f"{descriptor_path} lacks 'width' or 'store_id'")
        except ValueError as exc:
            if isinstance(exc, ManifestError):
                raise
            raise ManifestError(f"{descriptor_path} is not valid JSON: {exc}") from None
        if self._writable:
            for sub in ("epochs", "work", "pointers", "pins", "trash", "retired"):
                (self.root / sub).mkdir(exist_ok=True)
        result: dict[str, Any] = descriptor
        return result

    # -- naming -------------------------------------------------------------------------------------
    def _name(self, epoch: int) -> str:
        return f"{epoch:0{self.width}d}"

    def _epoch_dir(self, epoch: int) -> Path:
        return self.root / "epochs" / self._name(epoch)

    @property
    def url(self) -> str:
        """The store's root as a URL."""
        return self._fs.url

    # -- logging ------------------------------------------------------------------------------------
    def _log(self, event: str, message: str, level: int = logging.INFO) -> None:
        logger.log(level, "%s %s: %s", self.root, event, message)
        if not (self.config.log_file and self._writable):
            return
        stamp = _dt.datetime.now(_dt.timezone.utc).strftime("%Y-%m-%dT%H:%M:%S.%fZ")
        with contextlib.suppress(OSError):
            self._fs.append_line("ckpt.log", f"{stamp} {_HOST}:{os.getpid()} {event:<8} {message}")

    def log(self) -> builtins.list[str]:
        """Return the lines of ``ckpt.log``, oldest first."""
        try:
            return (self.root / "ckpt.log").read_text(encoding="utf-8").splitlines()
        except FileNotFoundError:
            return []

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
            if self._epoch_dir(epoch).exists():
                raise CommitConflictError(
                    f"epoch {epoch} is already committed at {self._epoch_dir(epoch)}; "
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
            raise StoreNotWritableError(f"the store at {self.root} is not writable by this process")
        self._fs.check_writable()

    def _new_work_dir(self) -> Path:
        name = f"{self._writer_id}.{next(self._seq)}"
        work = self.root / "work" / name
        try:
            work.mkdir(parents=True)
        except PermissionError as exc:
            raise StoreNotWritableError(f"cannot create a staging directory in {self.root}: {exc}") from None
        self._active_work.add(name)
        return work

    def _discard_work(self, work: Path) -> None:
        self._active_work.discard(work.name)
        self._fs.remove_tree(work)

    def _commit(self, tx: SaveTransaction) -> Checkpoint:
        work = tx.path
        started = time.monotonic()
        try:
            manifest = self._seal(tx, work)
        except BaseException:
            tx._abort("commit failed before publishing")
            raise
        target = self._epoch_dir(tx.epoch)
        _crash.point("before_rename")
        try:
            self._fs.rename_dir(work, target)
        except FileExistsError:
            if not self._committed_by(target, manifest.commit_id):
                tx._abort("the epoch was committed by another writer")
                raise CommitConflictError(
                    f"epoch {tx.epoch} was committed by another writer while this one was saving; "
                    "nothing of this save was kept"
                ) from None
        except OSError as exc:
            if not self._committed_by(target, manifest.commit_id):
                tx._abort(f"rename failed: {exc}")
                raise CommitFailedError(exc.errno, f"could not publish epoch {tx.epoch}: {exc}") from exc
        self._active_work.discard(work.name)
        _crash.point("after_rename")
        checkpoint = Checkpoint(self, target, manifest)
        elapsed = time.monotonic() - tx._started
        size = manifest.total_size
        rate = size / max(time.monotonic() - started, 1e-9) / 1e6
        self._stats["saved"] += 1
        self._stats["bytes"] += size
        self._stats["seconds"] += elapsed
        self._log(
            "COMMIT",
            f"epoch={tx.epoch} files={len(manifest.files)} size={_human(size)} "
            f"in {elapsed:.3f}s ({rate:.0f} MB/s commit) {_fmt_metrics(manifest.metrics)}",
        )
        self._after_commit(checkpoint, tx.decision)
        return checkpoint

    def _seal(self, tx: SaveTransaction, work: Path) -> Manifest:
        """Hash and fsync every file, then write and fsync the manifest (the commit record)."""
        if tx._open_writers:
            names = ", ".join(sorted(tx._open_writers))
            raise InvalidArgumentError(f"file(s) opened with tx.open() were not closed: {names}")
        to_hash: builtins.list[tuple[str, Path]] = []
        dirs: builtins.list[Path] = []
        for dirpath, dirnames, filenames in os.walk(work):
            base = Path(dirpath)
            dirs.append(base)
            for name in dirnames + filenames:
                full = base / name
                if full.is_symlink():
                    raise UnsafePathError(f"{full} is a symlink; checkpoints hold regular files only")
            for name in filenames:
                full = base / name
                rel = full.relative_to(work).as_posix()
                if rel in RESERVED_NAMES:
                    raise UnsafePathError(f"{rel!r} is reserved for ckptstore's own records")
                check_relpath(rel)
                if rel not in tx._entries:
                    to_hash.append((rel, full))
        try:
            if to_hash:
                with ThreadPoolExecutor(max_workers=2, thread_name_prefix="ckptstore-seal") as pool:
                    hashed = list(pool.map(lambda item: (item[0], hash_and_sync(item[1])), to_hash))
                for rel, (size, digest) in hashed:
                    tx._entries[rel] = FileEntry(path=rel, size=size, xxh3_128=digest)
            _crash.point("after_files")
            serializer = None
            if tx.serializer is not None:
                serializer = {"name": tx.serializer.name, "version": tx.serializer.version()}
            manifest = Manifest(
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
            LocalBackend._write_new(work / MANIFEST_FILE, manifest.to_json())
            for directory in reversed(dirs):
                self._fs.fsync_dir(directory)
        except OSError as exc:
            raise CommitFailedError(exc.errno, f"could not write epoch {tx.epoch}: {exc}") from exc
        _crash.point("after_manifest")
        return manifest

    def _committed_by(self, target: Path, commit_id: str) -> bool:
        """True if ``target`` holds this very commit (an NFS rename whose reply was lost)."""
        try:
            return Manifest.from_json((target / MANIFEST_FILE).read_bytes()).commit_id == commit_id
        except (OSError, ManifestError):
            return False

    def _after_commit(self, checkpoint: Checkpoint, decision: SaveDecision) -> None:
        with self._pointer_lock():
            self._advance_last(checkpoint.epoch)
            _crash.point("after_last")
            if self.config.monitor is not None and self.config.monitor in checkpoint.metrics:
                current = self._read_pointer_checkpoint("best")
                value = checkpoint.metrics[self.config.monitor]
                if current is None or is_better(value, current.metrics.get(self.config.monitor), self.mode):
                    self._write_pointer("best", checkpoint.epoch)
        _crash.point("after_pointers")
        if self.config.gc_on_save and self.config.keep is not None:
            self.gc()

    # -- pointers -----------------------------------------------------------------------------------
    @contextlib.contextmanager
    def _pointer_lock(self) -> Iterator[None]:
        with self._lock, self._fs.lock("pointers/.lock"):
            yield

    def _read_pointer(self, name: str) -> int | None:
        """Return the epoch a pointer names, from its JSON form or else its symlink; None if absent."""
        try:
            data = json.loads(self._fs.read_bytes(f"pointers/{name}.json"))
            epoch = data["epoch"]
            if isinstance(epoch, int) and not isinstance(epoch, bool):
                return epoch
        except (OSError, ValueError, KeyError, TypeError):
            pass
        try:
            target = os.readlink(self.root / name)
        except OSError:
            return None
        tail = Path(target).name
        return int(tail) if tail.isdigit() else None

    def _read_pointer_checkpoint(self, name: str) -> Checkpoint | None:
        epoch = self._read_pointer(name)
        if epoch is None:
            return None
        try:
            return self.get(epoch, verify=False)
        except (CheckpointNotFoundError, VerificationError):
            return None

    def _write_pointer(self, name: str, epoch: int) -> None:
        rel_target = f"epochs/{self._name(epoch)}"
        record = {
            "epoch": epoch,
            "target": rel_target,
            "updated_at_ns": time.time_ns(),
            "writer": self._writer_id,
        }
        self._fs.write_atomic(f"pointers/{name}.json", json.dumps(record, indent=1).encode())
        if self._fs.capabilities.symlinks:
            try:
                self._fs.replace_symlink(name, rel_target)
            except OSError as exc:  # pragma: no cover - mount refused the link after the probe
                logger.warning("could not update the %s symlink in %s: %s", name, self.root, exc)
        self._log("POINTER", f"{name} -> epoch {epoch}")

    def _advance_last(self, epoch: int) -> None:
        current = self._read_pointer_checkpoint("last")
        if current is not None and current.epoch > epoch:
            self._log("POINTER", f"last stays at epoch {current.epoch} (not moved back to {epoch})")
            return
        self._write_pointer("last", epoch)

    # -- reading ------------------------------------------------------------------------------------
    def _scan(self) -> tuple[list[Checkpoint], list[tuple[Path, Exception]]]:
        """Read every manifest under ``epochs/``: valid checkpoints, and directories that are not."""
        good: builtins.list[Checkpoint] = []
        bad: builtins.list[tuple[Path, Exception]] = []
        try:
            names = sorted(os.listdir(self.root / "epochs"))
        except FileNotFoundError:
            return good, bad
        for name in names:
            if not name.isdigit():
                continue
            path = self.root / "epochs" / name
            try:
                manifest = self._read_manifest(path)
            except (OSError, VerificationError) as exc:
                bad.append((path, exc))
                continue
            good.append(Checkpoint(self, path, manifest))
        return good, bad

    def _read_manifest(self, path: Path) -> Manifest:
        where = path / MANIFEST_FILE
        try:
            manifest = Manifest.from_json(where.read_bytes(), where=str(where))
        except FileNotFoundError:
            if path.exists():
                raise ManifestError(f"{path} has no {MANIFEST_FILE}; it is not a checkpoint") from None
            raise CheckpointNotFoundError(f"no checkpoint at {path}") from None
        if self._name(manifest.epoch) != path.name:
            raise ManifestError(f"{where} says epoch {manifest.epoch}, but its directory is {path.name}")
        return manifest

    def get(self, epoch: int, *, verify: bool = False) -> Checkpoint:
        """Return the committed checkpoint of ``epoch``.

        Args:
            epoch: The epoch.
            verify: Re-hash its files before returning.

        Raises:
            CheckpointNotFoundError: no such checkpoint.
            VerificationError: its manifest is invalid (or, with ``verify``, a file is wrong).
        """
        epoch = check_epoch(epoch, self.width)
        path = self._epoch_dir(epoch)
        if not path.exists():
            raise CheckpointNotFoundError(f"no checkpoint for epoch {epoch} in {self.root}")
        checkpoint = Checkpoint(self, path, self._read_manifest(path))
        return checkpoint.verify() if verify else checkpoint

    def list(self) -> builtins.list[Checkpoint]:
        """Every committed checkpoint with a valid manifest, by epoch."""
        return sorted(self._scan()[0], key=lambda c: c.epoch)

    def __iter__(self) -> Iterator[Checkpoint]:
        return iter(self.list())

    def __len__(self) -> int:
        return len(self.list())

    def __contains__(self, epoch: object) -> bool:
        return isinstance(epoch, int) and (self._epoch_dir(epoch) / MANIFEST_FILE).exists()

    @staticmethod
    def _recency_key(checkpoint: Checkpoint) -> tuple[int, int, tuple[tuple[int, int | str], ...]]:
        try:
            mtime = (checkpoint.path / MANIFEST_FILE).stat().st_mtime_ns
        except OSError:
            mtime = 0
        return (checkpoint.manifest.committed_at_ns, mtime, natural_key(checkpoint.name))

    def _by_recency(self) -> builtins.list[Checkpoint]:
        return sorted(self._scan()[0], key=self._recency_key, reverse=True)

    def latest(self) -> Checkpoint:
        """The most recent checkpoint.

        The ``last`` pointer if its target has a valid manifest (no re-hash); otherwise the newest
        commit time, then mtime, ties broken by the numeric-aware largest name. A missing or
        dangling ``last`` pointer is repaired.

        Raises:
            CheckpointNotFoundError: the store holds no checkpoint.
        """
        pointed = self._read_pointer_checkpoint("last")
        if pointed is not None:
            newer = self._highest_committed_above(pointed.epoch)
            if newer is None:
                return pointed
            # A writer died between its rename and its pointer update: the pointer is stale.
            self._repair("last", newer.epoch, stale=True)
            return newer
        ordered = self._by_recency()
        if not ordered:
            raise CheckpointNotFoundError(f"the store at {self.root} holds no checkpoint")
        newest = ordered[0]
        self._repair("last", newest.epoch)
        return newest

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
            pointed = self._read_pointer_checkpoint("best")
            if pointed is not None and monitor in pointed.metrics:
                return pointed
        scored = [c for c in self.list() if monitor in c.metrics]
        if not scored:
            raise CheckpointNotFoundError(f"no checkpoint in {self.root} has the metric {monitor!r}")
        winner = _best_of(scored, monitor, resolved)
        if monitor == self.config.monitor and resolved == self.mode:
            self._repair("best", winner.epoch)
        return winner

    def _highest_committed_above(self, epoch: int) -> Checkpoint | None:
        """The highest-numbered valid checkpoint above ``epoch`` (one listing; manifests read lazily)."""
        for name in sorted(_listdir(self.root / "epochs"), reverse=True):
            if not name.isdigit() or int(name) <= epoch:
                break
            with contextlib.suppress(CheckpointNotFoundError, VerificationError):
                return self.get(int(name))
        return None

    def _repair(self, name: str, epoch: int, *, stale: bool = False) -> None:
        if not self._writable:
            return
        with contextlib.suppress(OSError), self._pointer_lock():
            current = self._read_pointer_checkpoint(name)
            if current is None or (stale and current.epoch < epoch):
                what = "stale" if current is not None else "missing or dangling"
                self._log("REPAIR", f"{name} pointer was {what}", logging.WARNING)
                self._write_pointer(name, epoch)

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
        good, bad = self._scan()
        candidates: builtins.list[Checkpoint] = []
        pointed: Checkpoint | None = None
        with contextlib.suppress(CheckpointNotFoundError):
            pointed = self.latest()
            candidates.append(pointed)
        candidates += [c for c in sorted(good, key=self._recency_key, reverse=True) if c != pointed]
        failed: builtins.list[tuple[Path, Exception]] = list(bad)
        chosen: Checkpoint | None = None
        for candidate in candidates:
            try:
                chosen = candidate.verify() if check else candidate
                break
            except VerificationError as exc:
                failed.append((candidate.path, exc))
                self._log(
                    "VERIFY",
                    f"epoch {candidate.epoch} fails verification, skipped: {exc}",
                    logging.WARNING,
                )
        if chosen is None:
            for path, problem in bad:
                self._log(
                    "VERIFY",
                    f"{path.name} is not a valid checkpoint, skipped: {problem}",
                    logging.WARNING,
                )
            if mode == "required":
                raise CheckpointNotFoundError(f"restart_mode=required but no checkpoint in {self.root} verifies")
            self._log("RESTART", "no valid checkpoint: starting from scratch")
            return None
        newer_bad = [p for p, _ in failed if p.name.isdigit() and int(p.name) > chosen.epoch]
        if newer_bad and self._writable:
            with self._pointer_lock():
                for path in newer_bad:
                    self._retire(path, "corrupt")
                self._write_pointer("last", chosen.epoch)
                self._recompute_best()
        self._parent = chosen.epoch
        self._log("RESTART", f"resuming from epoch {chosen.epoch}")
        return chosen

    def _retire(self, path: Path, why: str) -> None:
        dest = self.root / "retired" / f"{path.name}.{why}.{uuid.uuid4().hex[:8]}"
        with contextlib.suppress(FileNotFoundError):
            self._fs.rename_dir(path, dest)
            self._log("RETIRE", f"{path.name} -> retired/{dest.name} ({why})")

    def _recompute_best(self) -> None:
        monitor = self.config.monitor
        if monitor is None:
            return
        scored = [c for c in self.list() if monitor in c.metrics]
        if not scored:
            for suffix in (".json", ""):
                with contextlib.suppress(FileNotFoundError):
                    os.unlink(self.root / ("pointers/best" + suffix if suffix else "best"))
            return
        winner = _best_of(scored, monitor, self.mode)
        if self._read_pointer("best") != winner.epoch:
            self._write_pointer("best", winner.epoch)

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
        with self._pointer_lock():
            for name in sorted(os.listdir(self.root / "epochs")):
                if name.isdigit() and int(name) > target.epoch:
                    self._retire(self.root / "epochs" / name, f"rollback-to-{target.epoch}")
            self._write_pointer("last", target.epoch)
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
        checkpoint = self.get(epoch)
        if self._fs.create_exclusive(f"pins/{checkpoint.name}", b"{}"):
            self._log("PIN", f"epoch {checkpoint.epoch}")

    def unpin(self, epoch: int) -> None:
        """Remove the protection of :meth:`pin` (no error if it was not pinned)."""
        self._check_writable()
        epoch = check_epoch(epoch, self.width)
        with contextlib.suppress(FileNotFoundError):
            os.unlink(self.root / "pins" / self._name(epoch))
            self._log("UNPIN", f"epoch {epoch}")

    def pinned(self) -> builtins.list[int]:
        """The pinned epochs."""
        try:
            return sorted(int(n) for n in os.listdir(self.root / "pins") if n.isdigit())
        except FileNotFoundError:
            return []

    # -- keep policy and garbage collection ----------------------------------------------------------
    def _protected(self) -> dict[int, str]:
        protected: dict[int, str] = {}
        for epoch in self.pinned():
            protected[epoch] = "pinned"
        for name in _POINTER_NAMES:
            target = self._read_pointer(name)
            if target is not None:
                protected[target] = name if target not in protected else f"{protected[target]}, {name}"
        return protected

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
            checkpoints = self.list()
            infos = [
                CheckpointInfo(
                    epoch=c.epoch,
                    metrics=c.metrics,
                    run_id=c.run_id,
                    committed_at_ns=c.manifest.committed_at_ns,
                    size=c.size,
                )
                for c in checkpoints
            ]
            decisions = plan_gc(
                infos,
                self._keep,
                run_id=self.run_id,
                protected=self._protected(),
                monitor=self.config.monitor,
                mode=self.mode,
            )
            leftovers = self._leftovers()
            if dry_run:
                return GcReport(decisions=tuple(decisions), leftovers=tuple(leftovers), dry_run=True)
            for decision in decisions:
                if decision.action == "delete":
                    self._delete(decision.epoch, decision.reason)
            for rel, why in leftovers:
                path = self.root / rel
                if rel.startswith(("work/", "retired/")):
                    trash = self.root / "trash" / f"{path.name}.{uuid.uuid4().hex[:8]}"
                    with contextlib.suppress(FileNotFoundError):
                        self._fs.rename_dir(path, trash)
                        path = trash
                if self._fs.remove_tree(path):
                    self._log("GC", f"removed {rel} ({why})")
            return GcReport(decisions=tuple(decisions), leftovers=tuple(leftovers), dry_run=False)

    def _delete(self, epoch: int, reason: str) -> None:
        source = self._epoch_dir(epoch)
        trash = self.root / "trash" / f"{source.name}.{uuid.uuid4().hex[:8]}"
        try:
            self._fs.rename_dir(source, trash)
        except FileNotFoundError:
            return
        _crash.point("gc_after_trash")
        self._stats["deleted"] += 1
        self._log("DELETE", f"epoch {epoch}: {reason}")
        self._fs.remove_tree(trash)

    def _leftovers(self) -> builtins.list[tuple[str, str]]:
        found: builtins.list[tuple[str, str]] = []
        now = time.time()
        for name in _listdir(self.root / "work"):
            if name in self._active_work:
                continue
            why = self._abandoned(name, self.root / "work" / name, now)
            if why:
                found.append((f"work/{name}", why))
        for name in _listdir(self.root / "retired"):
            found.append((f"retired/{name}", "retired by rollback or restart"))
        for name in _listdir(self.root / "trash"):
            found.append((f"trash/{name}", "deleted checkpoint not yet fully removed"))
        return found

    def _abandoned(self, name: str, path: Path, now: float) -> str | None:
        parts = name.split(".")
        if len(parts) >= 3 and parts[-3].isdigit():
            host, pid = ".".join(parts[:-3]), int(parts[-3])
            if host == _HOST:
                if pid == os.getpid():
                    return "staging directory of an earlier store in this process"
                if not _pid_alive(pid):
                    return f"staging directory of process {pid}, which is gone"
                return None
        try:
            age = now - path.stat().st_mtime
        except FileNotFoundError:
            return None
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
        for checkpoint in sorted(good, key=lambda c: c.epoch):
            try:
                verified.append(checkpoint.verify())
            except VerificationError as exc:
                failures.append(exc)
                self._log("VERIFY", f"epoch {checkpoint.epoch} failed: {exc}", logging.WARNING)
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
        checkpoints = self.list()
        summary: dict[str, Any] = {
            "url": self.url,
            "checkpoints": len(checkpoints),
            "total_size": sum(c.size for c in checkpoints),
            "last": self._read_pointer("last"),
            "best": self._read_pointer("best"),
            "monitor": self.config.monitor,
            "pinned": self.pinned(),
            "this_process": dict(self._stats),
        }
        if file is not None:
            stats = self._stats
            rate = stats["bytes"] / stats["seconds"] / 1e6 if stats["seconds"] else 0.0
            print(
                f"ckptstore {self.url}: {summary['checkpoints']} checkpoint(s), {_human(summary['total_size'])}; "
                f"last={summary['last']} best={summary['best']} pinned={summary['pinned']}\n"
                f"this process: saved {stats['saved']} ({_human(int(stats['bytes']))}, {stats['seconds']:.2f}s, "
                f"{rate:.0f} MB/s), skipped {stats['skipped']}, deleted {stats['deleted']}",
                file=file,
            )
        return summary

    def table(self) -> str:
        """A plain-text table of every checkpoint with best, last and pinned marked."""
        checkpoints = self.list()
        last, best, pins = (
            self._read_pointer("last"),
            self._read_pointer("best"),
            set(self.pinned()),
        )
        metric_names = sorted({m for c in checkpoints for m in c.metrics})
        header = ["epoch", "committed (UTC)", "size", *metric_names, "marks"]
        rows = [header]
        for c in checkpoints:
            marks = [
                m
                for m, on in (
                    ("best", c.epoch == best),
                    ("last", c.epoch == last),
                    ("pinned", c.epoch in pins),
                )
                if on
            ]
            rows.append(
                [
                    str(c.epoch),
                    c.committed_at.strftime("%Y-%m-%d %H:%M:%S"),
                    _human(c.size),
                    *(f"{c.metrics[m]:.4f}" if m in c.metrics else "-" for m in metric_names),
                    ",".join(marks),
                ]
            )
        widths = [max(len(r[i]) for r in rows) for i in range(len(header))]
        lines = ["  ".join(cell.ljust(w) for cell, w in zip(row, widths, strict=False)).rstrip() for row in rows]
        lines.insert(1, "  ".join("-" * w for w in widths))
        return "\n".join(lines)


def _best_of(scored: builtins.list[Checkpoint], metric: str, mode: Mode) -> Checkpoint:
    """The best checkpoint by ``metric``; on a tie, the newest epoch."""
    sign = 1 if mode == "min" else -1
    return min(scored, key=lambda c: (sign * c.metrics[metric], -c.epoch))


def _listdir(path: Path) -> builtins.list[str]:
    try:
        return sorted(os.listdir(path))
    except FileNotFoundError:
        return []


def _pid_alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True


def _human(size: int) -> str:
    value = float(size)
    for unit in ("B", "KB", "MB", "GB", "TB"):
        if value < 1000 or unit == "TB":
            return f"{value:.0f} {unit}" if unit == "B" else f"{value:.1f} {unit}"
        value /= 1000
    return f"{size} B"  # pragma: no cover


def _fmt_metrics(metrics: Mapping[str, float]) -> str:
    return " ".join(f"{k}={v:.6g}" for k, v in sorted(metrics.items()))


def _framework_versions() -> dict[str, str]:
    versions = {"python": platform.python_version()}
    for name in ("numpy", "torch", "keras", "jax", "safetensors"):
        module = sys.modules.get(name)
        version = getattr(module, "__version__", None)
        if isinstance(version, str):
            versions[name] = version
    from . import __version__

    versions["ckptstore"] = __version__
    return versions


def open_store(
    url: str | os.PathLike[str],
    *,
    create: bool = True,
    **options: Any,
) -> CheckpointStore:
    """Open (or create) the store at ``url``.

    Args:
        url: A local path or ``file://`` URL (object stores arrive with the next release).
        create: Create the store if missing (default True).
        **options: The fields of :class:`StoreConfig` (``keep``, ``monitor``, ``mode``, ...).

    Raises:
        UnsupportedURLError: the URL's scheme is not supported.
        InvalidArgumentError: an option is unknown or invalid.
    """
    text = os.fspath(url)
    if "://" in text:
        scheme, _, rest = text.partition("://")
        if scheme != "file":
            raise UnsupportedURLError(
                f"{text!r}: the {scheme!r} scheme is not supported by this ckptstore release; "
                "use a local path, an NFS mount or a file:// URL"
            )
        text = rest
    try:
        config = StoreConfig(**options)
    except CkptStoreError:
        raise
    except TypeError as exc:
        raise InvalidArgumentError(f"unknown or mistyped option for ckptstore.open: {exc}") from None
    except ValueError as exc:
        raise InvalidArgumentError(f"invalid option for ckptstore.open: {exc.args[0]}") from None
    return CheckpointStore(text, config, create=create)
