"""Hugging Face Trainer: commit every ``checkpoint-N`` folder the Trainer writes into a store.

    store = ckptstore.open("s3://bucket/run1", keep=ckptstore.keep.linear(2))
    trainer = Trainer(..., args=TrainingArguments(..., save_total_limit=None), callbacks=[StoreCallback(store)])
    with latest_checkpoint(store) as path:               # the newest checkpoint that verifies, or None
        trainer.train(resume_from_checkpoint=path)

Each folder becomes one atomic, hashed checkpoint numbered by the global step, with the metrics
logged at that very step (an evaluation is attached only to the checkpoint of its own step; one the
Trainer runs at the end of an epoch, after that step's save, still belongs to that step's
checkpoint). ``metric_for_best_model`` and ``greater_is_better`` define the store's best (when the
callback opens the store from a URL), and ``store.best()`` names the checkpoint the Trainer names as
``best_model_checkpoint``. A checkpoint saved before any evaluation is committed without the metric.
Without an explicit ``keep=``, ``save_total_limit=k`` rotates the store as the Trainer rotates its
folders (:class:`SaveTotalLimit`); the store never deletes the best checkpoint (transformers#15089)
nor the last one. ``latest_checkpoint`` resumes from the newest checkpoint that verifies, not merely
the newest folder (transformers#35782). With ``blocking=False`` the folder, already written by the
Trainer, is copied, hashed and committed in the store's background thread while training goes on.
"""

from __future__ import annotations

import contextlib
import logging
import os
import shutil
from collections.abc import Iterator, Mapping, Sequence
from pathlib import Path
from typing import Any

import attrs
from transformers import TrainerCallback

from ..errors import CheckpointNotFoundError, InvalidArgumentError, InvalidArgumentTypeError
from ..policies import CheckpointInfo, KeepContext, KeepPolicy
from ..store import CheckpointStore, open_store
from . import finite_scalars, restart_folder

__all__ = ["SaveTotalLimit", "StoreCallback", "latest_checkpoint"]

logger = logging.getLogger("ckptstore")

UNRANKED_KEY = "hf_unranked"
"""Metadata key of a monitored value the Trainer does not rank (see :meth:`StoreCallback.on_save`)."""


def _limit(_: object, attribute: attrs.Attribute[int], value: int) -> None:
    if isinstance(value, bool) or not isinstance(value, int):
        raise InvalidArgumentTypeError(f"{attribute.name} must be a positive int, got {value!r}")
    if value < 1:
        raise InvalidArgumentError(f"{attribute.name} must be a positive int, got {value!r}")


@attrs.frozen
class SaveTotalLimit:
    """The Trainer's ``save_total_limit=n`` as a keep policy: ``n`` checkpoints, the best among them.

    The Trainer's rotation (``transformers.trainer_utils.rotate_checkpoints``): the newest
    checkpoint and the best one are always kept and count against ``n``; the rest of the ``n`` are
    the newest others. ``SaveTotalLimit(2)`` after steps 5..25 with the best at 5 keeps 5 and 25;
    with ``n=1`` and a best that is not the newest it keeps both, as the Trainer does while it
    trains. (At the end of training the Trainer then deletes the newest folder when ``n=1``; the
    store keeps it, so a run can always resume from its last checkpoint.) Pinned checkpoints and
    the one a run resumed from are kept besides, by the rules every keep policy follows.

    Args:
        n: ``save_total_limit``.
    """

    n: int = attrs.field(validator=_limit)

    def select(self, infos: Sequence[CheckpointInfo], ctx: KeepContext) -> dict[int, str]:
        """See :class:`~ckptstore.policies.KeepPolicy`."""
        epochs = sorted({i.epoch for i in infos}, reverse=True)
        if not epochs:
            return {}
        label = f"save_total_limit={self.n}"
        newest = ctx.last if ctx.last in epochs else epochs[0]
        kept = {newest: f"{label}: the newest checkpoint"}
        if ctx.best in epochs and ctx.best is not None:
            kept.setdefault(ctx.best, f"{label}: the best checkpoint, counted within the limit")
        for epoch in epochs:
            if len(kept) >= self.n:
                break
            kept.setdefault(epoch, f"{label}: one of the {self.n} newest")
        return kept


def _logged_at(log_history: Sequence[Mapping[str, Any]], step: int) -> dict[str, float]:
    """Every numeric value logged at exactly ``step`` (training logs and evaluations alike)."""
    metrics: dict[str, float] = {}
    for entry in log_history:
        if entry.get("step") == step:
            metrics.update(finite_scalars({k: v for k, v in entry.items() if k not in ("step", "epoch")}))
    return metrics


def _evaluated_at(log_history: Sequence[Mapping[str, Any]], step: int) -> bool:
    return any(entry.get("step") == step and any(k.startswith("eval_") for k in entry) for entry in log_history)


