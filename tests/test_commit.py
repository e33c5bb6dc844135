"""The commit protocol (DESIGN 3.1, 3.2) and the manifest (3.4)."""

from __future__ import annotations

import json
import os
from pathlib import Path

import numpy as np
import pytest
import xxhash

import ckptstore
from ckptstore.manifest import Manifest

from .conftest import save_bytes, snapshot


def test_committed_epoch_has_files_and_manifest_with_digests(
    store: ckptstore.CheckpointStore,
) -> None:
    payload = os.urandom(3 * 1024 * 1024 + 17)
    with store.save(3, metrics={"val_loss": 0.21}, metadata={"lr": 1e-3}, step=300) as tx:
        (tx.path / "model.bin").write_bytes(payload)
        (tx.path / "sub").mkdir()
        (tx.path / "sub" / "opt.bin").write_bytes(b"opt")
        with tx.open("extra/streamed.bin") as f:
            for i in range(0, len(payload), 1_000_003):
                f.write(payload[i : i + 1_000_003])
    ck = tx.checkpoint
    assert ck is not None
    assert ck.path == store.root / "epochs" / "00000003"
    assert sorted(ck.files) == ["extra/streamed.bin", "model.bin", "sub/opt.bin"]
    expected = xxhash.xxh3_128_hexdigest(payload)
    assert ck.files["model.bin"].xxh3_128 == expected
    assert ck.files["extra/streamed.bin"].xxh3_128 == expected
    assert ck.files["model.bin"].size == len(payload)
    raw = json.loads((ck.path / "MANIFEST.json").read_bytes())
    assert raw["format"] == "ckptstore.manifest"
    assert raw["version"] == 1
    assert raw["epoch"] == 3
    assert raw["step"] == 300
    assert raw["metrics"] == {"val_loss": 0.21}
    assert raw["metadata"] == {"lr": 1e-3}
    assert raw["run_id"] == store.run_id == store.store_id
    assert raw["writer"]["pid"] == os.getpid()
    assert isinstance(raw["committed_at_ns"], int)
    assert raw["committed_at_ns"] > 1_600_000_000 * 10**9
    assert raw["parent"] is None
    assert ck.metadata == {"lr": 1e-3}
    assert ck.committed_at.tzinfo is not None
    assert os.listdir(store.root / "work") == []
    ck.verify()


def test_saving_an_existing_epoch_raises_and_leaves_the_old_one_byte_identical(
    store: ckptstore.CheckpointStore,
) -> None:
    save_bytes(store, 5, b"original", metrics={"val_loss": 1.0})
    before = snapshot(store.root / "epochs")
    with pytest.raises(ckptstore.CommitConflictError, match="epoch 5"):
        save_bytes(store, 5, b"replacement", metrics={"val_loss": 0.5})
    assert snapshot(store.root / "epochs") == before
    assert isinstance(ckptstore.CommitConflictError("x"), FileExistsError)


def test_conflict_found_at_rename_time_keeps_the_winner_and_cleans_the_loser(
    store: ckptstore.CheckpointStore,
) -> None:
    # The early existence check passes; another writer commits the epoch while this one stages.
    with (
        pytest.raises(ckptstore.CommitConflictError),
        store.save(7, metrics={"val_loss": 1.0}) as tx,
    ):
        with tx.open("model.bin") as f:
            f.write(b"loser")
        rival = ckptstore.open(store.root, monitor="val_loss")
        save_bytes(rival, 7, b"winner", metrics={"val_loss": 2.0})
    assert store.get(7).read_bytes("model.bin") == b"winner"
    assert os.listdir(store.root / "work") == []


def test_exception_in_the_block_commits_nothing_and_removes_the_staging_dir(
    store: ckptstore.CheckpointStore,
) -> None:
    class Boom(Exception):
        pass

    with pytest.raises(Boom), store.save(1, metrics={"val_loss": 1.0}) as tx:
        (tx.path / "half.bin").write_bytes(b"x" * 100)
        raise Boom
    assert 1 not in store
    assert os.listdir(store.root / "work") == []
    assert os.listdir(store.root / "epochs") == []
    assert any("ABORT" in line for line in store.log())


