"""Bad input gets a typed error and changes nothing on disk (DESIGN 3.7)."""

from __future__ import annotations

from pathlib import Path

import pytest

import ckptstore

from .conftest import save_bytes, snapshot


@pytest.fixture
def populated(store: ckptstore.CheckpointStore) -> ckptstore.CheckpointStore:
    save_bytes(store, 1, metrics={"val_loss": 0.5})
    return store


@pytest.mark.parametrize("epoch", [-1, 1.0, "3", None, True, 10**8])
def test_bad_epochs(populated: ckptstore.CheckpointStore, epoch: object) -> None:
    before = snapshot(populated.root)
    with pytest.raises(ckptstore.InvalidEpochError):
        populated.save(epoch, metrics={"val_loss": 0.1})  # type: ignore[arg-type]
    assert snapshot(populated.root) == before


@pytest.mark.parametrize(
    "metrics",
    [
        {"val_loss": float("nan")},
        {"val_loss": float("inf")},
        {"val_loss": -float("inf")},
        {"val_loss": "low"},
        {"val_loss": True},
        {"": 1.0, "val_loss": 0.1},
        {"val_loss": 0.1, 3: 1.0},
        [("val_loss", 0.1)],
    ],
)
def test_bad_metrics(populated: ckptstore.CheckpointStore, metrics: object) -> None:
    before = snapshot(populated.root)
    with pytest.raises(ckptstore.InvalidMetricError):
        populated.save(2, metrics=metrics)  # type: ignore[arg-type]
    assert snapshot(populated.root) == before


@pytest.mark.parametrize("metadata", [{"x": object()}, {"x": float("nan")}, ["not", "a", "dict"]])
def test_bad_metadata(populated: ckptstore.CheckpointStore, metadata: object) -> None:
    before = snapshot(populated.root)
    with pytest.raises(ckptstore.InvalidArgumentError):
        populated.save(2, metrics={"val_loss": 0.1}, metadata=metadata)  # type: ignore[arg-type]
    assert snapshot(populated.root) == before


@pytest.mark.parametrize(
    "name",
    [
        "../escape.bin",
        "/etc/passwd",
        "a/../../b",
        "a//b",
        "nul\x00byte",
        "back\\slash",
        "",
        "x" * 300,
        "./a",
    ],
)
def test_file_names_that_escape_are_refused_and_nothing_is_committed(
    populated: ckptstore.CheckpointStore, name: str
) -> None:
    before = snapshot(populated.root)
    with (
        pytest.raises(ckptstore.UnsafePathError),
        populated.save(2, metrics={"val_loss": 0.1}) as tx,
    ):
        tx.open(name)
    assert snapshot(populated.root) == before
    assert not (populated.root.parent / "escape.bin").exists()


def test_duplicate_stream_name_is_refused(populated: ckptstore.CheckpointStore) -> None:
    with (
        pytest.raises(ckptstore.UnsafePathError),
        populated.save(2, metrics={"val_loss": 0.1}) as tx,
    ):
        with tx.open("a.bin") as f:
            f.write(b"1")
        tx.open("a.bin")
    assert 2 not in populated


def test_unknown_url_scheme_and_options(tmp_path: Path) -> None:
    with pytest.raises(ckptstore.UnsupportedURLError, match="nosuch"):
        ckptstore.open("nosuch://host/path")
    with pytest.raises(ckptstore.InvalidArgumentError, match="keep_forever"):
        ckptstore.open(tmp_path / "s", keep_forever=True)
    with pytest.raises(ckptstore.InvalidArgumentError):
        ckptstore.open(tmp_path / "s2", mode="sideways")
    with pytest.raises(ckptstore.InvalidArgumentError, match="save_best_only"):
        ckptstore.open(tmp_path / "s3", save_best_only=True)
    assert not (tmp_path / "s").exists()
    assert not (tmp_path / "s3").exists()


def test_file_url_opens_a_local_store(tmp_path: Path) -> None:
    store = ckptstore.open((tmp_path / "u").as_uri())
    save_bytes(store, 1)
    assert ckptstore.open(tmp_path / "u").latest().epoch == 1


def test_missing_root_without_create(tmp_path: Path) -> None:
    with pytest.raises(ckptstore.StoreNotFoundError):
        ckptstore.open(tmp_path / "absent", create=False)
    assert not (tmp_path / "absent").exists()
    (tmp_path / "plain").mkdir()
    with pytest.raises(FileNotFoundError):
        ckptstore.open(tmp_path / "plain", create=False)


def test_read_only_store_can_be_read_but_not_written(tmp_path: Path) -> None:
    store = ckptstore.open(tmp_path / "s", monitor="val_loss")
    save_bytes(store, 1, metrics={"val_loss": 0.5})
    reader = ckptstore.open(tmp_path / "s", monitor="val_loss")
    reader._writable = False  # what os.access reports on a read-only mount
    before = snapshot(tmp_path / "s")
    assert reader.latest().epoch == 1
    with pytest.raises(ckptstore.StoreNotWritableError):
        reader.save(2, metrics={"val_loss": 0.1})
    with pytest.raises(PermissionError):
        reader.pin(1)
    assert snapshot(tmp_path / "s") == before


def test_full_disk_is_a_typed_error_and_leaves_nothing(
    populated: ckptstore.CheckpointStore, monkeypatch: pytest.MonkeyPatch
) -> None:
    import errno

    from ckptstore import checksum

    def enospc(*args: object) -> int:
        raise OSError(errno.ENOSPC, "No space left on device")

    before = snapshot(populated.root)
    with (
        pytest.raises(ckptstore.CommitFailedError, match="No space") as info,
        populated.save(2, metrics={"val_loss": 0.1}) as tx,
    ):
        monkeypatch.setattr(checksum.os, "write", enospc)
        with tx.open("big.bin") as f:
            f.write(b"x" * 1024)
    monkeypatch.undo()
    assert info.value.errno == errno.ENOSPC
    assert snapshot(populated.root) == before
