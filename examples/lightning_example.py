"""PyTorch Lightning: StoreCheckpoint keeps the 2 best by val_loss; fit() resumes from the store.

python examples/lightning_example.py --kill-after 2
python examples/lightning_example.py
"""

from __future__ import annotations

import os
import sys
import warnings

sys.path.insert(0, os.path.dirname(__file__))

import pytorch_lightning as pl
import torch
from _common import maybe_kill, parse, report

import ckptstore
from ckptstore.integrations.lightning import StoreCheckpoint, resume_path


class Model(pl.LightningModule):
    def __init__(self) -> None:
        super().__init__()
        self.net = torch.nn.Sequential(torch.nn.Linear(8, 16), torch.nn.ReLU(), torch.nn.Linear(16, 1))

    def training_step(self, batch: tuple[torch.Tensor, torch.Tensor], _: int) -> torch.Tensor:
        x, y = batch
        return torch.nn.functional.mse_loss(self.net(x), y)

    def validation_step(self, batch: tuple[torch.Tensor, torch.Tensor], _: int) -> None:
        x, y = batch
        self.log("val_loss", torch.nn.functional.mse_loss(self.net(x), y))

    def configure_optimizers(self) -> torch.optim.Optimizer:
        return torch.optim.Adam(self.parameters(), lr=0.01)


class Crash(pl.Callback):
    def __init__(self, kill_after: int) -> None:
        self.kill_after = kill_after

    def on_train_epoch_start(self, trainer: pl.Trainer, _: pl.LightningModule) -> None:
        # StoreCheckpoint is a Lightning Checkpoint: it saves after every other callback's epoch end, so
        # the kill comes at the next epoch's start, when the completed epochs are saved.
        maybe_kill(trainer.current_epoch, self.kill_after)


def main() -> None:
    args = parse(__doc__ or "")
    url = args.store or "runs/lightning-example"
    warnings.filterwarnings("ignore")
    gen = torch.Generator().manual_seed(0)
    x = torch.randn(256, 8, generator=gen)
    y = x @ torch.randn(8, 1, generator=gen)
    train = torch.utils.data.DataLoader(torch.utils.data.TensorDataset(x[:192], y[:192]), batch_size=32)
    val = torch.utils.data.DataLoader(torch.utils.data.TensorDataset(x[192:], y[192:]), batch_size=64)
    checkpoint = StoreCheckpoint(url, monitor="val_loss", save_top_k=2)
    trainer = pl.Trainer(
        max_epochs=args.epochs,
        callbacks=[checkpoint, Crash(args.kill_after)],
        logger=False,
        enable_progress_bar=False,
        enable_model_summary=False,
        accelerator="cpu",
    )
    with resume_path(checkpoint.store) as ckpt_path:
        print(f"resuming from {ckpt_path}" if ckpt_path else "starting from scratch")
        trainer.fit(Model(), train, val, ckpt_path=ckpt_path)
    store = ckptstore.open(url, monitor="val_loss")
    report(store)


if __name__ == "__main__":
    main()
