"""Integrity (DESIGN 3.4): every kind of damage is detected and named."""

from __future__ import annotations

import os

import pytest

import ckptstore

from .conftest import save_bytes


@pytest.fixture
def damaged(store: ckptstore.CheckpointStore) -> ckptstore.Checkpoint:
    with store.save(1, metrics={"val_loss": 0.5}) as tx:
        (tx.path / "model.bin").write_bytes(os.urandom(200_000))
        (tx.path / "sub").mkdir()
        (tx.path / "sub" / "opt.bin").write_bytes(b"optimizer")
    assert tx.checkpoint is not None
    return tx.checkpoint


def flip(path: os.PathLike[str], offset: int) -> None:
    data = bytearray(open(path, "rb").read())
    data[offset] ^= 0x01
    open(path, "wb").write(bytes(data))


def test_flipped_byte_raises_checksum_mismatch_naming_the_file(
    damaged: ckptstore.Checkpoint,
) -> None:
    flip(damaged.path / "model.bin", 123_456)
    with pytest.raises(ckptstore.ChecksumMismatchError, match="model.bin"):
        damaged.verify()


def test_truncated_file_is_caught(damaged: ckptstore.Checkpoint) -> None:
    os.truncate(damaged.path / "model.bin", 100)
    with pytest.raises(ckptstore.ChecksumMismatchError, match="truncated"):
        damaged.verify()


def test_missing_file_is_caught(damaged: ckptstore.Checkpoint) -> None:
    os.unlink(damaged.path / "sub" / "opt.bin")
    with pytest.raises(ckptstore.IncompleteCheckpointError, match="sub/opt.bin"):
        damaged.verify()


def test_extra_file_is_caught(damaged: ckptstore.Checkpoint) -> None:
    (damaged.path / "sub" / "intruder.bin").write_bytes(b"x")
    with pytest.raises(ckptstore.UnexpectedFileError, match="intruder"):
        damaged.verify()


def test_corrupt_or_missing_manifest_is_caught(store: ckptstore.CheckpointStore, damaged: ckptstore.Checkpoint) -> None:
    (damaged.path / "MANIFEST.json").write_text('{"format": "ckptstore.manifest", "version": 1}')
    with pytest.raises(ckptstore.ManifestError):
        damaged.verify()
    os.unlink(damaged.path / "MANIFEST.json")
    with pytest.raises(ckptstore.IncompleteCheckpointError):
        damaged.verify()
    with pytest.raises(ckptstore.VerificationError):
        store.get(1)


def test_store_verify_rehashes_everything_and_load_verifies_by_default(
    store: ckptstore.CheckpointStore,
) -> None:
    save_bytes(store, 1, b"one", metrics={"val_loss": 0.5})
    ck = store.save_state(2, {"a": b"two"}, serializer="raw", metrics={"val_loss": 0.4})
    assert ck is not None
    assert [c.epoch for c in store.verify()] == [1, 2]
    flip(ck.path / "a", 0)
    with pytest.raises(ckptstore.ChecksumMismatchError, match="a"):
        store.verify()
    with pytest.raises(ckptstore.ChecksumMismatchError):
        ck.load()
    assert ck.load(verify=False) == {"a": b"uwo"}
    assert any("VERIFY" in line and "epoch 2" in line for line in store.log())


def test_download_copies_and_verifies(store: ckptstore.CheckpointStore, tmp_path: os.PathLike[str]) -> None:
    ck = save_bytes(store, 1, b"payload", metrics={"val_loss": 0.5})
    dest = ck.download(os.path.join(tmp_path, "copy"))
    assert (dest / "model.bin").read_bytes() == b"payload"
    assert (dest / "MANIFEST.json").exists()
    flip(ck.path / "model.bin", 0)
    with pytest.raises(ckptstore.ChecksumMismatchError):
        ck.download(os.path.join(tmp_path, "copy2"))
    assert not os.path.exists(os.path.join(tmp_path, "copy2", "model.bin"))


def test_a_download_that_fails_verification_leaves_nothing_at_the_destination(
    damaged: ckptstore.Checkpoint, tmp_path: os.PathLike[str]
) -> None:
    """A new user's report: 4 of 5 files and no manifest were left behind. Now: no folder, no sibling."""
    flip(damaged.path / "sub" / "opt.bin", 0)
    dest = os.path.join(tmp_path, "dl", "best")
    with pytest.raises(ckptstore.ChecksumMismatchError, match="opt.bin"):
        damaged.download(dest)
    assert not os.path.exists(dest)
    assert os.listdir(os.path.join(tmp_path, "dl")) == []  # no hidden partial sibling either


def test_a_download_into_an_existing_folder_replaces_only_its_own_names_once_verified(
    damaged: ckptstore.Checkpoint, tmp_path: os.PathLike[str]
) -> None:
    dest = os.path.join(tmp_path, "existing")
    os.makedirs(dest)
    with open(os.path.join(dest, "model.bin"), "wb") as f:
        f.write(b"old")
    with open(os.path.join(dest, "mine.txt"), "wb") as f:
        f.write(b"user file")
    flip(damaged.path / "sub" / "opt.bin", 0)
    with pytest.raises(ckptstore.ChecksumMismatchError):
        damaged.download(dest)
    assert sorted(os.listdir(dest)) == ["mine.txt", "model.bin"]
    assert open(os.path.join(dest, "model.bin"), "rb").read() == b"old"  # untouched by the failed download
    flip(damaged.path / "sub" / "opt.bin", 0)  # repaired
    damaged.download(dest)
    assert open(os.path.join(dest, "model.bin"), "rb").read() == (damaged.path / "model.bin").read_bytes()
    assert open(os.path.join(dest, "mine.txt"), "rb").read() == b"user file"
    assert sorted(os.listdir(dest)) == ["MANIFEST.json", "mine.txt", "model.bin", "sub"]
