"""PyTorch Lightning: a ``ModelCheckpoint`` that commits through a store, and resuming from it.

    callback = StoreCheckpoint("s3://bucket/run1", monitor="val_loss", save_top_k=3)
    trainer = L.Trainer(max_epochs=10, callbacks=[callback])
    with resume_path(callback) as ckpt_path:              # None on a fresh store
        trainer.fit(model, ckpt_path=ckpt_path)

``StoreCheckpoint`` is a Lightning ``Checkpoint``, so the trainer runs it where it runs
``ModelCheckpoint``: after the module's ``on_train_epoch_end`` and ``on_validation_end`` hooks, and it
replaces the default ``ModelCheckpoint`` (do not pass ``enable_checkpointing=False``). It decides when
to save exactly as ``ModelCheckpoint`` does (same triggers, same metrics: ``_monitor_candidates``, the
same top-k rule) and saves ``trainer.save_checkpoint`` into the transaction's staging directory (a
full Lightning checkpoint: weights, optimizer, schedulers, loops, epoch and step), committed atomically
and hashed, on any backend; no symlinks are needed. ``save_top_k`` becomes the keep policy
``best(k)``; a checkpoint is saved only when it enters the top k, so the store keeps exactly the k best.
``blocking=False`` returns to training after a snapshot of the checkpoint Lightning builds; writing,
hashing, the commit, pointers, index and gc run in the store's background thread.
"""

from __future__ import annotations

import contextlib
import math
import os
import warnings
from collections.abc import Iterator, Mapping
from typing import Any

try:
    from lightning.pytorch.callbacks import Checkpoint as _LightningCheckpoint
    from lightning.pytorch.plugins.io import AsyncCheckpointIO
    from lightning.pytorch.strategies import Strategy
    from lightning.pytorch.utilities.exceptions import MisconfigurationException
except ImportError:  # the standalone package
    from pytorch_lightning.callbacks import Checkpoint as _LightningCheckpoint
    from pytorch_lightning.plugins.io import AsyncCheckpointIO
    from pytorch_lightning.strategies import Strategy
    from pytorch_lightning.utilities.exceptions import MisconfigurationException

from .. import keep as keep_policies
from ..errors import InvalidArgumentError, MissingMetricError
from ..policies import KeepPolicy, resolve_mode
from ..store import CheckpointStore, open_store
from . import finite_scalars, restart_files

__all__ = ["LightningConfigError", "MonitorNotFoundError", "StoreCheckpoint", "resume_path"]

CKPT_FILE = "model.ckpt"


class LightningConfigError(InvalidArgumentError, MisconfigurationException):
    """An argument ``ModelCheckpoint`` refuses, refused with its words.

    Both ckptstore's :class:`~ckptstore.errors.InvalidArgumentError` (a ``ValueError``) and Lightning's
    ``MisconfigurationException``, so code written for either catches it.
    """


class MonitorNotFoundError(MissingMetricError, MisconfigurationException):
    """``monitor`` names a key the module never logged (``ModelCheckpoint`` raises the same, with the same words).

    Both ckptstore's :class:`~ckptstore.errors.MissingMetricError` and Lightning's
    ``MisconfigurationException``.
    """


