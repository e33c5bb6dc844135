"""Sharded saves: many ranks (real processes, gloo on 127.0.0.1) write one checkpoint, whole or not at all."""

from __future__ import annotations

import multiprocessing
import os
import queue
import signal
import socket
import traceback
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest

import ckptstore
from ckptstore import sharded
from ckptstore.errors import InvalidArgumentError

pytestmark = pytest.mark.torch


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def _rank_main(
    rank: int, world: int, port: int, job: Callable[..., Any], args: tuple[Any, ...], out: Any, pg_timeout: float
) -> None:
    import datetime

    import torch.distributed as dist

    dist.init_process_group(
        "gloo",
        init_method=f"tcp://127.0.0.1:{port}",
        rank=rank,
        world_size=world,
        timeout=datetime.timedelta(seconds=pg_timeout),  # a collective with a dead peer fails after this
    )
    try:
        out.put((rank, "ok", job(rank, world, *args)))
    except BaseException as exc:
        out.put((rank, type(exc).__name__, f"{exc}\n{traceback.format_exc()}"))
    finally:
        out.close()
        out.join_thread()  # the result is in the pipe before the process ends
        os._exit(0)  # no teardown collective: a peer may be dead on purpose


def run_ranks(world: int, job: Callable[..., Any], *args: Any, pg_timeout: float = 60) -> dict[int, tuple[str, Any]]:
    """Run ``job(rank, world, *args)`` in ``world`` spawned processes; what each returned or raised."""
    ctx = multiprocessing.get_context("forkserver")  # fresh processes, forked from one that imported torch once
    ctx.set_forkserver_preload(["torch", "torch.distributed.checkpoint", "ckptstore", "tests.test_sharded"])
    out = ctx.Queue()
    port = free_port()
    procs = [ctx.Process(target=_rank_main, args=(r, world, port, job, args, out, pg_timeout)) for r in range(world)]
    for p in procs:
        p.start()
    for p in procs:
        p.join(timeout=240)
    results: dict[int, tuple[str, Any]] = {}
    while True:
        try:
            rank, status, value = out.get(timeout=1)
        except queue.Empty:
            break
        results[rank] = (status, value)
    for p in procs:
        if p.is_alive():
            p.kill()
    return results


def _open(url: str, options: dict[str, Any] | None) -> ckptstore.CheckpointStore:
    return ckptstore.open(url, monitor="loss", storage_options=options)


def save_parts(rank: int, world: int, url: str, options: dict[str, Any] | None) -> list[str]:
    store = _open(url, options)
    with store.save(3, rank=rank, world_size=world, metrics={"loss": 0.5}, timeout=120) as tx:
        with tx.open("weights.bin") as f:
            f.write(bytes([rank]) * (1000 + rank))
        (tx.path / "optim").mkdir()
        (tx.path / "optim" / "state.txt").write_text(f"rank {rank}")
        if rank == 0:
            with tx.open("config.json", "w") as f:
                f.write('{"layers": 2}')
    assert tx.checkpoint is not None
    mine = sharded.part(tx.checkpoint, rank).verify()
    assert mine.read_bytes("weights.bin") == bytes([rank]) * (1000 + rank)
    state = ckptstore.sharded.part(store.get(3), rank)
    store.close()
    return sorted(state.files)


def save_state_parts(rank: int, world: int, url: str, options: dict[str, Any] | None) -> float:
    import numpy as np

    store = _open(url, options)
    ck = store.save_state(
        5, {"w": np.full(4, float(rank))}, serializer="numpy", metrics={"loss": 0.25}, rank=rank, world_size=world
    )
    assert ck is not None
    loaded = sharded.part(ck, rank).load()
    return float(loaded["w"][0])


def one_rank_dies(rank: int, world: int, url: str, options: dict[str, Any] | None, victim: int) -> None:
    store = _open(url, options)
    with store.save(4, rank=rank, world_size=world, metrics={"loss": 0.5}, timeout=5) as tx:
        with tx.open("weights.bin") as f:
            f.write(b"x" * 100)
            if rank == victim:
                os.kill(os.getpid(), signal.SIGKILL)


