"""The callbacks' ``blocking=False``: training goes on while the commit waits, and nothing is lost.

Proved without clocks, with the technique of ``test_async_snapshot.py``: the store's background thread
is held at its first step (making the staging folder, or publishing a folder staged in the
foreground) on an event the test sets only after the callback returned and a training step changed
the weights. The real frameworks train tiny models; a probe callback reads the weights at the save,
checks that the checkpoint is not committed yet while they change, and opens the gate. At the end
every checkpoint is committed, verifies, and holds the weights of its save. A background failure
(the same gated backend, failing instead) is raised by the next save or at the end of training.
"""

from __future__ import annotations

import errno
import os
import threading
from pathlib import Path
from typing import Any

import numpy as np
import pytest

import ckptstore
from ckptstore.backends.local import LocalBackend

pytestmark = [pytest.mark.frameworks, pytest.mark.filterwarnings("ignore::UserWarning")]


class GatedBackend(LocalBackend):
    """A local store whose background saves stop at their first step until ``gate`` opens (or fail there)."""

    def __init__(self, root: Path, gate: threading.Event | None = None, fail: bool = False) -> None:
        super().__init__(root)
        self.gate = gate
        self.fail = fail
        self.reached = threading.Event()

    def _hold(self) -> None:
        if not threading.current_thread().name.startswith("ckptstore-commit"):
            return  # a save committed in the foreground is never held
        self.reached.set()
        if self.gate is not None:
            assert self.gate.wait(60), "the test never opened the gate"
        if self.fail:
            raise OSError(errno.EIO, "disk on fire")

    def make_dir(self, rel: str) -> None:
        if rel.startswith("work/"):  # save_state in the background: staging starts there
            self._hold()
        super().make_dir(rel)

    def rename_dir(self, src: Path | str, dst: Path | str) -> None:
        self._hold()  # a folder staged in the foreground (store.save(blocking=False)) is published here
        super().rename_dir(src, dst)


def _store(tmp_path: Path, gate: threading.Event | None = None, fail: bool = False) -> ckptstore.CheckpointStore:
    root = tmp_path / "store"
    root.mkdir()
    return ckptstore.CheckpointStore(root, ckptstore.StoreConfig(), backend=GatedBackend(root, gate, fail))


def _changed(before: list[Any], after: list[Any]) -> bool:
    return any(not np.array_equal(np.asarray(a), np.asarray(b)) for a, b in zip(before, after, strict=True))


def _raised_in(excinfo: pytest.ExceptionInfo[BaseException], hook: str) -> bool:
    return any(entry.name == hook for entry in excinfo.traceback)


# -- Keras --------------------------------------------------------------------------------------------------
def _keras() -> Any:
    os.environ.setdefault("KERAS_BACKEND", "torch")
    return pytest.importorskip("keras")


def _keras_model(keras: Any) -> Any:
    keras.utils.set_random_seed(1)
    model = keras.Sequential([keras.Input((4,)), keras.layers.Dense(8, activation="relu"), keras.layers.Dense(1)])
    model.compile(optimizer=keras.optimizers.Adam(0.01), loss="mse")
    return model


def _keras_fit(keras: Any, epochs: int, callbacks: list[Any]) -> Any:
    model = _keras_model(keras)
    rng = np.random.default_rng(0)
    x = rng.normal(size=(32, 4)).astype("float32")
    y = x.sum(axis=1, keepdims=True)
    model.fit(x, y, epochs=epochs, batch_size=8, verbose=0, callbacks=callbacks)
    return model


@pytest.mark.parametrize("weights_only", [True, False], ids=["weights-snapshot", "keras-file"])
def test_keras_fit_goes_on_while_the_save_commits_and_the_checkpoint_holds_the_saved_weights(
    tmp_path: Path, weights_only: bool
) -> None:
    keras = _keras()
    from ckptstore.integrations.keras import StoreCheckpoint, load_weights

    gate = threading.Event()
    store = _store(tmp_path, gate)
    saved: dict[str, Any] = {}

    class Probe(keras.callbacks.Callback):  # type: ignore[misc]
        def on_epoch_end(self, epoch: int, logs: Any = None) -> None:  # after StoreCheckpoint returned
            if epoch == 0:
                assert store.backend.reached.wait(60)  # the commit runs in the background, held there
                saved["weights"] = self.model.get_weights()

        def on_train_batch_end(self, batch: int, logs: Any = None) -> None:
            if "weights" in saved and not gate.is_set():
                assert 1 not in store  # still committing ...
                assert _changed(saved["weights"], self.model.get_weights())  # ... while training changes the weights
                gate.set()

    callback = StoreCheckpoint(store, save_weights_only=weights_only, blocking=False)
    _keras_fit(keras, 3, [callback, Probe()])
    assert gate.is_set()
    assert store.epochs() == [1, 2, 3] and len(store.verify()) == 3  # on_train_end waited for every commit
    if weights_only:
        assert store.get(1).manifest.serializer["name"] == "numpy"  # type: ignore[index]
    check = _keras_model(keras)
    load_weights(check, store.get(1))
    assert not _changed(saved["weights"], check.get_weights())  # the weights as of the save, not as of the commit

    resumed = StoreCheckpoint(store, save_weights_only=weights_only, blocking=False)
    model = _keras_fit(keras, 3, [resumed])  # resumes after epoch 3: nothing left to train
    assert resumed.restored is not None and resumed.restored.epoch == 3
    load_weights(check, store.get(3))
    assert not _changed(check.get_weights(), model.get_weights())


