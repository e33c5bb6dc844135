"""Pointers (DESIGN 3.3), latest/best resolution (section 4), restart, rollback and pins."""

from __future__ import annotations

import json
import os
import shutil
from pathlib import Path

import pytest

import ckptstore
from ckptstore.backends.base import Capabilities
from ckptstore.resolve import natural_key

from .conftest import save_bytes


def pointer(root: Path, name: str) -> tuple[str | None, int | None]:
    link = os.readlink(root / name) if (root / name).is_symlink() else None
    path = root / "pointers" / f"{name}.json"
    epoch = json.loads(path.read_text())["epoch"] if path.exists() else None
    return link, epoch


def test_best_and_last_are_relative_symlinks_and_json_records(
    store: ckptstore.CheckpointStore,
) -> None:
    save_bytes(store, 1, metrics={"val_loss": 0.5})
    save_bytes(store, 2, metrics={"val_loss": 0.2})
    save_bytes(store, 3, metrics={"val_loss": 0.4})
    assert pointer(store.root, "last") == ("epochs/00000003", 3)
    assert pointer(store.root, "best") == ("epochs/00000002", 2)
    assert (store.root / "best" / "model.bin").read_bytes() == b"data"
    assert store.best().epoch == 2
    assert store.latest().epoch == 3
    assert not [n for n in os.listdir(store.root) if n.endswith(".tmp")]


def test_last_only_moves_forward(store: ckptstore.CheckpointStore) -> None:
    save_bytes(store, 5, metrics={"val_loss": 0.5})
    save_bytes(store, 3, metrics={"val_loss": 0.6})
    assert pointer(store.root, "last") == ("epochs/00000005", 5)
    assert store.latest().epoch == 5


def test_json_pointers_alone_where_symlinks_fail(root: Path) -> None:
    store = ckptstore.open(root, monitor="val_loss")
    store._fs._capabilities = Capabilities(
        atomic_rename=True, create_only=True, compare_and_swap=False, symlinks=False, fsync=True
    )
    save_bytes(store, 1, metrics={"val_loss": 0.5})
    assert not (root / "last").exists()
    assert not (root / "last").is_symlink()
    assert pointer(root, "last") == (None, 1)
    assert store.latest().epoch == 1
    assert store.best().epoch == 1


def test_missing_or_dangling_pointers_are_repaired_from_the_manifests(
    store: ckptstore.CheckpointStore,
) -> None:
    for epoch, loss in [(1, 0.3), (2, 0.1), (3, 0.2)]:
        save_bytes(store, epoch, metrics={"val_loss": loss})
    # Dangling: the target is gone (deleted by hand); missing: pointer files removed.
    os.unlink(store.root / "pointers" / "best.json")
    os.unlink(store.root / "best")
    (store.root / "pointers" / "last.json").write_text(json.dumps({"epoch": 9, "target": "epochs/00000009"}))
    os.unlink(store.root / "last")
    os.symlink("epochs/00000009", store.root / "last")
    fresh = ckptstore.open(store.root, monitor="val_loss")
    assert fresh.latest().epoch == 3
    assert fresh.best().epoch == 2
    assert pointer(store.root, "last") == ("epochs/00000003", 3)
    assert pointer(store.root, "best") == ("epochs/00000002", 2)
    assert any("REPAIR" in line for line in fresh.log())


def test_latest_without_pointer_is_the_highest_committed_epoch_whatever_the_clocks(
    store: ckptstore.CheckpointStore,
) -> None:
    save_bytes(store, 9, metrics={"val_loss": 0.1})
    save_bytes(store, 10, metrics={"val_loss": 0.1})
    save_bytes(store, 2, metrics={"val_loss": 0.1})  # committed last, lower epoch: last stays on 10
    assert store.latest().epoch == 10
    # A writer's clock a year ahead on epoch 9: without a pointer the rule is still the pointer's own.
    manifest = store.root / "epochs" / "00000009" / "MANIFEST.json"
    raw = json.loads(manifest.read_text())
    raw["committed_at_ns"] += 365 * 86400 * 10**9
    manifest.write_text(json.dumps(raw))
    store.reindex()
    shutil.rmtree(store.root / "pointers")
    os.unlink(store.root / "last")
    assert [store.latest().epoch for _ in range(3)] == [10, 10, 10]
    assert store.restart().epoch == 10  # latest() and restart() agree


