"""Lightning's own ModelCheckpoint scenarios, run against StoreCheckpoint with ModelCheckpoint beside it.

Ported from Lightning-AI/pytorch-lightning, ``tests/tests_pytorch/checkpointing/test_model_checkpoint.py``
at commit 7f0c3436cd3f6ad3753125672024fc415cbcb414 (2026-07-20), against the installed
``pytorch_lightning`` 2.6. Each scenario runs the real ``ModelCheckpoint`` in the same ``Trainer.fit``
as ours where it can (same model, same metrics), asserts that ModelCheckpoint still does what its
test says (the files it keeps, its best, its errors), and asserts that ours does the same observable
thing: the checkpoints kept (``store.epochs()``: completed epochs, Lightning's ``epoch + 1``, or global
steps), the best (``store.best()``), the metrics attached to each, the contents of ``model.ckpt``,
errors and warnings, and where a resumed run continues. Resuming runs the two separately (one fit
resumes from one file). Differences kept on purpose are asserted as ours and listed in
``docs/frameworks/lightning.md``.
"""

from __future__ import annotations

import math
import re
import warnings
from pathlib import Path
from typing import Any

import pytest

torch = pytest.importorskip("torch")
pl = pytest.importorskip("pytorch_lightning")

from pytorch_lightning.callbacks import ModelCheckpoint  # noqa: E402
from pytorch_lightning.demos.boring_classes import BoringModel  # noqa: E402
from pytorch_lightning.utilities.exceptions import MisconfigurationException  # noqa: E402

import ckptstore  # noqa: E402
from ckptstore.errors import InvalidArgumentError, MissingMetricError  # noqa: E402
from ckptstore.integrations.lightning import (  # noqa: E402
    LightningConfigError,
    MonitorNotFoundError,
    StoreCheckpoint,
    resume_path,
)

pytestmark = [
    pytest.mark.frameworks,
    pytest.mark.filterwarnings("ignore::UserWarning"),
    pytest.mark.filterwarnings("ignore::DeprecationWarning"),
    pytest.mark.filterwarnings("ignore::FutureWarning"),
]


# -- helpers -----------------------------------------------------------------------------------------


class LogInTwoMethods(BoringModel):  # type: ignore[misc]
    """Upstream's module: ``early_stop_on`` every training step, ``val_acc`` after validation."""

    def training_step(self, batch: Any, batch_idx: int) -> Any:
        out = super().training_step(batch, batch_idx)
        self.log("early_stop_on", out["loss"])
        return out

    def on_validation_epoch_end(self) -> None:
        self.log("val_acc", torch.tensor(1.23))


class Scripted(BoringModel):  # type: ignore[misc]
    """Logs ``score`` from a script: ``where`` is "val" (validation epoch end), "train_epoch" or "step"."""

    def __init__(self, script: list[float], where: str = "val") -> None:
        super().__init__()
        self.script, self.where = script, where

    def training_step(self, batch: Any, batch_idx: int) -> Any:
        if self.where == "step":
            self.log("score", float(self.script[self.global_step]))
        return super().training_step(batch, batch_idx)

    def on_train_epoch_end(self) -> None:
        if self.where == "train_epoch":
            self.log("score", float(self.script[self.current_epoch]))

    def on_validation_epoch_end(self) -> None:
        if self.where == "val" and not self.trainer.sanity_checking:
            self.log("score", float(self.script[self.current_epoch]))


def fit(tmp_path: Path, model: Any, callbacks: list[Any], ckpt_path: str | None = None, **options: Any) -> Any:
    """One small, quiet fit on CPU; returns the trainer."""
    kwargs: dict[str, Any] = {
        "max_epochs": 3,
        "limit_train_batches": 2,
        "limit_val_batches": 1,
        "logger": False,
        "enable_progress_bar": False,
        "enable_model_summary": False,
        "default_root_dir": str(tmp_path),
        "accelerator": "cpu",
        "num_sanity_val_steps": 0,
    }
    kwargs.update(options)
    trainer = pl.Trainer(callbacks=callbacks, **kwargs)
    trainer.fit(model, ckpt_path=ckpt_path)
    return trainer


def pair(tmp_path: Path, **options: Any) -> tuple[Any, StoreCheckpoint]:
    """ModelCheckpoint into tmp_path/mc and StoreCheckpoint into tmp_path/store, with the same options."""
    return ModelCheckpoint(dirpath=tmp_path / "mc", **options), StoreCheckpoint(tmp_path / "store", **options)


