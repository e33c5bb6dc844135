"""Crash safety (DESIGN 3.1, 3.3, 3.5) and concurrent writers (3.6), with real processes.

A child process saves; it is SIGKILLed at named points of the commit protocol (gofail-style crash
points) or at an arbitrary moment chosen by the parent. A fresh process then checks what a reader
sees: latest() and best() whole and verifying, no dangling pointer, and gc() leaving nothing behind.
"""

from __future__ import annotations

import json
import os
import random
import signal
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest

import ckptstore
from ckptstore._crash import POINTS

from .conftest import run_child

WRITER = """
import os, sys, ckptstore
store = ckptstore.open(sys.argv[1], monitor="val_loss", keep=ckptstore.keep.linear(2))
start = int(sys.argv[2]); stop = int(sys.argv[3])
for epoch in range(start, stop):
    print(f"saving {epoch}", flush=True)
    with store.save(epoch, metrics={"val_loss": 1.0 / (epoch + 1)}) as tx:
        payload = os.urandom(256 * 1024) * 4
        with tx.open("model.bin") as f:
            for i in range(0, len(payload), 65536):
                f.write(payload[i:i + 65536])
        (tx.path / "opt.bin").write_bytes(payload[:100_000])
    print(f"committed {epoch}", flush=True)
"""

CHECKER = """
import json, os, sys, ckptstore
root = sys.argv[1]
store = ckptstore.open(root, monitor="val_loss", keep=ckptstore.keep.linear(2))
out = {"epochs": store.epochs()}
try:
    latest = store.latest(); latest.verify(); out["latest"] = latest.epoch
except ckptstore.CheckpointNotFoundError:
    out["latest"] = None
try:
    best = store.best(); best.verify(); out["best"] = best.epoch
except ckptstore.CheckpointNotFoundError:
    out["best"] = None
store.verify()
store.gc()
out["work"] = os.listdir(os.path.join(root, "work"))
out["trash"] = os.listdir(os.path.join(root, "trash"))
for name in ("best", "last"):
    link = os.path.join(root, name)
    out[name + "_dangles"] = os.path.islink(link) and not os.path.exists(link)
ck = store.restart("auto")
out["restart"] = ck.epoch if ck else None
print(json.dumps(out))
"""


def run_writer(
    root: Path, start: int, stop: int, env: dict[str, str] | None = None
) -> subprocess.CompletedProcess[str]:
    return run_child(
        WRITER.replace("sys.argv[1]", repr(str(root)))
        .replace("sys.argv[2]", str(start))
        .replace("sys.argv[3]", str(stop)),
        env=env,
    )


def check(root: Path) -> dict[str, object]:
    result = run_child(CHECKER.replace("sys.argv[1]", repr(str(root))))
    assert result.returncode == 0, result.stderr
    out: dict[str, object] = json.loads(result.stdout)
    return out


@pytest.mark.parametrize("point", POINTS)
def test_killed_writer_never_leaves_a_visible_partial_epoch(tmp_path: Path, point: str) -> None:
    root = tmp_path / "s"
    assert run_writer(root, 1, 4).returncode == 0
    killed = run_writer(root, 4, 6, env={"CKPTSTORE_CRASHPOINT": point})
    assert killed.returncode == -signal.SIGKILL, killed.stderr
    state = check(root)
    committed_before = point in ("after_rename", "after_last", "after_pointers", "gc_after_trash")
    assert (4 in state["epochs"]) is committed_before  # type: ignore[operator]
    # A writer killed between rename and pointer update leaves a stale pointer: latest() sees the
    # newer committed epoch and repairs the pointer.
    assert state["latest"] == (4 if committed_before else 3)
    assert state["best"] in state["epochs"]  # type: ignore[operator]
    assert state["work"] == []
    assert state["trash"] == []
    assert not state["best_dangles"]
    assert not state["last_dangles"]
    assert state["restart"] == state["latest"]
    # The run resumes and writes the next epoch normally.
    resumed = run_writer(root, 5 if committed_before else 4, 7)
    assert resumed.returncode == 0, resumed.stderr
    assert check(root)["latest"] == 6


def test_random_sigkills_during_a_save_loop_never_lose_a_committed_epoch(tmp_path: Path) -> None:
    root = tmp_path / "s"
    rng = random.Random(1234)
    committed: set[int] = set()
    epoch = 0
    for _ in range(12):
        code = (
            WRITER.replace("sys.argv[1]", repr(str(root)))
            .replace("sys.argv[2]", str(epoch))
            .replace("sys.argv[3]", str(epoch + 50))
        )
        child = subprocess.Popen([sys.executable, "-c", textwrap.dedent(code)], stdout=subprocess.PIPE, text=True)
        assert child.stdout is not None
        target = rng.randint(1, 6)
        for lines, line in enumerate(child.stdout, start=1):
            if line.startswith("committed"):
                committed.add(int(line.split()[1]))
            if lines >= target:
                break
        child.send_signal(signal.SIGKILL)  # lands anywhere in the save that follows
        child.wait()
        state = check(root)
        latest = state["latest"]
        assert isinstance(latest, int)
        assert latest >= max(committed)
        assert state["work"] == []
        assert not state["last_dangles"]
        assert not state["best_dangles"]
        epoch = latest + 1
        committed = {e for e in committed if e > latest - 3}


TWO_WRITERS = """
import sys, ckptstore, multiprocessing as mp

def writer(root, epochs, barrier, results, tag):
    store = ckptstore.open(root)
    for epoch in epochs:
        barrier.wait()
        try:
            with store.save(epoch, metrics={"x": 1.0}) as tx:
                (tx.path / "who.txt").write_text(tag)
            results.put((tag, epoch, "ok"))
        except ckptstore.CommitConflictError:
            results.put((tag, epoch, "conflict"))

if __name__ == "__main__":
    root = sys.argv[1]
    ckptstore.open(root)
    mode = sys.argv[2]
    n = 20
    if mode == "same":
        a = b = list(range(n))
    else:
        a, b = list(range(0, 2 * n, 2)), list(range(1, 2 * n, 2))
    barrier = mp.Barrier(2)
    results = mp.Queue()
    procs = [mp.Process(target=writer, args=(root, e, barrier, results, t)) for e, t in ((a, "A"), (b, "B"))]
    for p in procs: p.start()
    for p in procs: p.join()
    out = [results.get() for _ in range(2 * n)]
    import json; print(json.dumps(out))
"""


@pytest.mark.parametrize("mode", ["same", "different"])
def test_two_writers_never_lose_a_commit_and_one_wins_each_contested_epoch(tmp_path: Path, mode: str) -> None:
    root = tmp_path / "s"
    script = tmp_path / "two_writers.py"
    script.write_text(TWO_WRITERS)
    result = subprocess.run([sys.executable, str(script), str(root), mode], capture_output=True, text=True, timeout=300)
    assert result.returncode == 0, result.stderr
    outcomes = json.loads(result.stdout)
    store = ckptstore.open(root)
    epochs = {c.epoch: c.read_bytes("who.txt").decode() for c in store.list()}
    by_epoch: dict[int, list[tuple[str, str]]] = {}
    for tag, epoch, status in outcomes:
        by_epoch.setdefault(epoch, []).append((tag, status))
    for epoch, results in by_epoch.items():
        winners = [tag for tag, status in results if status == "ok"]
        assert len(winners) == 1, (epoch, results)
        assert epochs[epoch] == winners[0]  # the committed content is the winner's
    assert sorted(epochs) == sorted(by_epoch)
    assert os.listdir(root / "work") == []
    assert store.latest().epoch == max(epochs)
    store.verify()