def test_serializer_that_raises_commits_nothing(store: ckptstore.CheckpointStore) -> None:
    class Exploding:
        name = "exploding"

        def version(self) -> str:
            return "0"

        def save(self, state: object, tx: ckptstore.SaveTransaction) -> None:
            with tx.open("part.bin") as f:
                f.write(b"partial")
            raise RuntimeError("out of memory while serializing")

        def load(self, checkpoint: object, **kw: object) -> None:
            raise AssertionError

    with pytest.raises(ckptstore.SerializerError, match="out of memory") as info:
        store.save_state(1, {"a": 1}, serializer=Exploding(), metrics={"val_loss": 1.0})
    assert isinstance(info.value.__cause__, RuntimeError)
    assert os.listdir(store.root / "epochs") == []
    assert os.listdir(store.root / "work") == []


def test_unclosed_stream_is_refused(store: ckptstore.CheckpointStore) -> None:
    with (
        pytest.raises(ckptstore.InvalidArgumentError, match="not closed"),
        store.save(1, metrics={"val_loss": 1.0}) as tx,
    ):
        tx.open("dangling.bin").write(b"x")
    assert os.listdir(store.root / "epochs") == []


@pytest.mark.parametrize("name", ["MANIFEST.json", "METADATA.json"])
def test_reserved_names_cannot_be_written(store: ckptstore.CheckpointStore, name: str) -> None:
    with pytest.raises(ckptstore.UnsafePathError), store.save(1, metrics={"val_loss": 1.0}) as tx:
        (tx.path / name).write_text("{}")
    assert os.listdir(store.root / "epochs") == []


def test_symlink_in_staging_dir_is_refused(store: ckptstore.CheckpointStore, tmp_path: Path) -> None:
    secret = tmp_path / "secret.txt"
    secret.write_text("outside")
    with (
        pytest.raises(ckptstore.UnsafePathError, match="symlink"),
        store.save(1, metrics={"val_loss": 1.0}) as tx,
    ):
        os.symlink(secret, tx.path / "link.txt")
    assert os.listdir(store.root / "epochs") == []


def test_stream_is_write_only_and_not_seekable_but_numpy_and_zip_work(
    store: ckptstore.CheckpointStore,
) -> None:
    arrays = {"a": np.arange(100_000, dtype=np.float32), "b": np.ones((3, 4))}
    with store.save(2, metrics={"val_loss": 1.0}) as tx:
        with tx.open("one.npy") as f:
            assert not f.seekable()
            with pytest.raises(OSError):
                f.seek(0)
            np.save(f, arrays["a"])
        with tx.open("many.npz") as f:
            np.savez(f, **arrays)
        with tx.open("notes.txt", "w") as t:
            t.write("héllo")
    ck = store.get(2, verify=True)
    assert np.array_equal(np.load(ck.path / "one.npy"), arrays["a"])
    with np.load(ck.path / "many.npz") as z:
        assert np.array_equal(z["b"], arrays["b"])
    assert ck.read_bytes("notes.txt").decode() == "héllo"


def test_manifest_validation_rejects_malformed_records() -> None:
    good = Manifest(epoch=1, run_id="r", commit_id="c", writer={}, committed_at_ns=1, files=()).to_json()
    assert Manifest.from_json(good).epoch == 1
    raw = json.loads(good)
    for broken in (
        b"{not json",
        json.dumps({**raw, "version": 99}),
        json.dumps({**raw, "format": "other"}),
        json.dumps({k: v for k, v in raw.items() if k != "files"}),
        json.dumps({**raw, "epoch": "1"}),
        json.dumps({**raw, "files": [{"path": "../x", "size": 1, "xxh3_128": "0" * 32}]}),
        json.dumps({**raw, "files": [{"path": "x", "size": -1, "xxh3_128": "0" * 32}]}),
        json.dumps({**raw, "metrics": {"loss": "nan"}}),
    ):
        with pytest.raises(ckptstore.ManifestError):
            Manifest.from_json(broken)


def test_epoch_names_are_zero_padded_to_the_width_in_the_descriptor(tmp_path: Path) -> None:
    s = ckptstore.open(tmp_path / "w4", width=4)
    save_bytes(s, 12)
    assert (tmp_path / "w4" / "epochs" / "0012").is_dir()
    assert json.loads((tmp_path / "w4" / "ckptstore.json").read_text())["width"] == 4
    # Reopening with another width keeps the store's own.
    assert ckptstore.open(tmp_path / "w4", width=8).width == 4
    with pytest.raises(ckptstore.InvalidEpochError, match="width"):
        save_bytes(s, 10_000)