def files(mc: Any) -> set[str]:
    return {p.name for p in Path(mc.dirpath).iterdir()} if Path(mc.dirpath).exists() else set()


def mc_epochs(mc: Any) -> list[int]:
    """The epochs ModelCheckpoint keeps (``epoch=E-step=S.ckpt``, not last), as completed epochs (E + 1)."""
    return sorted(int(m.group(1)) + 1 for f in files(mc) if (m := re.match(r"epoch=(\d+)-step=\d+", f)))


def mc_steps(mc: Any) -> list[int]:
    return sorted(int(m.group(1)) for f in files(mc) if (m := re.match(r"epoch=\d+-step=(\d+)", f)))


def number_of(path: str) -> int:
    """``epoch=E-step=S.ckpt`` as a completed-epoch number."""
    match = re.search(r"epoch=(\d+)", Path(path).name)
    assert match, path
    return int(match.group(1)) + 1


def load(ck: Any) -> dict[str, Any]:
    """The Lightning checkpoint dict inside one of our checkpoints."""
    return dict(torch.load(ck.path / "model.ckpt", weights_only=False))


# -- scores and checkpoint contents --------------------------------------------------------------------


@pytest.mark.parametrize(("monitor", "with_validation"), [("val_log", True), ("train_log_epoch", False)])
def test_model_checkpoint_score_and_ckpt(tmp_path: Path, monitor: str, with_validation: bool) -> None:
    """Every epoch is saved with the score of that epoch, and the checkpoint holds epoch, step and scheduler."""
    max_epochs, train_batches, val_batches = 3, 3, 2

    class Custom(BoringModel):  # type: ignore[misc]
        def __init__(self) -> None:
            super().__init__()
            self.train_log_epochs = torch.randn(max_epochs, train_batches)
            self.val_logs = torch.randn(max_epochs, val_batches)
            self.scores: list[float] = []

        def training_step(self, batch: Any, batch_idx: int) -> Any:
            self.log("train_log", self.train_log_epochs[self.current_epoch, batch_idx], on_epoch=True)
            return super().training_step(batch, batch_idx)

        def validation_step(self, batch: Any, batch_idx: int) -> Any:
            self.log("val_log", self.val_logs[self.current_epoch, batch_idx])
            return super().validation_step(batch, batch_idx)

        def on_train_epoch_end(self) -> None:
            if "train" in monitor:
                self.scores.append(float(self.trainer.logged_metrics[monitor]))

        def on_validation_epoch_end(self) -> None:
            if not self.trainer.sanity_checking and "val" in monitor:
                self.scores.append(float(self.trainer.logged_metrics[monitor]))

    model = Custom()
    if not with_validation:
        model.validation_step = None
    mc, ours = pair(tmp_path, monitor=monitor, save_top_k=-1)
    fit(
        tmp_path,
        model,
        [mc, ours],
        max_epochs=max_epochs,
        limit_train_batches=train_batches,
        limit_val_batches=val_batches,
    )

    assert mc_epochs(mc) == ours.store.epochs() == [1, 2, 3]
    for epoch in range(max_epochs):
        expected = getattr(model, f"{monitor}s")[epoch].mean().item()
        assert math.isclose(model.scores[epoch], expected, abs_tol=1e-5)
        mc_file = next(p for p in Path(mc.dirpath).iterdir() if p.name.startswith(f"epoch={epoch}-"))
        theirs = torch.load(mc_file, weights_only=False)
        assert math.isclose(float(theirs["callbacks"][mc.state_key]["current_score"]), expected, abs_tol=1e-5)
        ck = ours.store.get(epoch + 1)
        assert math.isclose(ck.metrics[monitor], expected, abs_tol=1e-5), "the score of its own epoch"
        mine = load(ck)
        for chk in (theirs, mine):
            assert chk["epoch"] == epoch
            assert chk["global_step"] == train_batches * (epoch + 1)
            assert chk["lr_schedulers"][0]["_step_count"] == epoch + 2  # saved after the scheduler stepped
        assert mine["callbacks"][ours.state_key] == {"store": ours.store.url, "number": epoch + 1}


