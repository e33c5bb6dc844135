"""PyTorch Lightning: StoreCheckpoint commits through the store, save_top_k keeps the best, fit resumes."""

from __future__ import annotations

import warnings
from pathlib import Path
from typing import Any

import pytest

torch = pytest.importorskip("torch")
pl = pytest.importorskip("pytorch_lightning")

import ckptstore  # noqa: E402
from ckptstore.integrations.lightning import StoreCheckpoint, resume_path  # noqa: E402

pytestmark = [pytest.mark.frameworks, pytest.mark.filterwarnings("ignore::UserWarning")]


class Regressor(pl.LightningModule):
    def __init__(self) -> None:
        super().__init__()
        self.layer = torch.nn.Linear(4, 1)

    def training_step(self, batch: Any, batch_idx: int) -> Any:
        x, y = batch
        loss = torch.nn.functional.mse_loss(self.layer(x), y)
        self.log("train_loss", loss)
        return loss

    def validation_step(self, batch: Any, batch_idx: int) -> None:
        x, y = batch
        self.log("val_loss", torch.nn.functional.mse_loss(self.layer(x), y))

    def configure_optimizers(self) -> Any:
        return torch.optim.SGD(self.parameters(), lr=0.05)


def _loaders() -> tuple[Any, Any]:
    gen = torch.Generator().manual_seed(0)
    x = torch.randn(64, 4, generator=gen)
    y = x @ torch.tensor([[1.0], [-2.0], [0.5], [3.0]])
    data = torch.utils.data.TensorDataset(x, y)
    return torch.utils.data.DataLoader(data, batch_size=16), torch.utils.data.DataLoader(data, batch_size=32)


def _trainer(callback: Any, epochs: int, tmp_path: Path) -> Any:
    return pl.Trainer(
        max_epochs=epochs,
        callbacks=[callback],
        logger=False,
        enable_progress_bar=False,
        enable_model_summary=False,
        default_root_dir=str(tmp_path),
        accelerator="cpu",
    )


def test_top_k_keeps_the_best_and_fit_resumes_from_the_store(tmp_path: Path) -> None:
    train, val = _loaders()
    url = str(tmp_path / "store")
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        callback = StoreCheckpoint(url, monitor="val_loss", save_top_k=2)
        _trainer(callback, 4, tmp_path).fit(Regressor(), train, val)
    store = ckptstore.open(url, monitor="val_loss")
    kept = store.epochs()
    assert 4 in kept, "the loss falls every epoch: the last is among the best two"
    losses = {c.epoch: c.metrics["val_loss"] for c in store.list()}
    assert kept == sorted(sorted(losses, key=losses.__getitem__)[:2]), "exactly the best two, as save_top_k=2"
    assert all(c.verify() for c in store.list())

    resumed_callback = StoreCheckpoint(url, monitor="val_loss", save_top_k=2)
    trainer = _trainer(resumed_callback, 6, tmp_path)
    with resume_path(url) as ckpt_path:
        assert ckpt_path is not None and ckpt_path.endswith("00000004/model.ckpt")
        trainer.fit(Regressor(), train, val, ckpt_path=ckpt_path)
    assert trainer.current_epoch == 6
    assert max(ckptstore.open(url).epochs()) == 6
    assert ckptstore.open(url).get(6).metadata["lightning_epoch"] == 5


def test_every_n_train_steps_numbers_by_global_step(tmp_path: Path) -> None:
    train, val = _loaders()
    url = str(tmp_path / "steps")
    callback = StoreCheckpoint(url, every_n_train_steps=3, save_top_k=-1)
    _trainer(callback, 2, tmp_path).fit(Regressor(), train, val)  # 4 batches x 2 epochs = 8 steps
    assert ckptstore.open(url).epochs() == [3, 6]


def test_resume_path_on_an_empty_store_is_none(tmp_path: Path) -> None:
    with resume_path(tmp_path / "empty") as ckpt_path:
        assert ckpt_path is None