def test_natural_key_orders_numbers_numerically() -> None:
    names = ["epoch10", "epoch9", "epoch100", "epoch09", "a", "epoch9b"]
    assert sorted(names, key=natural_key)[-1] == "epoch100"
    assert max(["weights.10", "weights.9"], key=natural_key) == "weights.10"
    assert natural_key("epoch09") > natural_key("epoch9")  # total order: longer spelling wins a tie


def test_latest_on_empty_store_raises(store: ckptstore.CheckpointStore) -> None:
    with pytest.raises(ckptstore.CheckpointNotFoundError):
        store.latest()
    with pytest.raises(FileNotFoundError):
        store.best()


def test_restart_modes(store: ckptstore.CheckpointStore) -> None:
    assert store.restart("auto") is None
    assert store.restart("off") is None
    with pytest.raises(ckptstore.CheckpointNotFoundError):
        store.restart("required")
    with pytest.raises(ckptstore.InvalidArgumentError):
        store.restart("sometimes")  # type: ignore[arg-type]
    save_bytes(store, 1, metrics={"val_loss": 0.3})
    save_bytes(store, 2, metrics={"val_loss": 0.2})
    assert store.restart("off") is None
    ck = store.restart("required")
    assert ck is not None
    assert ck.epoch == 2
    after = save_bytes(store, 3, metrics={"val_loss": 0.1})
    assert after.parent == 2


def test_restart_skips_corrupt_checkpoints_and_frees_their_epochs(
    store: ckptstore.CheckpointStore,
) -> None:
    for epoch in (1, 2, 3):
        save_bytes(store, epoch, f"payload{epoch}".encode(), metrics={"val_loss": 1.0 / epoch})
    (store.root / "epochs" / "00000003" / "model.bin").write_bytes(b"payloadX")
    (store.root / "epochs" / "00000002" / "MANIFEST.json").write_text("{torn")
    fresh = ckptstore.open(store.root, monitor="val_loss")
    ck = fresh.restart("auto")
    assert ck is not None
    assert ck.epoch == 1
    assert fresh.epochs() == [1]
    assert pointer(store.root, "last")[1] == 1
    assert fresh.best().epoch == 1
    log = "\n".join(fresh.log())
    assert "epoch 3 fails verification" in log
    assert "RETIRE" in log
    save_bytes(fresh, 2, metrics={"val_loss": 0.4})  # the epoch number is free again
    assert fresh.latest().epoch == 2


def test_rollback_repoints_last_and_retires_later_epochs_until_gc(
    store: ckptstore.CheckpointStore,
) -> None:
    for epoch, loss in [(1, 0.5), (2, 0.4), (3, 0.1), (4, 0.3)]:
        save_bytes(store, epoch, metrics={"val_loss": loss})
    ck = store.rollback(2)
    assert ck.epoch == 2
    assert store.epochs() == [1, 2]
    assert pointer(store.root, "last") == ("epochs/00000002", 2)
    assert pointer(store.root, "best") == ("epochs/00000002", 2)  # 3 was retired with the rest
    assert len(os.listdir(store.root / "retired")) == 2
    again = save_bytes(store, 3, b"second try", metrics={"val_loss": 0.35})
    assert again.parent == 2
    assert store.latest().epoch == 3
    store.gc()
    assert os.listdir(store.root / "retired") == []
    with pytest.raises(ckptstore.CheckpointNotFoundError):
        store.rollback(7)


def test_pinned_checkpoint_survives_the_keep_policy(root: Path) -> None:
    store = ckptstore.open(root, keep=ckptstore.keep.linear(1))
    save_bytes(store, 1)
    store.pin(1)
    for epoch in (2, 3, 4):
        save_bytes(store, epoch)
    assert store.epochs() == [1, 4]
    assert store.pinned() == [1]
    store.unpin(1)
    store.gc()
    assert store.epochs() == [4]
    with pytest.raises(ckptstore.CheckpointNotFoundError):
        store.pin(1)