class StoreCallback(TrainerCallback):
    """Commit each checkpoint the Trainer saves.

    Args:
        store: A store, or a URL opened with ``metric_for_best_model`` as the monitor.
        keep: The keep policy when ``store`` is a URL. None: :class:`SaveTotalLimit` of the
            Trainer's ``save_total_limit`` when it is set, else keep everything.
        remove_local: Delete the Trainer's local ``checkpoint-N`` folder once committed (saves disk;
            do not combine with ``load_best_model_at_end``, which reads the local folder).
        storage_options: For a URL on an object store.
        blocking: False returns to the Trainer at once: the ``checkpoint-N`` files are final when
            ``on_save`` runs, so copying, hashing, fsync, the commit, pointers, index and gc all run in
            the store's background thread. The Trainer's next save may rewrite that folder (a second
            save of the same step) or delete it (``save_total_limit`` rotation), so the commit is
            finished before the Trainer saves again, and a save the Trainer makes as training stops
            commits at once (its end-of-training clean-up deletes folders): one commit in flight at
            most. An error is raised by the next save, or at the end of training.

    Attributes:
        committed: The steps committed by this callback, in order (a background commit once it is done).
    """

    def __init__(
        self,
        store: CheckpointStore | str | os.PathLike[str],
        *,
        keep: KeepPolicy | None = None,
        remove_local: bool = False,
        storage_options: Mapping[str, Any] | None = None,
        blocking: bool = True,
    ) -> None:
        self._store = store if isinstance(store, CheckpointStore) else None
        self._url = None if isinstance(store, CheckpointStore) else store
        self.keep = keep
        self.remove_local = remove_local
        self.storage_options = storage_options
        self.committed: list[int] = []
        self.blocking = blocking
        self._in_flight: list[tuple[int, Path]] = []  # committing in the background: step, local folder
        self._pending: int | None = None  # a step saved before the evaluation of the same step
        self._epoch_ended_at: int | None = None

    def store_for(self, args: Any) -> CheckpointStore:
        """The store, opened on first use with the Trainer's best-model settings and save limit."""
        if self._store is None:
            monitor = args.metric_for_best_model
            if monitor is not None and not monitor.startswith("eval_"):
                monitor = f"eval_{monitor}"
            mode = "max" if args.greater_is_better else "min"
            keep = self.keep
            limit = args.save_total_limit
            if keep is None and isinstance(limit, int) and not isinstance(limit, bool) and limit > 0:
                keep = SaveTotalLimit(limit)
            assert self._url is not None
            self._store = open_store(
                self._url, monitor=monitor, mode=mode, keep=keep, storage_options=self.storage_options
            )
        return self._store

    def on_train_begin(self, args: Any, state: Any, control: Any, **kwargs: Any) -> Any:
        """On a resumed run, record the checkpoint it resumed from as the parent of later saves."""
        store = self.store_for(args)
        if state.global_step and state.global_step in store:
            store._parent = state.global_step
        return control

    def on_save(self, args: Any, state: Any, control: Any, **kwargs: Any) -> Any:
        """Commit ``output_dir/checkpoint-<global_step>`` with the metrics logged at that step.

        Without an evaluation at this step the checkpoint is committed without the monitored
        metric (it cannot be best). When the Trainer will evaluate this same step right after the
        save (``eval_strategy="epoch"`` and a step save on the epoch's last step), the commit waits
        for that evaluation (at most until the next step or the end of training). The monitored
        value is left out of ``metrics`` (kept in ``metadata["hf_unranked"]``) when the Trainer
        does not rank this checkpoint although it would lead the store: an evaluation at a step
        without a checkpoint scored better, so the Trainer names no new best.
        """
        step = state.global_step
        self._flush(args, state, control)
        if self._eval_follows(args, state, control):
            self._pending = step
            return control
        self._commit(args, state, step, None, control)
        return control

    def on_step_end(self, args: Any, state: Any, control: Any, **kwargs: Any) -> Any:
        """Before the Trainer saves (and may rewrite or rotate folders), let a background commit finish."""
        if control.should_save:
            self._settle(args)
        return control

    def on_epoch_end(self, args: Any, state: Any, control: Any, **kwargs: Any) -> Any:
        """Note that an epoch-end evaluation, if any, comes next at this step."""
        self._epoch_ended_at = state.global_step
        if control.should_save:
            self._settle(args)
        return control

    def on_evaluate(self, args: Any, state: Any, control: Any, **kwargs: Any) -> Any:
        """Commit a checkpoint that waited for the evaluation of its own step."""
        if self._pending is not None and self._pending == state.global_step:
            self._pending = None
            self._commit(args, state, state.global_step, kwargs.get("metrics"), control)
        else:
            self._flush(args, state, control)
        if self._saves_next(args, control):
            self._settle(args)
        return control

    def on_step_begin(self, args: Any, state: Any, control: Any, **kwargs: Any) -> Any:
        """Commit a waiting checkpoint whose evaluation did not come."""
        self._flush(args, state, control)
        return control

    def on_epoch_begin(self, args: Any, state: Any, control: Any, **kwargs: Any) -> Any:
        """Commit a waiting checkpoint whose evaluation did not come."""
        self._flush(args, state, control)
        return control

    def on_train_end(self, args: Any, state: Any, control: Any, **kwargs: Any) -> Any:
        """Commit a waiting checkpoint whose evaluation did not come; wait for background commits (raise an error)."""
        self._flush(args, state, control)
        self._settle(args)
        return control

    def _saves_next(self, args: Any, control: Any) -> bool:
        """After an evaluation: whether the Trainer saves next (``save_strategy="best"`` decides after this hook)."""
        return bool(control.should_save) or str(getattr(args.save_strategy, "value", args.save_strategy)) == "best"

    def _settle(self, args: Any) -> None:
        """Wait for the background commits; record them, and remove their local folders with ``remove_local``."""
        if not self._in_flight:
            return
        in_flight, self._in_flight = self._in_flight, []
        store = self.store_for(args)
        try:
            store.wait()
        finally:
            for step, folder in in_flight:
                if step in store:
                    self._committed(step, folder)

    def _committed(self, step: int, folder: Path) -> None:
        self.committed.append(step)
        if self.remove_local:
            shutil.rmtree(folder, ignore_errors=True)

    def _eval_follows(self, args: Any, state: Any, control: Any) -> bool:
        """Whether the Trainer evaluates this step after this save (an epoch-end evaluation)."""
        step = state.global_step
        if str(getattr(args.eval_strategy, "value", args.eval_strategy)) != "epoch" or self._epoch_ended_at == step:
            return False
        if _evaluated_at(state.log_history, step) or state.epoch is None or args.eval_delay > state.epoch:
            return False
        epoch_done = float(state.epoch).is_integer()
        return bool(epoch_done or control.should_training_stop or control.should_epoch_stop)

    def _flush(self, args: Any, state: Any, control: Any) -> None:
        if self._pending is not None:
            step, self._pending = self._pending, None
            self._commit(args, state, step, None, control)

    def _commit(self, args: Any, state: Any, step: int, evaluation: Mapping[str, Any] | None, control: Any) -> None:
        """Commit ``checkpoint-<step>``; ``evaluation``: metrics the Trainer has not ranked yet."""
        self._settle(args)  # one in flight at most, and the store's best and epochs are current
        store = self.store_for(args)
        folder = Path(args.output_dir) / f"checkpoint-{step}"
        if not folder.is_dir() or step in store:
            return
        metrics = _logged_at(state.log_history, step)
        metrics.update(finite_scalars(evaluation))
        metadata: dict[str, Any] = {"hf_epoch": state.epoch}
        monitor = store.config.monitor
        if (
            monitor is not None
            and monitor in metrics
            and not self._ranked(args, state, step, metrics[monitor], evaluation)
        ):
            metadata[UNRANKED_KEY] = {monitor: metrics.pop(monitor)}
            logger.info(
                "checkpoint-%d: %s=%g not ranked: the Trainer's best evaluation so far (step %s) has no checkpoint",
                step,
                monitor,
                metadata[UNRANKED_KEY][monitor],
                state.best_global_step,
            )
        # In the background only while the Trainer leaves the folder alone: not when it saves right after
        # this hook (an evaluation before a save), nor when training stops (its clean-up deletes folders).
        background = not self.blocking and not control.should_training_stop and not control.should_save
        options: dict[str, Any] = {"metrics": metrics, "step": step, "metadata": metadata, "force": True}
        store.save_state(step, folder, serializer=_copy_trainer_folder, blocking=not background, **options)
        if background:
            self._in_flight.append((step, folder))
        else:
            self._committed(step, folder)

    def _ranked(self, args: Any, state: Any, step: int, value: float, evaluation: Mapping[str, Any] | None) -> bool:
        """Whether the store may rank ``value``: the Trainer's new best, or not ahead of the store's best.

        The Trainer names ``checkpoint-<best_global_step>`` best when that folder exists, and keeps
        its previous choice when it does not; a value that would lead the store while the Trainer's
        best evaluation has no checkpoint must not be ranked.
        """
        maximise = bool(args.greater_is_better)

        def better(a: float, b: float) -> bool:
            return a > b if maximise else a < b

        if evaluation is not None:  # the Trainer ranks this evaluation after the callbacks run
            if state.best_metric is None or better(value, state.best_metric):
                return True
        elif state.best_global_step == step:
            return True
        store = self.store_for(args)
        monitor = store.config.monitor
        try:
            leader = store.best().metrics.get(monitor) if monitor is not None else None
        except CheckpointNotFoundError:
            leader = None
        return leader is not None and not better(value, leader)


def _copy_trainer_folder(folder: Path, tx: Any) -> None:
    """``save_state``'s writer: the Trainer's ``checkpoint-N`` folder, copied into the staging folder."""
    shutil.copytree(folder, tx.path, dirs_exist_ok=True)


@contextlib.contextmanager
def latest_checkpoint(store: CheckpointStore | str | os.PathLike[str], **open_options: Any) -> Iterator[str | None]:
    """The newest checkpoint that verifies, as a local folder for ``resume_from_checkpoint``; None if none."""
    with restart_folder(store, **open_options) as path:
        yield None if path is None else str(path)
