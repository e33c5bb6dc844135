"""Non-blocking saves, ckpt.log and the report."""

from __future__ import annotations

import io
import threading

import numpy as np
import pytest

import ckptstore

from .conftest import save_bytes


def test_non_blocking_save_commits_in_background_and_wait_returns_it(
    store: ckptstore.CheckpointStore,
) -> None:
    gate = threading.Event()
    seen: list[str] = []
    original = store._pipeline.commit

    def gated(tx: ckptstore.SaveTransaction) -> ckptstore.Checkpoint:
        seen.append(threading.current_thread().name)
        gate.wait(timeout=30)
        return original(tx)

    store._pipeline.commit = gated  # type: ignore[method-assign]
    with store.save(1, metrics={"val_loss": 0.5}, blocking=False) as tx:
        (tx.path / "a.bin").write_bytes(b"a")
    assert 1 not in store  # returned before the commit
    gate.set()
    ck = store.wait()
    assert ck is not None
    assert ck.epoch == 1
    assert tx.checkpoint == ck
    assert seen
    assert seen[0].startswith("ckptstore-commit")


def test_second_save_waits_for_the_first(store: ckptstore.CheckpointStore) -> None:
    arr = np.arange(1_000_000, dtype=np.float64)
    assert store.save_state(1, arr, metrics={"val_loss": 0.5}, blocking=False) is None
    arr[:] = -1  # the state was serialized before save_state returned
    store.save_state(2, arr, metrics={"val_loss": 0.4}, blocking=False)
    assert 1 in store  # the second save waited for the first to commit
    store.close()
    assert np.array_equal(store.get(1).load(), np.arange(1_000_000, dtype=np.float64))
    assert store.epochs() == [1, 2]


def test_background_error_surfaces_on_the_next_call(store: ckptstore.CheckpointStore) -> None:
    save_bytes(store, 1, metrics={"val_loss": 0.5})
    rival = ckptstore.open(store.root, monitor="val_loss")
    with store.save(2, metrics={"val_loss": 0.4}, blocking=False) as tx:
        (tx.path / "a.bin").write_bytes(b"a")
        save_bytes(rival, 2, metrics={"val_loss": 0.3})  # rival wins epoch 2 meanwhile
    with pytest.raises(ckptstore.CommitConflictError):
        store.save(3, metrics={"val_loss": 0.2})
    # Raised once; the store is usable afterwards.
    save_bytes(store, 3, metrics={"val_loss": 0.2})
    assert store.latest().epoch == 3


def test_log_has_one_line_per_operation_and_report_summarizes(
    store: ckptstore.CheckpointStore,
) -> None:
    save_bytes(store, 1, b"x" * 10_000, metrics={"val_loss": 0.5})
    save_bytes(store, 2, metrics={"val_loss": 0.6})
    store.pin(1)
    store.rollback(1)
    store.gc()
    log = store.log()
    events = [line.split()[2] for line in log]
    for event in ("COMMIT", "POINTER", "PIN", "RETIRE", "ROLLBACK", "GC"):
        assert event in events, log
    assert "MB/s" in next(line for line in log if "COMMIT" in line)
    out = io.StringIO()
    summary = store.report(file=out)
    assert summary["checkpoints"] == 1
    assert summary["last"] == 1
    assert summary["pinned"] == [1]
    assert summary["this_process"]["saved"] == 2
    assert "1 checkpoint(s)" in out.getvalue()
    table = store.table()
    assert "best,last,pinned" in table


def test_table_marks_best_and_last(store: ckptstore.CheckpointStore) -> None:
    save_bytes(store, 1, metrics={"val_loss": 0.1})
    save_bytes(store, 2, metrics={"val_loss": 0.6})
    lines = store.table().splitlines()
    assert lines[2].split()[0] == "1"
    assert lines[2].endswith("best")
    assert lines[3].split()[0] == "2"
    assert lines[3].endswith("last")
