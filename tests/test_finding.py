"""Finding checkpoints: sorted lists, the index, metadata, evaluation, file patterns (seeds 000-003)."""

from __future__ import annotations

import json
import os
import threading
import uuid
from pathlib import Path
from typing import Any

import numpy as np
import pytest

import ckptstore
from ckptstore.resolve import most_recent, template_to_regex

from .conftest import save_bytes


def _mem(**config: Any) -> ckptstore.CheckpointStore:
    return ckptstore.open(f"memory://finding-{uuid.uuid4().hex}", **config)


def _filled(**config: Any) -> ckptstore.CheckpointStore:
    store = _mem(**config)
    for epoch, loss, acc in [(1, 0.9, 0.5), (2, 0.3, 0.8), (3, 0.5, 0.7), (4, 0.4, 0.9)]:
        save_bytes(store, epoch, metrics={"val_loss": loss, "acc": acc})
    save_bytes(store, 5, metrics={"val_loss": 0.6})  # no acc
    return store


# -- list / top (Determined's list_checkpoints) ----------------------------------------------------------
def test_list_sorts_by_the_monitor_best_first_by_default() -> None:
    store = _filled(monitor="val_loss")
    assert [c.epoch for c in store.list()] == [2, 4, 3, 5, 1]
    assert [c.epoch for c in store.list(limit=2)] == [2, 4]
    assert [c.epoch for c in _filled().list()] == [1, 2, 3, 4, 5]  # no monitor: by epoch


def test_list_by_any_metric_puts_checkpoints_without_it_last() -> None:
    store = _filled(monitor="val_loss")
    assert [c.epoch for c in store.list(sort_by="acc")] == [4, 2, 3, 1, 5]  # acc: max is best
    assert [c.epoch for c in store.list(sort_by="acc", order="asc")] == [1, 3, 2, 4, 5]
    assert [c.epoch for c in store.list(sort_by="epoch", order="desc")] == [5, 4, 3, 2, 1]
    assert [c.epoch for c in store.list(sort_by="time")] == [1, 2, 3, 4, 5]
    assert [c.epoch for c in store.top(2)] == [2, 4]
    assert [c.epoch for c in store.top(3, metric="acc")] == [4, 2, 3]
    with pytest.raises(ckptstore.InvalidArgumentError):
        store.list(order="sideways")  # type: ignore[arg-type]
    with pytest.raises(ckptstore.InvalidArgumentError):
        store.list(limit=-1)


# -- the index ------------------------------------------------------------------------------------------
def _count_requests(store: ckptstore.CheckpointStore) -> dict[str, int]:
    counts: dict[str, int] = {}
    backend = store.backend
    for name in ("read_bytes", "read_many", "read_versioned", "listdir", "walk", "stat_files", "exists", "mtime_ns"):
        original = getattr(backend, name)

        def counted(*args: Any, _name: str = name, _original: Any = original, **kwargs: Any) -> Any:
            counts[_name] = counts.get(_name, 0) + 1
            if _name == "read_many":  # a batch costs one request per object it names
                args = (list(args[0]),)
                counts[_name] += len(args[0]) - 1
            return _original(*args, **kwargs)

        setattr(backend, name, counted)
    return counts


def _requests_to_find(n: int) -> dict[str, int]:
    store = _mem(monitor="val_loss")
    for epoch in range(n):
        save_bytes(store, epoch, metrics={"val_loss": 1.0 / (epoch + 1), "acc": epoch / n})
    counts = _count_requests(store)
    assert [c.epoch for c in store.list()][:2] == [n - 1, n - 2]
    assert [c.epoch for c in store.list(sort_by="acc", limit=3)] == [n - 1, n - 2, n - 3]
    assert store.best().epoch == n - 1
    assert store.best(metric="acc").epoch == n - 1
    assert len(store.top(3)) == 3
    return counts


def test_list_sort_and_best_cost_the_same_number_of_requests_for_any_store_size() -> None:
    small, large = _requests_to_find(5), _requests_to_find(60)
    assert small == large, (small, large)
    assert sum(large.values()) <= 12, large


def test_a_rebuilt_index_equals_the_maintained_one() -> None:
    store = _filled(monitor="val_loss", keep=ckptstore.keep.linear(2))
    store.get(4).add_metadata({"note": "keep me"})
    store.pin(4)
    save_bytes(store, 6, metrics={"val_loss": 0.7})
    maintained = store.index()["checkpoints"]
    rebuilt = store.reindex()["checkpoints"]
    assert rebuilt == maintained
    assert sorted(maintained) == [f"{e:08d}" for e in store.epochs()]
    assert {h["epoch"] for h in store.index()["history"].values()} >= {1}  # deleted ones stay plottable