class StoreCheckpoint(_LightningCheckpoint):
    """Save Lightning checkpoints into a store, deciding when and what to keep as ``ModelCheckpoint`` does.

    Checkpoints are numbered by completed epochs (Lightning's ``epoch + 1``), or by the global step
    with ``every_n_train_steps`` or when the trainer validates more than once per epoch (so every
    save has its own number). Each checkpoint records the trainer's ``callback_metrics`` (plus
    ``epoch`` or ``step`` when that is the monitor), its global step and ``lightning_epoch``.

    Args:
        store: A store or a URL for :func:`ckptstore.open` (a store you pass keeps its own keep policy).
        monitor: The metric that defines best (from ``self.log``, or ``"epoch"`` / ``"step"``); None
            saves every time.
        mode: ``min``, ``max`` or ``auto`` (ckptstore's guess from the name).
        save_top_k: Keep the best ``k`` (the keep policy ``best(k)``; only checkpoints that enter the
            top k are saved); -1 keeps all; 0 saves none but a last one (``save_last``). Without a
            monitor, 1 keeps the newest.
        every_n_epochs: Save at the end of every n-th epoch; 0 disables epoch saves. Default: 1,
            unless ``every_n_train_steps`` is set.
        every_n_train_steps: Save every n optimizer steps (numbered by the global step); 0 or None:
            never.
        save_last: As Lightning's: a checkpoint at the end of training if none was saved, and at each
            step trigger even when it does not enter the top k (the store's ``last`` pointer names
            it). ``"link"`` is accepted as True (the pointer is the link).
        save_on_train_epoch_end: As Lightning's; None decides as ``ModelCheckpoint`` does (on
            validation end when the trainer validates, else on train epoch end).
        storage_options: For a URL on an object store.
        blocking: False returns once the checkpoint dict Lightning builds is snapshotted (tensors copied
            into buffers reused across saves); the trainer's ``CheckpointIO`` (the one inside an
            ``AsyncCheckpointIO``) writes ``model.ckpt`` in the store's background thread, which commits
            it (at most ``pending_saves`` in flight; an error is raised by the next save or at the end of
            training). See docs/frameworks/lightning.md.

    Raises:
        LightningConfigError: ``save_top_k < -1``, a negative ``every_n_epochs`` or
            ``every_n_train_steps``, both set, ``save_top_k > 1`` without a monitor, or an unknown mode;
            when training starts, a ``blocking`` that does not fit the strategy or its CheckpointIO.
    """

    def __init__(
        self,
        store: CheckpointStore | str | os.PathLike[str],
        *,
        monitor: str | None = None,
        mode: str = "min",
        save_top_k: int = 1,
        every_n_epochs: int | None = None,
        every_n_train_steps: int | None = None,
        save_last: bool | str | None = None,
        save_on_train_epoch_end: bool | None = None,
        storage_options: Mapping[str, Any] | None = None,
        blocking: bool = True,
    ) -> None:
        super().__init__()
        if every_n_epochs is None and every_n_train_steps is None:
            every_n_epochs, every_n_train_steps = 1, 0
        _validate(monitor, mode, save_top_k, every_n_epochs or 0, every_n_train_steps or 0)
        self.monitor = monitor
        self.mode = resolve_mode(monitor, mode)
        self.save_top_k = save_top_k
        self._every_n_epochs: int = every_n_epochs or 0
        self._every_n_train_steps: int = every_n_train_steps or 0
        self.save_last = save_last
        self._save_on_train_epoch_end = save_on_train_epoch_end
        if isinstance(store, CheckpointStore):
            self.store = store
        else:
            self.store = open_store(
                store, monitor=monitor, mode=self.mode, keep=self._keep_policy(), storage_options=storage_options
            )
        self._by_step = self._every_n_train_steps >= 1
        self._last_global_step_saved = 0  # as ModelCheckpoint: nothing to save before a step was taken
        self._saved_any = False
        self._defer_save_until_validation = False
        self._saving: int | None = None  # the number being saved, for state_dict
        self.blocking = blocking
        self._submitted: set[int] = set()  # non-blocking saves: committed, or committing in the background
        self._warned: set[str] = set()

    # -- configuration -------------------------------------------------------------------------------
    @property
    def every_n_epochs(self) -> int:
        """Epoch trigger (0: none), as ``ModelCheckpoint.every_n_epochs``."""
        return self._every_n_epochs

    @property
    def every_n_train_steps(self) -> int:
        """Step trigger (0: none)."""
        return self._every_n_train_steps

    @property
    def state_key(self) -> str:
        """The key of this callback's state in a Lightning checkpoint."""
        return str(self._generate_state_key(monitor=self.monitor, mode=self.mode))

    @property
    def best_model_path(self) -> str:
        """The best checkpoint's ``model.ckpt`` on a local store (for ``ckpt_path="best"``), else ``""``."""
        if self.monitor is None:
            return ""
        try:
            return str(self.store.best().path / CKPT_FILE)
        except (InvalidArgumentError, FileNotFoundError):
            return ""

    def _keep_policy(self) -> KeepPolicy | None:
        if self.save_top_k == -1:
            return None
        if self.save_top_k == 0 or self.monitor is None:
            return keep_policies.linear(1)  # the newest (ModelCheckpoint replaces its one file)
        return keep_policies.best(self.save_top_k)

    # -- Lightning state: which checkpoint a run resumes from ---------------------------------------
    def state_dict(self) -> dict[str, Any]:
        """The store and the number of the checkpoint being written (None outside our own saves)."""
        return {"store": self.store.url, "number": self._saving}

    def load_state_dict(self, state_dict: dict[str, Any]) -> None:
        """A run resumes from one of our checkpoints: tell the store, so gc never deletes it."""
        number = state_dict.get("number")
        if state_dict.get("store") != self.store.url or not isinstance(number, int) or number not in self.store:
            return
        newest = max(self.store.epochs())
        if number == newest:
            self.store.restart("auto", verify=False)  # records it as this run's parent
            return
        self._warn(
            f"resuming from checkpoint {number} of {self.store.url}, which holds later ones (up to {newest}); "
            f"saves whose numbers exist are skipped. Call store.rollback({number}) before fit to rewrite them."
        )

    # -- hooks (as ModelCheckpoint's) ----------------------------------------------------------------
    def on_train_start(self, trainer: Any, pl_module: Any) -> None:
        """Check ``blocking``; number by the global step if validation (saving) happens more than once an epoch."""
        _check_writer(trainer, self.blocking)
        self._by_step = self._every_n_train_steps >= 1 or (
            not self._should_save_on_train_epoch_end(trainer) and _validates_within_epoch(trainer)
        )

    def on_train_batch_end(self, trainer: Any, pl_module: Any, outputs: Any, batch: Any, batch_idx: int) -> None:
        """Save every ``every_n_train_steps`` optimizer steps (deferred to validation end if its metric is due)."""
        if self._every_n_train_steps < 1 or trainer.global_step % self._every_n_train_steps != 0:
            return
        candidates = self._monitor_candidates(trainer)
        if self.monitor is not None and self.monitor not in candidates:
            self._defer_save_until_validation = True
            return
        if (
            self.monitor is not None
            and not self._should_save_on_train_epoch_end(trainer)
            and getattr(trainer.fit_loop.epoch_loop.batch_progress, "is_last_batch", False)
            and _will_validate(trainer)
        ):
            self._defer_save_until_validation = True
            return
        if self._should_skip_saving_checkpoint(trainer):
            return
        saved = self._save_topk(trainer, candidates, batch=batch_idx)
        if self.save_last and not saved:
            self._save(trainer, candidates, batch=batch_idx)

    def on_train_epoch_end(self, trainer: Any, pl_module: Any) -> None:
        """Save after the epoch (after the module's own hook), every ``every_n_epochs``, if not on validation end."""
        if self._should_skip_saving_checkpoint(trainer) or not self._should_save_on_train_epoch_end(trainer):
            return
        if self._epoch_due(trainer):
            self._save_topk(trainer, self._monitor_candidates(trainer))

    def on_validation_end(self, trainer: Any, pl_module: Any) -> None:
        """Save after validation (the monitored metric is fresh), when that is where Lightning saves."""
        if self._should_skip_saving_checkpoint(trainer) or self._should_save_on_train_epoch_end(trainer):
            return
        candidates = self._monitor_candidates(trainer)
        if self._defer_save_until_validation:
            self._defer_save_until_validation = False
            if not self._save_topk(trainer, candidates) and self.save_last:
                self._save(trainer, candidates)
            return
        if self._epoch_due(trainer):
            self._save_topk(trainer, candidates)

    def on_train_end(self, trainer: Any, pl_module: Any) -> None:
        """``save_last``: one checkpoint at the end if the run saved none."""
        if self.save_last and not self._saved_any and not trainer.fast_dev_run:
            candidates = self._monitor_candidates(trainer)
            if self.monitor is not None and self._monitor_value(candidates) is None:
                self._warn(
                    f"no last checkpoint saved: the store monitors {self.monitor!r}, which has no finite value "
                    "at the end of training"
                )
                return
            self._save(trainer, candidates, at_end=True)
        self.store.wait()  # the non-blocking saves: committed now, or their error raised

    def on_exception(self, trainer: Any, pl_module: Any, exception: BaseException) -> None:
        """Training failed: finish the saves in flight; a failure of theirs is warned about, not raised over it."""
        try:
            self.store.wait()
        except Exception as exc:
            warnings.warn(f"a non-blocking save to {self.store.url} failed as well: {exc!r}", UserWarning, stacklevel=2)

    # -- decisions (ModelCheckpoint's) ---------------------------------------------------------------
    def _epoch_due(self, trainer: Any) -> bool:
        return self._every_n_epochs >= 1 and (trainer.current_epoch + 1) % self._every_n_epochs == 0

    def _should_skip_saving_checkpoint(self, trainer: Any) -> bool:
        return (
            bool(trainer.fast_dev_run)
            or trainer.state.fn != "fit"
            or trainer.sanity_checking
            or self._last_global_step_saved == trainer.global_step
        )

    def _should_save_on_train_epoch_end(self, trainer: Any) -> bool:
        if self._save_on_train_epoch_end is not None:
            return self._save_on_train_epoch_end
        if getattr(trainer, "_val_check_time_interval", None) is not None:
            return False
        if trainer.check_val_every_n_epoch != 1:
            return False
        if _num_val_batches(trainer) == 0:
            return True
        return bool(trainer.val_check_interval == 1.0)

    def _monitor_candidates(self, trainer: Any) -> dict[str, Any]:
        """``trainer.callback_metrics`` with ``epoch`` and ``step`` (ModelCheckpoint's candidates)."""
        candidates: dict[str, Any] = dict(trainer.callback_metrics)
        for key, fallback in (("epoch", trainer.current_epoch), ("step", trainer.global_step)):
            logged: Any = candidates.get(key)
            candidates[key] = int(logged) if _is_tensor(logged) else fallback
        return candidates

    def _monitor_value(self, candidates: Mapping[str, Any]) -> float | None:
        assert self.monitor is not None
        try:
            value = float(candidates[self.monitor])
        except (KeyError, TypeError, ValueError):
            return None
        return value if math.isfinite(value) else None

    def _save_topk(self, trainer: Any, candidates: dict[str, Any], batch: int | None = None) -> bool:
        """Save if the checkpoint enters the top k; True if saved.

        Raises:
            MonitorNotFoundError: the monitor is not among the metrics after validation has run.
        """
        if self.save_top_k == 0:
            return False
        if self.monitor is not None:
            if self.monitor not in candidates:
                message = (
                    f"`StoreCheckpoint(monitor={self.monitor!r})` could not find the monitored key in the returned"
                    f" metrics: {list(candidates)}."
                    f" HINT: Did you call `log({self.monitor!r}, value)` in the `LightningModule`?"
                )
                if getattr(trainer.fit_loop.epoch_loop.val_loop, "_has_run", False):
                    raise MonitorNotFoundError(message)
                self._warn(message)
                return False
            value = self._monitor_value(candidates)
            if value is None:
                self._warn(f"{self.monitor}={candidates[self.monitor]} is not finite: not saved (metrics are finite)")
                return False
            if not self._enters_top_k(value):
                return False
        return self._save(trainer, candidates, batch=batch)

    def _enters_top_k(self, value: float) -> bool:
        """ModelCheckpoint's ``check_monitor_top_k``, against this run's checkpoints in the store."""
        if self.save_top_k == -1:
            return True
        assert self.monitor is not None
        self.store.wait()  # the top k may still be committing in the background
        scores = sorted(
            (c.metrics[self.monitor] for c in self.store.list() if self.monitor in c.metrics),
            reverse=self.mode == "max",
        )
        if len(scores) < self.save_top_k:
            return True
        kth = scores[self.save_top_k - 1]
        return value < kth if self.mode == "min" else value > kth

    def _save(
        self, trainer: Any, candidates: Mapping[str, Any], batch: int | None = None, at_end: bool = False
    ) -> bool:
        if self._by_step:
            number = trainer.global_step
        else:
            number = trainer.current_epoch if at_end else trainer.current_epoch + 1
        if number in self._submitted or number in self.store:
            self._warn(f"checkpoint {number} is already in {self.store.url}: not saved again")
            return False
        keys = set(trainer.callback_metrics) | ({self.monitor} if self.monitor else set())
        options: dict[str, Any] = {
            "metrics": finite_scalars({k: v for k, v in candidates.items() if k in keys}),
            "step": trainer.global_step,
            "batch": batch,
            "metadata": {"lightning_epoch": trainer.current_epoch},
            "force": True,
        }
        self._saving = number
        try:
            if self.blocking:
                with self.store.save(number, **options) as tx:
                    trainer.save_checkpoint(str(tx.path / CKPT_FILE))
            else:  # trainer.save_checkpoint's dict, snapshotted; the trainer's CheckpointIO writes it later
                checkpoint = trainer._checkpoint_connector.dump_checkpoint(weights_only=False)
                if trainer.is_global_zero:  # where Strategy.save_checkpoint writes
                    write = _ckpt_writer(_checkpoint_io(trainer))
                    self.store.save_state(number, checkpoint, serializer=write, blocking=False, **options)
                    self._submitted.add(number)
        finally:
            self._saving = None
        self._last_global_step_saved = trainer.global_step
        self._saved_any = True
        return True

    def _warn(self, message: str) -> None:
        if message not in self._warned:
            self._warned.add(message)
            warnings.warn(message, UserWarning, stacklevel=3)


