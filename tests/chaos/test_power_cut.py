"""Power cuts on a filesystem that drops unsynced writes (``backends/lazyfs``, a FUSE mount).

A save that returned must survive a power cut whole; a cut during a save must leave the state before
it. The filesystem keeps data in memory until the file is fsynced and directory changes until the
directory is fsynced, and ``power_cut()`` throws the rest away. The first test shows that the
filesystem does bite (a writer that skips fsync loses its data), so the others could fail.
``CKPTSTORE_CHAOS_CUTS`` sets how many kill-and-cut rounds the random test runs (``tox -e chaos``).
"""

from __future__ import annotations

import errno
import json
import os
from pathlib import Path
from typing import Any

import numpy as np
import pytest

import ckptstore

from .test_kill_loop import _figures, run_harness

pytestmark = pytest.mark.fuse


def test_the_filesystem_drops_what_was_not_synced(lazy_mount: Any) -> None:
    root: Path = lazy_mount.mountpoint
    (root / "naive.tmp").write_bytes(b"weights")  # no fsync, no directory fsync
    os.rename(root / "naive.tmp", root / "naive")
    fd = os.open(root / "careful.tmp", os.O_WRONLY | os.O_CREAT, 0o644)
    os.write(fd, b"weights")
    os.fsync(fd)
    os.close(fd)
    os.rename(root / "careful.tmp", root / "careful")
    ckptstore.backends.local.LocalBackend.fsync_dir(root)
    os.mkdir(root / "unsynced-dir")
    figures = lazy_mount.power_cut()
    assert figures["bytes_dropped"] >= len(b"weights")
    assert (root / "naive").read_bytes() == b""  # the rename survived (journal), the data did not
    assert (root / "careful").read_bytes() == b"weights"
    assert not (root / "unsynced-dir").exists()


def _save(store: ckptstore.CheckpointStore, epoch: int, loss: float) -> None:
    with store.save(epoch, metrics={"val_loss": loss}) as tx:
        with tx.open("model.bin") as f:
            f.write(np.full(40_000, epoch, dtype=np.float64).tobytes())
        (tx.path / "extra").mkdir()
        (tx.path / "extra" / "config.json").write_text(json.dumps({"epoch": epoch}))


def test_a_power_cut_after_save_returned_keeps_every_checkpoint(lazy_mount: Any) -> None:
    url = str(lazy_mount.mountpoint / "store")
    store = ckptstore.open(url, monitor="val_loss", keep=ckptstore.keep.linear(2))
    for epoch, loss in [(1, 0.5), (2, 0.3), (3, 0.4), (4, 0.6), (5, 0.45)]:
        _save(store, epoch, loss)
        store.pin(2) if epoch == 2 else None
    store.get(5).add_metadata({"note": "before the cut"})
    before = {ck.epoch: ck.files for ck in store.list()}
    pending = lazy_mount.report()
    figures = lazy_mount.power_cut()

    after = ckptstore.open(url, monitor="val_loss")
    assert {ck.epoch: ck.files for ck in after.list()} == before
    for ck in after.list():
        ck.verify()
    assert after.latest().epoch == 5
    assert after.best().epoch == 2
    assert after.get(5).metadata == {"note": "before the cut"}
    assert 2 in after.pinned()
    assert np.frombuffer((after.get(4).path / "model.bin").read_bytes())[0] == 4.0
    # A removal whose directory was not fsynced may come back as garbage (strict model): never as a
    # checkpoint, and gc removes it.
    assert all(path.startswith(("trash/", "work/")) for path, _ in after.gc(dry_run=True).leftovers)
    after.gc()
    assert after.gc(dry_run=True).leftovers == ()
    # Every file the store wrote was fsynced but its append-only log, which is diagnostics only.
    assert figures["crashes"] == 1 and pending["unsynced_files"] == ["store/ckpt.log"]


def test_a_power_cut_during_a_save_leaves_the_state_before_it(lazy_mount: Any) -> None:
    url = str(lazy_mount.mountpoint / "store")
    store = ckptstore.open(url, monitor="val_loss")
    _save(store, 1, 0.5)
    _save(store, 2, 0.4)
    tx = store.save(3, metrics={"val_loss": 0.1}).__enter__()
    with tx.open("model.bin") as f:
        f.write(b"half of a checkpoint")
    lazy_mount.power_cut()  # the writer dies with the machine: no __exit__

    after = ckptstore.open(url, monitor="val_loss")
    assert after.epochs() == [1, 2]
    assert after.latest().verify().epoch == 2
    assert after.best().verify().epoch == 2
    assert after.restart("auto").epoch == 2
    report = after.gc()
    assert after.gc(dry_run=True).leftovers == ()
    _save(after, 3, 0.3)  # the epoch is free again
    assert after.latest().verify().epoch == 3
    del report


def test_a_failed_fsync_fails_the_save_and_publishes_nothing(lazy_mount: Any) -> None:
    """A file written through ``tx.open()`` is fsynced in a helper thread while the next is written.

    When the disk fails that fsync (EIO from the filesystem, not a mock), the seal must raise
    CommitFailedError before any manifest or rename: no epoch appears, now or after a power cut, no
    staging folder is left, and the next save commits normally.
    """
    root: Path = lazy_mount.mountpoint
    store = ckptstore.open(str(root / "store"))
    state = {f"w{i}": np.full(50_000, i, dtype=np.float32) for i in range(4)}
    lazy_mount.fail_fsync("arrays/00001.npy")  # the second of four files: later ones are being written
    with pytest.raises(ckptstore.errors.CommitFailedError) as failed:
        store.save_state(1, state, serializer="numpy")
    assert failed.value.errno == errno.EIO
    assert lazy_mount.report()["fsync_failures"] == 1
    assert store.list() == []
    assert not (root / "store" / "epochs" / "00000001").exists()
    work = root / "store" / "work"
    assert (list(work.iterdir()) if work.exists() else []) == []  # the staging folder went too
    lazy_mount.power_cut()
    assert ckptstore.open(str(root / "store")).list() == []
    store = ckptstore.open(str(root / "store"))
    store.save_state(1, state, serializer="numpy")  # the error was one write-back, not a broken store
    lazy_mount.power_cut()
    loaded = ckptstore.open(str(root / "store")).get(1).load()
    assert all(np.array_equal(loaded[k], v) for k, v in state.items())


def test_random_kills_with_a_power_cut_lose_nothing_that_was_committed(lazy_mount: Any) -> None:
    cuts = int(os.environ.get("CKPTSTORE_CHAOS_CUTS", "6"))
    dropped: list[int] = []

    def power_cut() -> None:
        dropped.append(lazy_mount.power_cut()["bytes_dropped"])

    figures = run_harness(str(lazy_mount.mountpoint / "store"), None, cuts, seed=3, max_delay=1.5, after_kill=power_cut)
    figures["bytes_dropped_by_cuts"] = dropped[-1]
    _figures("power-cut", figures)
    assert figures["committed"] > 0
