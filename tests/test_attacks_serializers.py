"""Attacks through a serializer's own index (issue 11, item 2): a serializer reads only manifest-listed files.

A checkpoint written by someone else is untrusted input, and so is every index a serializer keeps inside
it (numpy's ``arrays.json``, the pytree's ``tree.json``). Each test below builds such a checkpoint through
the public API (so its manifest is valid and it verifies), or changes one on disk after the commit, and
shows that loading it raises a typed error, never returns data from outside the checkpoint, and changes
nothing.
"""

from __future__ import annotations

import json
import os
import tempfile
import uuid
from pathlib import Path
from typing import Any

import numpy as np
import pytest

import ckptstore
from ckptstore.serializers import CheckpointFiles, register_serializer

from .conftest import run_child, snapshot

SECRET = np.array([4, 8, 15, 16, 23, 42], dtype=np.int64)


def _secret_npy(where: Path) -> Path:
    where.parent.mkdir(parents=True, exist_ok=True)
    np.save(where, SECRET)
    return where


def _hostile_numpy(store: ckptstore.CheckpointStore, epoch: int, name: str) -> ckptstore.Checkpoint:
    """A committed numpy checkpoint whose arrays.json names ``name``; it verifies (the manifest is right)."""
    with store.save(epoch) as tx:
        with tx.open("arrays/00000.npy") as f:
            np.save(f, np.zeros(3))
        with tx.open("arrays.json") as f:
            f.write(json.dumps({"w": name}).encode())
    assert tx.checkpoint is not None
    return tx.checkpoint


def _never_the_secret(load: Any) -> None:
    """Call ``load``; whatever it raises or returns, it is never the outside array."""
    try:
        value = load()
    except ckptstore.CkptStoreError:
        return
    found = value.get("w") if isinstance(value, dict) else value
    assert not (isinstance(found, np.ndarray) and found.shape == SECRET.shape and np.array_equal(found, SECRET))


# -- numpy: names that escape the checkpoint ----------------------------------------------------------------


@pytest.mark.parametrize("verify", [True, False])
@pytest.mark.parametrize("mmap_mode", [None, "r"])
@pytest.mark.parametrize(
    "name",
    ["../../../outside/secret.npy", "ABSOLUTE", "arrays/../../../../outside/secret.npy", "MANIFEST.json", "a\\b.npy"],
)
def test_numpy_index_naming_a_path_outside_the_checkpoint_never_loads_it(
    tmp_path: Path, name: str, verify: bool, mmap_mode: str | None
) -> None:
    secret = _secret_npy(tmp_path / "outside" / "secret.npy")
    if name == "ABSOLUTE":
        name = str(secret)
    store = ckptstore.open(tmp_path / "store")
    ck = _hostile_numpy(store, 1, name)
    ck.verify()  # the manifest is consistent: only the index is hostile
    before = snapshot(tmp_path)
    _never_the_secret(lambda: ck.load("numpy", verify=verify, mmap_mode=mmap_mode))
    with pytest.raises(ckptstore.UnsafePathError, match="arrays.json"):
        ck.load("numpy", verify=verify, mmap_mode=mmap_mode)
    assert snapshot(tmp_path) == before


@pytest.mark.s3
@pytest.mark.parametrize("verify", [True, False])
def test_numpy_index_on_s3_never_reads_beside_the_verified_download(
    s3_server: Any, tmp_path: Path, monkeypatch: pytest.MonkeyPatch, verify: bool
) -> None:
    # On an object store load() reads a verified download in a temporary folder; "../secret.npy" would
    # point into that folder's parent.
    scratch = tmp_path / "scratch"
    scratch.mkdir()
    monkeypatch.setattr(tempfile, "tempdir", str(scratch))
    _secret_npy(scratch / "secret.npy")
    absolute = _secret_npy(tmp_path / "outside" / "secret.npy")
    store = ckptstore.open(s3_server.url(f"ser-{uuid.uuid4().hex}"), storage_options=s3_server.storage_options)
    names = ["../secret.npy", "../../scratch/secret.npy", str(absolute)]
    for epoch, name in enumerate(names, 1):
        _hostile_numpy(store, epoch, name)

    def bucket() -> dict[str, bytes]:
        return {k: store.backend.read_bytes(k) for k in store.backend.stat_files("") if not k.startswith("log")}

    before = bucket()
    for epoch in range(1, len(names) + 1):
        ck = store.get(epoch)
        _never_the_secret(lambda ck=ck: ck.load("numpy", verify=verify))
        with pytest.raises(ckptstore.UnsafePathError, match="arrays.json"):
            ck.load("numpy", verify=verify)
    assert bucket() == before
    assert sorted(p.name for p in scratch.iterdir()) == ["secret.npy"]  # every download was removed