@pytest.mark.parametrize(("epochs", "hook"), [(2, "on_epoch_end"), (1, "on_train_end")])
def test_keras_a_background_failure_is_raised_by_the_next_save_or_at_the_end_of_fit(
    tmp_path: Path, epochs: int, hook: str
) -> None:
    keras = _keras()
    from ckptstore.integrations.keras import StoreCheckpoint

    store = _store(tmp_path, fail=True)
    with pytest.raises(OSError, match="disk on fire") as excinfo:
        _keras_fit(keras, epochs, [StoreCheckpoint(store, save_weights_only=True, blocking=False)])
    assert _raised_in(excinfo, hook)
    assert store.epochs() == []


# -- Lightning ----------------------------------------------------------------------------------------------
def _lightning() -> tuple[Any, Any]:
    torch = pytest.importorskip("torch")
    return torch, pytest.importorskip("pytorch_lightning")


def _lightning_fit(root: Path, epochs: int, callbacks: list[Any], plugins: list[Any] | None = None) -> Any:
    torch, pl = _lightning()

    class Regressor(pl.LightningModule):  # type: ignore[misc]
        def __init__(self) -> None:
            super().__init__()
            self.layer = torch.nn.Linear(4, 1)

        def training_step(self, batch: Any, batch_idx: int) -> Any:
            x, y = batch
            return torch.nn.functional.mse_loss(self.layer(x), y)

        def configure_optimizers(self) -> Any:
            return torch.optim.Adam(self.parameters(), lr=0.05)

    torch.manual_seed(0)
    x = torch.randn(32, 4)
    loader = torch.utils.data.DataLoader(torch.utils.data.TensorDataset(x, x.sum(1, keepdim=True)), batch_size=8)
    trainer = pl.Trainer(
        max_epochs=epochs,
        callbacks=callbacks,
        plugins=plugins,
        logger=False,
        enable_progress_bar=False,
        enable_model_summary=False,
        accelerator="cpu",
        default_root_dir=str(root),
    )
    module = Regressor()
    trainer.fit(module, loader)
    return module


def _ckpt_state(store: ckptstore.CheckpointStore, epoch: int) -> dict[str, Any]:
    torch, _ = _lightning()
    with store.get(epoch).local_path() as path:
        return dict(torch.load(path / "model.ckpt", weights_only=False)["state_dict"])


def test_lightning_training_goes_on_while_the_save_commits_and_the_checkpoint_holds_the_saved_weights(
    tmp_path: Path,
) -> None:
    torch, pl = _lightning()
    from ckptstore.integrations.lightning import StoreCheckpoint

    gate = threading.Event()
    store = _store(tmp_path, gate)
    saved: dict[str, Any] = {}

    class Probe(pl.Callback):  # type: ignore[misc]
        def on_train_epoch_end(self, trainer: Any, module: Any) -> None:  # Lightning runs StoreCheckpoint after this
            if trainer.current_epoch == 0:
                saved["weights"] = {k: v.clone() for k, v in module.state_dict().items()}

        def on_train_batch_end(self, trainer: Any, module: Any, *args: Any) -> None:
            if "weights" in saved and not gate.is_set():
                assert store.backend.reached.wait(60)  # the save returned; its commit is held in the background
                assert 1 not in store
                now = module.state_dict()
                assert any(not torch.equal(now[k], v) for k, v in saved["weights"].items())
                gate.set()

    callback = StoreCheckpoint(store, blocking=False, save_top_k=-1)
    _lightning_fit(tmp_path, 3, [callback, Probe()])
    assert gate.is_set()
    assert store.epochs() == [1, 2, 3] and len(store.verify()) == 3  # on_train_end waited for every commit
    first = _ckpt_state(store, 1)
    assert all(torch.equal(first[k], v) for k, v in saved["weights"].items())  # as of the save
    assert store.get(1).manifest.serializer is None  # model.ckpt as Lightning writes it, as a blocking save


@pytest.mark.parametrize(("epochs", "hook"), [(2, "on_train_epoch_end"), (1, "on_train_end")])
def test_lightning_a_background_failure_is_raised_by_the_next_save_or_at_the_end_of_training(
    tmp_path: Path, epochs: int, hook: str
) -> None:
    _lightning()
    from ckptstore.integrations.lightning import StoreCheckpoint

    store = _store(tmp_path, fail=True)
    with pytest.raises(OSError, match="disk on fire") as excinfo:
        _lightning_fit(tmp_path, epochs, [StoreCheckpoint(store, blocking=False, save_top_k=-1)])
    assert _raised_in(excinfo, hook)
    assert store.epochs() == []


