"""Keras 3 on the torch backend: StoreCheckpoint saves, resumes at the right epoch, keeps the best."""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any

import numpy as np
import pytest

os.environ.setdefault("KERAS_BACKEND", "torch")
keras = pytest.importorskip("keras")

import ckptstore  # noqa: E402
from ckptstore.integrations.keras import StoreCheckpoint  # noqa: E402

pytestmark = pytest.mark.frameworks


def _data(seed: int = 0) -> tuple[Any, Any, Any, Any]:
    rng = np.random.default_rng(seed)
    x = rng.normal(size=(96, 4)).astype("float32")
    y = (x @ np.array([1.0, -2.0, 0.5, 3.0], dtype="float32"))[:, None]
    return x[:64], y[:64], x[64:], y[64:]


def _model() -> Any:
    keras.utils.set_random_seed(1)
    model = keras.Sequential([keras.Input((4,)), keras.layers.Dense(8, activation="relu"), keras.layers.Dense(1)])
    model.compile(optimizer=keras.optimizers.Adam(0.01), loss="mse")
    return model


def test_a_resumed_fit_runs_only_the_remaining_epochs_with_restored_weights(tmp_path: Path) -> None:
    x, y, vx, vy = _data()
    url = str(tmp_path / "keras")
    first = _model()
    first.fit(x, y, validation_data=(vx, vy), epochs=3, batch_size=16, verbose=0, callbacks=[StoreCheckpoint(url)])
    store = ckptstore.open(url)
    assert store.epochs() == [1, 2, 3]
    saved = [w.copy() for w in first.get_weights()]

    second = _model()  # fresh weights, as after a crash
    seen: dict[str, Any] = {}

    class Probe(keras.callbacks.Callback):
        def on_epoch_begin(self, epoch: int, logs: Any = None) -> None:
            seen.setdefault("weights", [w.copy() for w in self.model.get_weights()])

    callback = StoreCheckpoint(url)
    history = second.fit(
        x, y, validation_data=(vx, vy), epochs=5, batch_size=16, verbose=0, callbacks=[callback, Probe()]
    )
    assert history.epoch == [3, 4]  # epochs 4 and 5 only
    assert callback.restored is not None and callback.restored.epoch == 3
    assert all(np.allclose(a, b) for a, b in zip(seen["weights"], saved, strict=True))
    assert ckptstore.open(url).epochs() == [1, 2, 3, 4, 5]
    assert ckptstore.open(url).get(5).parent == 3
    assert second.optimizer.iterations.numpy() > first.optimizer.iterations.numpy()  # the optimizer state came back


def test_save_best_only_remembers_the_best_across_restarts(tmp_path: Path) -> None:
    x, y, vx, vy = _data()
    url = str(tmp_path / "best")
    model = _model()
    model.fit(
        x,
        y,
        validation_data=(vx, vy),
        epochs=4,
        batch_size=16,
        verbose=0,
        callbacks=[StoreCheckpoint(url, save_best_only=True, restart="off")],
    )
    store = ckptstore.open(url, monitor="val_loss")
    best_before = store.best().metrics["val_loss"]
    # A new process would start with Keras's best = inf and save a worse epoch; the store remembers.
    worse = _model()
    worse.compile(optimizer=keras.optimizers.SGD(0.0), loss="mse")  # learns nothing: worse val_loss
    worse.fit(
        x,
        y,
        validation_data=(vx, vy),
        epochs=2,
        batch_size=16,
        verbose=0,
        callbacks=[StoreCheckpoint(url, save_best_only=True, restart="off")],
    )
    after = ckptstore.open(url, monitor="val_loss")
    assert after.epochs() == store.epochs(), "a worse epoch was saved: the best was forgotten"
    assert after.best().metrics["val_loss"] == best_before


def test_batch_level_weights_only_saves_with_a_template(tmp_path: Path) -> None:
    x, y, _, _ = _data()
    url = str(tmp_path / "batches")
    callback = StoreCheckpoint(
        url,
        "weights.{epoch:02d}-{loss:.2f}.weights.h5",
        save_weights_only=True,
        save_freq=2,
        monitor="loss",
        restart="off",
    )
    _model().fit(x, y, epochs=1, batch_size=16, verbose=0, callbacks=[callback])  # 4 batches
    store = ckptstore.open(url)
    assert store.epochs() == [2, 4]
    ck = store.get(4)
    assert ck.batch == 3 and ck.step == 4
    (name,) = ck.files
    assert name.startswith("weights.01-") and name.endswith(".weights.h5")  # {epoch} counts from 1, as in Keras
    restored = _model()
    ck.load("keras_weights", model=restored)
    assert restored.predict(x[:2], verbose=0).shape == (2, 1)


def test_whole_model_serializer_round_trips(tmp_path: Path) -> None:
    x, _, _, _ = _data()
    store = ckptstore.open(tmp_path / "m")
    model = _model()
    store.save_state(1, model, serializer="keras")
    loaded = store.latest().load()
    assert np.allclose(loaded.predict(x[:3], verbose=0), model.predict(x[:3], verbose=0))
