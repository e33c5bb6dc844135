"""Attacks from outside on the store's core: caches that lie, gc racing writers, monitors, faults after the commit.

Each test is named after an attack that worked on the first version (issue 11, items 3, 4, 5, 7, 11) and
proves it no longer does: the index never wins against a manifest, gc on one host never breaks a save
committed from another, best is bound to one metric, and a failure after the commit point never looks
like "nothing was saved".
"""

from __future__ import annotations

import errno
import json
import logging
import os
import subprocess
import sys
import textwrap
import uuid
from pathlib import Path
from typing import Any

import pytest

import ckptstore
from ckptstore.backends.local import LocalBackend
from ckptstore.retry import RetryPolicy

from .conftest import run_child, save_bytes, snapshot


def _open(kind: str, tmp_path: Path, request: pytest.FixtureRequest, **options: Any) -> ckptstore.CheckpointStore:
    if kind == "local":
        return ckptstore.open(tmp_path / "store", **options)
    server = request.getfixturevalue("s3_server" if kind == "s3" else "gcs_server")
    return ckptstore.open(server.url(f"attack-{uuid.uuid4().hex}"), storage_options=server.storage_options, **options)


# -- item 4: the index never wins against a manifest ----------------------------------------------------
@pytest.mark.parametrize("kind", ["local", pytest.param("s3", marks=pytest.mark.s3)])
def test_a_lying_index_and_a_damaged_epoch_never_cost_a_good_checkpoint(
    kind: str, tmp_path: Path, request: pytest.FixtureRequest
) -> None:
    store = _open(kind, tmp_path, request, monitor="val_loss")
    for epoch in (1, 2, 3):
        save_bytes(store, epoch, f"payload{epoch}".encode(), metrics={"val_loss": 1.0 / epoch})
    fs = store.backend
    index = json.loads(fs.read_bytes("index.json"))
    entry = index["checkpoints"]["00000002"]
    entry["metrics"] = entry["manifest"]["metrics"] = {"val_loss": 99.0}  # the cache lies about epoch 2
    fs.write("index.json", json.dumps(index).encode())
    with fs.open_write("epochs/00000003/model.bin.tmp") as f:  # and epoch 3 is damaged: an extra file
        f.write(b"junk")

    with pytest.raises(ckptstore.UnexpectedFileError) as failure:
        store.verify()
    assert "00000003" in str(failure.value) and "more failure" not in str(failure.value)  # epoch 2 verifies
    assert store.verify(2)[0].metrics == {"val_loss": 0.5}

    fresh = ckptstore.open(store.url, storage_options=_options(store, request, kind))
    chosen = fresh.restart()
    assert chosen is not None and chosen.epoch == 2
    assert fresh.epochs() == [1, 2]  # epoch 2 was neither retired nor deleted
    assert fresh.get(2).verify().read_bytes("model.bin") == b"payload2"
    repaired = json.loads(fs.read_bytes("index.json"))["checkpoints"]["00000002"]
    assert repaired["metrics"] == {"val_loss": 0.5}
    assert fresh.best().epoch == 2


def _options(store: ckptstore.CheckpointStore, request: pytest.FixtureRequest, kind: str) -> Any:
    if kind == "local":
        return None
    return request.getfixturevalue("s3_server" if kind == "s3" else "gcs_server").storage_options


def test_a_lying_index_never_makes_gc_delete_another_runs_checkpoint_or_the_true_best(tmp_path: Path) -> None:
    root = tmp_path / "store"
    other = ckptstore.open(root, monitor="val_loss", run_id="other-run")
    save_bytes(other, 1, metrics={"val_loss": 0.9})
    mine = ckptstore.open(root, run_id="mine", keep=ckptstore.keep.linear(2), gc_on_save=False)
    save_bytes(mine, 2, metrics={"val_loss": 0.1})  # the true best
    for epoch in (3, 4, 5):
        save_bytes(mine, epoch, metrics={"val_loss": 0.5})
    index = json.loads((root / "index.json").read_text())
    index["checkpoints"]["00000001"]["run_id"] = "mine"
    index["checkpoints"]["00000001"]["manifest"]["run_id"] = "mine"
    for name in ("00000002", "00000003"):
        index["checkpoints"][name]["metrics"] = index["checkpoints"][name]["manifest"]["metrics"] = {"val_loss": 0.7}
    (root / "index.json").write_text(json.dumps(index))
    (root / "pointers" / "best.json").unlink()  # and the best pointer is gone
    os.unlink(root / "best")

    report = mine.gc()
    assert report.deleted == [3]
    assert mine.epochs() == [1, 2, 4, 5]
    assert {d.epoch: d.reason for d in report}[2] == "best"
    index = json.loads((root / "index.json").read_text())
    assert index["checkpoints"]["00000001"]["run_id"] == "other-run"  # repaired from the manifest


