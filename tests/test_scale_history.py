"""A commit's cost does not grow with the history: the index is a bounded head over merged segments.

Each test reads like the guarantee it proves: the head stays bounded, the index read through its
segments equals the one rebuilt from the manifests, no update is lost to a concurrent writer or a
compaction (real processes, local disk and SeaweedFS), a compactor killed at any point leaves a valid
index, and the requests and bytes of a commit are the same at 10 and at 1,000 checkpoints.
"""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import textwrap
import uuid
from pathlib import Path
from typing import Any

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

import ckptstore
from ckptstore.index_segments import FANOUT, PURGE_FACTOR, Delta, SegmentRef, fold, merge, merge_plan

from .conftest import run_child, save_bytes


# -- the pure part: merging deltas is the same as applying them ---------------------------------------------
def _delta(ops: list[tuple[str, int]]) -> Delta:
    entries: dict[str, Any] = {}
    removed: set[str] = set()
    for op, n in ops:
        name = f"{n:04d}"
        if op == "add":
            entries[name] = {"v": len(entries) + 100 * n}
            removed.discard(name)
        else:
            entries.pop(name, None)
            removed.add(name)
    return Delta(checkpoints=entries, removed=frozenset(removed))


ops = st.lists(st.tuples(st.sampled_from(["add", "remove"]), st.integers(0, 12)), max_size=12)


@settings(max_examples=300, deadline=None)
@given(st.lists(ops, min_size=1, max_size=8), st.integers(0, 7))
def test_merging_consecutive_deltas_applies_as_they_do(batches: list[list[tuple[str, int]]], cut: int) -> None:
    deltas = [_delta(b) for b in batches]
    expected = fold(deltas)[0]
    cut = min(cut, len(deltas) - 1)
    merged = deltas[cut]
    for d in deltas[cut + 1 :]:
        merged = merge(merged, d, bottom=cut == 0)
    assert fold([*deltas[:cut], merged])[0] == expected
    if cut == 0 and len(deltas) > 1:
        assert merged.removed == frozenset()  # nothing older to shadow: deletions do not pile up


@pytest.mark.parametrize(
    ("levels", "plan"),
    [
        ([], None),
        ([0] * (FANOUT - 1), None),
        ([0] * FANOUT, (0, FANOUT)),
        ([1, 1, *[0] * FANOUT], (2, 2 + FANOUT)),
        ([2, *[1] * FANOUT], (1, 1 + FANOUT)),
        ([1, 0, 1, 0, 1, 0, 1, 0], None),
    ],
)
def test_the_trailing_run_of_one_level_merges_at_fanout(levels: list[int], plan: tuple[int, int] | None) -> None:
    refs = [SegmentRef(id=f"{i:032x}", level=lvl, count=1) for i, lvl in enumerate(levels)]
    assert merge_plan(refs) == plan


# -- a store with a small head ----------------------------------------------------------------------------
def _named(head: dict[str, Any]) -> set[str]:
    """The segment objects a head names."""
    refs = head["segments"]
    return {f"{s['id']}.json" for s in refs if s["entries"]} | {f"{s['id']}.history.json" for s in refs if s["history"]}


def _segments(root: Path) -> list[str]:
    folder = root / "index.d"
    return sorted(p.name for p in folder.iterdir()) if folder.exists() else []


def test_the_head_stays_bounded_and_the_index_equals_the_rebuilt_one(tmp_path: Path) -> None:
    root = tmp_path / "s"
    with ckptstore.open(root, monitor="val_loss", keep=ckptstore.keep.linear(20), index_head_entries=4) as store:
        for epoch in range(150):
            save_bytes(store, epoch, metrics={"val_loss": ((epoch * 37) % 101) / 100.0})
            head = json.loads((root / "index.json").read_bytes())
            records = len(head["checkpoints"]) + len(head["removed"]) + len(head["history"])
            assert records <= 4, records  # what each commit rewrites, whatever the history
        store.get(140).add_metadata({"note": "kept"})
        store.pin(141)
        store.wait()  # the background merges
        head = json.loads((root / "index.json").read_bytes())
        assert head["version"] == 2 and len(head["segments"]) < 3 * FANOUT
        assert {s["level"] for s in head["segments"]} & {1, 2}, "segments were merged"
        named = _named(head)
        assert set(_segments(root)) == named, "a merged-away segment was left behind"
        maintained = store.index()
        assert sorted(maintained["checkpoints"]) == [f"{e:08d}" for e in store.epochs()]
        assert maintained["checkpoints"]["00000140"]["metadata"] == {"note": "kept"}
        deleted = {h["epoch"] for h in maintained["history"].values()}
        assert deleted == set(range(150)) - set(store.epochs())  # every deletion stays plottable
        rebuilt = store.reindex()
        assert rebuilt["checkpoints"] == maintained["checkpoints"]
        assert rebuilt["history"] == maintained["history"]
        assert [c.epoch for c in store.list(sort_by="epoch", order="desc", limit=3)] == store.epochs()[::-1][:3]