def test_model_checkpoint_score_and_ckpt_val_check_interval(tmp_path: Path) -> None:
    """Validating 4 times an epoch: ModelCheckpoint saves after each; ours too, numbered by the global step."""
    torch.manual_seed(0)

    class Custom(BoringModel):  # type: ignore[misc]
        def __init__(self) -> None:
            super().__init__()
            self.val_logs = torch.randn(8, 2)
            self.count = 0
            self.scores: list[float] = []

        def validation_step(self, batch: Any, batch_idx: int) -> Any:
            self.log("val_log", self.val_logs[self.count, batch_idx])
            return super().validation_step(batch, batch_idx)

        def on_validation_epoch_end(self) -> None:
            self.count += 1
            self.scores.append(float(self.trainer.logged_metrics["val_log"]))

    model = Custom()
    mc = ModelCheckpoint(
        dirpath=tmp_path / "mc", filename="{val_log:.4f}-{epoch}-{step}", monitor="val_log", save_top_k=-1
    )
    ours = StoreCheckpoint(tmp_path / "store", monitor="val_log", save_top_k=-1)
    fit(tmp_path, model, [mc, ours], max_epochs=2, limit_train_batches=8, limit_val_batches=2, val_check_interval=0.25)

    steps = [2, 4, 6, 8, 10, 12, 14, 16]
    assert len(files(mc)) == len(model.scores) == 8
    assert sorted(int(re.search(r"step=(\d+)", f).group(1)) for f in files(mc)) == steps  # type: ignore[union-attr]
    assert ours.store.epochs() == steps, "one checkpoint per validation, numbered by step"
    for index, step in enumerate(steps):
        ck = ours.store.get(step)
        assert math.isclose(ck.metrics["val_log"], model.scores[index], rel_tol=1e-5)
        assert ck.metadata["lightning_epoch"] == (step - 1) // 8
        assert load(ck)["global_step"] == step


@pytest.mark.parametrize("save_top_k", [-1, 0, 1, 2])
def test_model_checkpoint_with_non_string_input(tmp_path: Path, save_top_k: int) -> None:
    """save_top_k by a training metric: the same epochs are kept, the same one is best."""
    torch.manual_seed(save_top_k + 10)
    mc, ours = pair(tmp_path, monitor="early_stop_on", save_top_k=save_top_k)
    fit(tmp_path, LogInTwoMethods(), [mc, ours], max_epochs=4)
    kept = ours.store.epochs()
    assert kept == mc_epochs(mc)
    expected = {-1: 4, 0: 0, 1: 1, 2: 2}[save_top_k]
    assert len(kept) == expected
    if save_top_k != 0:
        assert ours.store.best().epoch == number_of(mc.best_model_path)
        assert ours.best_model_path.endswith("model.ckpt")


def test_model_checkpoint_topk_all(tmp_path: Path) -> None:
    """``monitor="epoch"`` works (Lightning adds epoch and step to the candidates): all kept, the last best."""
    mc, ours = pair(tmp_path, monitor="epoch", mode="max", save_top_k=-1)
    fit(tmp_path, BoringModel(), [mc, ours], max_epochs=3)
    assert number_of(mc.best_model_path) == 3 and float(mc.best_model_score) == 2
    assert ours.store.epochs() == mc_epochs(mc) == [1, 2, 3]
    assert ours.store.best().epoch == 3
    assert [ours.store.get(n).metrics["epoch"] for n in (1, 2, 3)] == [0, 1, 2]


def test_monitor_step_with_every_n_train_steps(tmp_path: Path) -> None:
    """``monitor="step"``: the two highest steps are kept."""
    mc, ours = pair(tmp_path, monitor="step", mode="max", save_top_k=2, every_n_train_steps=1)
    fit(tmp_path, BoringModel(), [mc, ours], max_epochs=1, limit_train_batches=4, limit_val_batches=0)
    assert mc_steps(mc) == ours.store.epochs() == [3, 4]
    assert ours.store.best().epoch == 4


def test_current_score(tmp_path: Path) -> None:
    """A metric logged in training_step: each checkpoint carries its own epoch's value."""

    class Model(BoringModel):  # type: ignore[misc]
        def training_step(self, *args: Any) -> Any:
            self.log("foo", (self.current_epoch + 1) / 10)
            return super().training_step(*args)

    mc, ours = pair(tmp_path, monitor="foo", save_top_k=3)
    fit(tmp_path, Model(), [mc, ours], max_epochs=3, limit_train_batches=1)
    assert float(mc.current_score) == pytest.approx(0.3)
    scores = sorted(
        float(torch.load(p, weights_only=False)["callbacks"][mc.state_key]["current_score"])
        for p in Path(mc.dirpath).iterdir()
    )
    assert scores == pytest.approx([0.1, 0.2, 0.3])
    assert [ours.store.get(n).metrics["foo"] for n in (1, 2, 3)] == pytest.approx([0.1, 0.2, 0.3])


