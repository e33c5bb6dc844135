"""torch.distributed.checkpoint through the store: ranks save one checkpoint, load it resharded, async too."""

from __future__ import annotations

import os
import signal
import uuid
from pathlib import Path
from typing import Any

import pytest

import ckptstore

from .test_sharded import on_own_mount, run_ranks

pytestmark = pytest.mark.torch


def _state(mesh: Any, step: int) -> dict[str, Any]:
    import torch
    from torch.distributed.tensor import Shard, distribute_tensor

    full = torch.arange(64, dtype=torch.float32).reshape(16, 4) * step
    return {
        "w": distribute_tensor(full, mesh, [Shard(0)]),
        "bias": torch.full((3,), float(step)),
        "extra": {"step": step, "name": "run"},
    }


def dcp_save(rank: int, world: int, url: str, options: dict[str, Any] | None, kill: int | None) -> int | None:
    import torch.distributed.checkpoint as dcp
    from torch.distributed.device_mesh import init_device_mesh

    from ckptstore.integrations.dcp import StoreWriter

    store = ckptstore.open(url, monitor="loss", storage_options=options)
    mesh = init_device_mesh("cpu", (world,))
    if kill is not None:

        class Dying(StoreWriter):
            def _write(self, tx: Any, plan: Any, planner: Any) -> Any:
                results = super()._write(tx, plan, planner)
                if self._rank == kill:
                    os.kill(os.getpid(), signal.SIGKILL)
                return results

        dcp.save(_state(mesh, 9), storage_writer=Dying(store, 9, metrics={"loss": 0.1}, timeout=10))
        return None
    writer = StoreWriter(store, 3, metrics={"loss": 0.5}, metadata={"by": "dcp"})
    dcp.save(_state(mesh, 3), storage_writer=writer)
    future = dcp.async_save(_state(mesh, 4), storage_writer=StoreWriter(store, 4, metrics={"loss": 0.4}))
    future.result()
    return writer.checkpoint.epoch if writer.checkpoint is not None else None


def dcp_load(rank: int, world: int, url: str, options: dict[str, Any] | None) -> list[float]:
    return [x for epoch in (3, 4) for x in _load(world, url, options, epoch)]


def _load(world: int, url: str, options: dict[str, Any] | None, epoch: int) -> list[float]:
    import torch
    import torch.distributed.checkpoint as dcp
    from torch.distributed.device_mesh import init_device_mesh

    from ckptstore.integrations.dcp import StoreReader

    store = ckptstore.open(url, storage_options=options)
    mesh = init_device_mesh("cpu", (world,))
    state = _state(mesh, 0)
    dcp.load(state, storage_reader=StoreReader(store.get(epoch)))
    full = state["w"].full_tensor()
    expected = torch.arange(64, dtype=torch.float32).reshape(16, 4) * epoch
    assert torch.equal(full, expected), (full, expected)
    assert state["extra"] == {"step": epoch, "name": "run"}
    return state["w"].to_local().flatten().tolist() + state["bias"].tolist()


def _check(url: str, options: dict[str, Any] | None, root: Path | None, mounts: list[str] | None = None) -> None:
    """Save on 4 ranks, load on 2, kill a rank; ``mounts``: rank r works through ``mounts[r]`` (NFS clients)."""
    urls = mounts or [url] * 4

    def ranks(world: int, job: Any, *args: Any, **kwargs: Any) -> dict[int, tuple[str, Any]]:
        return run_ranks(world, on_own_mount, urls[:world], options, job, *args, **kwargs)

    results = ranks(4, dcp_save, None)
    assert {r: s for r, (s, _) in results.items()} == dict.fromkeys(range(4), "ok"), results
    assert results[0][1] == 3
    store = ckptstore.open(url, storage_options=options)
    assert store.epochs() == [3, 4] and store.best().epoch == 4 and store.latest().epoch == 4
    ck = store.get(3).verify()
    assert ck.metrics == {"loss": 0.5} and ck.metadata == {"by": "dcp"}
    assert ck.manifest.shard is not None and ck.manifest.shard["world_size"] == 4
    assert {f"rank-{r:05d}/data.distcp" for r in range(4)} <= set(ck.files)
    loaded = ranks(2, dcp_load)  # saved by 4 ranks, loaded by 2: DCP reshards
    assert {r: s for r, (s, _) in loaded.items()} == {0: "ok", 1: "ok"}, loaded
    assert loaded[1][1][32:35] == [3.0] * 3 and loaded[1][1][-3:] == [4.0] * 3
    results = ranks(3, dcp_save, 1, pg_timeout=10)
    assert 1 not in results and all(status != "ok" for status, _ in results.values()), results
    assert store.epochs() == [3, 4]
    store.gc()
    if root is not None:
        assert os.listdir(root / "work") == []
    else:
        assert not store.backend.walk("epochs/00000009")


def test_dcp_save_on_four_ranks_loads_resharded_on_two_and_a_killed_rank_commits_nothing(tmp_path: Path) -> None:
    _check(str(tmp_path / "store"), None, tmp_path / "store")


@pytest.mark.s3
def test_dcp_on_seaweedfs(s3_server: Any) -> None:
    _check(str(s3_server.url(f"dcp-{uuid.uuid4().hex}")), dict(s3_server.storage_options), None)


@pytest.mark.gcs
def test_dcp_on_the_gcs_emulator(gcs_server: Any) -> None:
    with pytest.warns(ckptstore.SingleWriterWarning):  # the emulator ignores ifGenerationMatch (test_sharded.py)
        _check(str(gcs_server.url(f"dcp-{uuid.uuid4().hex}")), dict(gcs_server.storage_options), None)


@pytest.mark.fuse
def test_dcp_on_nfs_mounts_one_client_per_rank(nfs_server: Any) -> None:
    name = f"dcp-{uuid.uuid4().hex}"
    mounts = [str(client.mountpoint / name) for client in nfs_server.clients[:4]]
    _check(mounts[0], None, Path(mounts[0]), mounts)
