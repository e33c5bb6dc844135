"""Keras's own ModelCheckpoint scenarios, run against StoreCheckpoint with the real ModelCheckpoint beside it.

Ported from keras-team/keras, ``keras/src/callbacks/model_checkpoint_test.py`` at commit
3422977a5e38fb2f7709aaa9a08e47f0c43d0f60 (``test_model_checkpoint_options`` cases 1-15 and
``test_model_checkpoint_loading``), plus the scenarios of issue 13 (no validation data, batch-level saves
with a ``val_*`` monitor, ``mode="auto"`` by the metric's declared direction). Each scenario runs
``keras.callbacks.ModelCheckpoint`` in the same ``fit`` as ours (same model, same logs), asserts that
Keras still does what its test says (which files it writes, warnings, errors), and that the store shows
the same thing: ``store.epochs()``, ``store.best()``, the file names inside each checkpoint. Where we
differ on purpose (an unknown ``mode`` is refused; ``save_freq`` must be positive) the test asserts ours
and ``docs/frameworks/keras.md`` lists the difference.
"""

from __future__ import annotations

import os
import uuid
import warnings
from pathlib import Path
from typing import Any

import numpy as np
import pytest

os.environ.setdefault("KERAS_BACKEND", "torch")
keras = pytest.importorskip("keras")

import ckptstore  # noqa: E402
from ckptstore.integrations.keras import StoreCheckpoint  # noqa: E402

pytestmark = pytest.mark.frameworks

TRAIN_SAMPLES = 30
TEST_SAMPLES = 30
NUM_CLASSES = 3
INPUT_DIM = 3
NUM_HIDDEN = 5
BATCH_SIZE = 5


@pytest.fixture
def url() -> str:
    """A fresh in-memory store per test (the backend does not matter here)."""
    return f"memory://peer-keras-{uuid.uuid4().hex}"


def _data() -> tuple[Any, Any, Any, Any]:
    """Upstream's data: ``test_utils.get_test_data(random_seed=42, ...)``, one-hot labels."""
    from keras.src.testing import test_utils

    (x, y), (vx, vy) = test_utils.get_test_data(
        random_seed=42,
        train_samples=TRAIN_SAMPLES,
        test_samples=TEST_SAMPLES,
        input_shape=(INPUT_DIM,),
        num_classes=NUM_CLASSES,
    )
    return x, keras.utils.to_categorical(y, NUM_CLASSES), vx, keras.utils.to_categorical(vy, NUM_CLASSES)


def _model(metrics: list[Any] | None = None) -> Any:
    """Upstream's ``get_model()``: two Dense layers, categorical cross-entropy, ``Accuracy("acc")``."""
    keras.utils.set_random_seed(0)
    model = keras.Sequential(
        [keras.layers.Dense(NUM_HIDDEN, activation="relu"), keras.layers.Dense(NUM_CLASSES, activation="softmax")]
    )
    model.compile(
        loss="categorical_crossentropy",
        optimizer="sgd",
        metrics=metrics if metrics is not None else [keras.metrics.Accuracy("acc")],
    )
    return model


def _fit(model: Any, callbacks: list[Any], *, validation: bool = True, **kwargs: Any) -> Any:
    x, y, vx, vy = _data()
    options: dict[str, Any] = {"batch_size": BATCH_SIZE, "epochs": 1, "verbose": 0, **kwargs}
    return model.fit(x, y, validation_data=(vx, vy) if validation else None, callbacks=callbacks, **options)


def _files(folder: Path) -> set[str]:
    """What Keras wrote (relative names)."""
    return {p.relative_to(folder).as_posix() for p in folder.rglob("*") if p.is_file()}


def _names(url: str) -> dict[int, list[str]]:
    """What each checkpoint of the store holds."""
    store = ckptstore.open(url)
    return {epoch: sorted(store.get(epoch).files) for epoch in store.epochs()}


# -- test_model_checkpoint_options, cases 1-4: a save after the epoch -------------------------------------
@pytest.mark.parametrize(
    ("monitor", "mode", "save_best_only"),
    [("val_loss", "auto", False), ("val_loss", "min", False), ("val_acc", "max", False), ("val_acc", "max", True)],
    ids=["case1-auto", "case2-min", "case3-max", "case4-best-only"],
)
def test_cases_1_to_4_one_epoch_is_saved_in_a_subfolder(
    tmp_path: Path, url: str, monitor: str, mode: str, save_best_only: bool
) -> None:
    theirs = keras.callbacks.ModelCheckpoint(
        str(tmp_path / "subdir" / "checkpoint.keras"), monitor=monitor, mode=mode, save_best_only=save_best_only
    )
    ours = StoreCheckpoint(url, "subdir/checkpoint.keras", monitor=monitor, mode=mode, save_best_only=save_best_only)
    _fit(_model(), [theirs, ours])
    assert _files(tmp_path) == {"subdir/checkpoint.keras"}  # Keras made the folder
    assert _names(url) == {1: ["subdir/checkpoint.keras"]}
    store = ckptstore.open(url)
    assert store.best().epoch == 1 and store.mode == ("min" if monitor == "val_loss" else "max")


