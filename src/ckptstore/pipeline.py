"""The save path of a store, as the stages the docs name.

    validate -> decide -> stage -> seal -> publish -> advance pointers -> update index -> gc

:meth:`Pipeline.start` validates the request (bad input changes nothing), decides by the store's save
rules, and returns the :class:`~ckptstore.transaction.SaveTransaction` the caller writes into (stage).
Leaving its ``with`` block calls :meth:`Pipeline.finish`: the one boundary after which everything
(seal, publish, and the store's pointers, index and gc) may run in a background thread. Sealing and
publishing belong to the commit strategy the backend's capabilities choose
(:mod:`ckptstore.commit`); publishing is one call, the commit point. After it, nothing may look like
"nothing was saved": a failure of the steps that follow (the store's ``after_commit``) is a
:class:`~ckptstore.errors.PostCommitWarning`, and the store repairs its caches on its next call.
"""

from __future__ import annotations

import atexit
import contextlib
import logging
import sys
import tempfile
import time
import warnings
import weakref
from collections import deque
from collections.abc import Callable, Mapping
from concurrent.futures import Future, ThreadPoolExecutor
from pathlib import Path
from typing import Any

from ._boundary import backend_errors
from ._progress import ProgressOption, estimate_bytes
from ._validate import check_epoch, check_metadata, check_metrics, check_optional_int
from .backends.base import Backend
from .checkpoint import Checkpoint, CheckpointSource
from .commit._common import Publisher, Target
from .commit.claims import Claims
from .commit.record import RecordCommit
from .commit.rename import RenameCommit
from .commit.shards import ShardedCommit
from .errors import CkptStoreError, CommitConflictError, MissingMetricError, PostCommitWarning, SerializerError
from .oplog import Stats, fmt_metrics, human
from .policies import SaveDecision, SaveRules, decide_save
from .retry import RetryPolicy
from .serializers import Serializer
from .sharded import ShardSpec
from .snapshot import SnapshotBuffers
from .transaction import SaveTransaction

__all__ = ["Pipeline", "choose_publisher"]


logger = logging.getLogger("ckptstore")

_LIVE: weakref.WeakSet[Pipeline] = weakref.WeakSet()
"""Pipelines with a background thread: at interpreter exit their pending saves are finished or reported."""


@atexit.register
def _finish_at_exit() -> None:
    """Never drop a non-blocking save silently: wait for it; report a failure on stderr and in the log."""
    for pipeline in list(_LIVE):
        try:
            pipeline.close()
        except BaseException as exc:  # the process is ending: there is no later call to raise it from
            message = f"ckptstore: a non-blocking save to {pipeline.url} failed and was not saved: {exc!r}"
            print(message, file=sys.stderr, flush=True)
            logger.error("%s", message)


def choose_publisher(
    target: Target, claims: Claims, quick: Backend, retry: RetryPolicy, progress: ProgressOption, staging: set[str]
) -> Publisher:
    """The commit strategy for the backend's capabilities (never its type).

    Args:
        target: The store to publish into.
        claims: This writer's claims (object stores).
        quick: The backend without retries, for clean-up after a failure.
        retry: How uploads retry.
        progress: Progress bars for uploads.
        staging: The store's set of staging folders in use (backends that rename).
    """
    if target.backend.capabilities.atomic_rename:
        return RenameCommit(target, staging)
    return RecordCommit(target, claims, quick=quick, retry=retry, progress=progress)