def test_the_index_may_lag_but_never_hides_or_invents_a_checkpoint() -> None:
    store = _filled(monitor="val_loss")
    index = json.loads(store.backend.read_bytes("index.json"))
    del index["checkpoints"]["00000004"]  # as if the writer died before its index update
    index["checkpoints"]["00000009"] = dict(index["checkpoints"]["00000002"])  # an entry whose folder is gone
    store.backend.write("index.json", json.dumps(index).encode())
    assert store.epochs() == [1, 2, 3, 4, 5]
    store.backend.write("index.json", b"{broken")
    assert store.epochs() == [1, 2, 3, 4, 5]


# -- metadata (Determined's add_metadata / remove_metadata) ----------------------------------------------
def test_metadata_merges_top_level_keys_and_keeps_verification_intact() -> None:
    store = _mem()
    save_bytes(store, 1, metadata={"team": "a"})
    ck = store.get(1)
    ck.add_metadata({"metrics": {"loss": 0.12}})
    ck.add_metadata({"metrics": {"acc": 0.92}})
    assert store.get(1).metadata == {"team": "a", "metrics": {"acc": 0.92}}
    ck.remove_metadata(["metrics", "absent"])
    ck.remove_metadata(["team"])  # a key given at save time can be removed too
    assert store.get(1).metadata == {}
    assert store.get(1, verify=True).manifest.metadata == {"team": "a"}  # the commit record is untouched
    with pytest.raises(ckptstore.InvalidArgumentError):
        ck.add_metadata({"bad": float("nan")})
    with pytest.raises(ckptstore.InvalidArgumentError):
        ck.remove_metadata("metrics")  # type: ignore[arg-type]


def test_concurrent_metadata_updates_lose_nothing(tmp_path: Path) -> None:
    for url in (f"memory://meta-{uuid.uuid4().hex}", str(tmp_path / "local")):
        store = ckptstore.open(url)
        save_bytes(store, 1)
        threads = [threading.Thread(target=lambda i=i, s=store: s.get(1).add_metadata({f"k{i}": i})) for i in range(16)]
        for t in threads:
            t.start()
        for t in threads:
            t.join()
        assert store.get(1).metadata == {f"k{i}": i for i in range(16)}
        assert store.index()["checkpoints"]["00000001"]["metadata"] == store.get(1).metadata


# -- evaluate (seed 001's loop, done right) ---------------------------------------------------------------
def test_evaluate_ranks_records_and_skips_checkpoints_that_fail_verification(tmp_path: Path) -> None:
    store = ckptstore.open(tmp_path / "s", monitor="val_loss")
    for epoch in range(1, 5):
        store.save_state(epoch, np.full(4, float(epoch)), metrics={"val_loss": 1.0 / epoch})
    target = next((store.root / "epochs" / "00000003").glob("*.npy"))
    data = bytearray(target.read_bytes())
    data[-1] ^= 0xFF
    target.write_bytes(bytes(data))
    seen: list[float] = []

    def test_acc(state: Any) -> float:
        seen.append(float(state[0]))
        return {1: 0.6, 2: 0.9, 4: 0.7}[int(state[0])]

    with pytest.warns(UserWarning, match="epoch 3"):
        ranked = store.evaluate(test_acc, metric="test_acc", mode="max")
    assert [(c.epoch, v) for c, v in ranked] == [(2, 0.9), (4, 0.7), (1, 0.6)]
    assert sorted(seen) == [1.0, 2.0, 4.0]
    assert store.best(metric="test_acc").epoch == 2
    assert store.best().epoch == 4  # the monitor is unchanged
    assert [c.epoch for c in store.list(sort_by="test_acc")][:3] == [2, 4, 1]
    assert store.get(2).metadata["evaluation"] == {"test_acc": 0.9}
    assert any("EVALUATE" in line and "skipped" in line for line in store.log())


def test_evaluate_can_pass_a_local_path(tmp_path: Path) -> None:
    store = _mem()
    save_bytes(store, 1, b"abc")
    ranked = store.evaluate(lambda path: len((path / "model.bin").read_bytes()), metric="size", load=False, mode="min")
    assert ranked[0][1] == 3.0


# -- download -------------------------------------------------------------------------------------------
def test_download_best_latest_epoch_and_top_n(tmp_path: Path) -> None:
    store = _filled(monitor="val_loss")
    assert [p.name for p in store.download(tmp_path / "b")] == ["00000002"]
    assert [p.name for p in store.download(tmp_path / "l", "latest")] == ["00000005"]
    assert [p.name for p in store.download(tmp_path / "e", 3)] == ["00000003"]
    got = store.download(tmp_path / "t", top_n=3)
    assert [p.name for p in got] == ["00000002", "00000004", "00000003"]
    assert (got[0] / "model.bin").read_bytes() == b"data" and (got[0] / "MANIFEST.json").exists()


# -- resolve_latest (Keras, seed 002) ---------------------------------------------------------------------
def _touch(directory: Path, name: str, mtime_s: float) -> None:
    path = directory / name
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_bytes(name.encode())
    os.utime(path, (mtime_s, mtime_s))


