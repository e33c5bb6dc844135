"""Hugging Face Trainer: commit every ``checkpoint-N`` folder the Trainer writes into a store.

    store = ckptstore.open("s3://bucket/run1", keep=ckptstore.keep.linear(2))
    trainer = Trainer(..., args=TrainingArguments(..., save_total_limit=None), callbacks=[StoreCallback(store)])
    with latest_checkpoint(store) as path:               # the newest checkpoint that verifies, or None
        trainer.train(resume_from_checkpoint=path)

Each folder becomes one atomic, hashed checkpoint numbered by the global step, with the evaluation
metrics of the log history. ``metric_for_best_model`` and ``greater_is_better`` define the store's
best (when the callback opens the store from a URL). The store's keep policy replaces
``save_total_limit``, and never deletes the best checkpoint (transformers#15089); ``latest_checkpoint``
resumes from the newest checkpoint that verifies, not merely the newest folder (transformers#35782).
"""

from __future__ import annotations

import contextlib
import logging
import os
import shutil
from collections.abc import Iterator, Mapping
from pathlib import Path
from typing import Any

from transformers import TrainerCallback

from ..policies import KeepPolicy
from ..store import CheckpointStore, open_store
from . import finite_scalars, restart_folder

__all__ = ["StoreCallback", "latest_checkpoint"]

logger = logging.getLogger("ckptstore")


def _metrics_at(log_history: list[dict[str, Any]], step: int) -> dict[str, float]:
    """The newest value of every numeric metric logged at or before ``step``."""
    metrics: dict[str, float] = {}
    for entry in log_history:
        if entry.get("step", 0) <= step:
            metrics.update(finite_scalars({k: v for k, v in entry.items() if k not in ("step", "epoch")}))
    return metrics


class StoreCallback(TrainerCallback):
    """Commit each checkpoint the Trainer saves.

    Args:
        store: A store, or a URL opened with ``metric_for_best_model`` as the monitor.
        keep: The keep policy when ``store`` is a URL.
        remove_local: Delete the Trainer's local ``checkpoint-N`` folder once committed (saves disk;
            do not combine with ``load_best_model_at_end``, which reads the local folder).
        storage_options: For a URL on an object store.
    """

    def __init__(
        self,
        store: CheckpointStore | str | os.PathLike[str],
        *,
        keep: KeepPolicy | None = None,
        remove_local: bool = False,
        storage_options: Mapping[str, Any] | None = None,
    ) -> None:
        self._store = store if isinstance(store, CheckpointStore) else None
        self._url = None if isinstance(store, CheckpointStore) else store
        self.keep = keep
        self.remove_local = remove_local
        self.storage_options = storage_options
        self.committed: list[int] = []

    def store_for(self, args: Any) -> CheckpointStore:
        """The store, opened on first use with the Trainer's best-model settings."""
        if self._store is None:
            monitor = args.metric_for_best_model
            if monitor is not None and not monitor.startswith("eval_"):
                monitor = f"eval_{monitor}"
            mode = "max" if args.greater_is_better else "min"
            assert self._url is not None
            self._store = open_store(
                self._url, monitor=monitor, mode=mode, keep=self.keep, storage_options=self.storage_options
            )
        return self._store

    def on_train_begin(self, args: Any, state: Any, control: Any, **kwargs: Any) -> Any:
        """On a resumed run, record the checkpoint it resumed from as the parent of later saves."""
        store = self.store_for(args)
        if state.global_step and state.global_step in store:
            store._parent = state.global_step
        return control

    def on_save(self, args: Any, state: Any, control: Any, **kwargs: Any) -> Any:
        """Commit ``output_dir/checkpoint-<global_step>``."""
        store = self.store_for(args)
        folder = Path(args.output_dir) / f"checkpoint-{state.global_step}"
        if not folder.is_dir() or state.global_step in store:
            return control
        metrics = _metrics_at(state.log_history, state.global_step)
        monitor = store.config.monitor
        if monitor is not None and monitor not in metrics:
            logger.warning("checkpoint-%d not committed: %r was not evaluated yet", state.global_step, monitor)
            return control
        with store.save(
            state.global_step, metrics=metrics, step=state.global_step, metadata={"hf_epoch": state.epoch}, force=True
        ) as tx:
            shutil.copytree(folder, tx.path, dirs_exist_ok=True)
        self.committed.append(state.global_step)
        if self.remove_local:
            shutil.rmtree(folder, ignore_errors=True)
        return control


@contextlib.contextmanager
def latest_checkpoint(store: CheckpointStore | str | os.PathLike[str], **open_options: Any) -> Iterator[str | None]:
    """The newest checkpoint that verifies, as a local folder for ``resume_from_checkpoint``; None if none."""
    with restart_folder(store, **open_options) as path:
        yield None if path is None else str(path)