def _validate(monitor: str | None, mode: str, save_top_k: int, every_n_epochs: int, every_n_train_steps: int) -> None:
    """ModelCheckpoint's checks, with its words.

    Raises:
        LightningConfigError: a value ModelCheckpoint refuses.
    """
    if mode not in ("min", "max", "auto"):
        raise LightningConfigError(f"`mode` can be min, max, auto but got {mode}")
    if save_top_k < -1:
        raise LightningConfigError(f"Invalid value for save_top_k={save_top_k}. Must be >= -1")
    if every_n_train_steps < 0:
        raise LightningConfigError(f"Invalid value for every_n_train_steps={every_n_train_steps}. Must be >= 0")
    if every_n_epochs < 0:
        raise LightningConfigError(f"Invalid value for every_n_epochs={every_n_epochs}. Must be >= 0")
    if every_n_train_steps >= 1 and every_n_epochs >= 1:
        raise LightningConfigError(
            f"Combination of parameters every_n_train_steps={every_n_train_steps} and "
            f"every_n_epochs={every_n_epochs} should be mutually exclusive."
        )
    if monitor is None and save_top_k not in (-1, 0, 1):
        raise LightningConfigError(
            f"StoreCheckpoint(save_top_k={save_top_k}, monitor=None) is not a valid configuration."
            " No quantity for top_k to track."
        )