@pytest.mark.parametrize("mode", ["min", "max"])
def test_checkpointing_with_nan_as_first(tmp_path: Path, mode: str) -> None:
    """A NaN score first: both end with the same best; ours does not save the NaN epoch (it warns)."""
    script = [float("nan"), *([5.0, 7.0, 8.0] if mode == "max" else [8.0, 7.0, 5.0])]
    mc, ours = pair(tmp_path, monitor="score", mode=mode, save_top_k=1)
    with pytest.warns(UserWarning, match="score=nan is not finite"):
        fit(tmp_path, Scripted(script), [mc, ours], max_epochs=4)
    best = 8.0 if mode == "max" else 5.0
    assert float(mc.best_model_score) == best and number_of(mc.best_model_path) == 4
    assert ours.store.best().epoch == 4 and ours.store.best().metrics["score"] == best
    assert ours.store.epochs() == mc_epochs(mc) == [4]


# -- what is kept --------------------------------------------------------------------------------------


def test_default_checkpoint_behavior(tmp_path: Path) -> None:
    """The defaults (no monitor, save_top_k=1): only the newest is kept."""
    mc, ours = ModelCheckpoint(dirpath=tmp_path / "mc"), StoreCheckpoint(tmp_path / "store")
    fit(tmp_path, LogInTwoMethods(), [mc, ours], max_epochs=3)
    assert files(mc) == {"epoch=2-step=6.ckpt"}
    assert ours.store.epochs() == [3]
    assert mc.save_last is None and ours.save_last is None


def test_none_monitor_not_alternating(tmp_path: Path) -> None:
    """monitor=None, save_top_k=1: at every epoch start exactly one checkpoint, the previous epoch's."""
    seen: list[tuple[list[str], list[int]]] = []
    mc = ModelCheckpoint(dirpath=tmp_path / "mc", monitor=None, save_top_k=1, filename="model")
    ours = StoreCheckpoint(tmp_path / "store", monitor=None, save_top_k=1)

    class ListDir(BoringModel):  # type: ignore[misc]
        def on_train_epoch_start(self) -> None:
            if self.current_epoch > 0:
                seen.append((sorted(files(mc)), ours.store.epochs()))

    fit(tmp_path, ListDir(), [mc, ours], max_epochs=3, limit_train_batches=1, limit_val_batches=0)
    assert seen == [(["model.ckpt"], [1]), (["model.ckpt"], [2])]


def test_model_checkpoint_save_last_none_monitor(tmp_path: Path) -> None:
    """monitor=None, save_top_k=-1, save_last: every epoch kept; last is the newest."""
    mc, ours = pair(tmp_path, monitor=None, save_top_k=-1, save_last=True)
    fit(tmp_path, LogInTwoMethods(), [mc, ours], max_epochs=2)
    assert files(mc) == {"epoch=0-step=2.ckpt", "epoch=1-step=4.ckpt", "last.ckpt"}
    assert number_of(mc.best_model_path) == 2 and mc.best_model_score is None
    assert ours.store.epochs() == [1, 2] and ours.store.latest().epoch == 2


@pytest.mark.parametrize("every_n_epochs", [0, 1, 2, 3])
def test_model_checkpoint_every_n_epochs(tmp_path: Path, every_n_epochs: int) -> None:
    """Every n-th epoch; 0 saves none (no ZeroDivisionError)."""
    mc, ours = pair(tmp_path, save_top_k=-1, every_n_epochs=every_n_epochs)
    fit(tmp_path, LogInTwoMethods(), [mc, ours], max_epochs=5, limit_train_batches=1)
    expected = [e + 1 for e in range(5) if every_n_epochs and not (e + 1) % every_n_epochs]
    assert mc_epochs(mc) == ours.store.epochs() == expected


def test_ckpt_every_n_train_steps(tmp_path: Path) -> None:
    """every_n_epochs=0 with every_n_train_steps: numbered by the global step."""
    mc, ours = pair(tmp_path, every_n_epochs=0, every_n_train_steps=4, save_top_k=-1, save_last=False)
    fit(tmp_path, LogInTwoMethods(), [mc, ours], max_epochs=2, limit_train_batches=8)
    assert mc_steps(mc) == ours.store.epochs() == [4, 8, 12, 16]


def test_model_checkpoint_topk_zero(tmp_path: Path) -> None:
    """save_top_k=0, save_last: only a last checkpoint, written at the end of training."""
    mc, ours = pair(tmp_path, save_top_k=0, save_last=True)
    fit(tmp_path, LogInTwoMethods(), [mc, ours], max_epochs=2)
    assert files(mc) == {"last.ckpt"} and mc.best_model_path == ""
    assert ours.store.epochs() == [2]
    theirs = torch.load(Path(mc.dirpath) / "last.ckpt", weights_only=False)
    mine = load(ours.store.latest())
    assert (mine["epoch"], mine["global_step"]) == (theirs["epoch"], theirs["global_step"]) == (2, 4)