def test_an_index_entry_claiming_a_better_metric_never_costs_the_true_best(tmp_path: Path) -> None:
    root = tmp_path / "store"
    store = ckptstore.open(root, monitor="val_loss", keep=ckptstore.keep.linear(2), gc_on_save=False)
    save_bytes(store, 1, metrics={"val_loss": 0.1})  # the true best
    for epoch in (2, 3, 4):
        save_bytes(store, epoch, metrics={"val_loss": 0.5})
    index = json.loads((root / "index.json").read_text())
    entry = index["checkpoints"]["00000004"]  # kept by the policy anyway: a lie that costs nothing itself
    entry["metrics"] = entry["manifest"]["metrics"] = {"val_loss": 0.01}
    (root / "index.json").write_text(json.dumps(index))
    (root / "pointers" / "best.json").unlink()  # and the best pointer is gone
    os.unlink(root / "best")

    report = store.gc()
    assert report.deleted == [2]
    assert store.epochs() == [1, 3, 4]
    assert {d.epoch: d.reason for d in report}[1] == "best"  # from its manifest, not the index's lie
    assert json.loads((root / "index.json").read_text())["checkpoints"]["00000004"]["metrics"] == {"val_loss": 0.5}


_SAVER = """
import sys, ckptstore
store = ckptstore.open(sys.argv[1], keep=ckptstore.keep.linear(3))
for epoch in range(int(sys.argv[2]), 60, 2):
    with store.save(epoch) as tx:
        with tx.open("model.bin") as f:
            f.write(b"x" * 1000)
"""


def test_gc_racing_saves_in_two_processes_leaves_no_deleted_epoch_in_the_index(tmp_path: Path) -> None:
    root = tmp_path / "store"
    ckptstore.open(root)
    writers = [
        subprocess.Popen([sys.executable, "-c", _SAVER, str(root), str(start)], stderr=subprocess.PIPE, text=True)
        for start in (0, 1)
    ]
    for writer in writers:
        _, err = writer.communicate(timeout=300)
        assert writer.returncode == 0, err
    store = ckptstore.open(root)
    on_disk = {p.name for p in (root / "epochs").iterdir() if (p / "MANIFEST.json").exists()}
    indexed = set(json.loads((root / "index.json").read_text())["checkpoints"])
    assert indexed == on_disk
    assert store.epochs()[-1] in (58, 59)


# -- item 3: gc on one host never breaks a save committed from another ----------------------------------
_SLOW_WRITER = """
import json, sys, ckptstore, ckptstore.commit.claims
ckptstore.commit.claims.HOST = "host-b"          # a second machine, as far as claims can tell
url, options, rounds = sys.argv[1], json.loads(sys.argv[2]), int(sys.argv[3])
store = ckptstore.open(url, storage_options=options, retry=ckptstore.RetryPolicy.never())
for epoch in range(rounds):
    try:
        with store.save(epoch) as tx:
            for part in range(4):                # several objects: gc has time to strike in between
                with tx.open(f"part{part}.bin") as f:
                    f.write(bytes([epoch % 256]) * 70_000)
    except (ckptstore.CommitConflictError, ckptstore.StoreUnavailableError) as exc:
        print(json.dumps({"epoch": epoch, "error": type(exc).__name__}), flush=True)
    else:
        print(json.dumps({"epoch": epoch, "committed": tx.checkpoint.epoch}), flush=True)
"""


@pytest.mark.parametrize(
    ("kind", "rounds"), [pytest.param("s3", 40, marks=pytest.mark.s3), pytest.param("gcs", 12, marks=pytest.mark.gcs)]
)
def test_gc_on_another_host_never_breaks_a_save_it_reported(
    kind: str, rounds: int, request: pytest.FixtureRequest
) -> None:
    server = request.getfixturevalue("s3_server" if kind == "s3" else "gcs_server")
    url = server.url(f"twohosts-{uuid.uuid4().hex}")
    gc_host = ckptstore.open(url, storage_options=server.storage_options, work_grace_seconds=1e-6)
    writer = subprocess.Popen(
        [sys.executable, "-c", _SLOW_WRITER, url, json.dumps(server.storage_options), str(rounds)],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
        env={**os.environ, "GCSFS_EXPERIMENTAL_ZB_HNS_SUPPORT": "false"},
    )
    removed = 0
    for _ in range(100_000):  # every claim of the other host is older than the grace: reap all the time
        if writer.poll() is not None:
            break
        removed += len(gc_host.gc().leftovers)
    out, err = writer.communicate(timeout=300)
    assert writer.returncode == 0, err
    results = [json.loads(line) for line in out.splitlines()]
    reported = [r["committed"] for r in results if "committed" in r]
    assert len(results) == rounds
    for epoch in reported:  # every epoch the writer reported is whole
        checkpoint = gc_host.get(epoch).verify()
        assert sorted(checkpoint.files) == [f"part{i}.bin" for i in range(4)]
    assert set(gc_host.epochs()) == set(reported)  # and nothing it did not report became a checkpoint
    assert removed > 0, "gc never struck: the test did not exercise the race"


