"""Serializers: round trips, safe loading by default (DESIGN 3.8), lazy optional imports."""

from __future__ import annotations

import numpy as np
import pytest

import ckptstore
from ckptstore.serializers import get_serializer, register_serializer
from ckptstore.serializers._registry import require


def test_numpy_single_array_and_mapping_round_trip(store: ckptstore.CheckpointStore) -> None:
    arr = np.arange(12, dtype=np.int16).reshape(3, 4)
    ck = store.save_state(1, arr, serializer="numpy", metrics={"val_loss": 1.0})
    assert ck is not None
    assert list(ck.files) == ["array.npy"]
    assert np.array_equal(ck.load(), arr)
    state = {
        "w/1": np.asfortranarray(np.random.rand(5, 7)),
        "b": np.float32(3.5),
        "empty": np.zeros((0, 3)),
    }
    ck2 = store.save_state(2, state, serializer="numpy", metrics={"val_loss": 0.5})
    assert ck2 is not None
    loaded = ck2.load()
    assert set(loaded) == set(state)
    for key, value in state.items():
        assert np.array_equal(loaded[key], value)
        assert loaded[key].dtype == np.asarray(value).dtype
    assert isinstance(ck2.load(mmap_mode="r")["w/1"], np.memmap)


def test_numpy_refuses_object_arrays(store: ckptstore.CheckpointStore) -> None:
    with pytest.raises(ckptstore.InvalidArgumentError, match="pickle"):
        store.save_state(1, np.array([{"a": 1}], dtype=object), serializer="numpy", metrics={"val_loss": 1.0})
    assert 1 not in store


def test_raw_and_json_round_trip(store: ckptstore.CheckpointStore) -> None:
    ck = store.save_state(1, b"\x00\x01", serializer="raw", metrics={"val_loss": 1.0})
    assert ck is not None
    assert ck.load() == b"\x00\x01"
    ck = store.save_state(2, {"lr": 0.1, "steps": [1, 2]}, serializer="json", metrics={"val_loss": 1.0})
    assert ck is not None
    assert ck.load() == {"lr": 0.1, "steps": [1, 2]}
    with pytest.raises(ckptstore.InvalidArgumentError):
        store.save_state(3, {"x": float("nan")}, serializer="json", metrics={"val_loss": 1.0})


def test_pickle_loads_only_when_named(store: ckptstore.CheckpointStore) -> None:
    ck = store.save_state(1, {"obj": {1, 2}}, serializer="pickle", metrics={"val_loss": 1.0})
    assert ck is not None
    with pytest.raises(ckptstore.InvalidArgumentError, match="pickle"):
        ck.load()
    assert ck.load(serializer="pickle") == {"obj": {1, 2}}


def test_safetensors_numpy_round_trip(store: ckptstore.CheckpointStore) -> None:
    state = {"w": np.random.rand(4, 4).astype(np.float32), "b": np.arange(3, dtype=np.int64)}
    ck = store.save_state(1, state, serializer="safetensors", metrics={"val_loss": 1.0})
    assert ck is not None
    loaded = ck.load()
    assert all(np.array_equal(loaded[k], v) for k, v in state.items())


def test_unknown_serializer_and_missing_framework_are_typed_errors(
    store: ckptstore.CheckpointStore,
) -> None:
    with pytest.raises(ckptstore.InvalidArgumentError, match="no serializer named"):
        store.save_state(1, b"x", serializer="nope", metrics={"val_loss": 1.0})
    with pytest.raises(ckptstore.BackendUnavailableError, match=r"pip install 'ckptstore\[torch\]'") as info:
        require("surely_not_installed_pkg", "torch")
    assert isinstance(info.value, ImportError)


def test_custom_serializer_can_be_registered(store: ckptstore.CheckpointStore) -> None:
    class Upper:
        name = "upper"

        def version(self) -> str:
            return "1"

        def save(self, state: str, tx: ckptstore.SaveTransaction) -> None:
            (tx.path / "s.txt").write_text(state.upper())

        def load(self, checkpoint: ckptstore.Checkpoint, **kw: object) -> str:
            return checkpoint.read_bytes("s.txt").decode()

    register_serializer(Upper())
    ck = store.save_state(1, "abc", serializer="upper", metrics={"val_loss": 1.0})
    assert ck is not None
    assert ck.manifest.serializer == {"name": "upper", "version": "1"}
    assert ck.load() == "ABC"
    assert get_serializer("upper").name == "upper"


def test_importing_ckptstore_imports_no_framework() -> None:
    from .conftest import run_child

    result = run_child(
        "import sys, ckptstore\n"
        "heavy = ('torch', 'keras', 'jax', 'numpy', 'safetensors', 's3fs', 'gcsfs')\n"
        "print(sorted(m for m in heavy if m in sys.modules))"
    )
    assert result.stdout.strip() == "[]", result.stderr


torch = pytest.importorskip("torch")


def test_torch_round_trip(store: ckptstore.CheckpointStore) -> None:
    model = torch.nn.Linear(4, 2)
    ck = store.save_state(1, model.state_dict(), serializer="torch", metrics={"val_loss": 1.0})
    assert ck is not None
    assert ck.manifest.serializer is not None
    assert ck.manifest.serializer["version"] == torch.__version__
    loaded = ck.load()
    assert all(torch.equal(loaded[k], v) for k, v in model.state_dict().items())


def test_torch_refuses_arbitrary_objects_unless_weights_only_false(
    store: ckptstore.CheckpointStore,
) -> None:
    from fractions import Fraction

    ck = store.save_state(1, {"custom": Fraction(1, 3)}, serializer="torch", metrics={"val_loss": 1.0})
    assert ck is not None
    with pytest.raises(ckptstore.SerializerError):
        ck.load()
    assert ck.load(weights_only=False)["custom"] == Fraction(1, 3)


def test_safetensors_torch_round_trip(store: ckptstore.CheckpointStore) -> None:
    state = {"w": torch.randn(3, 3), "b": torch.arange(4)}
    ck = store.save_state(1, state, serializer="safetensors", metrics={"val_loss": 1.0})
    assert ck is not None
    loaded = ck.load()
    assert isinstance(loaded["w"], torch.Tensor)
    assert all(torch.equal(loaded[k], v) for k, v in state.items())
    assert isinstance(ck.load(framework="numpy")["w"], np.ndarray)