# -- numpy: well-formed names the manifest does not list ------------------------------------------------------


def test_numpy_index_naming_an_unlisted_file_is_refused_even_without_verification(tmp_path: Path) -> None:
    store = ckptstore.open(tmp_path / "store")
    ck = _hostile_numpy(store, 1, "extra.npy")
    _secret_npy(ck.path / "extra.npy")  # dropped into the committed checkpoint afterwards
    before = snapshot(tmp_path)
    with pytest.raises(ckptstore.UnexpectedFileError, match="extra.npy"):
        ck.load("numpy")  # verification sees the unlisted file
    _never_the_secret(lambda: ck.load("numpy", verify=False))
    with pytest.raises(ckptstore.IncompleteCheckpointError, match=r"extra\.npy.*arrays\.json|arrays\.json.*extra"):
        ck.load("numpy", verify=False)  # the reader refuses it although nothing was verified
    assert snapshot(tmp_path) == before


@pytest.mark.parametrize("mmap_mode", [None, "r"])
def test_numpy_load_without_verification_never_follows_a_symlinked_array(tmp_path: Path, mmap_mode: str | None) -> None:
    secret = _secret_npy(tmp_path / "outside" / "secret.npy")
    store = ckptstore.open(tmp_path / "store")
    ck = store.save_state(1, {"w": np.zeros(6, dtype=np.int64)}, serializer="numpy")
    assert ck is not None
    listed = ck.path / json.loads(ck.read_bytes("arrays.json"))["w"]
    listed.unlink()
    listed.symlink_to(secret)
    before = snapshot(tmp_path)
    _never_the_secret(lambda: ck.load(verify=False, mmap_mode=mmap_mode))
    with pytest.raises(ckptstore.UnsafeEntryError, match="symlink"):
        ck.load(verify=False, mmap_mode=mmap_mode)
    with pytest.raises((ckptstore.VerificationError, ckptstore.UnsafeEntryError)):
        ck.load(mmap_mode=mmap_mode)
    assert snapshot(tmp_path) == before


def test_a_symlinked_folder_inside_a_checkpoint_is_never_followed(tmp_path: Path) -> None:
    _secret_npy(tmp_path / "outside" / "00000.npy")
    store = ckptstore.open(tmp_path / "store")
    ck = store.save_state(1, {"w": np.zeros(6, dtype=np.int64)}, serializer="numpy")
    assert ck is not None
    folder = ck.path / "arrays"
    (folder / "00000.npy").unlink()
    folder.rmdir()
    folder.symlink_to(tmp_path / "outside", target_is_directory=True)
    before = snapshot(tmp_path)
    for mmap_mode in (None, "r"):
        _never_the_secret(lambda m=mmap_mode: ck.load(verify=False, mmap_mode=m))
        with pytest.raises(ckptstore.UnsafeEntryError, match="arrays"):
            ck.load(verify=False, mmap_mode=mmap_mode)
    assert snapshot(tmp_path) == before


def test_a_fifo_in_place_of_a_listed_file_never_hangs_a_load(tmp_path: Path) -> None:
    # A real process: before the reader, opening the FIFO blocked forever (the child's timeout fails the test).
    store = ckptstore.open(tmp_path / "store")
    ck = store.save_state(1, {"a": 1}, serializer="json")
    assert ck is not None
    (ck.path / "state.json").unlink()
    os.mkfifo(ck.path / "state.json")
    result = run_child(
        f"""
        import ckptstore
        try:
            ckptstore.open({str(tmp_path / "store")!r}).get(1).load(verify=False)
        except ckptstore.UnsafeEntryError as exc:
            print("refused", exc)
        """
    )
    assert result.stdout.startswith("refused") and "state.json" in result.stdout, result.stderr


# -- the other built-in serializers -------------------------------------------------------------------------


def test_raw_load_without_verification_never_follows_a_symlinked_file(tmp_path: Path) -> None:
    outside = tmp_path / "outside" / "secret.txt"
    outside.parent.mkdir()
    outside.write_bytes(b"SECRET")
    store = ckptstore.open(tmp_path / "store")
    ck = store.save_state(1, b"public", serializer="raw")
    assert ck is not None
    (ck.path / "data.bin").unlink()
    (ck.path / "data.bin").symlink_to(outside)
    before = snapshot(tmp_path)
    with pytest.raises(ckptstore.UnsafeEntryError, match="data.bin"):
        ck.load(verify=False)
    assert snapshot(tmp_path) == before