def test_an_old_whole_index_is_read_and_then_migrated(tmp_path: Path) -> None:
    root = tmp_path / "s"
    with ckptstore.open(root, monitor="val_loss") as store:
        for epoch in range(6):
            save_bytes(store, epoch, metrics={"val_loss": 1.0 / (epoch + 1)})
    head = json.loads((root / "index.json").read_bytes())
    version1 = {"format": "ckptstore.index", "version": 1, "checkpoints": head["checkpoints"], "history": {}}
    (root / "index.json").write_text(json.dumps(version1))
    with ckptstore.open(root, index_head_entries=4) as store:
        assert sorted(store.index()["checkpoints"]) == [f"{e:08d}" for e in range(6)]
        save_bytes(store, 6, metrics={"val_loss": 0.01})  # the head is over its cap: flushed
        head = json.loads((root / "index.json").read_bytes())
        assert head["version"] == 2 and head["checkpoints"] == {} and len(head["segments"]) == 1
        assert sorted(store.index()["checkpoints"]) == [f"{e:08d}" for e in range(7)]


def test_a_segment_lost_by_hand_never_hides_a_checkpoint_and_gc_repairs_it(tmp_path: Path) -> None:
    root = tmp_path / "s"
    with ckptstore.open(root, monitor="val_loss", index_head_entries=3) as store:
        for epoch in range(12):
            save_bytes(store, epoch, metrics={"val_loss": 1.0 / (epoch + 1)})
        store.wait()
        for name in _segments(root):
            (root / "index.d" / name).unlink()
        assert store.epochs() == list(range(12))
        assert [c.epoch for c in store.list(sort_by="epoch")] == list(range(12))  # read from the manifests
        store.gc()  # prunes: needs the whole index, finds a segment gone for good, rebuilds
        assert sorted(store.index()["checkpoints"]) == [f"{e:08d}" for e in range(12)]
        assert store.backend.exists("index.json") and all((root / "index.d" / n).exists() for n in _segments(root))
        head = json.loads((root / "index.json").read_bytes())
        assert all((root / "index.d" / f"{s['id']}.json").exists() for s in head["segments"])


@pytest.mark.parametrize("junk", [b"{broken", b'{"format": "ckptstore.index-segment", "checkpoints": 7}', b"[]"])
def test_a_junk_segment_never_hides_or_invents_a_checkpoint(tmp_path: Path, junk: bytes) -> None:
    root = tmp_path / "s"
    with ckptstore.open(root, monitor="val_loss", index_head_entries=3) as store:
        for epoch in range(12):
            save_bytes(store, epoch, metrics={"val_loss": 1.0 / (epoch + 1)})
        store.wait()
        head = json.loads((root / "index.json").read_bytes())
        (root / "index.d" / f"{head['segments'][0]['id']}.json").write_bytes(junk)  # a hostile edit
        assert [c.epoch for c in store.list(sort_by="val_loss", limit=3)] == [11, 10, 9]
        assert [c.epoch for c in store.list(sort_by="epoch")] == list(range(12))
        assert store.best().epoch == 11
        store.gc()
        assert set(store.index()["checkpoints"]) <= {f"{e:08d}" for e in range(12)}  # may lag, never invents
        assert sorted(store.reindex()["checkpoints"]) == [f"{e:08d}" for e in range(12)]