# -- item 5: best is bound to its metric ----------------------------------------------------------------
def test_a_second_writer_with_another_monitor_is_refused_and_changes_nothing(tmp_path: Path) -> None:
    root = tmp_path / "store"
    first = ckptstore.open(root, monitor="val_loss", keep=ckptstore.keep.linear(2))
    for epoch, loss in ((1, 0.1), (2, 0.5), (3, 0.6)):
        save_bytes(first, epoch, metrics={"val_loss": loss, "acc": epoch / 10})
    before = snapshot(root)
    with pytest.raises(ckptstore.MonitorMismatchError, match=r"best\(metric='acc'\)"):
        ckptstore.open(root, monitor="acc", keep=ckptstore.keep.linear(1))
    with pytest.raises(ckptstore.MonitorMismatchError, match="mode"):
        ckptstore.open(root, monitor="val_loss", mode="max")
    assert snapshot(root) == before
    reopened = ckptstore.open(root)  # no monitor: the recorded one
    assert reopened.config.monitor == "val_loss" and reopened.mode == "min"
    assert reopened.best().epoch == 1
    assert reopened.best(metric="acc").epoch == 3  # other metrics rank without rebinding the store
    assert first.epochs() == [1, 2, 3]


def test_the_first_open_naming_a_monitor_records_it_and_a_rival_open_is_refused(tmp_path: Path) -> None:
    root = tmp_path / "store"
    plain = ckptstore.open(root)
    save_bytes(plain, 1, metrics={"val_loss": 0.3, "acc": 0.9})
    assert "monitor" not in json.loads((root / "ckptstore.json").read_text())
    children = [
        subprocess.Popen(
            [sys.executable, "-c", f"import ckptstore; ckptstore.open({str(root)!r}, monitor={m!r})"],
            stderr=subprocess.PIPE,
            text=True,
        )
        for m in ("val_loss", "acc")
    ]
    outcomes = [(c.wait(timeout=120), c.stderr.read() if c.stderr else "") for c in children]
    assert sorted(code for code, _ in outcomes) == [0, 1]  # exactly one first open wins
    assert any("MonitorMismatchError" in err for _, err in outcomes)
    recorded = json.loads((root / "ckptstore.json").read_text())
    assert recorded["monitor"] in ("val_loss", "acc")
    assert recorded["mode"] == ("min" if recorded["monitor"] == "val_loss" else "max")
    assert ckptstore.open(root).config.monitor == recorded["monitor"]


# -- item 7: failures after the commit point tell the truth --------------------------------------------
class _DiskFullOnPointers(LocalBackend):
    """Local disk that fills up exactly when the pointers are written (after the commit)."""

    full = False

    def write_if(self, key: str, data: bytes, version: str | None) -> bool:
        if self.full and key.startswith("pointers/"):
            raise OSError(errno.ENOSPC, "No space left on device", str(self.path(key)))
        return super().write_if(key, data, version)


def test_a_full_disk_while_the_pointers_are_written_returns_the_committed_checkpoint(tmp_path: Path) -> None:
    root = tmp_path / "store"
    backend = _DiskFullOnPointers(root)
    store = ckptstore.CheckpointStore(root, ckptstore.StoreConfig(monitor="val_loss"), backend=backend)
    save_bytes(store, 1, metrics={"val_loss": 0.5})
    backend.full = True
    with pytest.warns(ckptstore.PostCommitWarning, match="epoch 2 is committed"):
        checkpoint = save_bytes(store, 2, b"better", metrics={"val_loss": 0.1})
    assert checkpoint.epoch == 2 and checkpoint.verify().read_bytes("model.bin") == b"better"
    assert json.loads((root / "pointers" / "best.json").read_text())["epoch"] == 1  # lagging, for now
    assert any("WARNING" in line and "epoch 2 is committed" in line for line in store.log())
    # A new process that resumes repairs the pointers at restart()...
    other = ckptstore.open(root)
    assert other.restart().epoch == 2
    assert json.loads((root / "pointers" / "best.json").read_text())["epoch"] == 2
    # ... and this one on its next call, once the disk has room again.
    (root / "pointers" / "best.json").write_text(json.dumps({"epoch": 1}))
    backend.full = False
    assert store.best().epoch == 2
    assert store.latest().epoch == 2


