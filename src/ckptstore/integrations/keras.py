"""Keras 3: a ``ModelCheckpoint`` that commits through a store and resumes like ``BackupAndRestore``.

    callback = StoreCheckpoint("s3://bucket/run1", monitor="val_loss", save_best_only=True)
    model.fit(x, y, validation_data=..., epochs=20, callbacks=[callback])

The arguments are ``ModelCheckpoint``'s (``monitor``, ``mode``, ``save_best_only``,
``save_weights_only``, ``save_freq``, ``initial_value_threshold``, ``verbose``, and a file-name
template for the file inside each checkpoint). On ``fit()`` it restores the model's weights, the
optimizer state and the epoch from the newest checkpoint that verifies, so a killed run continues where
it stopped: after a run of 3 epochs, ``fit(epochs=5)`` runs epochs 4 and 5 only. The best value is
read back from the store, so ``save_best_only`` survives the restart (Keras loses it: tf-keras#430).
Each save is atomic, hashed and subject to the store's keep policy, on any backend.
"""

from __future__ import annotations

import os
from collections.abc import Mapping
from typing import Any

import keras

from ..checkpoint import Checkpoint
from ..errors import CheckpointNotFoundError, InvalidArgumentError, SerializerError
from ..policies import KeepPolicy, SaveRules, decide_save, resolve_mode
from ..serializers import CheckpointFiles, CheckpointWriter
from ..serializers._reader import checkpoint_files
from ..store import CheckpointStore, open_store
from . import finite_scalars

__all__ = ["KerasModelSerializer", "KerasWeightsSerializer", "StoreCheckpoint"]

_EPOCH_KEY = "keras_epoch"


class StoreCheckpoint(keras.callbacks.Callback):
    """Save the model into a store after every epoch (or every ``save_freq`` batches), and resume.

    Args:
        store: A store or a URL for :func:`ckptstore.open`.
        filepath: The file's name inside the checkpoint, a template with ``{epoch}``, ``{batch}`` and
            any log key (``weights.{epoch:02d}-{val_loss:.2f}.weights.h5``). Default
            ``model.keras``, or ``model.weights.h5`` with ``save_weights_only``.
        monitor: The metric for ``save_best_only`` and the store's best pointer.
        mode: ``min``, ``max`` or ``auto``.
        save_best_only: Save only when ``monitor`` improves on the best in the store.
        save_weights_only: Save weights (``.weights.h5``, with the optimizer's variables) instead of the
            whole model (``.keras``).
        save_freq: ``"epoch"``, or a number of batches; batch-level saves are numbered by the global
            batch count and record the batch in the manifest.
        initial_value_threshold: The first save must beat this value.
        verbose: 1 prints a line per save or skip.
        keep: The store's keep policy (when ``store`` is a URL).
        restart: ``auto`` (resume from the newest checkpoint that verifies, if any), ``required``, or
            ``off``.
        storage_options: For a URL on an object store.
    """

    def __init__(
        self,
        store: CheckpointStore | str | os.PathLike[str],
        filepath: str | None = None,
        *,
        monitor: str = "val_loss",
        mode: str = "auto",
        save_best_only: bool = False,
        save_weights_only: bool = False,
        save_freq: str | int = "epoch",
        initial_value_threshold: float | None = None,
        verbose: int = 0,
        keep: KeepPolicy | None = None,
        restart: str = "auto",
        storage_options: Mapping[str, Any] | None = None,
    ) -> None:
        super().__init__()
        if save_freq != "epoch" and not (isinstance(save_freq, int) and save_freq > 0):
            raise InvalidArgumentError(f"save_freq must be 'epoch' or a positive int, got {save_freq!r}")
        if restart not in ("auto", "required", "off"):
            raise InvalidArgumentError(f"restart must be 'auto', 'required' or 'off', got {restart!r}")
        if isinstance(store, CheckpointStore):
            self.store = store
        else:
            self.store = open_store(store, monitor=monitor, mode=mode, keep=keep, storage_options=storage_options)
        self.filepath = filepath or ("model.weights.h5" if save_weights_only else "model.keras")
        if save_weights_only and not self.filepath.endswith(".weights.h5"):
            raise InvalidArgumentError(
                f"with save_weights_only the file must end in .weights.h5, got {self.filepath!r}"
            )
        if not save_weights_only and not self.filepath.endswith(".keras"):
            raise InvalidArgumentError(f"a whole model is saved as .keras, got {self.filepath!r}")
        self.monitor = monitor
        self.mode = resolve_mode(monitor, mode)
        self.rules = SaveRules(
            monitor=monitor if save_best_only or initial_value_threshold is not None else None,
            mode=self.mode,
            save_best_only=save_best_only,
            initial_value_threshold=initial_value_threshold,
        )
        self.save_weights_only = save_weights_only
        self.save_freq = save_freq
        self.verbose = verbose
        self.restart_mode = restart
        self.restored: Checkpoint | None = None
        self._epoch = 0
        self._batches = 0

    # -- resume ------------------------------------------------------------------------------------------
    def on_train_begin(self, logs: Mapping[str, Any] | None = None) -> None:
        """Restore weights, optimizer state and epoch from the newest checkpoint that verifies."""
        checkpoint = self.store.restart(self.restart_mode)  # type: ignore[arg-type]
        self.restored = checkpoint
        if checkpoint is None:
            return
        model = self.model
        if model.optimizer is not None and not model.optimizer.built:
            model.optimizer.build(model.trainable_variables)
        suffix = ".weights.h5" if self.save_weights_only else ".keras"
        with checkpoint_files(checkpoint, verify=False) as files:  # restart() verified it
            model.load_weights(str(files.local_file(_one(files, suffix, self.filepath))))
        epoch = checkpoint.metadata.get(_EPOCH_KEY, checkpoint.epoch)
        model._initial_epoch = int(epoch)
        self._epoch = int(epoch)
        self._batches = int(checkpoint.step or 0)
        if self.verbose:
            print(f"StoreCheckpoint: resumed from {checkpoint.url} (epoch {epoch})")

    # -- saving ------------------------------------------------------------------------------------------
    def on_epoch_begin(self, epoch: int, logs: Mapping[str, Any] | None = None) -> None:
        """Track the epoch for batch-level saves."""
        self._epoch = epoch

    def on_train_batch_end(self, batch: int, logs: Mapping[str, Any] | None = None) -> None:
        """Save every ``save_freq`` batches."""
        self._batches += 1
        if isinstance(self.save_freq, int) and self._batches % self.save_freq == 0:
            self._save(self._batches, logs, batch=batch, completed_epochs=self._epoch)

    def on_epoch_end(self, epoch: int, logs: Mapping[str, Any] | None = None) -> None:
        """Save after the epoch (numbered from 1: the count of completed epochs)."""
        if self.save_freq == "epoch":
            self._save(epoch + 1, logs, batch=None, completed_epochs=epoch + 1)

    def _save(self, number: int, logs: Mapping[str, Any] | None, *, batch: int | None, completed_epochs: int) -> None:
        metrics = finite_scalars(logs)
        best_value = None
        if self.rules.monitor is not None:
            try:
                best_value = self.store.best(metric=self.monitor, mode=self.mode).all_metrics.get(self.monitor)
            except (CheckpointNotFoundError, InvalidArgumentError):
                best_value = None
        if self.rules.monitor is not None and self.monitor not in metrics:
            if self.verbose:
                print(f"StoreCheckpoint: {self.monitor!r} is not in the logs; not saving {number}")
            return
        decision = decide_save(self.rules, number, metrics, best_value)
        if not decision.save:
            if self.verbose:
                print(f"StoreCheckpoint: {number} not saved: {decision.reason}")
            return
        if self.store.config.monitor is not None and self.store.config.monitor not in metrics:
            return  # the store needs its monitor in every save (validation had not run)
        name = self.filepath.format(epoch=completed_epochs, batch=batch if batch is not None else 0, **metrics)
        with self.store.save(
            number,
            metrics=metrics,
            batch=batch,
            step=self._batches,
            metadata={_EPOCH_KEY: completed_epochs},
            force=True,
        ) as tx:
            target = tx.path / name
            target.parent.mkdir(parents=True, exist_ok=True)
            if self.save_weights_only:
                self.model.save_weights(str(target))
            else:
                self.model.save(str(target))
        if self.verbose:
            print(f"StoreCheckpoint: saved {number} to {self.store.url} ({decision.reason})")