# -- real processes ---------------------------------------------------------------------------------------
WRITER = textwrap.dedent(
    """
    import json, sys, ckptstore
    url, opts, epochs = sys.argv[1], json.loads(sys.argv[2]) or None, json.loads(sys.argv[3])
    store = ckptstore.open(url, storage_options=opts, monitor="val_loss", index_head_entries=2)
    sys.stdin.readline()
    for epoch in epochs:
        with store.save(epoch, metrics={"val_loss": 1.0 / (epoch + 1)}) as tx:
            with tx.open("model.bin") as f:
                f.write(str(epoch).encode())
        if epoch % 5 == 0:
            store.get(epoch).add_metadata({"by": epoch})
    store.close()
    print("done", flush=True)
    """
)


def _race(url: str, opts: dict[str, Any] | None, writers: int, epochs: int) -> None:
    procs = [
        subprocess.Popen(
            [sys.executable, "-c", WRITER, url, json.dumps(opts), json.dumps(list(range(i, epochs, writers)))],
            stdin=subprocess.PIPE,
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            text=True,
        )
        for i in range(writers)
    ]
    for p in procs:  # all open before any saves: the saves overlap
        assert p.stdin is not None
        p.stdin.write("go\n")
        p.stdin.flush()
    for p in procs:
        out, err = p.communicate(timeout=600)
        assert p.returncode == 0 and "done" in out, err


def _assert_nothing_lost(store: ckptstore.CheckpointStore, epochs: int) -> None:
    store.wait()
    index = store.index()["checkpoints"]
    assert sorted(index) == [f"{e:08d}" for e in range(epochs)], "an update of the index was lost"
    for epoch in range(0, epochs, 5):
        assert index[f"{epoch:08d}"]["metadata"] == {"by": epoch}, "a metadata update of the index was lost"
    assert store.reindex()["checkpoints"] == index


def test_concurrent_writers_and_compactions_lose_no_index_update_locally(tmp_path: Path) -> None:
    root = tmp_path / "s"
    _race(str(root), None, writers=3, epochs=60)
    with ckptstore.open(root, monitor="val_loss", index_head_entries=2) as store:
        _assert_nothing_lost(store, 60)


def test_concurrent_writers_and_compactions_lose_no_index_update_on_s3(s3_server: Any) -> None:
    url = str(s3_server.url(f"idx-{uuid.uuid4().hex}"))
    _race(url, s3_server.storage_options, writers=4, epochs=48)
    with ckptstore.open(url, storage_options=s3_server.storage_options, monitor="val_loss") as store:
        _assert_nothing_lost(store, 48)


KILLED = textwrap.dedent(
    """
    import sys, ckptstore
    store = ckptstore.open(sys.argv[1], monitor="val_loss", index_head_entries=2)
    for epoch in range(int(sys.argv[2]), int(sys.argv[3])):
        with store.save(epoch, metrics={"val_loss": 1.0 / (epoch + 1)}) as tx:
            with tx.open("model.bin") as f:
                f.write(b"x")
        print(epoch, flush=True)
    store.close()
    """
)