def _checkpoint_io(trainer: Any) -> Any:
    """The trainer's ``CheckpointIO``, the one under Lightning's ``AsyncCheckpointIO`` if it wraps one."""
    io = trainer.strategy.checkpoint_io
    return io.checkpoint_io if isinstance(io, AsyncCheckpointIO) else io


def _ckpt_writer(io: Any) -> Any:
    """``write(checkpoint, tx)`` for ``save_state``: ``io`` writes ``model.ckpt`` into the staging folder."""

    def lightning_checkpoint_io(checkpoint: Any, tx: Any) -> None:
        io.save_checkpoint(checkpoint, tx.path / CKPT_FILE)

    return lightning_checkpoint_io


def _check_writer(trainer: Any, blocking: bool) -> None:
    """Refuse what would commit an unfinished file, or bypass a strategy's own writer.

    Raises:
        LightningConfigError: ``AsyncCheckpointIO`` with ``blocking=True``, or ``blocking=False`` with a
            strategy that writes its own checkpoint files (FSDP, DeepSpeed, ModelParallel, XLA).
    """
    strategy = trainer.strategy
    if blocking and isinstance(strategy.checkpoint_io, AsyncCheckpointIO):
        raise LightningConfigError(
            "StoreCheckpoint(blocking=True) commits model.ckpt when trainer.save_checkpoint returns, but "
            "AsyncCheckpointIO writes it later; remove the plugin and pass StoreCheckpoint(blocking=False), "
            "which snapshots the checkpoint and writes and commits it in the background"
        )
    if not blocking and type(strategy).save_checkpoint is not Strategy.save_checkpoint:
        raise LightningConfigError(
            f"StoreCheckpoint(blocking=False) snapshots the checkpoint and writes it with the CheckpointIO, but "
            f"{type(strategy).__name__} writes its own checkpoint files; pass blocking=True"
        )


