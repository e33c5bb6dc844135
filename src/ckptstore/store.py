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
import logging
import os
import re
import threading
import uuid
import warnings
from collections.abc import Callable, Iterator, Mapping
from pathlib import Path
from typing import IO, Any, Literal

from ._boundary import RecordLock, enforces_create_only
from ._boundary import backend_errors as _backend_errors
from ._progress import ProgressOption
from ._redact import redact_url
from ._validate import (
    check_epoch,
)
from .backends.base import Backend, Capabilities
from .backends.registry import open_backend
from .backends.retrying import RetryingBackend
from .caches import Caches
from .checkpoint import Checkpoint
from .commit import claims
from .commit._common import Target
from .commit.shards import ShardedCommit
from .config import StoreConfig, config_from_options, open_descriptor
from .errors import (
    CkptStoreError,
    InvalidArgumentError,
    SingleWriterWarning,
    StoreNotWritableError,
)
from .find import FileMatch, latest_match, value_match
from .gc import Collector, GcReport, KeepRules
from .index import Index
from .layout import POINTER_LOCK, Layout
from .manifests import Manifests
from .metadata import Metadata
from .oplog import OpLog, render_table, stats_text
from .pipeline import Pipeline, choose_publisher
from .pointers import Pointers
from .policies import (
    Mode,
    SaveDecision,
    all_,
)
from .queries import Queries
from .restart import Restarter
from .serializers import CheckpointWriter, FileWriter, Serializer, get_serializer
from .sharded import Broadcast, check_shard
from .transaction import SaveTransaction

__all__ = ["CheckpointStore", "GcReport", "SaveTransaction", "StoreConfig", "open_store"]