class Pipeline:
    """The save path of one store (the :class:`~ckptstore.transaction.SavePipeline` of its transactions).

    Args:
        source: What committed checkpoints read through (the store).
        target: The store to publish into.
        publisher: The commit strategy (:func:`choose_publisher`).
        rules: The save rules.
        stats: The store's counters of what this process did (updated in place).
        best_value: The monitored metric's best value so far (for ``save_best_only``).
        check_writable: Raises if the store cannot be written.
        after_commit: The store's steps after a commit: advance pointers, update the index, gc.
        caches_stale: Called when ``after_commit`` failed: the store repairs its caches on its next call.
        sharded: The coordination of sharded saves (:mod:`ckptstore.sharded`), around ``publisher``.
    """

    def __init__(
        self,
        *,
        source: CheckpointSource,
        target: Target,
        publisher: Publisher,
        rules: SaveRules,
        stats: Stats,
        best_value: Callable[[], float | None],
        check_writable: Callable[[], None],
        after_commit: Callable[[Checkpoint, SaveDecision], None],
        caches_stale: Callable[[], None],
        progress: ProgressOption = None,
        pending_saves: int = 1,
        sharded: ShardedCommit | None = None,
    ) -> None:
        self._sharded = sharded
        self.progress = progress
        self._pending_limit = pending_saves
        self._snapshots = SnapshotBuffers()
        self._source = source
        self._target = target
        self._layout = target.layout
        self._publisher = publisher
        self._rules = rules
        self._stats = stats
        self._best_value = best_value
        self._check_writable = check_writable
        self._after_commit = after_commit
        self._caches_stale = caches_stale
        self._executor: ThreadPoolExecutor | None = None
        self._pending: deque[Future[Checkpoint | None]] = deque()
        self._background_error: BaseException | None = None

    # -- what a transaction needs --------------------------------------------------------------------
    @property
    def backend(self) -> Backend:
        """The store's backend."""
        return self._target.backend

    @property
    def url(self) -> str:
        """The store's URL (redacted)."""
        return self._target.url

    def epoch_key(self, epoch: int) -> str:
        """The folder ``epoch`` is committed as."""
        return self._layout.epoch_key(epoch)

    def log(self, event: str, message: str, level: int = logging.INFO) -> None:
        """Record one event in the store's log."""
        self._target.log(event, message, level)

    # -- validate -> decide -> stage -------------------------------------------------------------------
    def decide(self, epoch: int, metrics: Mapping[str, Any] | None) -> SaveDecision:
        """Whether ``epoch`` would be saved under the save rules (:meth:`CheckpointStore.should_save`)."""
        epoch = check_epoch(epoch, self._layout.width)
        clean = check_metrics(metrics)
        return decide_save(self._rules, epoch, clean, self._best_value())

    def start(
        self,
        epoch: int,
        metrics: Mapping[str, Any] | None,
        metadata: Mapping[str, Any] | None,
        step: int | None,
        batch: int | None,
        blocking: bool,
        force: bool,
        serializer: Serializer | None,
        shard: ShardSpec | None = None,
    ) -> SaveTransaction:
        """Validate, decide, and open the stage: the transaction to write ``epoch`` into.

        In a sharded save (``shard``) the coordinator decides and opens the attempt, and every rank
        learns both through the agreement (:class:`~ckptstore.sharded.ShardedCommit`), also when one
        of them raises here: then all of them raise.

        Raises:
            CommitConflictError: the epoch is already committed.
            StoreNotWritableError: the store cannot be written.
            InvalidArgumentError: bad epoch, metrics, metadata, step or batch.
        """
        if shard is None:
            decision, args = self._decide(epoch, metrics, metadata, step, batch, force)
        else:
            assert self._sharded is not None
            error: BaseException | None = None
            try:
                decision, args = self._decide(epoch, metrics, metadata, step, batch, force, shard.coordinator)
            except CkptStoreError as exc:
                if shard.coordinator:
                    self._sharded.refuse(shard, exc)
                    raise
                error, args = exc, (epoch, {}, {}, None, None)
            if shard.coordinator:
                self._sharded.lead(shard, args[0], decision)
            else:
                decision = self._sharded.join(shard, epoch, error)
        # stage: the caller writes the files inside the transaction's `with` block
        epoch, clean_metrics, clean_metadata, step, batch = args
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
            shard=shard,
        )

    def _decide(
        self,
        epoch: int,
        metrics: Mapping[str, Any] | None,
        metadata: Mapping[str, Any] | None,
        step: int | None,
        batch: int | None,
        force: bool,
        decides: bool = True,
    ) -> tuple[SaveDecision, tuple[int, dict[str, float], dict[str, Any], int | None, int | None]]:
        """Validate and decide (``decides``: a rank other than 0 of a sharded save only validates)."""
        # validate: bad input gets a typed error and changes nothing
        epoch = check_epoch(epoch, self._layout.width)
        clean_metrics = check_metrics(metrics)
        clean_metadata = check_metadata(metadata)
        step = check_optional_int("step", step)
        batch = check_optional_int("batch", batch)
        args = (epoch, clean_metrics, clean_metadata, step, batch)
        if not decides:
            return SaveDecision(save=True, reason="rank 0 decides", improved=False), args
        # decide: the save rules (save_interval, skip_epochs, save_best_only, ...), unless forced
        try:
            decision = decide_save(self._rules, epoch, clean_metrics, self._best_value())
        except MissingMetricError:
            if not force:
                raise
            # A forced save without the monitor (Keras saves every epoch, the HF Trainer saves before its
            # first evaluation): committed, and never best.
            decision = SaveDecision(save=False, reason="forced without the monitor: it cannot be best", improved=False)
        if force and not decision.save:
            decision = SaveDecision(save=True, reason="forced", improved=decision.improved)
        if decision.save:
            self._check_writable()
            key = self._layout.epoch_key(epoch)
            with backend_errors(self.backend, f"check epoch {epoch}"):
                taken = self._publisher.taken(epoch)
            if taken:
                raise CommitConflictError(
                    f"epoch {epoch} is already committed at {self.url}/{key}; "
                    "choose another epoch or roll back with store.rollback()"
                )
        return decision, args

    def serialize(self, tx: SaveTransaction, serializer: Serializer, state: Any) -> Checkpoint | None:
        """The stage for :meth:`CheckpointStore.save_state`: ``serializer`` writes ``state`` into ``tx``, then finish.

        Returns:
            The committed checkpoint; None if the save rules skipped it or it commits in the background.

        Raises:
            SerializerError: the serializer raised; nothing was committed.
        """
        if tx.skipped:
            self.log("SKIP", f"epoch={tx.epoch} {tx.decision.reason}")
            self._stats["skipped"] += 1
            return None
        tx.expected_bytes = estimate_bytes(state)  # so a streamed upload can show a bar with a percentage
        with tx:
            try:
                serializer.save(state, tx)
            except CkptStoreError:
                raise
            except Exception as exc:
                raise SerializerError(f"serializer {serializer.name!r} failed to save epoch {tx.epoch}: {exc}") from exc
        return tx.checkpoint if tx.blocking else None

    def begin(self, tx: SaveTransaction) -> None:
        """Give ``tx`` its staging folder: the strategy's, or a scratch folder if the rules skip it."""
        if tx.skipped:  # the block still runs; nothing of it is kept
            tx._work = Path(tempfile.mkdtemp(prefix=f"ckptstore-{self._layout.name(tx.epoch)}-"))
            return
        if tx.shard is not None and self._sharded is not None:
            self._sharded.begin(tx)
            return
        self._publisher.begin(tx)

    def discard(self, tx: SaveTransaction) -> None:
        """Remove what an aborted or skipped transaction staged, uploaded or claimed (best effort)."""
        if tx.shard is not None and self._sharded is not None:
            if tx.skipped:  # a scratch folder; the coordinator's skip opened no attempt
                self._publisher.discard(tx)
                return
            self._sharded.discard(tx)
            return
        self._publisher.discard(tx)

    # -- the background boundary -----------------------------------------------------------------------
    def finish(self, tx: SaveTransaction) -> Checkpoint | Future[Checkpoint]:
        """The stage is over: commit now, or (``blocking=False``) in the background thread.

        Everything after this boundary reads only the transaction and the store's parts, so it can run
        in another thread; at most one save is in flight (the store waits for it before the next).
        """
        return self.commit(tx) if tx.blocking else self.submit(tx)

    def submit(self, tx: SaveTransaction) -> Future[Checkpoint]:
        """Commit ``tx`` in the background thread; an error surfaces on the next call (:meth:`make_room`)."""
        return self._run_in_background(lambda: self.commit(tx))  # type: ignore[return-value]

    def save_in_background(self, tx: SaveTransaction, serializer: Serializer, state: Any) -> None:
        """The non-blocking ``save_state``: snapshot now, everything else in the background thread.

        Blocks only for :meth:`SnapshotBuffers.take` (a copy of what the caller may change, into
        buffers reused across saves). Serializing, hashing, writing, fsync, the commit, pointers,
        index and gc run in the background, in order with other non-blocking saves.
        """
        if tx.skipped:
            self.serialize(tx, serializer, state)  # logs and counts the skip; nothing to run
            return
        snapshot = self._snapshots.take(state)
        tx.expected_bytes = estimate_bytes(snapshot.state)

        def run() -> Checkpoint | None:
            try:
                snapshot.wait_ready()
                return self.serialize(tx, serializer, snapshot.state)
            finally:
                snapshot.release()

        self._run_in_background(run)

    def _run_in_background(self, job: Callable[[], Checkpoint | None]) -> Future[Checkpoint | None]:
        if self._executor is None:
            self._executor = ThreadPoolExecutor(max_workers=1, thread_name_prefix="ckptstore-commit")
            _LIVE.add(self)

        def run() -> Checkpoint | None:
            try:
                return job()
            except BaseException as exc:
                if self._background_error is None:  # the first failure is the one reported
                    self._background_error = exc
                self.log("ERROR", f"a non-blocking save failed: {exc!r}", logging.ERROR)
                raise

        future = self._executor.submit(run)
        self._pending.append(future)
        return future

    def make_room(self) -> None:
        """Before a save: wait until fewer than ``pending_saves`` are in flight; raise an earlier one's error."""
        while len(self._pending) >= self._pending_limit:
            with contextlib.suppress(BaseException):
                self._pending.popleft().result()
        self._raise_background_error()

    def _raise_background_error(self) -> None:
        error, self._background_error = self._background_error, None
        if error is not None:
            raise error

    def wait(self) -> Checkpoint | None:
        """Wait for every non-blocking save to commit; raise the first error (once).

        Returns:
            The checkpoint the last of them committed (None if it was skipped, or none was in flight).
        """
        result = None
        while self._pending:
            future = self._pending.popleft()
            try:
                result = future.result()
            except BaseException:
                result = None
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
            _LIVE.discard(self)

    # -- seal -> publish -> advance pointers -> update index -> gc -------------------------------------
    def commit(self, tx: SaveTransaction) -> Checkpoint:
        """Seal and publish ``tx``, then run the store's steps after the commit.

        Publishing is one call, after everything is sealed: where a sharded save would wait until every
        rank's part is sealed before the one commit point.
        """
        started = time.monotonic()
        tx._check_closed()
        if tx.shard is not None and self._sharded is not None:
            # seal this rank's part; rank 0 waits for every part, then publishes; the others watch
            sharded = self._sharded.commit(tx)
            if sharded is None or not tx.shard.coordinator:
                return None if sharded is None else Checkpoint(self._source, self._layout.epoch_key(tx.epoch), sharded)  # type: ignore[return-value]
            manifest = sharded
        else:
            manifest = self._publisher.seal(tx)  # seal: every file hashed and durable, the manifest built
            self._publisher.publish(tx, manifest)  # publish: the commit point
        checkpoint = Checkpoint(self._source, self._layout.epoch_key(tx.epoch), manifest)
        # The commit point is behind us: from here on nothing may look like "nothing was saved".
        self._account(tx, checkpoint, started)
        self._after_publish(tx, checkpoint)
        return checkpoint

    def _account(self, tx: SaveTransaction, checkpoint: Checkpoint, started: float) -> None:
        """Count the commit in the store's stats and log it."""
        manifest = checkpoint.manifest
        elapsed = time.monotonic() - tx._started
        size = manifest.total_size
        rate = size / max(time.monotonic() - started, 1e-9) / 1e6
        self._stats["saved"] += 1
        self._stats["bytes"] += size
        self._stats["seconds"] += elapsed
        self.log(
            "COMMIT",
            f"epoch={tx.epoch} files={len(manifest.files)} size={human(size)} "
            f"in {elapsed:.3f}s ({rate:.0f} MB/s commit) {fmt_metrics(manifest.metrics)}",
        )

    def _after_publish(self, tx: SaveTransaction, checkpoint: Checkpoint) -> None:
        """Advance the pointers, update the index, gc (the store's); a failure there is a warning, not an error."""
        try:
            self._after_commit(checkpoint, tx.decision)
        except Exception as exc:
            self._caches_stale()
            message = (
                f"epoch {tx.epoch} is committed at {checkpoint.url}, but a step after the commit failed "
                f"({type(exc).__name__}: {exc}); the best/last pointers, index.json or the keep policy may lag "
                "until the next call of this store, which repairs them from the manifests"
            )
            self.log("WARNING", message, logging.WARNING)
            warnings.warn(message, PostCommitWarning, stacklevel=6)
