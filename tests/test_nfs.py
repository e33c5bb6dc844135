"""The store on NFS-like FUSE mounts (``backends/nfs``): the conformance suite, several clients, silly renames.

Five client mounts share one directory (the ``nfs_server`` fixture). The first test shows the mounts
really behave like NFS clients (stale listings, one-second mtimes, ``.nfs`` files, no symlinks,
``ESTALE``, locks across clients), so the store tests below could fail. The 4 x 25 contested-epoch
run across clients is in ``test_concurrency_contested.py``.
"""

from __future__ import annotations

import fcntl
import os
import shutil
import uuid
from pathlib import Path
from typing import Any

import numpy as np
import pytest

import ckptstore
from ckptstore.testing import StoreTests

pytestmark = pytest.mark.fuse


def _clients(nfs_server: Any, name: str) -> list[Path]:
    return [client.mountpoint / name for client in nfs_server.clients]


@pytest.fixture(scope="module")
def sticky_nfs() -> Any:
    """Two clients whose caches stay stale for 10 minutes, so what is stale does not depend on timing."""
    from backends._fuse import fuse_available
    from backends.nfs import NfsServer

    reason = fuse_available()
    if reason is not None:
        pytest.skip(reason)
    with NfsServer(ttl=600.0) as server:
        server.client()
        server.client()
        yield server


def test_the_mounts_behave_like_nfs_clients(sticky_nfs: Any) -> None:
    nfs_server = sticky_nfs
    a, b = _clients(nfs_server, f"semantics-{uuid.uuid4().hex}")[:2]
    a.mkdir()
    assert os.listdir(b) == []  # b caches this listing now
    (a / "new").write_bytes(b"1")
    assert os.listdir(b) == []  # stale for b (ttl), fresh for a
    assert os.listdir(a) == ["new"]
    assert (b / "new").read_bytes() == b"1"  # open goes to the server (close-to-open)
    assert os.stat(a / "new").st_mtime_ns % 1_000_000_000 == 0  # one-second mtimes
    with pytest.raises(PermissionError):
        os.symlink("new", a / "link")
    # A file unlinked while open on the same client lives on as .nfsXXXX; rmtree cannot finish.
    (a / "dir").mkdir()
    (a / "dir" / "weights").write_bytes(b"w" * 1000)
    with open(a / "dir" / "weights", "rb") as held:
        shutil.rmtree(a / "dir", ignore_errors=True)
        left = os.listdir(a / "dir")
        assert len(left) == 1 and left[0].startswith(".nfs")
        assert held.read() == b"w" * 1000
    assert os.listdir(a / "dir") == []  # the last close removed it
    # Locks taken through one client exclude the other.
    fa = os.open(a / "lock", os.O_RDWR | os.O_CREAT)
    fb = os.open(b / "lock", os.O_RDWR)
    try:
        fcntl.flock(fa, fcntl.LOCK_EX)
        with pytest.raises(BlockingIOError):
            fcntl.flock(fb, fcntl.LOCK_EX | fcntl.LOCK_NB)
    finally:
        os.close(fa)
        os.close(fb)
    counters = nfs_server.clients[0].report()
    assert counters["silly_renames"] >= 1


def test_a_file_deleted_by_another_client_is_a_stale_handle(sticky_nfs: Any) -> None:
    nfs_server = sticky_nfs
    a, b = _clients(nfs_server, f"stale-{uuid.uuid4().hex}")[:2]
    a.mkdir()
    (a / "f").write_bytes(b"x")
    assert (b / "f").exists()  # b caches the attributes
    (a / "f").unlink()
    assert (b / "f").exists()  # stale: b still believes it
    with pytest.raises(FileNotFoundError):  # the kernel retries ESTALE once with a fresh lookup
        (b / "f").read_bytes()
    assert nfs_server.clients[1].report()["stale_handles"] >= 1


class TestNfs(StoreTests):
    @pytest.fixture
    def store_url(self, nfs_server: Any) -> str:
        return str(nfs_server.clients[0].mountpoint / f"conformance-{uuid.uuid4().hex}")


def _save(store: ckptstore.CheckpointStore, epoch: int, loss: float) -> None:
    store.save_state(
        epoch, {"w": np.full(1000, epoch, dtype=np.float32)}, serializer="numpy", metrics={"val_loss": loss}
    )


def test_gc_copes_with_silly_renamed_files(nfs_server: Any) -> None:
    url = str(_clients(nfs_server, f"silly-{uuid.uuid4().hex}")[0])
    store = ckptstore.open(url, monitor="val_loss")
    for epoch, loss in [(1, 0.9), (2, 0.8), (3, 0.7), (4, 0.6)]:
        _save(store, epoch, loss)
    first = store.get(1)
    held_file = Path(url) / first.key / next(iter(first.files))
    reader = open(held_file, "rb")  # a reader still loading epoch 1
    pruning = ckptstore.open(url, monitor="val_loss", keep=ckptstore.keep.linear(2))
    report = pruning.gc()
    assert report.deleted == [1, 2]
    assert pruning.epochs() == [3, 4]
    silly = list(Path(url).rglob(".nfs*"))
    assert len(silly) == 1  # the held file, outside epochs/: nothing listed, nothing verifying badly
    assert "epochs" not in silly[0].relative_to(url).parts
    assert len(pruning.verify()) == 2
    assert pruning.gc(dry_run=True).leftovers  # what the .nfs file keeps is still reported
    assert len(reader.read()) == first.files[held_file.name].size  # the reader goes on reading its file
    reader.close()
    pruning.gc()
    assert pruning.gc(dry_run=True).leftovers == ()
    assert list(Path(url).rglob(".nfs*")) == []
    assert pruning.latest().verify().epoch == 4


def test_a_reader_on_another_client_meets_a_deleted_checkpoint_as_a_typed_error(nfs_server: Any) -> None:
    a, b = _clients(nfs_server, f"gone-{uuid.uuid4().hex}")[:2]
    writer = ckptstore.open(str(a), monitor="val_loss")
    for epoch, loss in [(1, 0.9), (2, 0.8), (3, 0.7)]:
        _save(writer, epoch, loss)
    reader = ckptstore.open(str(b), monitor="val_loss")
    old = reader.get(1)  # b looked it up
    ckptstore.open(str(a), monitor="val_loss", keep=ckptstore.keep.linear(1)).gc()
    with pytest.raises(ckptstore.VerificationError):
        old.verify()
    with pytest.raises((ckptstore.CheckpointNotFoundError, ckptstore.VerificationError)):
        old.load()
    assert reader.latest().verify().epoch == 3