@pytest.mark.parametrize("every_n_epochs", [0, 5])
def test_save_last_every_n_epochs_interaction(tmp_path: Path, every_n_epochs: int) -> None:
    """save_last ignores every_n_epochs: one last checkpoint at the end."""
    mc, ours = pair(tmp_path, every_n_epochs=every_n_epochs, save_last=True, save_top_k=0, save_on_train_epoch_end=True)
    fit(tmp_path, BoringModel(), [mc, ours], max_epochs=2, limit_train_batches=1, limit_val_batches=0)
    assert mc.last_model_path and files(mc) == {"last.ckpt"}
    assert ours.store.epochs() == [2]


def test_model_checkpoint_save_last_checkpoint_contents(tmp_path: Path) -> None:
    """save_top_k=3, save_last: last holds the newest state, the same weights as ModelCheckpoint's last.ckpt."""
    torch.manual_seed(100)
    mc = ModelCheckpoint(
        dirpath=tmp_path / "mc", monitor="early_stop_on", filename="{epoch}", save_top_k=3, save_last=True
    )
    ours = StoreCheckpoint(tmp_path / "store", monitor="early_stop_on", save_top_k=3, save_last=True)
    fit(tmp_path, LogInTwoMethods(), [mc, ours], max_epochs=3)
    assert files(mc) == {"epoch=0.ckpt", "epoch=1.ckpt", "epoch=2.ckpt", "last.ckpt"}
    assert ours.store.epochs() == [1, 2, 3] and ours.store.latest().epoch == 3
    theirs = torch.load(Path(mc.dirpath) / "last.ckpt", weights_only=False)
    mine = load(ours.store.latest())
    assert mine["epoch"] == theirs["epoch"] == 2 and mine["global_step"] == theirs["global_step"]
    for name, tensor in theirs["state_dict"].items():
        assert torch.equal(mine["state_dict"][name], tensor)


@pytest.mark.parametrize(
    ("save_top_k", "save_last", "kept_by_mc", "kept"),
    [
        (1, None, {"epoch=3.ckpt"}, [4]),  # exactly the best
        (2, True, {"epoch=1.ckpt", "epoch=3.ckpt", "last.ckpt"}, [2, 4]),  # top-2; last = the newest top-k save
    ],
)
def test_top_k_counts_like_lightning(
    tmp_path: Path, save_top_k: int, save_last: bool | None, kept_by_mc: set[str], kept: list[int]
) -> None:
    """Issue 13: save_top_k=1 keeps exactly the best; save_top_k=2 + save_last keeps the top 2 (last among them)."""
    script = [0.5, 0.3, 0.4, 0.2, 0.6]
    mc = ModelCheckpoint(
        dirpath=tmp_path / "mc", filename="{epoch}", monitor="score", save_top_k=save_top_k, save_last=save_last
    )
    ours = StoreCheckpoint(tmp_path / "store", monitor="score", save_top_k=save_top_k, save_last=save_last)
    fit(tmp_path, Scripted(script), [mc, ours], max_epochs=5)
    assert files(mc) == kept_by_mc
    assert ours.store.epochs() == kept
    assert ours.store.best().epoch == 4 and number_of(mc.best_model_path) == 4
    if save_last:
        last = torch.load(Path(mc.dirpath) / "last.ckpt", weights_only=False)
        assert ours.store.latest().epoch == last["epoch"] + 1 == 4


def test_save_last_with_step_trigger_keeps_best_and_newest(tmp_path: Path) -> None:
    """A step trigger with save_last: the newest is saved even when it is not in the top k (last + best)."""
    script = [0.5, 0.2, 0.4, 0.6, 0.7, 0.9]
    mc = ModelCheckpoint(dirpath=tmp_path / "mc", monitor="score", save_top_k=1, save_last=True, every_n_train_steps=1)
    ours = StoreCheckpoint(tmp_path / "store", monitor="score", save_top_k=1, save_last=True, every_n_train_steps=1)
    fit(tmp_path, Scripted(script, where="step"), [mc, ours], max_epochs=1, limit_train_batches=5, limit_val_batches=0)
    assert files(mc) == {"epoch=0-step=2.ckpt", "last.ckpt"}
    assert torch.load(Path(mc.dirpath) / "last.ckpt", weights_only=False)["global_step"] == 5
    assert ours.store.epochs() == [2, 5]
    assert ours.store.best().epoch == 2 and ours.store.latest().epoch == 5


