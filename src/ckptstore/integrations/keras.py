"""Keras 3: a ``ModelCheckpoint`` that commits through a store and resumes like ``BackupAndRestore``.

    callback = StoreCheckpoint("s3://bucket/run1", monitor="val_loss", save_best_only=True)
    model.fit(x, y, validation_data=..., epochs=20, callbacks=[callback])

The arguments are ``ModelCheckpoint``'s (``monitor``, ``mode``, ``save_best_only``,
``save_weights_only``, ``save_freq``, ``initial_value_threshold``, ``verbose``, and a file-name
template for the file inside each checkpoint), and it saves when ``ModelCheckpoint`` saves: every epoch
or every ``save_freq`` batches whether or not the logs hold the monitor, ``{epoch}``/``{batch}`` counted
from 1, ``mode="auto"`` by the compiled metric's declared direction. On ``fit()`` it restores the model's weights, the
optimizer state and the epoch from the newest checkpoint that verifies, so a killed run continues where
it stopped: after a run of 3 epochs, ``fit(epochs=5)`` runs epochs 4 and 5 only. The best value is
read back from the store, so ``save_best_only`` survives the restart (Keras loses it: tf-keras#430).
Each save is atomic, hashed and subject to the store's keep policy, on any backend. ``blocking=False``
returns to ``fit`` before the commit: with ``save_weights_only`` after a copy of the variables (the
snapshot of ``save_state``), for a whole ``.keras`` model after Keras wrote the file (see
:class:`StoreCheckpoint`).
"""

from __future__ import annotations

import os
import warnings
from collections.abc import Mapping
from pathlib import PurePosixPath
from typing import Any

import keras

from ..checkpoint import Checkpoint
from ..errors import CheckpointNotFoundError, InvalidArgumentError, MissingMetricError, SerializerError
from ..policies import KeepPolicy, Mode, SaveRules, decide_save, resolve_mode
from ..serializers import CheckpointFiles, CheckpointWriter
from ..serializers._reader import checkpoint_files
from ..store import CheckpointStore, open_store
from . import finite_scalars

try:  # where Keras 3 keeps the compiled metrics; MonitorCallback looks inside these containers only
    from keras.src.trainers.compile_utils import CompileMetrics, MetricsList
except ImportError:  # pragma: no cover - another Keras layout: only "loss" has a known direction
    _METRIC_CONTAINERS: tuple[type, ...] = ()
else:
    _METRIC_CONTAINERS = (CompileMetrics, MetricsList)

__all__ = ["KerasModelSerializer", "KerasWeightsSerializer", "StoreCheckpoint", "load_weights", "metric_direction"]

_EPOCH_KEY = "keras_epoch"


def metric_direction(model: Any, monitor: str) -> Mode | None:
    """The direction Keras 3 gives ``monitor`` for ``mode="auto"``: ``min``, ``max``, or None if it cannot tell.

    The rule of Keras's ``MonitorCallback._set_monitor_op``: ``loss`` (``val_loss``) is minimised; otherwise
    the compiled metric of that name (``val_`` removed) decides by its declared direction (``r2_score`` and
    ``auc`` go up, ``mape`` and ``mae`` go down). The compiled metrics exist once the model has run a step.
    """
    name = monitor.removeprefix("val_")
    direction: Mode | None = "min" if name == "loss" else None
    containers: list[Any] = [m for m in getattr(model, "metrics", None) or [] if isinstance(m, _METRIC_CONTAINERS)]
    for container in containers:
        for metric in container.metrics:
            if metric.name == name and hasattr(metric, "_direction"):
                direction = "max" if metric._direction == "up" else "min"
    return direction


