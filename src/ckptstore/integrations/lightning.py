"""PyTorch Lightning: a ``ModelCheckpoint`` that commits through a store, and resuming from it.

    callback = StoreCheckpoint("s3://bucket/run1", monitor="val_loss", save_top_k=3)
    trainer = L.Trainer(max_epochs=10, callbacks=[callback])
    with resume_path(callback.store) as ckpt_path:        # None on a fresh store
        trainer.fit(model, ckpt_path=ckpt_path)

Each save is ``trainer.save_checkpoint`` into the transaction's staging directory (a full Lightning
checkpoint: weights, optimizer, schedulers, loops, epoch and step), committed atomically and hashed,
on any backend; no symlinks are needed. ``save_top_k`` becomes the keep policy ``best(k)``, which never
deletes the last or a pinned checkpoint.
"""

from __future__ import annotations

import contextlib
import os
from collections.abc import Iterator, Mapping
from typing import Any

try:
    import lightning.pytorch as pl
except ImportError:  # the standalone package
    import pytorch_lightning as pl

from .. import keep as keep_policies
from ..errors import CheckpointNotFoundError, InvalidArgumentError
from ..policies import SaveRules, decide_save, resolve_mode
from ..store import CheckpointStore, open_store
from . import finite_scalars, restart_files

__all__ = ["StoreCheckpoint", "resume_path"]

CKPT_FILE = "model.ckpt"


class StoreCheckpoint(pl.Callback):
    """Save Lightning checkpoints into a store.

    Args:
        store: A store or a URL for :func:`ckptstore.open`.
        monitor: The metric that defines best (from ``self.log``); None saves every time.
        mode: ``min``, ``max`` or ``auto``.
        save_top_k: Keep the best ``k`` (the keep policy ``best(k)``; -1 keeps all; 0 saves none).
        every_n_epochs: Save at the end of every n-th epoch (numbered by completed epochs).
        every_n_train_steps: Save every n optimizer steps instead (numbered by the global step).
        save_last: Keep the latest checkpoint too (always true of the store's ``last`` pointer; with
            ``save_top_k`` it also saves epochs that are not among the best, so ``last`` is current).
        storage_options: For a URL on an object store.
    """

    def __init__(
        self,
        store: CheckpointStore | str | os.PathLike[str],
        *,
        monitor: str | None = None,
        mode: str = "min",
        save_top_k: int = 1,
        every_n_epochs: int = 1,
        every_n_train_steps: int | None = None,
        save_last: bool = True,
        storage_options: Mapping[str, Any] | None = None,
    ) -> None:
        super().__init__()
        if save_top_k < -1:
            raise InvalidArgumentError(f"save_top_k must be >= -1, got {save_top_k}")
        if monitor is None and save_top_k not in (-1, 0, 1):
            raise InvalidArgumentError("save_top_k > 1 needs a monitor (it keeps the k best)")
        self.monitor = monitor
        self.mode = resolve_mode(monitor, mode)
        self.save_top_k = save_top_k
        self.every_n_epochs = every_n_epochs
        self.every_n_train_steps = every_n_train_steps
        self.save_last = save_last
        if isinstance(store, CheckpointStore):
            self.store = store
        else:
            policy = None
            if save_top_k > 0:
                policy = keep_policies.best(save_top_k) if monitor is not None else keep_policies.linear(save_top_k)
            self.store = open_store(
                store, monitor=monitor, mode=self.mode, keep=policy, storage_options=storage_options
            )
        self.rules = SaveRules(
            monitor=monitor,
            mode=self.mode,
            save_best_only=monitor is not None and save_top_k == 1 and not save_last,
        )

    def on_train_epoch_end(self, trainer: Any, pl_module: Any) -> None:
        """Save after the epoch (validation has run), every ``every_n_epochs``."""
        if self.every_n_train_steps or self.save_top_k == 0:
            return
        completed = trainer.current_epoch + 1
        if completed % self.every_n_epochs == 0:
            self._save(trainer, completed)

    def on_train_batch_end(self, trainer: Any, pl_module: Any, outputs: Any, batch: Any, batch_idx: int) -> None:
        """Save every ``every_n_train_steps`` optimizer steps."""
        step = trainer.global_step
        if self.every_n_train_steps and step > 0 and step % self.every_n_train_steps == 0 and self.save_top_k != 0:
            self._save(trainer, step, batch=batch_idx)

    def _save(self, trainer: Any, number: int, batch: int | None = None) -> None:
        if number in self.store:
            return  # already saved (a step-numbered save can repeat on gradient accumulation)
        metrics = finite_scalars(trainer.callback_metrics)
        if self.monitor is not None and self.monitor not in metrics:
            return
        best = None
        if self.monitor is not None:
            with contextlib.suppress(CheckpointNotFoundError):
                best = self.store.best(metric=self.monitor, mode=self.mode).all_metrics.get(self.monitor)
        if not decide_save(self.rules, number, metrics, best).save:
            return
        with self.store.save(
            number,
            metrics=metrics,
            step=trainer.global_step,
            batch=batch,
            metadata={"lightning_epoch": trainer.current_epoch},
            force=True,
        ) as tx:
            trainer.save_checkpoint(str(tx.path / CKPT_FILE))


@contextlib.contextmanager
def resume_path(store: CheckpointStore | str | os.PathLike[str], **open_options: Any) -> Iterator[str | None]:
    """The newest checkpoint that verifies, as a local ``.ckpt`` path for ``trainer.fit(ckpt_path=...)``.

    Yields None on a store with no checkpoint (so ``fit`` starts from scratch). On object stores the
    checkpoint is downloaded (verified) for the duration of the block.

    Raises:
        IncompleteCheckpointError: the checkpoint's manifest does not list ``model.ckpt``.
        UnsafeEntryError: ``model.ckpt`` is a symlink or a special file.
    """
    with restart_files(store, **open_options) as files:
        yield None if files is None else str(files.local_file(CKPT_FILE))