# -- case 5: the monitor is not in the logs -----------------------------------------------------------------
def test_case5_a_missing_monitor_with_save_best_only_warns_naming_it_and_saves(tmp_path: Path, url: str) -> None:
    theirs = keras.callbacks.ModelCheckpoint(
        str(tmp_path / "checkpoint.keras"), monitor="unknown", save_best_only=True, mode="min"
    )
    ours = StoreCheckpoint(url, "checkpoint.keras", monitor="unknown", save_best_only=True, mode="min")  # verbose=0
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        _fit(_model(), [theirs, ours])
    messages = [str(w.message) for w in caught if issubclass(w.category, UserWarning) and "unknown" in str(w.message)]
    assert any(m.startswith("Can save best model only with unknown available") for m in messages)
    assert any(m.startswith("StoreCheckpoint: can save best model only with unknown available") for m in messages)
    assert _files(tmp_path) == {"checkpoint.keras"}
    assert _names(url) == {1: ["checkpoint.keras"]}
    store = ckptstore.open(url)
    assert "unknown" not in store.get(1).metrics  # saved without it: it cannot be the best
    with pytest.raises(ckptstore.CheckpointNotFoundError):
        store.best()


# -- case 6: an unknown mode (an accepted difference) -------------------------------------------------------
def test_case6_an_unknown_mode_is_refused_where_keras_warns_and_falls_back(tmp_path: Path, url: str) -> None:
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        keras.callbacks.ModelCheckpoint(str(tmp_path / "c.keras"), monitor="val_acc", mode="unknown")
    assert "ModelCheckpoint mode 'unknown' is unknown" in str(caught[-1].message)
    with pytest.raises(ckptstore.InvalidArgumentError, match="mode must be 'min', 'max' or 'auto'"):
        StoreCheckpoint(url, monitor="val_acc", mode="unknown")
    assert not ckptstore.open(url).epochs()


# -- cases 8a/8b: save_freq=15 with 5 batches an epoch: batches 15, 30, 45 -----------------------------------
@pytest.mark.parametrize("weights_only", [False, True], ids=["case8a-model", "case8b-weights"])
def test_case8_an_integer_save_freq_saves_every_15_batches_with_a_val_monitor(
    tmp_path: Path, url: str, weights_only: bool
) -> None:
    suffix = ".weights.h5" if weights_only else ".keras"
    template = "checkpoint.epoch{epoch:02d}" + suffix
    theirs = keras.callbacks.ModelCheckpoint(
        str(tmp_path / template), monitor="val_acc", mode="max", save_freq=15, save_weights_only=weights_only
    )
    ours = StoreCheckpoint(url, template, monitor="val_acc", mode="max", save_freq=15, save_weights_only=weights_only)
    _fit(_model(), [theirs, ours], batch_size=6, epochs=10)  # 5 batches an epoch
    expected = {f"checkpoint.epoch{e:02d}{suffix}" for e in (3, 6, 9)}
    assert _files(tmp_path) == expected
    assert _names(url) == {15: [f"checkpoint.epoch03{suffix}"], 30: [f"checkpoint.epoch06{suffix}"],
                           45: [f"checkpoint.epoch09{suffix}"]}  # fmt: skip
    ck = ckptstore.open(url).get(30)
    assert ck.batch == 4 and ck.step == 30  # the last batch (0-based) of the sixth epoch
    assert "val_acc" not in ck.metrics  # batch logs hold training metrics only