def _is_tensor(value: Any) -> bool:
    return hasattr(value, "dim") and hasattr(value, "item")


def _num_val_batches(trainer: Any) -> float:
    batches = trainer.num_val_batches
    return float(sum(batches)) if isinstance(batches, list) else float(batches)


def _will_validate(trainer: Any) -> bool:
    """ModelCheckpoint's test: a validation loop runs right after this (last) batch."""
    if not getattr(trainer, "enable_validation", False) or not _num_val_batches(trainer):
        return False
    every = trainer.check_val_every_n_epoch
    return every is None or (trainer.current_epoch + 1) % every == 0


def _validates_within_epoch(trainer: Any) -> bool:
    """True if the trainer validates before the end of an epoch (``val_check_interval < 1``)."""
    check, batches = getattr(trainer, "val_check_batch", None), trainer.num_training_batches
    if getattr(trainer, "_val_check_time_interval", None) is not None:
        return True
    if not isinstance(check, int) or not math.isfinite(batches) or not _num_val_batches(trainer):
        return False
    return bool(check < batches)


@contextlib.contextmanager
def resume_path(
    store: StoreCheckpoint | CheckpointStore | str | os.PathLike[str], **open_options: Any
) -> Iterator[str | None]:
    """The newest checkpoint that verifies, as a local ``.ckpt`` path for ``trainer.fit(ckpt_path=...)``.

    Yields None on a store with no checkpoint (so ``fit`` starts from scratch). On object stores the
    checkpoint is downloaded (verified) for the duration of the block. ``store`` may be the callback
    (its store is used). The store records the checkpoint as this run's parent, so gc never deletes
    it; a ``StoreCheckpoint`` in the resumed ``fit`` tells its own store the same, whatever opened
    the path.

    Raises:
        IncompleteCheckpointError: the checkpoint's manifest does not list ``model.ckpt``.
        UnsafeEntryError: ``model.ckpt`` is a symlink or a special file.
    """
    if isinstance(store, StoreCheckpoint):
        store = store.store
    with restart_files(store, **open_options) as files:
        yield None if files is None else str(files.local_file(CKPT_FILE))
