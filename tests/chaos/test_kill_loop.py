"""Crash-kill harness: a writer saving in a loop is SIGKILLed at random moments, again and again.

The writer saves numpy states of random sizes with a keep policy (``linear(3)``), so each save also
runs gc: kills land in writes, fsyncs, uploads, the commit record, pointer and index updates and
deletions. After every kill a fresh store instance in this (different) process checks that
``latest()`` and ``best()`` verify, that the newest committed checkpoints the writer reported are still
there, that every checkpoint present verifies,
that no pointer dangles, and that ``gc()`` leaves nothing behind. Quick mode runs in the normal suite;
``tox -e chaos`` runs the long mode (``CKPTSTORE_CHAOS_KILLS_LOCAL``, ``_S3``, ``_NFS``) and
prints the figures that docs/reliability.md reports.
"""

from __future__ import annotations

import json
import os
import random
import signal
import textwrap
import time
import uuid
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest

import ckptstore

from ..test_object_stores import _spawn

WRITER = textwrap.dedent(
    """
    import json, sys
    import numpy as np
    import ckptstore
    url, options, seed = sys.argv[1], json.loads(sys.argv[2]) or None, int(sys.argv[3])
    rng = np.random.default_rng(seed)
    store = ckptstore.open(url, storage_options=options, monitor="val_loss", keep=ckptstore.keep.linear(3))
    ck = store.restart("auto")
    epoch = ck.epoch if ck else 0
    print("ready", flush=True)
    while True:
        epoch += 1
        size = int(rng.integers(1, 48)) * 65536
        state = {"w": rng.standard_normal(size // 8), "b": np.arange(int(rng.integers(1, 1000)))}
        store.save_state(epoch, state, serializer="numpy", metrics={"val_loss": float(rng.random())})
        print(epoch, flush=True)  # committed (gc ran after the commit, under the keep policy)
    """
)


def _kill_once(url: str, options: dict[str, Any] | None, rng: random.Random, max_delay: float) -> list[int]:
    """Start the writer, let it run a random time, SIGKILL it; return the epochs it reported committed."""
    proc = _spawn(WRITER, url, json.dumps(options), str(rng.randrange(1 << 30)))  # returns once ready
    time.sleep(rng.uniform(0, max_delay))  # the fault's random moment: not a synchronization
    proc.send_signal(signal.SIGKILL)
    out, err = proc.communicate(timeout=60)
    assert proc.returncode == -signal.SIGKILL, err[-2000:]
    return [int(x) for x in out.split()]


def _check(url: str, options: dict[str, Any] | None, committed: set[int]) -> dict[str, int]:
    store = ckptstore.open(url, storage_options=options, monitor="val_loss")
    present = store.epochs()
    # linear(3) keeps the 3 newest besides best and last: a committed epoch may be missing only if at
    # least 3 newer checkpoints are there (the writer may have committed newer ones it never reported).
    lost = {e for e in committed if e not in present and sum(p > e for p in present) < 3}
    assert not lost, f"committed epochs lost after a kill: {sorted(lost)}"
    assert not committed or max(present) >= max(committed)
    for checkpoint in store.list():
        checkpoint.verify()
    if present:
        assert store.latest().verify().epoch == max(present)
        assert store.best().verify().epoch in present
        for name in ("last", "best"):
            pointed = json.loads(store.backend.read_bytes(f"pointers/{name}.json"))["epoch"]
            assert pointed in present, f"the {name} pointer dangles at {pointed}"
    report = store.gc()
    assert store.gc(dry_run=True).leftovers == (), "gc left something behind"
    return {"checkpoints": len(present), "leftovers_removed": len(report.leftovers)}


def run_harness(
    url: str,
    options: dict[str, Any] | None,
    kills: int,
    seed: int,
    max_delay: float,
    after_kill: Callable[[], object] | None = None,
) -> dict[str, Any]:
    """Kill the writer ``kills`` times; ``after_kill`` runs right after each kill (a power cut)."""
    rng = random.Random(seed)
    committed: set[int] = set()
    removed = 0
    started = time.monotonic()
    for _ in range(kills):
        committed.update(_kill_once(url, options, rng, max_delay))
        if after_kill is not None:
            after_kill()
        removed += _check(url, options, committed)["leftovers_removed"]
    return {
        "kills": kills,
        "committed": len(committed),
        "lost": 0,
        "leftovers_removed_by_gc": removed,
        "seconds": round(time.monotonic() - started, 1),
    }


def _figures(name: str, figures: dict[str, Any]) -> None:
    print(f"\nCHAOS {name}: {json.dumps(figures)}")


def test_random_sigkills_on_local_disk_lose_nothing(tmp_path: Path) -> None:
    kills = int(os.environ.get("CKPTSTORE_CHAOS_KILLS_LOCAL", "8"))
    figures = run_harness(str(tmp_path / "store"), None, kills, seed=1, max_delay=1.0)
    _figures("local", figures)
    assert figures["committed"] > 0


@pytest.mark.s3
def test_random_sigkills_on_s3_lose_nothing(s3_server: Any) -> None:
    kills = int(os.environ.get("CKPTSTORE_CHAOS_KILLS_S3", "4"))
    url = s3_server.url(f"chaos-{uuid.uuid4().hex}")
    figures = run_harness(url, s3_server.storage_options, kills, seed=2, max_delay=2.0)
    _figures("s3", figures)
    assert figures["committed"] > 0


@pytest.mark.fuse
def test_random_sigkills_on_an_nfs_client_lose_nothing(nfs_server: Any) -> None:
    kills = int(os.environ.get("CKPTSTORE_CHAOS_KILLS_NFS", "4"))
    url = str(nfs_server.clients[0].mountpoint / f"chaos-{uuid.uuid4().hex}")
    figures = run_harness(url, None, kills, seed=4, max_delay=1.5)
    figures["silly_renames"] = nfs_server.clients[0].report()["silly_renames"]
    _figures("nfs", figures)
    assert figures["committed"] > 0