def one_rank_raises(rank: int, world: int, url: str, options: dict[str, Any] | None) -> None:
    store = _open(url, options)
    with store.save(4, rank=rank, world_size=world, metrics={"loss": 0.5}, timeout=120) as tx:
        with tx.open("weights.bin") as f:
            f.write(b"x" * 100)
        if rank == 2:
            raise RuntimeError("rank 2 ran out of memory")


def check_committed(store: ckptstore.CheckpointStore, world: int) -> None:
    ck = store.get(3).verify()
    assert ck.manifest.shard is not None and ck.manifest.shard["world_size"] == world
    assert store.latest().epoch == 3 and store.best().epoch == 3
    assert "config.json" in sharded.part(ck, 0).files
    for rank in range(world):
        folder = sharded.part_folder(rank)
        assert {f"{folder}/weights.bin", f"{folder}/optim/state.txt", f"{folder}/MANIFEST.json"} <= set(ck.files)
        assert ck.read_bytes(f"{folder}/weights.bin") == bytes([rank]) * (1000 + rank)


def test_every_rank_saves_its_part_and_the_store_holds_one_checkpoint_that_verifies(tmp_path: Path) -> None:
    url = str(tmp_path / "store")
    results = run_ranks(3, save_parts, url, None)
    assert {r: s for r, (s, _) in results.items()} == {0: "ok", 1: "ok", 2: "ok"}, results
    assert results[1][1] == ["MANIFEST.json", "optim/state.txt", "weights.bin"] or "weights.bin" in results[1][1]
    store = _open(url, None)
    check_committed(store, 3)
    assert store.epochs() == [3] and os.listdir(tmp_path / "store" / "work") == []
    results = run_ranks(2, save_state_parts, url, None)
    assert {r: v for r, (_, v) in results.items()} == {0: 0.0, 1: 1.0}, results


def test_a_rank_killed_mid_save_commits_nothing_everywhere_and_gc_cleans_its_part(tmp_path: Path) -> None:
    url = str(tmp_path / "store")
    results = run_ranks(3, one_rank_dies, url, None, 1)
    assert results[0][0] == "ShardTimeoutError", results
    assert results[2][0] in ("ShardedSaveError", "ShardTimeoutError"), results
    assert 1 not in results
    store = _open(url, None)
    assert 4 not in store and store.epochs() == []
    store.gc()
    assert os.listdir(tmp_path / "store" / "work") == []


def test_a_killed_coordinator_commits_nothing_and_gc_removes_its_attempt(tmp_path: Path) -> None:
    url = str(tmp_path / "store")
    results = run_ranks(3, one_rank_dies, url, None, 0)
    assert results[1][0] == results[2][0] == "ShardTimeoutError", results
    store = _open(url, None)
    assert store.epochs() == [] and len(os.listdir(tmp_path / "store" / "work")) == 1
    report = store.gc()
    assert report is not None and os.listdir(tmp_path / "store" / "work") == []


def test_a_rank_that_raises_makes_every_rank_raise_at_once(tmp_path: Path) -> None:
    url = str(tmp_path / "store")
    results = run_ranks(3, one_rank_raises, url, None)
    assert results[2][0] == "RuntimeError"
    assert results[0][0] == "ShardedSaveError" and "rank 2 aborted" in results[0][1], results
    assert results[1][0] == "ShardedSaveError", results
    assert _open(url, None).epochs() == [] and os.listdir(tmp_path / "store" / "work") == []


def test_sharding_arguments_are_checked_before_anything_is_written(tmp_path: Path) -> None:
    store = _open(str(tmp_path / "store"), None)
    for kwargs in ({"rank": 0}, {"rank": 2, "world_size": 2}, {"rank": -1, "world_size": 2}, {"timeout": 3}):
        with pytest.raises(InvalidArgumentError):
            store.save(1, metrics={"loss": 1.0}, **kwargs)  # type: ignore[arg-type]
    with pytest.raises(InvalidArgumentError, match="broadcast"):
        store.save(1, metrics={"loss": 1.0}, rank=0, world_size=2)
    with pytest.raises(InvalidArgumentError, match="not saved sharded"):
        with store.save(1, metrics={"loss": 1.0}) as tx:
            (tx.path / "a").write_bytes(b"a")
        sharded.part(store.get(1), 0)
    with store.save(2, metrics={"loss": 1.0}, rank=0, world_size=1) as tx:  # one rank: no agreement needed
        (tx.path / "a").write_bytes(b"a")
    assert tx.checkpoint is not None and sharded.part(tx.checkpoint, 0).verify().read_bytes("a") == b"a"
    assert sorted(os.listdir(tmp_path / "store" / "work")) == []