class KerasModelSerializer:
    """``serializer="keras"``: a whole model as ``model.keras``; ``load()`` returns the model."""

    name = "keras"

    def version(self) -> str:
        """Keras's version."""
        return str(keras.__version__)

    def save(self, state: Any, tx: CheckpointWriter) -> None:
        """``model.save`` into the staging directory (``.keras`` files are zips that seek)."""
        state.save(str(tx.path / "model.keras"))

    def load(self, files: CheckpointFiles, **kwargs: Any) -> Any:
        """``keras.saving.load_model`` (``safe_mode`` stays on unless passed) of ``model.keras``.

        A checkpoint written otherwise may hold one ``.keras`` file of another name; several of them,
        none named ``model.keras``, are refused (``SerializerError``) rather than guessed between.
        """
        return keras.saving.load_model(str(files.local_file(_one(files, ".keras", "model.keras"))), **kwargs)


class KerasWeightsSerializer:
    """``serializer="keras_weights"``: ``model.weights.h5``; ``load(model=...)`` fills that model."""

    name = "keras_weights"

    def version(self) -> str:
        """Keras's version."""
        return str(keras.__version__)

    def save(self, state: Any, tx: CheckpointWriter) -> None:
        """``model.save_weights``."""
        state.save_weights(str(tx.path / "model.weights.h5"))

    def load(self, files: CheckpointFiles, **kwargs: Any) -> Any:
        """Load ``model.weights.h5`` (or the checkpoint's only ``.weights.h5``) into ``model`` (required)."""
        model = kwargs.get("model")
        if model is None:
            raise InvalidArgumentError("keras_weights needs the model to fill: ck.load(model=model)")
        model.load_weights(str(files.local_file(_one(files, ".weights.h5", "model.weights.h5"))))
        return model


def _one(files: CheckpointFiles, suffix: str, preferred: str) -> str:
    """The manifest-listed file to load: ``preferred`` if listed, else the only file ending in ``suffix``."""
    if preferred in files:
        return preferred
    names = [n for n in files.names if n.endswith(suffix)]
    if not names:
        raise InvalidArgumentError(f"epoch {files.epoch} holds no {suffix} file")
    if len(names) > 1:
        raise SerializerError(
            f"epoch {files.epoch} holds {len(names)} {suffix} files ({', '.join(names[:5])}) and none is "
            f"{preferred!r}; load the one you mean yourself: keras.saving.load_model(path) inside "
            "'with ck.local_path() as folder:'"
        )
    return names[0]