# -- case 9: save_freq is checked ------------------------------------------------------------------------------
@pytest.mark.parametrize("bad", ["invalid_save_freq", 0, -2, True])
def test_case9_an_invalid_save_freq_is_a_value_error(tmp_path: Path, url: str, bad: Any) -> None:
    path = str(tmp_path / "c.weights.h5")
    if isinstance(bad, str):
        with pytest.raises(ValueError, match="Unrecognized save_freq"):
            keras.callbacks.ModelCheckpoint(path, save_weights_only=True, save_freq=bad)
    else:  # Keras takes 0, negatives and True as "every batch"; we refuse them (documented)
        keras.callbacks.ModelCheckpoint(path, save_weights_only=True, save_freq=bad)
    with pytest.raises(ValueError, match="save_freq must be 'epoch' or a positive int") as info:
        StoreCheckpoint(url, save_weights_only=True, save_freq=bad)
    assert isinstance(info.value, ckptstore.InvalidArgumentError)
    for good in ("epoch", 3):  # and these are accepted by both
        keras.callbacks.ModelCheckpoint(path, save_weights_only=True, save_freq=good)
        assert StoreCheckpoint(url, save_weights_only=True, save_freq=good).save_freq == good


# -- cases 10a/10b: {epoch} and {batch} in the name count from 1 ----------------------------------------------
@pytest.mark.parametrize("weights_only", [False, True], ids=["case10a-model", "case10b-weights"])
def test_case10_batch_and_epoch_in_the_file_name_count_from_one(tmp_path: Path, url: str, weights_only: bool) -> None:
    suffix = ".weights.h5" if weights_only else ".keras"
    template = "checkpoint.epoch{epoch:02d}batch{batch:02d}" + suffix
    theirs = keras.callbacks.ModelCheckpoint(
        str(tmp_path / template), monitor="val_acc", save_freq=1, save_weights_only=weights_only
    )
    ours = StoreCheckpoint(url, template, monitor="val_acc", save_freq=1, save_weights_only=weights_only)
    _fit(_model(), [theirs, ours], batch_size=15, epochs=5)  # 2 batches an epoch
    expected = [template.format(epoch=e, batch=b) for e in range(1, 6) for b in (1, 2)]
    assert expected[0] == f"checkpoint.epoch01batch01{suffix}"
    assert _files(tmp_path) == set(expected)
    assert _names(url) == {n: [name] for n, name in enumerate(expected, start=1)}


# -- cases 11-15: initial_value_threshold, and the direction auto mode finds ----------------------------------
@pytest.mark.parametrize(
    ("monitor", "mode", "threshold", "saved"),
    [
        ("val_acc", "max", -0.01, True),  # case 11
        ("val_loss", "auto", None, True),  # case 12
        ("val_loss", "min", 0, False),  # case 13: nothing beats a loss of 0
        ("val_loss", "auto", 0, False),  # case 14: auto minimises a loss
    ],
    ids=["case11", "case12", "case13", "case14"],
)
def test_cases_11_to_14_initial_value_threshold(
    tmp_path: Path, url: str, monitor: str, mode: str, threshold: float | None, saved: bool
) -> None:
    options: dict[str, Any] = {
        "monitor": monitor,
        "mode": mode,
        "save_best_only": True,
        "initial_value_threshold": threshold,
    }
    theirs = keras.callbacks.ModelCheckpoint(str(tmp_path / "checkpoint.keras"), **options)
    ours = StoreCheckpoint(url, "checkpoint.keras", **options)
    _fit(_model(), [theirs, ours])
    assert _files(tmp_path) == ({"checkpoint.keras"} if saved else set())
    assert ckptstore.open(url).epochs() == ([1] if saved else [])


def test_case15_auto_maximises_auc_so_a_threshold_of_1_is_never_beaten(tmp_path: Path, url: str) -> None:
    options: dict[str, Any] = {"monitor": "val_auc", "mode": "auto", "save_best_only": True}
    theirs = keras.callbacks.ModelCheckpoint(str(tmp_path / "checkpoint.keras"), initial_value_threshold=1, **options)
    ours = StoreCheckpoint(url, "checkpoint.keras", initial_value_threshold=1, **options)
    history = _fit(_model(metrics=[keras.metrics.AUC(name="auc")]), [theirs, ours])
    assert history.history["val_auc"][0] < 1  # minimising would have saved it
    assert _files(tmp_path) == set()
    assert ckptstore.open(url).epochs() == []
    # Without the threshold both save, and the store records the direction the metric declares.
    again = f"{url}-again"
    theirs = keras.callbacks.ModelCheckpoint(str(tmp_path / "again.keras"), **options)
    _fit(_model(metrics=[keras.metrics.AUC(name="auc")]), [theirs, StoreCheckpoint(again, "again.keras", **options)])
    assert _files(tmp_path) == {"again.keras"}
    store = ckptstore.open(again)
    assert store.epochs() == [1] and store.mode == "max"