@pytest.mark.parametrize("mmap", [True, False], ids=["mapped", "read"])
@pytest.mark.parametrize("serializer", ["torch", "safetensors"])
def test_torch_and_safetensors_load_without_verification_never_follow_a_symlinked_file(
    tmp_path: Path, serializer: str, mmap: bool
) -> None:
    torch = pytest.importorskip("torch")
    secret = {"w": torch.tensor([4.0, 8.0, 15.0])}
    store = ckptstore.open(tmp_path / "store")
    ck = store.save_state(1, {"w": torch.zeros(3)}, serializer=serializer)
    other = store.save_state(2, secret, serializer=serializer)
    assert ck is not None and other is not None
    (name,) = ck.files
    outside = tmp_path / "outside" / name
    outside.parent.mkdir()
    outside.write_bytes(other.read_bytes(name))
    (ck.path / name).unlink()
    (ck.path / name).symlink_to(outside)
    before = snapshot(tmp_path)
    with pytest.raises(ckptstore.UnsafeEntryError, match=name):
        ck.load(verify=False, mmap=mmap)  # the mapped path (CheckpointFiles.map) and the streamed one
    assert snapshot(tmp_path) == before


# -- pytree ------------------------------------------------------------------------------------------------


def _hostile_pytree(store: ckptstore.CheckpointStore, epoch: int, record: dict[str, Any]) -> ckptstore.Checkpoint:
    from safetensors.numpy import save

    with store.save(epoch) as tx:
        with tx.open("arrays.safetensors") as f:
            f.write(save({"a0": np.zeros(2)}))
        with tx.open("tree.json") as f:
            f.write(json.dumps({"format": "ckptstore.pytree", "version": 1, **record}).encode())
    assert tx.checkpoint is not None
    return tx.checkpoint


def test_pytree_tree_naming_an_array_the_checkpoint_lacks_is_a_typed_error(tmp_path: Path) -> None:
    pytest.importorskip("safetensors")
    store = ckptstore.open(tmp_path / "store")
    ck = _hostile_pytree(store, 1, {"arrays": "safetensors", "tree": {"__dict__": {"x": {"__array__": "nope"}}}})
    ck2 = _hostile_pytree(store, 2, {"arrays": "safetensors", "tree": {"__array__": ["not", "a", "name"]}})
    before = snapshot(tmp_path)
    with pytest.raises(ckptstore.IncompleteCheckpointError, match=r"tree\.json.*'nope'"):
        ck.load("pytree", as_jax=False)  # before: a KeyError inside
    with pytest.raises(ckptstore.SerializerError, match="tree.json"):
        ck2.load("pytree", as_jax=False)
    assert snapshot(tmp_path) == before


def test_pytree_tree_naming_an_unlisted_arrays_file_is_refused(tmp_path: Path) -> None:
    pytest.importorskip("safetensors")
    store = ckptstore.open(tmp_path / "store")
    ck = _hostile_pytree(store, 1, {"arrays": "npz", "tree": {"__array__": "w"}})
    with open(ck.path / "arrays.npz", "wb") as f:  # dropped in after the commit; not in the manifest
        np.savez(f, w=SECRET)
    ck2 = _hostile_pytree(store, 2, {"arrays": "../../../outside/x", "tree": {"__array__": "w"}})
    before = snapshot(tmp_path)
    _never_the_secret(lambda: ck.load("pytree", verify=False, as_jax=False))
    with pytest.raises(ckptstore.IncompleteCheckpointError, match=r"tree\.json.*arrays\.npz"):
        ck.load("pytree", verify=False, as_jax=False)
    with pytest.raises(ckptstore.SerializerError, match="tree.json"):
        ck2.load("pytree", as_jax=False)
    assert snapshot(tmp_path) == before


# -- Keras ---------------------------------------------------------------------------------------------------


def _keras_model(seed: int) -> Any:
    os.environ.setdefault("KERAS_BACKEND", "torch")
    keras = pytest.importorskip("keras")
    keras.utils.set_random_seed(seed)
    return keras.Sequential([keras.Input((3,)), keras.layers.Dense(2)])