@pytest.mark.parametrize("blocking", [False, True])
def test_lightning_async_checkpoint_io_is_unwrapped_when_not_blocking_and_refused_when_blocking(
    tmp_path: Path, blocking: bool
) -> None:
    _lightning()
    from pytorch_lightning.plugins.io import AsyncCheckpointIO

    from ckptstore.integrations.lightning import LightningConfigError, StoreCheckpoint

    store = _store(tmp_path)
    callback = StoreCheckpoint(store, blocking=blocking, save_top_k=-1)
    if blocking:  # the commit would not wait for the file AsyncCheckpointIO writes later
        with pytest.raises(LightningConfigError, match="AsyncCheckpointIO"):
            _lightning_fit(tmp_path, 1, [callback], plugins=[AsyncCheckpointIO()])
        assert store.epochs() == []
        return
    _lightning_fit(tmp_path, 2, [callback], plugins=[AsyncCheckpointIO()])
    assert store.epochs() == [1, 2] and len(store.verify()) == 2
    assert set(_ckpt_state(store, 2)) == {"layer.weight", "layer.bias"}  # the whole file, written before the commit


# -- Hugging Face -------------------------------------------------------------------------------------------
def _hf_train(tmp_path: Path, max_steps: int, callbacks: list[Any]) -> Any:
    torch = pytest.importorskip("torch")
    transformers = pytest.importorskip("transformers")
    pytest.importorskip("accelerate")

    class Tokens(torch.utils.data.Dataset):  # type: ignore[misc]
        def __init__(self) -> None:
            gen = torch.Generator().manual_seed(0)
            self.ids = torch.randint(5, 60, (16, 8), generator=gen)

        def __len__(self) -> int:
            return len(self.ids)

        def __getitem__(self, i: int) -> dict[str, Any]:
            return {"input_ids": self.ids[i], "labels": (self.ids[i, 0] > 30).long()}

    transformers.set_seed(0)
    config = transformers.BertConfig(
        vocab_size=64, hidden_size=16, num_hidden_layers=1, num_attention_heads=2, intermediate_size=32, num_labels=2
    )
    args = transformers.TrainingArguments(
        output_dir=str(tmp_path / "out"),
        max_steps=max_steps,
        per_device_train_batch_size=8,
        learning_rate=5e-3,
        save_strategy="steps",
        save_steps=1,
        report_to=[],
        use_cpu=True,
        disable_tqdm=True,
    )
    model = transformers.BertForSequenceClassification(config)
    trainer = transformers.Trainer(model=model, args=args, train_dataset=Tokens(), callbacks=callbacks)
    trainer.train()
    return trainer


def test_hugging_face_training_goes_on_while_the_folder_commits_and_the_checkpoint_holds_the_saved_weights(
    tmp_path: Path,
) -> None:
    torch = pytest.importorskip("torch")
    transformers = pytest.importorskip("transformers")
    safetensors = pytest.importorskip("safetensors.torch")
    from ckptstore.integrations.transformers import StoreCallback

    gate = threading.Event()
    store = _store(tmp_path, gate)
    saved: dict[str, Any] = {}

    class Probe(transformers.TrainerCallback):  # type: ignore[misc]
        def on_save(self, args: Any, state: Any, control: Any, model: Any = None, **kwargs: Any) -> None:
            if state.global_step == 1:  # StoreCallback (before this probe) returned
                assert store.backend.reached.wait(60)  # its commit is held in the background
                saved["weights"] = {k: v.detach().clone() for k, v in model.state_dict().items()}

        def on_optimizer_step(self, args: Any, state: Any, control: Any, model: Any = None, **kwargs: Any) -> None:
            if "weights" in saved and not gate.is_set():  # step 2, before the Trainer's next save
                assert 1 not in store
                now = model.state_dict()
                assert any(not torch.equal(now[k], v) for k, v in saved["weights"].items())
                gate.set()

    callback = StoreCallback(store, blocking=False)
    _hf_train(tmp_path, 3, [callback, Probe()])
    assert gate.is_set()
    assert callback.committed == [1, 2, 3]
    assert store.epochs() == [1, 2, 3] and len(store.verify()) == 3
    with store.get(1).local_path() as path:
        first = safetensors.load_file(path / "model.safetensors")
    assert all(torch.equal(first[k], saved["weights"][k]) for k in first)  # as of the save


def test_hugging_face_a_background_failure_is_raised_before_the_next_save(tmp_path: Path) -> None:
    pytest.importorskip("transformers")
    from ckptstore.integrations.transformers import StoreCallback

    store = _store(tmp_path, fail=True)
    callback = StoreCallback(store, blocking=False)
    with pytest.raises(OSError, match="disk on fire") as excinfo:
        _hf_train(tmp_path, 3, [callback])
    assert _raised_in(excinfo, "on_step_end")  # step 2, before the Trainer saves again
    assert store.epochs() == [] and callback.committed == []