# -- test_model_checkpoint_loading ----------------------------------------------------------------------------
@pytest.mark.parametrize("weights_only", [False, True], ids=["model", "weights"])
def test_loading_the_best_checkpoint_gives_the_trained_weights(tmp_path: Path, url: str, weights_only: bool) -> None:
    name = "checkpoint.weights.h5" if weights_only else "checkpoint.model.keras"
    options: dict[str, Any] = {"monitor": "val_loss", "mode": "auto", "save_best_only": True}
    theirs = keras.callbacks.ModelCheckpoint(str(tmp_path / name), save_weights_only=weights_only, **options)
    ours = StoreCheckpoint(url, name, save_weights_only=weights_only, **options)
    model = _model()
    _fit(model, [theirs, ours])
    reference = model.get_weights()
    best = ckptstore.open(url).best()
    with best.local_path() as folder:
        if weights_only:
            ours_loaded, theirs_loaded = _model(), _model()
            _fit(ours_loaded, [], epochs=0)  # builds it, as upstream's Input(batch_size=5) does
            _fit(theirs_loaded, [], epochs=0)
            ours_loaded.load_weights(str(folder / name))
            theirs_loaded.load_weights(str(tmp_path / name))
        else:
            ours_loaded = keras.saving.load_model(str(folder / name))
            theirs_loaded = keras.saving.load_model(str(tmp_path / name))
        for loaded in (theirs_loaded, ours_loaded):
            weights = loaded.get_weights()
            assert len(weights) == len(reference)
            assert all(np.allclose(a, b) for a, b in zip(weights, reference, strict=True))


# -- issue 13: saves that were lost -----------------------------------------------------------------------------
def test_without_validation_data_every_epoch_is_saved(tmp_path: Path, url: str) -> None:
    theirs = keras.callbacks.ModelCheckpoint(str(tmp_path / "m.{epoch:02d}.keras"))  # monitor val_loss
    ours = StoreCheckpoint(url)
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        _fit(_model(), [theirs, ours], validation=False, epochs=3)
    assert not [w for w in caught if "val_loss" in str(w.message)]  # neither warns without save_best_only
    assert _files(tmp_path) == {"m.01.keras", "m.02.keras", "m.03.keras"}
    store = ckptstore.open(url)
    assert store.epochs() == [1, 2, 3]
    assert store.latest().epoch == 3 and sorted(store.get(3).files) == ["model.keras"]
    assert "loss" in store.get(3).metrics and "val_loss" not in store.get(3).metrics
    with pytest.raises(ckptstore.CheckpointNotFoundError):
        store.best()  # nothing carries val_loss: no best, and nothing lost


def test_batch_level_save_best_only_with_a_val_monitor_warns_and_saves_every_n(tmp_path: Path, url: str) -> None:
    options: dict[str, Any] = {"monitor": "val_acc", "mode": "max", "save_freq": 15, "save_best_only": True}
    theirs = keras.callbacks.ModelCheckpoint(str(tmp_path / "c.{epoch:02d}.keras"), **options)
    ours = StoreCheckpoint(url, "c.{epoch:02d}.keras", **options)
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        _fit(_model(), [theirs, ours], batch_size=6, epochs=9)
    messages = [str(w.message) for w in caught if issubclass(w.category, UserWarning)]
    assert sum(m.startswith("Can save best model only with val_acc available") for m in messages) == 3
    assert sum(m.startswith("StoreCheckpoint: can save best model only with val_acc") for m in messages) == 3
    assert _files(tmp_path) == {"c.03.keras", "c.06.keras", "c.09.keras"}
    assert _names(url) == {15: ["c.03.keras"], 30: ["c.06.keras"], 45: ["c.09.keras"]}


def test_the_template_naming_a_key_the_batch_logs_lack_is_a_key_error(tmp_path: Path, url: str) -> None:
    template = "c.{epoch:02d}-{val_loss:.2f}.keras"
    with pytest.raises(KeyError, match="Failed to format this callback filepath"):
        _fit(_model(), [keras.callbacks.ModelCheckpoint(str(tmp_path / template), save_freq=2)])
    with pytest.raises(KeyError, match="val_loss") as info:
        _fit(_model(), [StoreCheckpoint(url, template, save_freq=2)])
    assert isinstance(info.value, ckptstore.MissingMetricError)
    assert ckptstore.open(url).epochs() == []


# -- issue 13: mode="auto" asks the compiled metric for its direction ------------------------------------------
def _regression() -> tuple[Any, Any, Any, Any]:
    rng = np.random.default_rng(3)
    x = rng.normal(size=(60, 4)).astype("float32")
    y = (x @ np.array([1.0, -2.0, 0.5, 3.0], dtype="float32") + 10.0)[:, None]
    return x[:40], y[:40], x[40:], y[40:]