@pytest.mark.frameworks
def test_keras_weights_without_verification_never_follow_a_symlinked_file(tmp_path: Path) -> None:
    ours, theirs = _keras_model(1), _keras_model(2)
    outside = tmp_path / "outside" / "model.weights.h5"
    outside.parent.mkdir()
    theirs.save_weights(str(outside))
    store = ckptstore.open(tmp_path / "store")
    ck = store.save_state(1, ours, serializer="keras_weights")
    assert ck is not None and list(ck.files) == ["model.weights.h5"]
    (ck.path / "model.weights.h5").unlink()
    (ck.path / "model.weights.h5").symlink_to(outside)
    target = _keras_model(3)
    before = snapshot(tmp_path)
    with pytest.raises(ckptstore.UnsafeEntryError, match="model.weights.h5"):
        ck.load(model=target, verify=False)
    assert not np.allclose(target.get_weights()[0], theirs.get_weights()[0])
    assert snapshot(tmp_path) == before


@pytest.mark.frameworks
def test_keras_serializer_refuses_to_guess_between_several_listed_model_files(tmp_path: Path) -> None:
    good, other = _keras_model(1), _keras_model(2)
    store = ckptstore.open(tmp_path / "store")
    with store.save(1) as tx:  # a checkpoint someone else wrote: two whole models, neither model.keras
        good.save(str(tx.path / "a.keras"))
        other.save(str(tx.path / "b.keras"))
    ck = tx.checkpoint
    assert ck is not None
    with pytest.raises(ckptstore.SerializerError, match=r"a\.keras.*b\.keras"):
        ck.load("keras")  # before: silently the lexicographically last one
    with store.save(2) as tx:
        good.save(str(tx.path / "model.keras"))
        other.save(str(tx.path / "zz.keras"))
    loaded = store.get(2).load("keras")  # the serializer's own file name wins
    assert np.allclose(loaded.get_weights()[0], good.get_weights()[0])


# -- the reader itself ---------------------------------------------------------------------------------------


def test_checkpoint_read_bytes_returns_only_bytes_that_match_the_manifest(tmp_path: Path) -> None:
    store = ckptstore.open(tmp_path / "store")
    ck = store.save_state(1, b"public", serializer="raw")
    assert ck is not None
    (ck.path / "data.bin").write_bytes(b"PUBLIC")  # same size, other bytes
    with pytest.raises(ckptstore.ChecksumMismatchError, match="data.bin"):
        ck.read_bytes("data.bin")
    assert ck.read_bytes("data.bin", verify=False) == b"PUBLIC"


def test_a_serializer_gets_a_reader_that_refuses_unlisted_names_and_dies_with_the_load(tmp_path: Path) -> None:
    kept: list[CheckpointFiles] = []

    class Probe:
        name = "probe-reader"

        def version(self) -> str:
            return "1"

        def save(self, state: Any, tx: ckptstore.SaveTransaction) -> None:
            with tx.open("a/b.bin") as f:
                f.write(state)

        def load(self, files: CheckpointFiles, **kwargs: Any) -> Any:
            kept.append(files)
            assert files.names == ("a/b.bin",) and "a/b.bin" in files and files.epoch == 1
            for bad in ("../a/b.bin", "/etc/passwd", "a//b.bin", "MANIFEST.json"):
                with pytest.raises(ckptstore.UnsafePathError):
                    files.read_bytes(bad)
            with pytest.raises(ckptstore.IncompleteCheckpointError):
                files.open("a/c.bin")
            with files.open("a/b.bin") as f:
                assert f.read() == files.local_file("a/b.bin").read_bytes()
            return files.read_bytes("a/b.bin")

    register_serializer(Probe())
    store = ckptstore.open(tmp_path / "store")
    ck = store.save_state(1, b"xyz", serializer="probe-reader")
    assert ck is not None and ck.load() == b"xyz" and ck.load(verify=False) == b"xyz"
    with pytest.raises(ckptstore.InvalidArgumentError, match="after"):
        kept[0].read_bytes("a/b.bin")  # a reader lives as long as its load() call


def test_a_serializer_written_against_checkpoint_path_still_loads_with_a_deprecation_warning(tmp_path: Path) -> None:
    class Old:
        name = "old-style"

        def version(self) -> str:
            return "1"

        def save(self, state: Any, tx: ckptstore.SaveTransaction) -> None:
            (tx.path / "s.txt").write_text(state)

        def load(self, checkpoint: Any, **kwargs: Any) -> Any:
            return (checkpoint.path / "s.txt").read_text() + checkpoint.read_bytes("s.txt").decode()

    register_serializer(Old())  # type: ignore[arg-type]  # typed against the old protocol, as third parties are
    store = ckptstore.open(tmp_path / "store")
    ck = store.save_state(1, "abc", serializer="old-style")
    assert ck is not None
    with pytest.warns(DeprecationWarning, match="local_file"):
        assert ck.load() == "abcabc"