def test_save_last_only_when_checkpoint_saved(tmp_path: Path) -> None:
    """save_top_k=1 + save_last on validation end: the best, and last is that same (newest top-k) checkpoint."""
    script = [1.0, 1.1, 0.8, 1.3]
    options: dict[str, Any] = {
        "monitor": "score",
        "save_last": True,
        "save_top_k": 1,
        "mode": "min",
        "every_n_epochs": 1,
        "save_on_train_epoch_end": False,
    }
    mc = ModelCheckpoint(dirpath=tmp_path / "mc", filename="best-{epoch}", **options)
    ours = StoreCheckpoint(tmp_path / "store", **options)
    fit(tmp_path, Scripted(script), [mc, ours], max_epochs=4)
    assert files(mc) == {"best-epoch=2.ckpt", "last.ckpt"}
    assert ours.store.epochs() == [3] and ours.store.latest().epoch == ours.store.best().epoch == 3


# -- when it saves: the module's hooks and validation --------------------------------------------------


def test_metric_logged_in_on_train_epoch_end_belongs_to_that_epoch(tmp_path: Path) -> None:
    """Issue 13: the trainer runs ours after the module's on_train_epoch_end, as ModelCheckpoint."""
    script = [3.0, 1.0, 2.0]
    mc, ours = pair(tmp_path, monitor="score", save_top_k=-1)
    fit(tmp_path, Scripted(script, where="train_epoch"), [mc, ours], max_epochs=3)
    for epoch, value in enumerate(script):
        path = next(p for p in Path(mc.dirpath).iterdir() if p.name.startswith(f"epoch={epoch}-"))
        assert float(torch.load(path, weights_only=False)["callbacks"][mc.state_key]["current_score"]) == value
        assert ours.store.get(epoch + 1).metrics["score"] == value
    assert ours.store.best().epoch == 2 and number_of(mc.best_model_path) == 2


def test_check_val_every_n_epochs_top_k_integration(tmp_path: Path) -> None:
    """check_val_every_n_epoch=2, monitor="epoch": only validated epochs are saved (on validation end)."""
    mc = ModelCheckpoint(dirpath=tmp_path / "mc", monitor="epoch", save_top_k=-1, filename="{epoch}")
    ours = StoreCheckpoint(tmp_path / "store", monitor="epoch", save_top_k=-1)
    fit(tmp_path, BoringModel(), [mc, ours], max_epochs=5, limit_train_batches=1, check_val_every_n_epoch=2)
    assert files(mc) == {"epoch=1.ckpt", "epoch=3.ckpt"}
    assert ours.store.epochs() == [2, 4]


def test_check_val_every_n_epochs_with_a_validation_monitor(tmp_path: Path) -> None:
    """Issue 13: a validation metric every 2 epochs: epochs 2 and 4 only, each with its own score."""
    script = [9.0, 4.0, 9.0, 3.0, 9.0]
    mc, ours = pair(tmp_path, monitor="score", save_top_k=-1)
    fit(tmp_path, Scripted(script), [mc, ours], max_epochs=5, limit_train_batches=1, check_val_every_n_epoch=2)
    assert mc_epochs(mc) == ours.store.epochs() == [2, 4]
    assert ours.store.get(2).metrics["score"] == 4.0 and ours.store.get(4).metrics["score"] == 3.0


def test_val_check_interval_checkpoint_files(tmp_path: Path) -> None:
    """Validating every 2 of 10 batches: five checkpoints in one epoch, at steps 2..10."""
    mc = ModelCheckpoint(dirpath=tmp_path / "mc", save_top_k=-1, monitor="val_acc", mode="max")
    ours = StoreCheckpoint(tmp_path / "store", save_top_k=-1, monitor="val_acc", mode="max")
    fit(tmp_path, LogInTwoMethods(), [mc, ours], max_epochs=1, limit_train_batches=10, val_check_interval=0.2)
    assert files(mc) == {f"epoch=0-step={s}.ckpt" for s in [2, 4, 6, 8, 10]}
    assert ours.store.epochs() == [2, 4, 6, 8, 10]


# -- errors --------------------------------------------------------------------------------------------