@pytest.mark.parametrize("point", ["index_after_flush", "index_after_merge"])
def test_a_compactor_killed_at_any_point_leaves_a_valid_index_and_gc_removes_its_segment(
    tmp_path: Path, point: str
) -> None:
    root = tmp_path / "s"
    killed = subprocess.run(
        [sys.executable, "-c", KILLED, str(root), "0", "40"],
        env={**os.environ, "CKPTSTORE_CRASHPOINT": point},
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert killed.returncode == -signal.SIGKILL, killed.stderr
    reported = [int(line) for line in killed.stdout.split()]
    with ckptstore.open(root, monitor="val_loss", index_head_entries=2) as store:
        assert set(reported) <= set(store.epochs())
        index = store.index()["checkpoints"]
        assert set(index) <= {f"{e:08d}" for e in store.epochs()}  # may lag, never invents
        head = json.loads((root / "index.json").read_bytes())
        named = _named(head)
        orphans = [n for n in _segments(root) if n not in named]
        assert orphans, "the kill left the segment it had just written"
        old = 1_000_000_000  # older than any grace period
        for name in orphans:
            os.utime(root / "index.d" / name, (old, old))
        report = store.gc()
        assert sorted(rel for rel, _ in report.leftovers if rel.startswith("index.d/")) == [
            f"index.d/{n}" for n in sorted(orphans)
        ]
        assert set(_segments(root)) == named
    code = KILLED.replace("sys.argv[1]", repr(str(root))).replace("sys.argv[2]", "40").replace("sys.argv[3]", "50")
    resumed = run_child(code)
    assert resumed.returncode == 0, resumed.stderr
    with ckptstore.open(root, monitor="val_loss") as store:
        epochs = store.epochs()
        assert set(range(40, 50)) <= set(epochs) and set(reported) <= set(epochs)
        assert [c.epoch for c in store.list(sort_by="epoch")] == epochs  # the lagging index hides nothing
        lagging = set(store.index()["checkpoints"])
        assert lagging <= {f"{e:08d}" for e in epochs}  # only the killed commit's entry may be missing
        assert len(lagging) >= len(epochs) - 1
        assert sorted(store.reindex()["checkpoints"]) == [f"{e:08d}" for e in epochs]


# -- cost -------------------------------------------------------------------------------------------------
def _counting(store: ckptstore.CheckpointStore) -> dict[str, int]:
    """Count the backend requests of ``store`` and the bytes they move (``index.json``'s head apart)."""
    counts = {"calls": 0, "bytes": 0, "head_written": 0}
    backend = store.backend
    reads = ("read_bytes", "read_many", "read_versioned", "listdir", "exists", "stat_files", "walk", "mtime_ns")
    writes = ("write_if", "write", "create_only", "delete", "rename_dir", "replace_symlink", "open_write")

    def moved(key: object, size: int, written: bool) -> None:
        if key == "index.json":
            counts["head_written"] += size if written else 0
        else:
            counts["bytes"] += size

    for name in (*reads, *writes):
        original = getattr(backend, name, None)
        if original is None:
            continue

        def counted(*args: Any, _name: str = name, _original: Any = original, **kwargs: Any) -> Any:
            counts["calls"] += 1
            if _name == "read_many":
                args = (list(args[0]),)
                counts["calls"] += len(args[0]) - 1
            if _name in ("write_if", "write", "create_only"):
                moved(args[0], len(args[1]), True)
            out = _original(*args, **kwargs)
            if _name == "read_bytes":
                moved(args[0], len(out), False)
            elif _name == "read_versioned" and out is not None:
                moved(args[0], len(out[0]), False)
            elif _name == "read_many":
                counts["bytes"] += sum(len(v) for v in out.values() if v is not None)
            return out

        setattr(backend, name, counted)
    return counts


def _commit_cost(tmp_path: Path, n: int) -> tuple[dict[str, int], dict[str, int]]:
    """Requests and bytes of one commit, and of latest()+best(), after ``n`` commits (head flushed just before).

    The bytes of the head's list of segment names (read and written once by the commit) are counted
    apart: that list holds at most ``FANOUT - 1`` names per level, so it grows as log(n), by about
    90 bytes a name.
    """
    root = tmp_path / f"s{n}"
    with ckptstore.open(root, monitor="val_loss", gc_on_save=False, log_file=False, index_head_entries=16) as store:
        for epoch in range(n):
            save_bytes(store, epoch, metrics={"val_loss": 1.0 / (epoch + 1)})
        store.wait()
        counts = _counting(store)
        save_bytes(store, n, metrics={"val_loss": 1.0 / (n + 1)})
        names = len(json.dumps(json.loads((root / "index.json").read_bytes())["segments"], separators=(",", ":")))
        commit = {**counts, "head_written": counts["head_written"] - names, "segment_names": names}
        counts.update(calls=0, bytes=0, head_written=0)
        assert store.latest().epoch == n and store.best().epoch == n
        return commit, dict(counts)


def test_a_commit_costs_the_same_requests_and_bytes_at_10_and_at_1000_checkpoints(tmp_path: Path) -> None:
    # a head of 16 flushes at its 17th record: both stores are at the same place in that cycle
    small_commit, small_query = _commit_cost(tmp_path, 10 * 17)
    large_commit, large_query = _commit_cost(tmp_path, 60 * 17)
    assert small_commit["calls"] == large_commit["calls"], (small_commit, large_commit)
    assert abs(large_commit["bytes"] - small_commit["bytes"]) <= 64, (small_commit, large_commit)  # wider numbers
    assert abs(large_commit["head_written"] - small_commit["head_written"]) <= 64, (small_commit, large_commit)
    assert large_commit["segment_names"] <= 90 * 7 * 3, large_commit  # at most 7 names per level
    assert small_query["calls"] == large_query["calls"] <= 6, (small_query, large_query)  # 3 each at most
    assert abs(large_query["bytes"] - small_query["bytes"]) <= 64, (small_query, large_query)


# -- queries read what they need --------------------------------------------------------------------------
def test_a_limited_listing_equals_the_head_of_the_full_one_and_builds_only_what_it_returns(tmp_path: Path) -> None:
    from ckptstore.manifests import Manifests

    root = tmp_path / "s"
    with ckptstore.open(root, monitor="val_loss", index_head_entries=8) as store:
        for epoch in range(60):
            save_bytes(store, epoch, metrics={"val_loss": ((epoch * 37) % 61) / 10.0, "acc": (epoch % 7) / 7.0})
        store.get(3).add_metadata({"evaluation": {"bleu": 0.9}, "evaluation_modes": {"bleu": "max"}})
        store.get(4).add_metadata({"evaluation": {"bleu": 0.2}, "evaluation_modes": {"bleu": "max"}})
        store.wait()
        built: list[str] = []
        original = Manifests.from_index_entry

        def counted(self: Manifests, name: str, entry: Any) -> Any:
            built.append(name)
            return original(self, name, entry)

        Manifests.from_index_entry = counted  # type: ignore[method-assign]
        try:
            for sort_by, order in [(None, None), ("acc", None), ("acc", "asc"), ("time", "desc"), ("bleu", None)]:
                full = [c.epoch for c in store.list(sort_by=sort_by, order=order)]  # type: ignore[arg-type]
                built.clear()
                first = [c.epoch for c in store.list(sort_by=sort_by, order=order, limit=4)]  # type: ignore[arg-type]
                assert first == full[:4], (sort_by, order)
                assert len(built) <= 4, (sort_by, built)  # not one per checkpoint
            assert [c.epoch for c in store.top(1, metric="bleu")] == [3]
            assert store.best(metric="bleu").epoch == 3 and store.best(metric="acc").epoch == 6
            built.clear()
            newest = [c.epoch for c in store.list(sort_by="epoch", order="desc", limit=3)]
            assert newest == [59, 58, 57] and built == []  # read from 3 manifests, not the index
        finally:
            Manifests.from_index_entry = original  # type: ignore[method-assign]
        index = json.loads((root / "index.json").read_bytes())
        for name in list(index["checkpoints"]):
            index["checkpoints"][name]["manifest"]["files"] = "junk"  # entries that do not validate
        (root / "index.json").write_text(json.dumps(index))
        damaged = [c.epoch for c in store.list(sort_by="acc", limit=5)]
        assert damaged == [c.epoch for c in store.list(sort_by="acc")][:5]  # the full path read the manifests


def test_with_a_keep_policy_deleted_names_do_not_pile_up_in_the_index(tmp_path: Path) -> None:
    root = tmp_path / "s"
    sizes = []
    with ckptstore.open(root, monitor="val_loss", keep=ckptstore.keep.linear(3), index_head_entries=4) as store:
        for epoch in range(400):
            save_bytes(store, epoch, metrics={"val_loss": 1.0 + epoch})  # the best stays at 0
            if epoch % 25 == 24:
                store.wait()
                head = json.loads((root / "index.json").read_bytes())
                assert sum(s["removed"] for s in head["segments"]) < 4 * 4 + 4, head["segments"]  # purged
                sizes.append(
                    sum((root / "index.d" / f"{s['id']}.json").stat().st_size for s in head["segments"] if s["entries"])
                )
        store.wait()
        # what a full read of the entries costs is bounded by the head's size, not the history's
        entry = max(len(json.dumps(e)) for e in store.index()["checkpoints"].values())
        assert max(sizes) <= (PURGE_FACTOR + FANOUT) * 4 * (entry + 64), sizes
        assert max(sizes[len(sizes) // 2 :]) <= 1.5 * max(sizes[: len(sizes) // 2]), sizes
        kept = store.epochs()
        assert kept == [0, 397, 398, 399]
        document = store.index()
        assert sorted(document["checkpoints"]) == [f"{e:08d}" for e in kept]
        assert {h["epoch"] for h in document["history"].values()} == set(range(1, 397))  # history kept whole
        assert store.reindex()["history"] == document["history"]
        head = json.loads((root / "index.json").read_bytes())
        named = _named(head)
        assert set(_segments(root)) == named