def test_keras_documentation_example(tmp_path: Path) -> None:
    # Keras: files written in this order; the last written is the most recent.
    for i, name in enumerate(["batch03epoch02.json", "batch02epoch02.json", "batch01epoch01.json"]):
        _touch(tmp_path, name, 1_700_000_000 + i)
    found = ckptstore.resolve_latest(str(tmp_path / "batch{batch:02d}epoch{epoch:02d}.json"))
    assert found.name == "batch01epoch01.json"


def test_ties_are_broken_among_the_tied_files_only_unlike_keras(tmp_path: Path) -> None:
    _touch(tmp_path, "batch03epoch02.json", 1_700_000_000)  # older, but the largest name of all
    _touch(tmp_path, "batch02epoch02.json", 1_700_000_005)
    _touch(tmp_path, "batch01epoch03.json", 1_700_000_005)
    files = {p.name: p.stat().st_mtime_ns for p in tmp_path.iterdir()}
    keras_rule = max(files)  # Keras compares every matching name when the newest mtimes tie
    assert keras_rule == "batch03epoch02.json"
    assert most_recent(files, "batch{batch:02d}epoch{epoch:02d}.json") == "batch02epoch02.json"
    assert ckptstore.resolve_latest(tmp_path, "batch*.json").name == "batch02epoch02.json"
    _touch(tmp_path, "epoch9.ckpt", 1_700_000_009)
    _touch(tmp_path, "epoch10.ckpt", 1_700_000_009)
    assert ckptstore.resolve_latest(tmp_path, "re:epoch\\d+\\.ckpt").name == "epoch10.ckpt"  # numeric-aware


def test_templates_become_regexes() -> None:
    regex = template_to_regex("weights.{epoch:02d}-{val_loss:.2f}.h5")
    m = regex.fullmatch("weights.07-0.31.h5")
    assert m is not None and m.group("epoch") == "07" and m.group("val_loss") == "0.31"
    assert regex.fullmatch("weights.07-0.31.h5.tmp") is None
    with pytest.raises(ckptstore.CheckpointNotFoundError):
        ckptstore.resolve_latest("memory://nothing-here/weights.{epoch:02d}.h5")


# -- select-min / select-max (Guild, seed 000) ------------------------------------------------------------
GUILD_FILES = [
    "weights.01-0.9647.hdf5",
    "weights.02-0.9738.hdf5",
    "weights.03-0.9775.hdf5",
    "weights.04-0.9813.hdf5",
    "weights.05-0.9805.hdf5",
]


def test_guild_select_max_picks_epoch_4_and_renames_on_download(tmp_path: Path) -> None:
    run = tmp_path / "run"
    for i, name in enumerate(GUILD_FILES):
        _touch(run, name, 1_700_000_000 + i)
    best = ckptstore.select_max(run, r"weights\.\d+-0\.(\d+)\.hdf5")
    assert best.name == "weights.04-0.9813.hdf5" and best.value == 9813
    assert ckptstore.select_min(run, r"weights\.\d+-0\.(\d+)\.hdf5").name == "weights.01-0.9647.hdf5"
    copy = best.download(tmp_path / "downstream", rename="weights.hdf5")
    assert copy.name == "weights.hdf5" and copy.read_bytes() == b"weights.04-0.9813.hdf5"
    with pytest.raises(ckptstore.InvalidArgumentError, match="capture group"):
        ckptstore.select_max(run, r"weights\..*")


def test_store_select_looks_only_at_committed_checkpoints() -> None:
    store = _mem()
    for epoch, name in enumerate(GUILD_FILES, start=1):
        with store.save(epoch) as tx, tx.open(name) as f:
            f.write(b"w")
    store.backend.write("epochs/00000009/weights.09-0.9999.hdf5", b"uncommitted")
    best = store.select_max(r"weights\.\d+-0\.(\d+)\.hdf5")
    assert best.epoch == 4 and best.path == "epochs/00000004/weights.04-0.9813.hdf5"
    assert store.resolve_latest("weights.*.hdf5").epoch == 5


@pytest.mark.s3
def test_select_and_resolve_on_s3(s3_server: Any, tmp_path: Path) -> None:
    fs = s3_server.filesystem()
    prefix = f"{s3_server.bucket}/guild-{uuid.uuid4().hex}"
    for name in GUILD_FILES:
        fs.pipe_file(f"{prefix}/{name}", name.encode())
    url = f"s3://{prefix}"
    best = ckptstore.select_max(url, r"weights\.\d+-0\.(\d+)\.hdf5", storage_options=s3_server.storage_options)
    assert best.name == "weights.04-0.9813.hdf5"
    assert best.download(tmp_path, rename="w.hdf5").read_bytes() == b"weights.04-0.9813.hdf5"
    # Written within one second: LastModified ties, so the numeric-aware largest tied name decides.
    latest = ckptstore.resolve_latest(
        url + "/weights.{epoch:02d}-{acc:.4f}.hdf5", storage_options=s3_server.storage_options
    )
    newest = max(fs.modified(f"{prefix}/{n}") for n in GUILD_FILES)
    tied = [n for n in GUILD_FILES if fs.modified(f"{prefix}/{n}") == newest]
    assert latest.name == max(tied)