logger = logging.getLogger("ckptstore")


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
        self._parent: int | None = None
        self._writer_id = claims.new_writer_id()
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
        opened = open_descriptor(
            self._fs, self.url, self.config, create=create, lock=self._record_lock, log=self._oplog
        )
        self._descriptor, self.config, self._writable = opened.descriptor, opened.config, opened.writable
        self.single_writer = not self._caps.create_only
        self.width: int = self._descriptor["width"]
        self.store_id: str = self._descriptor["store_id"]
        self.run_id: str = self.config.run_id or self.store_id
        self.mode: Mode = self.config.resolved_mode
        self._rules = self.config.save_rules
        # The parts, each handed the context (backend, layout, url, lock, log, who writes) and what it uses.
        self._layout = Layout(self.width)
        target = Target(
            backend=self._fs,
            layout=self._layout,
            url=self.url,
            lock=self._record_lock,
            log=self._oplog,
            writer_id=self._writer_id,
            run_id=self.run_id,
            parent=lambda: self._parent,
        )
        self._manifests = Manifests(target, self)
        self._index = Index(target, self._manifests, head_entries=self.config.index_head_entries)
        self._pointers = Pointers(target, self._manifests, (self.config.monitor, self.mode))
        self._queries = Queries(
            target, self._manifests, self._index, self._pointers, (self.config.monitor, self.mode), self._repair
        )
        self._caches = Caches(target, self._manifests, self._index, self._pointers)
        self._restarter = Restarter(target, self._manifests, self._index, self._pointers, self._caches.recompute_best)
        self._claims = claims.Claims(target, self.config.work_grace_seconds)
        self._metadata = Metadata(target, self._index)
        self._collector = Collector(
            target,
            manifests=self._manifests,
            index=self._index,
            pointers=self._pointers,
            rules=KeepRules(
                policy=self.config.keep or all_(),
                run_id=self.run_id,
                monitor=self.config.monitor,
                mode=self.mode,
                work_grace_seconds=self.config.work_grace_seconds,
            ),
            active_work=lambda: self._active_work,
            claims=self._claims,
            deleted=self._count_deletion,
            writable=lambda: self._writable,
        )
        publisher = choose_publisher(
            target, self._claims, self._quick_fs, self.config.retry, self.config.progress, self._active_work
        )
        self._pipeline = Pipeline(
            source=self,
            target=target,
            publisher=publisher,
            sharded=ShardedCommit(target, publisher, self._claims, self._quick_fs, self._active_work),
            rules=self._rules,
            stats=self._stats,
            best_value=self._queries.best_value,
            check_writable=self._check_writable,
            after_commit=self._after_commit,
            caches_stale=self._caches_went_stale,
            progress=self.config.progress,
            pending_saves=self.config.pending_saves,
        )

    def __repr__(self) -> str:
        monitor = f" monitor={self.config.monitor}({self.mode})" if self.config.monitor else ""
        keep = f" keep={self.config.keep!r}" if self.config.keep is not None else ""
        return f"<CheckpointStore {self.url}{monitor}{keep} run={self.run_id[:12]}>"

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

    def _probe_create_only(self) -> None:
        """Check once that the backend refuses a second create-only write; warn and go single-writer if not."""
        if self._probed or not self._caps.create_only or self._caps.atomic_rename:
            self._probed = True
            return
        self._probed = True
        with _backend_errors(self._fs, "probe create-only writes"):
            self.single_writer = not enforces_create_only(self._fs, f"probe/{self._writer_id}.{uuid.uuid4().hex[:8]}")
        if self.single_writer:
            message = (
                f"the {self._fs.scheme} backend at {self.url} claims create-only writes but did not enforce one "
                "(a second create-only write of a probe object succeeded); running in single-writer mode: "
                "do not let two processes save to this store at once"
            )
            warnings.warn(message, SingleWriterWarning, stacklevel=5)
            logger.warning("%s", message)

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
    def wait(self) -> Checkpoint | None:
        """Wait for a non-blocking save to commit; raise its error if it failed.

        Returns:
            The checkpoint it committed, or None if nothing was in flight.
        """
        try:
            return self._pipeline.wait()
        finally:
            self._index.wait()

    def close(self) -> None:
        """Wait for any save in flight and for the index's compaction, and release the background threads."""
        try:
            self._pipeline.close()
        finally:
            self._index.wait()

    def __enter__(self) -> CheckpointStore:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    # -- saving -------------------------------------------------------------------------------------
    def should_save(self, epoch: int, metrics: Mapping[str, Any] | None = None) -> SaveDecision:
        """Decide whether ``epoch`` would be saved under the store's save rules.

        The decision is truthy when the epoch should be saved; ``.reason`` says why. The best value
        so far is read from the store, so ``save_best_only`` survives a restart.

        Raises:
            InvalidEpochError, InvalidMetricError: bad input.
            MissingMetricError: the store monitors a metric that ``metrics`` lacks.
        """
        return self._pipeline.decide(epoch, metrics)

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
        rank: int | None = None,
        world_size: int | None = None,
        broadcast: Broadcast | None = None,
        timeout: float | None = None,
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
            metrics: Finite metric values; must include the store's monitor, if any, unless ``force=True``
                (a forced save without the monitor is committed and can never be best).
            metadata: JSON-serializable user metadata.
            step: Optional global step.
            batch: Optional batch index within the epoch (batch-level saves).
            blocking: False commits in a background thread after the block (at most
                ``pending_saves`` in flight; a further save waits; an error surfaces on the next call,
                on :meth:`wait` and on :meth:`close`).
            force: Save whatever the save rules say.
            rank: This process's rank in a sharded save (with ``world_size``): every rank calls ``save``
                and writes only its own part, ``rank-NNNNN/`` in the checkpoint; rank 0 commits once
                every part is sealed, so the checkpoint is visible whole or not at all
                (see :mod:`ckptstore.sharded`; read one part back with ``ckptstore.sharded.part``).
                Rank 0's metrics, metadata and save rules decide for all.
            world_size: The number of ranks of a sharded save.
            broadcast: How the ranks agree on one save attempt: called once on every rank, with rank 0's
                message on rank 0 and None elsewhere, it returns rank 0's message. Default:
                ``torch.distributed`` when it is initialized.
            timeout: Seconds a rank of a sharded save waits for the others (default 1800): rank 0 for
                every part, the others for the commit; then the save raises ``ShardTimeoutError``.

        Raises:
            CommitConflictError: the epoch is already committed.
            StoreNotWritableError: the store cannot be written.
            InvalidArgumentError: bad epoch, metrics, metadata (subclasses name which).
            ShardedSaveError: a sharded save did not commit (a rank raised or died; on every rank).
        """
        shard = check_shard(rank, world_size, broadcast, timeout)
        self._pipeline.make_room()
        return self._pipeline.start(epoch, metrics, metadata, step, batch, blocking, force, None, shard)

    def save_state(
        self,
        epoch: int,
        state: Any,
        *,
        serializer: str | Serializer | Callable[[Any, CheckpointWriter], None] = "numpy",
        metrics: Mapping[str, Any] | None = None,
        metadata: Mapping[str, Any] | None = None,
        step: int | None = None,
        batch: int | None = None,
        blocking: bool = True,
        force: bool = False,
        rank: int | None = None,
        world_size: int | None = None,
        broadcast: Broadcast | None = None,
        timeout: float | None = None,
    ) -> Checkpoint | None:
        """Serialize ``state`` with a named serializer and commit it as ``epoch``.

        With ``blocking=False`` this blocks only for a snapshot: the arrays and tensors of ``state``
        are copied into host buffers reused from one save to the next (read-only numpy arrays,
        ``bytes`` and other immutable values are handed over without a copy; CUDA tensors go to
        pinned memory with a non-blocking copy), so the caller may change its state as soon as this
        returns. Serializing, hashing, writing, fsync, the commit, pointers, index and gc run in a
        background thread, in order. At most ``pending_saves`` (default 1) are in flight; a further
        save waits for the oldest. A background failure is raised by the next ``save``/``save_state``,
        by :meth:`wait` and by :meth:`close`; at interpreter exit a pending save is finished, and a
        failure is printed to stderr and logged (never dropped silently).

        ``serializer`` may also be a function ``write(state, tx)`` that writes files itself, into
        ``tx.path`` or through ``tx.open`` (a framework's own writer; the integrations' non-blocking
        saves): it gets the snapshot, and the manifest records no serializer, as for :meth:`save`.

        Returns:
            The committed checkpoint; None if the save rules skipped it, or when not blocking (see
            :meth:`wait`).

        Raises:
            SerializerError: the serializer raised; nothing was committed (with ``blocking=False``,
                raised by the next call).
            See :meth:`save` for the rest (``rank``, ``world_size``, ``broadcast`` and ``timeout``
            make it a sharded save: each rank serializes its own ``state`` into its part).
        """
        writes = callable(serializer) and not isinstance(serializer, Serializer)
        impl = FileWriter(serializer) if writes else get_serializer(serializer)  # type: ignore[arg-type]
        shard = check_shard(rank, world_size, broadcast, timeout)
        self._pipeline.make_room()
        tx = self._pipeline.start(epoch, metrics, metadata, step, batch, True, force, None if writes else impl, shard)
        if not blocking:
            self._pipeline.save_in_background(tx, impl, state)
            return None
        return self._pipeline.serialize(tx, impl, state)

    def _check_writable(self) -> None:
        if not self._writable:
            raise StoreNotWritableError(f"the store at {self.url} is not writable by this process")
        self._fs.check_writable()
        self._probe_create_only()

    def _caches_went_stale(self) -> None:
        """A step after a commit failed: the next call repairs the pointers and the index (``_repair_if_stale``)."""
        self._caches_stale = True

    @property
    def _quick_fs(self) -> Backend:
        """The backend without retries, for best-effort steps (log lines, clean-up after a failure)."""
        return self._fs.inner if isinstance(self._fs, RetryingBackend) else self._fs

    def _after_commit(self, checkpoint: Checkpoint, decision: SaveDecision) -> None:
        """The stages after publish: advance pointers, update the index (:class:`Caches`), then gc."""
        self._repair_if_stale()
        self._caches.after_commit(checkpoint)
        if self.config.gc_on_save and self.config.keep is not None:
            self.gc()

    # -- pointers and the index ---------------------------------------------------------------------

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
        with _backend_errors(self._fs, "rebuild the index"), self._record_lock():
            self._index.update(rebuild=True)
            record = self._index.document()
        self._log("REINDEX", f"{len(record.get('checkpoints', {}))} checkpoint(s)")
        return record

    def index(self) -> dict[str, Any]:
        """The current ``index.json`` (rebuilt in memory from the manifests if it is missing or invalid)."""
        return self._index.document()

    def _update_metadata(
        self, checkpoint: Checkpoint, change: Callable[[dict[str, Any]], dict[str, Any]], what: str
    ) -> dict[str, Any]:
        """Apply ``change`` to a checkpoint's metadata (the :class:`~ckptstore.checkpoint.CheckpointSource` hook)."""
        self._check_writable()
        return self._metadata.update(checkpoint, change, what)

    # -- reading ------------------------------------------------------------------------------------
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
        return self._queries.listing(sort_by, order, limit)

    def top(self, n: int, metric: str | None = None) -> builtins.list[Checkpoint]:
        """The best ``n`` checkpoints by the store's monitor (or ``metric``), best first.

        Raises:
            InvalidArgumentError: no monitor and no ``metric``, or a negative ``n``.
            InvalidArgumentTypeError: ``n`` is not an int or ``metric`` not a string.
        """
        return self._queries.top(n, metric)

    def epochs(self) -> builtins.list[int]:
        """The committed epochs, ascending."""
        return sorted(c.epoch for c in self._queries.scan()[0])

    # -- finding, evaluating, fetching ----------------------------------------------------------------
    def resolve_latest(self, pattern: str | re.Pattern[str]) -> FileMatch:
        """The newest file in the store matching a Keras template, glob or regex (see :func:`ckptstore.resolve_latest`).

        Searches the files of committed checkpoints and files placed in the store by other tools;
        never ckptstore's own records or uncommitted saves.

        Raises:
            CheckpointNotFoundError: no file matches.
        """
        files, owner = self._queries.files()
        return latest_match(self._fs, files, pattern, owner)

    def _select(self, regex: str | re.Pattern[str], mode: str) -> FileMatch:
        files, owner = self._queries.files()
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
        state (``load=True``, with the recorded or given serializer) or a verified local directory
        (``load=False``, or a checkpoint written as plain files, with no serializer to load it), and
        its result is stored under ``metadata["evaluation"][metric]``, its mode under
        ``metadata["evaluation_modes"][metric]``, without touching the commit record. So
        ``store.best(metric=metric)``, ``store.list(sort_by=metric)``, ``top()``, the CLI's
        ``ls --sort-by`` and ``download --best --metric`` rank it by that mode.

        Args:
            fn: Returns the metric as a number (or a mapping holding ``metric``).
            metric: The name to record the result under.
            mode: Which end is best (``max``, ``min``, or ``auto`` to guess from the name); recorded.
            load: Pass the loaded state (True; a local directory where no serializer was recorded)
                or always a local directory (False).
            serializer: Override the recorded serializer.

        Returns:
            ``(checkpoint, value)`` pairs, best first.

        Raises:
            InvalidMetricError: ``fn`` returned something that is not a finite number.
        """
        return self._queries.evaluate(fn, metric, mode, load=load, serializer=serializer)

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
        chosen = self._queries.choose(which, top_n, metric)
        return [c.download(Path(dest) / c.name, progress=progress) for c in chosen]

    def __iter__(self) -> Iterator[Checkpoint]:
        return iter(self.list(sort_by="epoch"))

    def __len__(self) -> int:
        return len(self._queries.scan()[0])

    def __contains__(self, epoch: object) -> bool:
        if isinstance(epoch, bool) or not isinstance(epoch, int) or epoch < 0:
            return False
        return self._manifests.committed(epoch)

    def latest(self) -> Checkpoint:
        """The most recent checkpoint: the ``last`` pointer, else the highest committed epoch.

        The ``last`` pointer if its target has a valid manifest (no re-hash) and no higher epoch is
        committed; otherwise the highest committed epoch, the rule the pointer itself follows, so the
        answer never depends on the writers' clocks. A missing, dangling or stale pointer is repaired.

        Raises:
            CheckpointNotFoundError: the store holds no checkpoint.
        """
        self._repair_if_stale()
        return self._queries.latest()

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
        return self._queries.best(metric, mode)

    def _repair(self, name: str, epoch: int, stale: bool = False) -> None:
        if self._writable:
            self._pointers.repair(name, epoch, stale=stale)

    # -- restart and rollback -----------------------------------------------------------------------
    def restart(
        self, mode: Literal["auto", "required", "off"] = "auto", *, verify: bool | None = None
    ) -> Checkpoint | None:
        """Find the checkpoint to resume from (CANDLE's ``restart_mode``).

        ``auto`` returns the highest-numbered checkpoint that verifies (each candidate read from its own
        manifest), or None on an empty store;
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
        self.wait()
        chosen = self._restarter.restart(
            required=mode == "required",
            verify=self.config.verify_on_load if verify is None else verify,
            writable=self._writable,
        )
        if chosen is not None:
            self._parent = chosen.epoch  # later saves record it; gc never deletes it
            if self._writable:
                self._caches_stale = False  # restart recomputed the pointers from the manifests
        return chosen

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
        self._restarter.rollback(target)
        self._parent = target.epoch
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

    def _count_deletion(self) -> None:
        self._stats["deleted"] += 1

    def gc(self, *, dry_run: bool = False) -> GcReport:
        """Apply the keep policy and remove leftovers.

        Deletes this run's checkpoints that the keep policy does not keep (never best, last, pinned,
        the one this run resumed from, or another run's), staging directories of writers that are gone,
        retired epochs and trash. Each checkpoint disappears in one step (a rename into ``trash/``)
        before its files are removed. ``dry_run=True`` only reports.

        Returns:
            A :class:`GcReport` with keep/delete and the reason for every checkpoint.
        """
        if not dry_run:
            self._check_writable()
        with self._lock:
            if not dry_run:
                self._repair_if_stale()
            return self._collector.run(self.list(sort_by="epoch"), dry_run=dry_run)

    def _repair_if_stale(self) -> None:
        """After a failure past a commit point: rebuild the index and the pointers from the manifests."""
        if not self._caches_stale or not self._writable:
            return
        try:
            self._caches.rebuild()
        except (OSError, CkptStoreError) as exc:
            logger.warning("%s: pointers and index.json still need a repair: %s", self.url, exc)
            return
        self._caches_stale = False

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
        return self._queries.verify_all(self._collector.confirm)

    def report(self, *, file: IO[str] | None = None) -> dict[str, Any]:
        """Print (to ``file``, default stdout; pass ``False``-y to skip) and return a summary.

        It covers what the store holds (count, size, best, last, pinned) and what this process did
        (saves, bytes, seconds, skipped, deleted).
        """
        summary = self._queries.summary(self._stats)
        if file is not None:
            print(stats_text(self.url, summary, self._stats), file=file)
        return summary

    def marks(self) -> dict[int, builtins.list[str]]:
        """The epochs that carry a mark: ``best``, ``last``, ``pinned`` (read once from the pointers and pins)."""
        return self._pointers.marks()

    def table(self) -> str:
        """A plain-text table of every checkpoint with best, last and pinned marked."""
        return render_table(self.list(sort_by="epoch"), self.marks())


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
    config = config_from_options(options, create=create)
    return CheckpointStore(url, config, create=create, storage_options=storage_options)