def test_misspelled_monitor_raises_after_validation(tmp_path: Path) -> None:
    """Issue 13: a monitor never logged raises once validation has run, as ModelCheckpoint does."""
    with pytest.raises(MisconfigurationException, match="could not find the monitored key"):
        fit(tmp_path / "a", BoringModel(), [ModelCheckpoint(dirpath=tmp_path / "mc", monitor="val_los")])
    ours = StoreCheckpoint(tmp_path / "store", monitor="val_los")
    with pytest.raises(MisconfigurationException, match="could not find the monitored key") as info:
        fit(tmp_path / "b", BoringModel(), [ours])
    assert isinstance(info.value, MonitorNotFoundError) and isinstance(info.value, MissingMetricError)
    assert "HINT: Did you call `log('val_los', value)`" in str(info.value)
    assert ours.store.epochs() == []


def test_misspelled_monitor_without_validation_warns(tmp_path: Path) -> None:
    """Without validation ModelCheckpoint only warns (and saves nothing); so do we."""
    mc, ours = pair(tmp_path, monitor="val_los")
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        fit(tmp_path, BoringModel(), [mc, ours], limit_val_batches=0)
    messages = [str(w.message) for w in caught]
    assert any(m.startswith("`ModelCheckpoint(monitor='val_los')` could not find") for m in messages)
    assert any(m.startswith("`StoreCheckpoint(monitor='val_los')` could not find") for m in messages)
    assert files(mc) == set() and ours.store.epochs() == []


@pytest.mark.parametrize(
    ("options", "match"),
    [
        ({"save_top_k": -3}, r".*Must be >= -1"),  # test_invalid_top_k
        ({"save_top_k": 3}, r"\(save_top_k=3, monitor=None\) is not a valid"),  # test_none_monitor_top_k
        ({"every_n_epochs": -3}, r".*Must be >= 0"),  # test_invalid_every_n_epochs
        ({"every_n_train_steps": -3}, r".*Must be >= 0"),  # test_invalid_every_n_train_steps
        ({"every_n_train_steps": 1, "every_n_epochs": 2}, r".*Combination of parameters every_n_train_steps"),
        ({"mode": "unknown_option"}, r"`mode` can be .* but got unknown_option"),  # test_model_checkpoint_mode_options
    ],
)
def test_invalid_arguments(tmp_path: Path, options: dict[str, Any], match: str) -> None:
    """Refused as ModelCheckpoint refuses them, with its words, before the store is created."""
    with pytest.raises(MisconfigurationException, match=match):
        ModelCheckpoint(dirpath=tmp_path / "mc", **options)
    with pytest.raises(LightningConfigError, match=match) as info:
        StoreCheckpoint(tmp_path / "store", **options)
    assert isinstance(info.value, MisconfigurationException) and isinstance(info.value, InvalidArgumentError)
    assert not (tmp_path / "store").exists()


def test_valid_arguments_are_accepted(tmp_path: Path) -> None:
    """What upstream's invalid-argument tests say should not fail, and the default triggers."""
    for options in [
        {"save_top_k": -1},
        {"save_top_k": 0},
        {"save_top_k": 1},
        {"every_n_epochs": 0},
        {"every_n_epochs": 2},
        {"every_n_train_steps": 0},
        {"every_n_train_steps": 1},
        {"every_n_train_steps": 0, "every_n_epochs": 3},
        {"every_n_train_steps": 4, "every_n_epochs": 0},
    ]:
        mc = ModelCheckpoint(dirpath=tmp_path / "mc", **options)
        ours = StoreCheckpoint(ckptstore.open(tmp_path / "store"), **options)
        assert (ours.every_n_epochs, ours.every_n_train_steps) == (mc.every_n_epochs, mc._every_n_train_steps)
    default = StoreCheckpoint(tmp_path / "store")  # test_none_every_n_train_steps_val_epochs
    assert (default.every_n_epochs, default.every_n_train_steps) == (1, 0)


# -- resuming ------------------------------------------------------------------------------------------


def _resume_kwargs(tmp_path: Path, max_steps: int) -> dict[str, Any]:
    return {
        "max_steps": max_steps,
        "max_epochs": -1,
        "limit_train_batches": 10,
        "limit_val_batches": 0,
        "default_root_dir": str(tmp_path),
    }


