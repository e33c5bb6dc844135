"""Keras 3 (torch backend): StoreCheckpoint saves every epoch, keeps the best, and resumes after a crash.

python examples/keras_example.py --kill-after 2   # trains epochs 1-2, then dies
python examples/keras_example.py                  # resumes: epochs 3-5 only
"""

from __future__ import annotations

import os
import sys

os.environ.setdefault("KERAS_BACKEND", "torch")
sys.path.insert(0, os.path.dirname(__file__))

import keras
import numpy as np
from _common import maybe_kill, parse

import ckptstore
from ckptstore.integrations.keras import StoreCheckpoint


class Crash(keras.callbacks.Callback):
    def __init__(self, kill_after: int) -> None:
        super().__init__()
        self.kill_after = kill_after

    def on_epoch_end(self, epoch: int, logs: object = None) -> None:
        maybe_kill(epoch + 1, self.kill_after)


def main() -> None:
    args = parse(__doc__ or "")
    url = args.store or "runs/keras-example"
    rng = np.random.default_rng(0)
    x = rng.normal(size=(256, 8)).astype("float32")
    y = (x @ rng.normal(size=(8, 1))).astype("float32")
    keras.utils.set_random_seed(0)
    model = keras.Sequential([keras.Input((8,)), keras.layers.Dense(16, activation="relu"), keras.layers.Dense(1)])
    model.compile(optimizer="adam", loss="mse")
    checkpoint = StoreCheckpoint(url, monitor="val_loss", keep=ckptstore.keep.linear(3), verbose=1)
    model.fit(
        x,
        y,
        validation_split=0.25,
        epochs=args.epochs,
        batch_size=32,
        verbose=0,
        callbacks=[checkpoint, Crash(args.kill_after)],
    )
    store = ckptstore.open(url, monitor="val_loss")
    print(store.table())
    print(
        f"best: epoch {store.best().epoch}; resumed from: {checkpoint.restored.epoch if checkpoint.restored else None}"
    )


if __name__ == "__main__":
    main()