def _regressor() -> Any:
    keras.utils.set_random_seed(1)
    model = keras.Sequential([keras.Input((4,)), keras.layers.Dense(8, activation="relu"), keras.layers.Dense(1)])
    model.compile(optimizer=keras.optimizers.Adam(0.05), loss="mse", metrics=[keras.metrics.R2Score(), "mape"])
    return model


def _improvements(values: list[float], mode: str) -> list[int]:
    """The epochs (from 1) a save_best_only callback saves, given the per-epoch values."""
    saved, best = [], None
    for epoch, value in enumerate(values, start=1):
        if best is None or (value > best if mode == "max" else value < best):
            saved.append(epoch)
            best = value
    return saved


@pytest.mark.parametrize(("monitor", "direction"), [("val_r2_score", "max"), ("val_mape", "min")])
def test_auto_mode_follows_the_metric_declared_direction(
    tmp_path: Path, url: str, monitor: str, direction: str
) -> None:
    x, y, vx, vy = _regression()
    options: dict[str, Any] = {"monitor": monitor, "mode": "auto", "save_best_only": True}
    theirs = keras.callbacks.ModelCheckpoint(str(tmp_path / "m.{epoch:02d}.keras"), **options)
    ours = StoreCheckpoint(url, "m.{epoch:02d}.keras", **options)
    history = _regressor().fit(
        x, y, validation_data=(vx, vy), epochs=6, batch_size=20, verbose=0, callbacks=[theirs, ours]
    )
    values = history.history[monitor]
    saved = _improvements(values, direction)
    assert saved != _improvements(values, "min" if direction == "max" else "max")  # the data tells them apart
    assert _files(tmp_path) == {f"m.{e:02d}.keras" for e in saved}
    store = ckptstore.open(url)
    assert store.epochs() == saved
    assert store.mode == direction  # recorded in the store once the model told it
    assert store.best().epoch == saved[-1]


def test_auto_mode_without_a_declared_direction_is_an_error_as_in_keras(tmp_path: Path, url: str) -> None:
    def spread(y_true: Any, y_pred: Any) -> Any:
        return keras.ops.std(y_pred)

    with pytest.raises(ValueError, match="isn't able to automatically determine"):
        _fit(
            _model(metrics=[spread]), [keras.callbacks.ModelCheckpoint(str(tmp_path / "c.keras"), monitor="val_spread")]
        )
    with pytest.raises(ValueError, match="mode='max' or mode='min'") as info:
        _fit(_model(metrics=[spread]), [StoreCheckpoint(url, monitor="val_spread")])
    assert isinstance(info.value, ckptstore.InvalidArgumentError)
    assert ckptstore.open(url).epochs() == []
    # With the direction given, both save.
    theirs = keras.callbacks.ModelCheckpoint(str(tmp_path / "c.keras"), monitor="val_spread", mode="min")
    _fit(_model(metrics=[spread]), [theirs, StoreCheckpoint(url, monitor="val_spread", mode="min")])
    assert _files(tmp_path) == {"c.keras"} and ckptstore.open(url).epochs() == [1]


def test_a_resumed_run_keeps_the_direction_and_the_best(url: str) -> None:
    x, y, vx, vy = _regression()
    options: dict[str, Any] = {"monitor": "val_r2_score", "save_best_only": True}
    callbacks = [StoreCheckpoint(url, **options)]
    _regressor().fit(x, y, validation_data=(vx, vy), epochs=3, batch_size=20, verbose=0, callbacks=callbacks)
    store = ckptstore.open(url)
    assert store.mode == "max"
    last, running = store.latest().epoch, store.best().metrics["val_r2_score"]
    resumed = StoreCheckpoint(url, **options)
    history = _regressor().fit(x, y, validation_data=(vx, vy), epochs=6, batch_size=20, verbose=0, callbacks=[resumed])
    assert resumed.restored is not None and resumed.restored.epoch == last
    assert history.epoch == list(range(last, 6))  # it continues after the last saved epoch
    expected = []
    for epoch, value in zip(range(last + 1, 7), history.history["val_r2_score"], strict=True):
        if value > running:  # the best read back from the store, not Keras's fresh best = -inf
            expected.append(epoch)
            running = value
    after = ckptstore.open(url)
    assert [e for e in after.epochs() if e > last] == expected
    assert after.best().metrics["val_r2_score"] == running