@pytest.mark.s3
def test_sharded_save_on_seaweedfs_commits_once_and_a_dead_rank_commits_nothing(s3_server: Any) -> None:
    import uuid

    url, options = str(s3_server.url(f"sharded-{uuid.uuid4().hex}")), dict(s3_server.storage_options)
    results = run_ranks(3, save_parts, url, options)
    assert {r: s for r, (s, _) in results.items()} == {0: "ok", 1: "ok", 2: "ok"}, results
    store = _open(url, options)
    check_committed(store, 3)
    results = run_ranks(3, one_rank_dies, url, options, 2)
    assert results[0][0] == "ShardTimeoutError" and results[1][0] in ("ShardedSaveError", "ShardTimeoutError")
    assert store.epochs() == [3] and 4 not in store
    store.gc()
    assert not store.backend.walk("epochs/00000004")


def on_own_mount(rank: int, world: int, urls: list[str], options: dict[str, Any] | None, job: Any, *args: Any) -> Any:
    """Run ``job`` with this rank's own URL of the shared store (its own NFS client mount)."""
    return job(rank, world, urls[rank], options, *args)


def _saves_once_and_a_dead_rank_commits_nothing(urls: list[str], options: dict[str, Any] | None) -> None:
    """The core of a sharded save on one backend, 3 ranks in real processes.

    All ranks save: one checkpoint that verifies. Rank 1 killed mid-save: nothing committed, rank 0
    removes the attempt. Rank 0 killed mid-save: nothing committed, its attempt (staging folder, or
    claim and parts) stays until gc, which removes it because its process is gone.
    """
    results = run_ranks(3, on_own_mount, urls, options, save_parts)
    assert {r: s for r, (s, _) in results.items()} == {0: "ok", 1: "ok", 2: "ok"}, results
    store = _open(urls[0], options)
    check_committed(store, 3)
    results = run_ranks(3, on_own_mount, urls, options, one_rank_dies, 1)
    assert results[0][0] == "ShardTimeoutError", results
    assert results[2][0] in ("ShardedSaveError", "ShardTimeoutError"), results
    assert 1 not in results
    assert store.epochs() == [3] and 4 not in store
    assert not store.backend.walk("epochs/00000004") and not store.backend.walk("work")
    results = run_ranks(3, on_own_mount, urls, options, one_rank_dies, 0)
    assert results[1][0] == results[2][0] == "ShardTimeoutError", results
    assert store.epochs() == [3] and 4 not in store
    left = {**store.backend.walk("work"), **store.backend.walk("epochs/00000004")}
    assert any("rank-00002/" in key for key in left), left  # a sealed part, waiting for a commit that never came
    store.gc()
    assert not store.backend.walk("epochs/00000004") and not store.backend.walk("work")
    assert store.epochs() == [3] and store.get(3).verify().epoch == 3


@pytest.mark.gcs
def test_sharded_save_on_the_gcs_emulator_commits_once_and_a_dead_rank_commits_nothing(gcs_server: Any) -> None:
    import uuid

    url, options = str(gcs_server.url(f"sharded-{uuid.uuid4().hex}")), dict(gcs_server.storage_options)
    # The emulator ignores ifGenerationMatch, so create-only writes (the claim, the part manifests,
    # MANIFEST.json) are not enforced: the store runs single-writer and says so. What this proves on
    # GCS is the protocol (parts, gathering, one commit, clean-up), not exclusion between two savers.
    with pytest.warns(ckptstore.SingleWriterWarning, match="did not enforce"):
        _saves_once_and_a_dead_rank_commits_nothing([url] * 3, options)


@pytest.mark.fuse
def test_sharded_save_on_nfs_mounts_commits_once_and_a_dead_rank_commits_nothing(nfs_server: Any) -> None:
    """Each rank writes through its own NFS-like client mount of the one shared export."""
    import uuid

    name = f"sharded-{uuid.uuid4().hex}"
    _saves_once_and_a_dead_rank_commits_nothing([str(c.mountpoint / name) for c in nfs_server.clients[:3]], None)