@pytest.mark.parametrize("resume_from", ["callback", "url"])
def test_resume_and_old_checkpoint_files_remain(tmp_path: Path, resume_from: str) -> None:
    """A resumed run never deletes the checkpoint it resumed from (top-2 by step: 4, 6, 8 remain)."""
    options: dict[str, Any] = {"monitor": "step", "mode": "max", "save_top_k": 2, "every_n_train_steps": 2}
    first = tmp_path / "first"
    fit(tmp_path, BoringModel(), [ModelCheckpoint(dirpath=first, **options)], **_resume_kwargs(tmp_path, 5))
    assert {p.name for p in first.iterdir()} == {"epoch=0-step=2.ckpt", "epoch=0-step=4.ckpt"}
    trainer = fit(
        tmp_path,
        BoringModel(),
        [ModelCheckpoint(dirpath=first, **options)],
        ckpt_path=str(first / "epoch=0-step=4.ckpt"),
        **_resume_kwargs(tmp_path, 8),
    )
    assert {p.name for p in first.iterdir()} == {"epoch=0-step=4.ckpt", "epoch=0-step=6.ckpt", "epoch=0-step=8.ckpt"}
    assert trainer.global_step == 8

    url = str(tmp_path / "store")
    ours = StoreCheckpoint(url, **options)
    fit(tmp_path, BoringModel(), [ours], **_resume_kwargs(tmp_path, 5))
    assert ours.store.epochs() == [2, 4]
    resumed = StoreCheckpoint(url, **options)
    with resume_path(resumed if resume_from == "callback" else url) as ckpt_path:
        assert ckpt_path is not None and ckpt_path.endswith("00000004/model.ckpt")
        trainer = fit(tmp_path, BoringModel(), [resumed], ckpt_path=ckpt_path, **_resume_kwargs(tmp_path, 8))
    assert trainer.global_step == 8
    assert resumed.store.epochs() == [4, 6, 8], "4 is where the run resumed from"
    assert resumed.store.get(8).parent == 4


def test_resume_training_preserves_old_ckpt_last(tmp_path: Path) -> None:
    """save_last + every step + top 2 by step: 2 and 3 (last among them); a resume continues at step 4."""
    options: dict[str, Any] = {
        "monitor": "step",
        "mode": "max",
        "save_last": True,
        "save_top_k": 2,
        "every_n_train_steps": 1,
    }
    kwargs: dict[str, Any] = {"max_epochs": 1, "limit_train_batches": 3, "limit_val_batches": 0}
    mc = ModelCheckpoint(dirpath=tmp_path / "mc", filename="{step}", **options)
    ours = StoreCheckpoint(tmp_path / "store", **options)
    fit(tmp_path, BoringModel(), [mc, ours], **kwargs)
    assert files(mc) == {"last.ckpt", "step=2.ckpt", "step=3.ckpt"}
    assert ours.store.epochs() == [2, 3] and ours.store.latest().epoch == 3
    resumed = StoreCheckpoint(tmp_path / "store", **options)
    with resume_path(resumed) as ckpt_path:
        trainer = fit(tmp_path, BoringModel(), [resumed], ckpt_path=ckpt_path, **{**kwargs, "max_epochs": 2})
    assert trainer.global_step == 6
    assert resumed.store.epochs() == [3, 5, 6], "3 (resumed from) stays; then the top 2 by step"


def test_resuming_from_an_older_checkpoint_skips_numbers_the_store_holds(tmp_path: Path) -> None:
    """Differs on purpose: a resume from checkpoint 2 of [1, 2, 3] warns; 3 is not rewritten, 4 is saved."""
    url = tmp_path / "store"
    ours = StoreCheckpoint(url, save_top_k=-1)
    fit(tmp_path, BoringModel(), [ours], max_epochs=3)
    assert ours.store.epochs() == [1, 2, 3]
    resumed = StoreCheckpoint(url, save_top_k=-1)
    older = str(resumed.store.get(2).path / "model.ckpt")
    with pytest.warns(UserWarning, match=r"holds later ones \(up to 3\)"):
        fit(tmp_path, BoringModel(), [resumed], ckpt_path=older, max_epochs=4)
    assert resumed.store.epochs() == [1, 2, 3, 4]
    assert load(resumed.store.get(3))["global_step"] == 6 and load(resumed.store.get(4))["global_step"] == 8


def test_ckpt_path_best_uses_the_stores_best(tmp_path: Path) -> None:
    """``validate(ckpt_path="best")`` finds the best through ``best_model_path`` (a local store)."""
    ours = StoreCheckpoint(tmp_path / "store", monitor="score", save_top_k=2)
    trainer = fit(tmp_path, Scripted([3.0, 1.0, 2.0]), [ours], max_epochs=3)
    assert ours.store.epochs() == [2, 3]
    trainer.validate(Scripted([3.0, 1.0, 2.0, 0.0]), ckpt_path="best", verbose=False)
    assert trainer.ckpt_path == ours.best_model_path == str(ours.store.get(2).path / "model.ckpt")