class StoreCheckpoint(keras.callbacks.Callback):
    """Save the model into a store after every epoch (or every ``save_freq`` batches), and resume.

    Saves as Keras's ``ModelCheckpoint`` does: every epoch (or every ``save_freq`` batches) whatever the
    logs hold, the monitor only deciding ``save_best_only``; without the monitor in the logs (no
    validation data, or batch-level logs without ``val_*``) a checkpoint is still saved, without the
    metric, so it cannot become the best (with ``save_best_only`` a ``UserWarning`` names the key, as
    Keras warns).

    Args:
        store: A store or a URL for :func:`ckptstore.open`.
        filepath: The file's name inside the checkpoint, a template with ``{epoch}``, ``{batch}`` (both
            counted from 1, as Keras formats them) and any log key
            (``weights.{epoch:02d}-{val_loss:.2f}.weights.h5``). Default ``model.keras``, or
            ``model.weights.h5`` with ``save_weights_only``.
        monitor: The metric for ``save_best_only`` and the store's best pointer.
        mode: ``min``, ``max`` or ``auto``: the direction the compiled metric declares (``loss`` is
            minimised), as Keras 3 decides it; a store that records the monitor keeps its mode.
        save_best_only: Save only when ``monitor`` improves on the best in the store.
        save_weights_only: Save weights (``.weights.h5``, with the optimizer's variables) instead of the
            whole model (``.keras``).
        save_freq: ``"epoch"``, or a number of batches; batch-level saves are numbered by the global
            batch count and record the batch in the manifest.
        initial_value_threshold: With ``save_best_only``, the first save must beat this value.
        verbose: 1 prints a line per save or skip.
        keep: The store's keep policy (when ``store`` is a URL).
        restart: ``auto`` (resume from the newest checkpoint that verifies, if any), ``required``, or
            ``off``.
        storage_options: For a URL on an object store.
        blocking: False returns to training before the commit; hashing, writing, fsync, the commit,
            pointers, index and gc run in the store's background thread (at most its
            ``pending_saves`` in flight; an error is raised by the next save or at the end of ``fit``).
            With ``save_weights_only`` the save blocks only for a copy of the model's and the
            optimizer's variables into buffers reused across saves, and the checkpoint holds them as
            numpy arrays (``serializer="numpy"``; :func:`load_weights` and the resume read them)
            instead of a ``.weights.h5`` file. A whole model is a ``.keras`` file only Keras can
            write from the live model: the save blocks while Keras writes it into the staging folder,
            and the rest runs in the background.

    Raises:
        InvalidArgumentError: ``mode``, ``save_freq``, ``restart`` or ``filepath`` is not valid (Keras
            warns about an unknown ``mode`` and falls back to ``auto``; this refuses it). During
            ``fit``: ``mode="auto"`` and Keras cannot tell the monitor's direction (Keras raises
            ``ValueError`` too; this error is one).
        MissingMetricError: during ``fit``, ``filepath`` names a key the logs lack (a ``KeyError``, as
            Keras raises).
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
        blocking: bool = True,
    ) -> None:
        super().__init__()
        if save_freq != "epoch" and not (
            isinstance(save_freq, int) and not isinstance(save_freq, bool) and save_freq > 0
        ):
            raise InvalidArgumentError(f"save_freq must be 'epoch' or a positive int, got {save_freq!r}")
        if restart not in ("auto", "required", "off"):
            raise InvalidArgumentError(f"restart must be 'auto', 'required' or 'off', got {restart!r}")
        if mode not in ("auto", "min", "max"):
            raise InvalidArgumentError(f"mode must be 'min', 'max' or 'auto', got {mode!r}")
        if not isinstance(monitor, str) or not monitor:
            raise InvalidArgumentError(f"monitor must be a metric name, got {monitor!r}")
        self.filepath = filepath or ("model.weights.h5" if save_weights_only else "model.keras")
        if save_weights_only and not self.filepath.endswith(".weights.h5"):
            raise InvalidArgumentError(
                f"with save_weights_only the file must end in .weights.h5, got {self.filepath!r}"
            )
        if not save_weights_only and not self.filepath.endswith(".keras"):
            raise InvalidArgumentError(f"a whole model is saved as .keras, got {self.filepath!r}")
        _check_inside(self.filepath)
        # The direction: explicit, or "loss" (known without the model), or recorded by the store, or
        # asked of the compiled metric once the model has run (Keras decides at the first epoch end).
        known: Mode | None = resolve_mode(monitor, mode) if mode != "auto" else None
        if known is None and monitor.removeprefix("val_") == "loss":
            known = "min"
        self._keep, self._storage_options = keep, storage_options
        self._url: str | os.PathLike[str] | None = None
        if isinstance(store, CheckpointStore):
            self.store = store
            if store.config.monitor == monitor and mode == "auto":
                known = store.mode
        elif known is not None:
            self.store = open_store(store, monitor=monitor, mode=known, keep=keep, storage_options=storage_options)
        else:
            self.store = open_store(store, keep=keep, storage_options=storage_options)
            if self.store.config.monitor is not None and self.store.config.monitor != monitor:
                open_store(store, monitor=monitor, keep=keep, storage_options=storage_options)  # the mismatch
            if self.store.config.monitor == monitor:
                known = self.store.mode  # the store's definition of best
            else:
                self._url = store  # bind the monitor once the model tells its direction
        self.monitor = monitor
        self.mode: Mode | None = known
        self.save_best_only = save_best_only
        self.initial_value_threshold = initial_value_threshold
        SaveRules(  # validate now: a finite threshold
            monitor=monitor, mode=known or "min", initial_value_threshold=initial_value_threshold
        )
        self.save_weights_only = save_weights_only
        self.save_freq = save_freq
        self.verbose = verbose
        self.restart_mode = restart
        self.blocking = blocking
        self.restored: Checkpoint | None = None
        self._epoch = 0
        self._batches = 0
        self._since_save = 0
        self._last_batch: int | None = None

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
        load_weights(model, checkpoint, verify=False, preferred=self.filepath)  # restart() verified it
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
        """Save every ``save_freq`` batches (counted as Keras counts them, ``steps_per_execution`` included)."""
        if self.save_freq == "epoch":
            return
        # Keras's ModelCheckpoint._should_save_on_batch: a batch index not above the last starts an epoch.
        added = batch + 1 if self._last_batch is None or batch <= self._last_batch else batch - self._last_batch
        self._last_batch = batch
        self._batches += added
        self._since_save += added
        if self._since_save >= int(self.save_freq):
            self._since_save = 0
            self._save(self._batches, logs, epoch_index=self._epoch, batch=batch)

    def on_train_end(self, logs: Mapping[str, Any] | None = None) -> None:
        """Wait for the saves still committing in the background; raise the first error."""
        self.store.wait()

    def on_epoch_end(self, epoch: int, logs: Mapping[str, Any] | None = None) -> None:
        """Save after the epoch (numbered from 1: the count of completed epochs)."""
        self._resolve_mode(required=True)  # Keras sets its monitor op here, whatever save_freq is
        if self.save_freq == "epoch":
            self._save(epoch + 1, logs, epoch_index=epoch, batch=None)

    def _resolve_mode(self, *, required: bool) -> Mode | None:
        """The monitor's direction; on first knowing it, bind the monitor to a store opened from a URL.

        Raises:
            InvalidArgumentError: ``required`` and Keras cannot tell the direction (Keras's ``ValueError``).
        """
        if self.mode is None:
            self.mode = metric_direction(self.model, self.monitor)
            if self.mode is None:
                if not required:
                    return None
                raise InvalidArgumentError(
                    f"StoreCheckpoint received monitor={self.monitor!r}, but Keras cannot tell whether that "
                    "metric should be maximized or minimized (no compiled metric of that name declares a "
                    "direction); pass mode='max' or mode='min'"
                )
        if self._url is not None:  # the store was opened without the monitor: record it with its direction
            url, self._url = self._url, None
            bound = open_store(
                url, monitor=self.monitor, mode=self.mode, keep=self._keep, storage_options=self._storage_options
            )
            if self.restored is not None:
                bound.restart("auto", verify=False)  # the resumed-from epoch again (verified once already)
            self.store.close()
            self.store = bound
        return self.mode

    def _save(self, number: int, logs: Mapping[str, Any] | None, *, epoch_index: int, batch: int | None) -> None:
        logs = dict(logs or {})
        name = self._file_name(epoch_index, batch, logs)
        self._resolve_mode(required=False)  # the compiled metrics exist once a step has run
        metrics = finite_scalars(logs)
        what = f"epoch {epoch_index + 1}" if batch is None else f"batch {number}"
        if self.save_best_only and not self._is_best(number, logs, metrics, what):
            return
        options: dict[str, Any] = {
            "metrics": metrics,  # without the monitor (not in the logs): saved, and it cannot be best
            "batch": batch,
            "step": self._batches,
            "metadata": {_EPOCH_KEY: epoch_index if batch is not None else epoch_index + 1},
            "force": True,
        }
        if self.save_weights_only and not self.blocking:  # a snapshot of the variables; the rest in the background
            self.store.save_state(number, _variables(self.model), serializer="numpy", blocking=False, **options)
            if self.verbose:
                print(f"StoreCheckpoint: {what}: saving {number} to {self.store.url} in the background")
            return
        with self.store.save(number, blocking=self.blocking, **options) as tx:
            target = tx.path / name
            target.parent.mkdir(parents=True, exist_ok=True)
            if self.save_weights_only:
                self.model.save_weights(str(target))
            else:
                self.model.save(str(target))
        if self.verbose:
            print(f"StoreCheckpoint: {what}: saved {number} to {self.store.url} as {name}")

    def _is_best(self, number: int, logs: Mapping[str, Any], metrics: Mapping[str, float], what: str) -> bool:
        """``save_best_only``: whether to save, as ``ModelCheckpoint._should_save_model`` decides."""
        raw = logs.get(self.monitor)
        if raw is None:
            warnings.warn(
                f"StoreCheckpoint: can save best model only with {self.monitor} available; {what} is saved "
                f"without it (it cannot become the best)",
                UserWarning,
                stacklevel=3,
            )
            return True
        if len(getattr(raw, "shape", ())) > 0 and self.monitor not in metrics:
            warnings.warn(
                f"StoreCheckpoint: can save best model only when {self.monitor} is a scalar value, got {raw!r}; "
                "falling back to save_best_only=False",
                UserWarning,
                stacklevel=3,
            )
            return True
        mode = self._resolve_mode(required=True) or "min"  # required: it raises rather than return None
        self.store.wait()  # the best so far may still be committing in the background
        best_value = None
        try:
            best_value = self.store.best(metric=self.monitor, mode=mode).all_metrics.get(self.monitor)
        except (CheckpointNotFoundError, InvalidArgumentError):
            best_value = None
        if self.monitor not in metrics:  # NaN or infinite: improves only on nothing, as in Keras
            improved = best_value is None and self.initial_value_threshold is None
            reason = f"{self.monitor}={raw} is not finite"
        else:
            rules = SaveRules(
                monitor=self.monitor,
                mode=mode,
                save_best_only=True,
                initial_value_threshold=self.initial_value_threshold,
            )
            decision = decide_save(rules, number, {self.monitor: metrics[self.monitor]}, best_value)
            improved, reason = decision.save, decision.reason
        if self.verbose:
            print(f"StoreCheckpoint: {what}: {reason}{'' if improved else '; not saved'}")
        return improved

    def _file_name(self, epoch_index: int, batch: int | None, logs: Mapping[str, Any]) -> str:
        """The template formatted as Keras formats it: ``epoch`` and ``batch`` from 1, then the logs.

        Raises:
            MissingMetricError: the template names a key the logs lack (Keras raises ``KeyError``).
        """
        values = {key: _formattable(value) for key, value in logs.items()}
        try:
            if batch is None or "batch" in values:
                name = self.filepath.format(epoch=epoch_index + 1, **values)
            else:
                name = self.filepath.format(epoch=epoch_index + 1, batch=batch + 1, **values)
        except KeyError as exc:
            raise MissingMetricError(
                f"failed to format the file name {self.filepath!r}: {exc} is not in the logs "
                f"(got: {', '.join(sorted(values)) or 'none'})"
            ) from None
        _check_inside(name)
        return name


def _variables(model: Any) -> dict[str, Any]:
    """The model's and the optimizer's variables, in order, for a snapshot (``model/00000``, ``optimizer/00000``).

    With the torch backend the values are the variables' own tensors: the snapshot copies them into
    buffers reused across saves. Other backends give a fresh numpy copy, marked read-only so the
    snapshot hands it over instead of copying it again.
    """
    torch_backend = keras.backend.backend() == "torch"
    state: dict[str, Any] = {}
    optimizer = getattr(model, "optimizer", None)
    groups = (("model", model.weights), ("optimizer", optimizer.variables if optimizer is not None else []))
    for prefix, variables in groups:
        for i, variable in enumerate(variables):
            if torch_backend:
                value = variable.value
            else:
                value = keras.ops.convert_to_numpy(variable)
                value.setflags(write=False)
            state[f"{prefix}/{i:05d}"] = value
    return state


def load_weights(model: Any, checkpoint: Checkpoint, *, verify: bool = True, preferred: str | None = None) -> None:
    """Load a checkpoint of :class:`StoreCheckpoint` into ``model`` (and its optimizer), whatever its format.

    A ``.keras`` or ``.weights.h5`` file (``preferred``, or the checkpoint's only one) goes through
    ``model.load_weights``; the numpy arrays of a non-blocking ``save_weights_only`` save are assigned
    to the model's and then the optimizer's variables in order (built first if needed).

    Raises:
        SerializerError: the arrays do not match the model's variables (count or shapes).
        VerificationError: ``verify`` and a file does not match its hash.
    """
    if (checkpoint.manifest.serializer or {}).get("name") != "numpy":
        named = [preferred] if preferred else list(checkpoint.files)
        suffix = ".weights.h5" if any(name.endswith(".weights.h5") for name in named) else ".keras"
        with checkpoint_files(checkpoint, verify=verify) as files:
            model.load_weights(str(files.local_file(_one(files, suffix, preferred or f"model{suffix}"))))
        return
    arrays = checkpoint.load("numpy", verify=verify)
    optimizer = getattr(model, "optimizer", None)
    if optimizer is not None and not optimizer.built:
        optimizer.build(model.trainable_variables)
    for prefix, variables in (("model", model.weights), ("optimizer", optimizer.variables if optimizer else [])):
        keys = sorted(k for k in arrays if k.startswith(f"{prefix}/"))
        shapes = [tuple(arrays[k].shape) for k in keys]
        if shapes != [tuple(v.shape) for v in variables]:
            raise SerializerError(
                f"epoch {checkpoint.epoch} holds {len(keys)} {prefix} arrays of shapes {shapes[:5]}..., which do not "
                f"match the {len(variables)} {prefix} variables of this model"
            )
        for variable, key in zip(variables, keys, strict=True):
            variable.assign(arrays[key])


def _formattable(value: Any) -> Any:
    """A log value as a Python number where it is one (tensors and numpy scalars format like floats)."""
    if isinstance(value, (int, float, str)):
        return value
    try:
        return float(value)
    except (TypeError, ValueError):
        return value


def _check_inside(name: str) -> None:
    """Refuse a file name that would leave the checkpoint's folder."""
    path = PurePosixPath(name.replace("\\", "/"))
    if not name or path.is_absolute() or ".." in path.parts or os.path.isabs(name):
        raise InvalidArgumentError(
            f"filepath names a file inside each checkpoint (relative, without '..'), got {name!r}; "
            "the store's URL says where checkpoints go"
        )


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