class _HaltOnCommit(logging.Handler):
    """Stops the S3 server the moment the store logs a commit (the event, not a timer)."""

    def __init__(self, server: Any) -> None:
        super().__init__(logging.INFO)
        self.server = server

    def emit(self, record: logging.LogRecord) -> None:
        if " COMMIT: epoch=2" in record.getMessage() and self.server.process is not None:
            self.server.halt()


@pytest.mark.s3
def test_an_outage_right_after_the_commit_returns_the_checkpoint_and_repairs_later() -> None:
    from backends.s3 import SeaweedFS

    quick = RetryPolicy(max_attempts=3, initial_backoff=0.05, max_backoff=0.1, deadline=3.0)
    with SeaweedFS() as server:
        url = server.url("after-commit")
        config = ckptstore.StoreConfig(monitor="val_loss", retry=quick)
        store = ckptstore.CheckpointStore(url, config, storage_options=server.storage_options)
        save_bytes(store, 1, metrics={"val_loss": 0.5})
        handler = _HaltOnCommit(server)
        logger = logging.getLogger("ckptstore")
        logger.addHandler(handler)
        old_level = logger.level
        logger.setLevel(logging.INFO)
        try:
            with pytest.warns(ckptstore.PostCommitWarning, match="StoreUnavailableError"):
                checkpoint = save_bytes(store, 2, metrics={"val_loss": 0.1})
        finally:
            logger.removeHandler(handler)
            logger.setLevel(old_level)
        assert checkpoint.epoch == 2
        server.start()  # back, on the same data
        assert store.best().epoch == 2 and store.latest().epoch == 2
        assert store.get(2).verify().epoch == 2
        assert sorted(store.index()["checkpoints"]) == ["00000001", "00000002"]


# -- item 11: latest() is deterministic and agrees with restart() ---------------------------------------
def test_a_writer_clock_a_year_ahead_never_changes_latest_or_restart(tmp_path: Path) -> None:
    root = tmp_path / "store"
    store = ckptstore.open(root)
    for epoch in (1, 2, 3):
        save_bytes(store, epoch)
    manifest = root / "epochs" / "00000002" / "MANIFEST.json"
    raw = json.loads(manifest.read_text())
    raw["committed_at_ns"] += 365 * 86400 * 10**9  # epoch 2's writer had its clock a year ahead
    manifest.write_text(json.dumps(raw, indent=1, sort_keys=True) + "\n")
    store.reindex()
    (root / "pointers" / "last.json").unlink()
    os.unlink(root / "last")
    code = textwrap.dedent(
        f"""
        import ckptstore
        s = ckptstore.open({str(root)!r})
        print(s.latest().epoch, s.latest().epoch, s.restart(verify=False).epoch)
        """
    )
    assert run_child(code, check=True).stdout.split() == ["3", "3", "3"]


# -- user-editable records that overflow or nest too deep -----------------------------------------------
def test_an_out_of_range_evaluation_value_never_breaks_listing(tmp_path: Path) -> None:
    store = ckptstore.open(tmp_path / "store")
    save_bytes(store, 1)
    save_bytes(store, 2)
    store.get(1).add_metadata({"evaluation": {"acc": 10**400}})  # valid JSON, no float can hold it
    store.get(2).add_metadata({"evaluation": {"acc": 0.5}})
    assert [c.epoch for c in store.list(sort_by="acc")] == [2, 1]  # 1 has no usable value: last
    assert store.best(metric="acc").epoch == 2


def test_a_deeply_nested_metadata_file_is_a_typed_error(tmp_path: Path) -> None:
    store = ckptstore.open(tmp_path / "store")
    save_bytes(store, 1)
    (tmp_path / "store" / "epochs" / "00000001" / "METADATA.json").write_text("[" * 100_000 + "]" * 100_000)
    with pytest.raises(ckptstore.ManifestError, match="METADATA.json"):
        _ = store.get(1).metadata


def test_a_symlinked_epoch_folder_is_reported_and_restart_falls_back_past_it(tmp_path: Path) -> None:
    root = tmp_path / "store"
    store = ckptstore.open(root)
    for epoch in (1, 2):
        save_bytes(store, epoch, f"payload{epoch}".encode())
    outside = tmp_path / "outside"
    os.rename(root / "epochs" / "00000002", outside)  # someone put epoch 2 elsewhere and linked it back
    os.symlink(outside, root / "epochs" / "00000002")
    store.reindex()
    assert store.epochs() == [1]  # listed as not a checkpoint, the rest lists
    with pytest.raises(ckptstore.UnexpectedFileError, match="00000002"):
        store.get(2)
    chosen = ckptstore.open(root).restart()
    assert chosen is not None and chosen.epoch == 1
    assert (outside / "model.bin").read_bytes() == b"payload2"  # never moved, read or deleted through
    assert os.path.islink(root / "epochs" / "00000002")
