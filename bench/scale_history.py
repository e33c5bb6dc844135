"""What a commit and a query cost as the history grows: N = 10 .. 100,000 checkpoints (issue 16).

One store per backend grows through the sizes asked, in ascending order: the history is made of real
commits through the store's API (``store.save`` with a 4-byte file and a ``val_loss`` metric, no keep
policy, ``gc_on_save=False``, ``log_file=False``), so the index, its head and its merged segments are
the ones a training run leaves; the time the history took to build is printed. At each size the
script runs each query ``--repeat`` times (``latest()``, ``best()``, ``list(limit=5)`` by the monitor,
best first, ``list(sort_by="epoch", order="desc", limit=5)``, ``top(5)`` and ``gc(dry_run=True)``),
then measures ``--commits`` more commits one by one (by default a whole cycle of the index's head,
which is flushed into a segment once every ``index_head_entries + 1`` commits).

For every operation it reports the calls the store makes to its backend (a batch read counts one per
object; on local disk a call is a file-system operation, and the payload's own write and fsync in the
staging folder are not backend calls), the bytes those calls move (read and written), the wall time
(median, min and max) and its ratio to the smallest size. On S3 (SeaweedFS, started by the script) it
also counts the HTTP requests botocore sends. A commit's calls and bytes are its own (the calling
thread's); the background merges of the index run in another thread and are reported apart,
amortized over the commits that built the history. Calls and bytes are exact; times depend on the
machine and on what else runs on it. Nothing is asserted.

    python bench/scale_history.py                                   # local 10 .. 100,000, S3 10 .. 10,000
    python bench/scale_history.py --sizes 10,1000 --s3-sizes 10     # a quick run
    python bench/scale_history.py --build-procs 2                   # build the history with 2 writer processes

``--build-procs P`` builds each history with P processes committing disjoint epochs to the same store
at once (real commits, racing for the index's head like writers of one store do); the measurements
are always taken by this process alone (the merge columns then count only the merges this process ran).
"""

from __future__ import annotations

import argparse
import itertools
import json
import shutil
import signal
import statistics
import subprocess
import sys
import tempfile
import textwrap
import threading
import time
import uuid
from collections import Counter
from collections.abc import Callable
from pathlib import Path
from typing import Any

from _common import OUT, machine

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

import ckptstore
from ckptstore.backends.base import Backend

MONITOR = "val_loss"
QUERIES: dict[str, Callable[[ckptstore.CheckpointStore], Any]] = {
    "latest()": lambda s: s.latest(),
    "best()": lambda s: s.best(),
    "list(limit=5)": lambda s: s.list(limit=5),
    "list(epoch, desc, limit=5)": lambda s: s.list(sort_by="epoch", order="desc", limit=5),
    "top(5)": lambda s: s.top(5),
    "gc(dry_run=True)": lambda s: s.gc(dry_run=True),
}
_OPERATIONS = sorted(
    name
    for name, value in vars(Backend).items()
    if callable(value) and not name.startswith("_") and name not in {"lock", "describe", "local_path", "key_bytes"}
)
_WRITES_DATA = ("write_if", "write", "create_only")
BACKGROUND = "ckptstore-index"  # the name of the index's compaction thread

BUILDER = textwrap.dedent(
    """
    import json, sys, ckptstore
    url, opts, head, epochs = sys.argv[1], json.loads(sys.argv[2]) or None, int(sys.argv[3]), json.loads(sys.argv[4])
    store = ckptstore.open(url, storage_options=opts, monitor="val_loss", gc_on_save=False, log_file=False,
                           progress=False, index_head_entries=head)
    for epoch in range(*epochs):
        with store.save(epoch, metrics={"val_loss": ((epoch * 7919) % 10007) / 10007 + 1 / (epoch + 1)}) as tx:
            with tx.open("model.bin") as f:
                f.write(b"data")
    store.close()
    print("done", flush=True)
    """
)


def metric(epoch: int) -> float:
    """A val_loss that wanders (so the best is rarely the newest) and slowly improves."""
    return ((epoch * 7919) % 10007) / 10007 + 1 / (epoch + 1)


class Meter:
    """Counts the store's backend calls and the bytes they move, per thread kind, and botocore's HTTP requests."""

    def __init__(self, store: ckptstore.CheckpointStore) -> None:
        self.fg: Counter[str] = Counter()
        self.bg: Counter[str] = Counter()
        self.http: Counter[str] = Counter()
        self._depth = threading.local()
        backend = store.backend
        for name in _OPERATIONS:
            original = getattr(backend, name, None)
            if original is not None:
                setattr(backend, name, self._wrap(name, original))
        if backend.scheme == "s3":
            backend.exists("ckptstore.json")  # the client exists once a request was made
            backend.fs.s3.meta.events.register("before-send.s3", self._sent)

    def _sent(self, event_name: str, **_: Any) -> None:
        self.http[event_name.rsplit(".", 1)[-1]] += 1

    def _wrap(self, name: str, original: Callable[..., Any]) -> Callable[..., Any]:
        def counted(*args: Any, **kwargs: Any) -> Any:
            depth = getattr(self._depth, "n", 0)
            counts = self.bg if threading.current_thread().name == BACKGROUND else self.fg
            if name == "read_many":
                args = (list(args[0]), *args[1:])
            if not depth:  # only the store's own calls, not those one operation makes of another
                counts["calls"] += len(args[0]) if name == "read_many" else 1
                counts[f"op:{name}"] += len(args[0]) if name == "read_many" else 1
                if name in _WRITES_DATA:
                    counts["bytes"] += len(args[1])
            self._depth.n = depth + 1
            try:
                out = original(*args, **kwargs)
            finally:
                self._depth.n = depth
            if not depth:
                if name == "read_bytes":
                    counts["bytes"] += len(out)
                elif name == "read_versioned" and out is not None:
                    counts["bytes"] += len(out[0])
                elif name == "read_many":
                    counts["bytes"] += sum(len(v) for v in out.values() if v is not None)
            return out

        return counted

    def reset(self) -> None:
        self.fg.clear()
        self.bg.clear()
        self.http.clear()

    def snapshot(self) -> dict[str, Any]:
        return {
            "calls": self.fg["calls"],
            "bytes": self.fg["bytes"],
            "ops": {k[3:]: v for k, v in sorted(self.fg.items()) if k.startswith("op:")},
            "bg_calls": self.bg["calls"],
            "bg_bytes": self.bg["bytes"],
            "http": sum(self.http.values()) if self.http else None,
            "http_ops": dict(sorted(self.http.items())),
        }


def commit(store: ckptstore.CheckpointStore, epoch: int) -> None:
    with store.save(epoch, metrics={MONITOR: metric(epoch)}) as tx, tx.open("model.bin") as f:
        f.write(b"data")


def build(
    store: ckptstore.CheckpointStore,
    url: str,
    opts: dict[str, Any] | None,
    head: int,
    start: int,
    end: int,
    procs: int,
) -> None:
    """Commit epochs ``start .. end-1`` through the store's API (here, or in ``procs`` writer processes)."""
    if end <= start:
        return
    if procs <= 1:
        step = max(1, (end - start) // 10)
        for epoch in range(start, end):
            commit(store, epoch)
            if (epoch - start + 1) % step == 0 and end - start >= 1000:
                print(f"    {epoch + 1:,} committed", file=sys.stderr, flush=True)
        return
    bounds = [start + (end - start) * i // procs for i in range(procs + 1)]
    children = [
        subprocess.Popen(
            [sys.executable, "-c", BUILDER, url, json.dumps(opts), str(head), json.dumps([lo, hi])],
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            text=True,
        )
        for lo, hi in itertools.pairwise(bounds)
        if hi > lo
    ]
    for child in children:
        out, err = child.communicate()
        if child.returncode != 0 or "done" not in out:
            raise SystemExit(f"a builder process failed:\n{err}")


def timed(fn: Callable[[], Any]) -> float:
    start = time.perf_counter()
    fn()
    return time.perf_counter() - start


def summarize(samples: list[dict[str, Any]], times: list[float]) -> dict[str, Any]:
    def med(key: str) -> float | None:
        values = [s[key] for s in samples if s[key] is not None]
        return statistics.median(values) if values else None

    return {
        "ms": {
            "median": 1000 * statistics.median(times),
            "min": 1000 * min(times),
            "max": 1000 * max(times),
        },
        "calls": med("calls"),
        "calls_max": max(s["calls"] for s in samples),
        "bytes": med("bytes"),
        "bytes_max": max(s["bytes"] for s in samples),
        "http": med("http"),
        "ops": samples[len(samples) // 2]["ops"],
        "http_ops": samples[len(samples) // 2]["http_ops"],
        "samples": samples,
    }


def measure(
    label: str,
    url: str,
    opts: dict[str, Any] | None,
    sizes: list[int],
    args: argparse.Namespace,
    rows: list[dict[str, Any]],
) -> None:
    """Grow one store through ``sizes`` and measure commits and queries at each."""
    store = ckptstore.open(
        url,
        storage_options=opts,
        monitor=MONITOR,
        gc_on_save=False,
        log_file=False,
        progress=False,
        index_head_entries=args.head,
    )
    meter = Meter(store)
    have = 0
    for n in sizes:
        print(f"  {label}: building {have:,} -> {n:,} checkpoints", file=sys.stderr, flush=True)
        meter.reset()
        build_s = timed(lambda h=have, n=n: build(store, url, opts, args.head, h, n, args.build_procs))
        wait_s = timed(store.wait)  # merges still running in the background
        built = {
            "commits": n - have,
            "seconds": build_s,
            "wait_seconds": wait_s,
            "procs": args.build_procs,
            "bg_calls": meter.bg["calls"],
            "bg_bytes": meter.bg["bytes"],
            "fg_calls": meter.fg["calls"],
            "fg_bytes": meter.fg["bytes"],
        }
        have = n
        result: dict[str, Any] = {"backend": label, "n": n, "build": built}
        head_bytes = len(store.backend.read_bytes("index.json"))
        segments = json.loads(store.backend.read_bytes("index.json"))["segments"]
        result["index"] = {
            "head_bytes": head_bytes,
            "segments": len(segments),
            "levels": sorted(s["level"] for s in segments),
            "segment_bytes": sum(size for size, _ in store.backend.stat_files("index.d").values()),
        }
        for name, query in QUERIES.items():
            samples, times = [], []
            for _ in range(args.repeat):
                store.wait()
                meter.reset()
                times.append(timed(lambda q=query: q(store)))
                samples.append(meter.snapshot())
            result[name] = summarize(samples, times)
        # then commits N+1, N+2, ... one at a time; the merges one of them triggers are reported apart
        samples, times = [], []
        for _ in range(args.commits):
            store.wait()
            meter.reset()
            times.append(timed(lambda h=have: commit(store, h)))
            store.wait()
            samples.append(meter.snapshot())
            have += 1
        result["commit"] = summarize(samples, times)
        rows.append(result)
        save(args, rows)  # after each size: a long run stopped early keeps what it measured
        print(
            f"  {label} N={n:,}: commit {result['commit']['ms']['median']:.1f} ms, "
            f"list(limit=5) {result['list(limit=5)']['ms']['median']:.0f} ms",
            file=sys.stderr,
            flush=True,
        )
    store.close()


def save(args: argparse.Namespace, rows: list[dict[str, Any]]) -> None:
    args.json.parent.mkdir(parents=True, exist_ok=True)
    record = {"args": {k: str(v) for k, v in vars(args).items()}, "rows": rows, "machine": machine()}
    args.json.write_text(json.dumps(record, indent=1))


def fmt_bytes(n: float | None) -> str:
    if n is None:
        return "-"
    for unit, size in (("MB", 1e6), ("KB", 1e3)):
        if n >= size:
            return f"{n / size:.1f} {unit}"
    return f"{n:.0f} B"


def report(rows: list[dict[str, Any]]) -> None:
    for label in dict.fromkeys(r["backend"] for r in rows):
        mine = [r for r in rows if r["backend"] == label]
        base = mine[0]
        s3 = any(r["commit"]["http"] is not None for r in mine)
        print(f"\n{label}: building the history (real commits; merges in the background)")
        print(
            f"  {'N':>8} {'commits':>8} {'procs':>5} {'build s':>8} {'ms/commit':>9} {'merge calls':>11} "
            f"{'merge bytes/commit':>18} {'head':>8} {'segments':>8} {'segment bytes':>13}"
        )
        for r in mine:
            b, ix = r["build"], r["index"]
            per = 1000 * b["seconds"] / b["commits"] if b["commits"] else 0.0
            print(
                f"  {r['n']:>8,} {b['commits']:>8,} {b['procs']:>5} {b['seconds']:8.1f} {per:9.1f} "
                f"{b['bg_calls']:>11,} {fmt_bytes(b['bg_bytes'] / max(b['commits'], 1)):>18} "
                f"{fmt_bytes(ix['head_bytes']):>8} {ix['segments']:>8} {fmt_bytes(ix['segment_bytes']):>13}"
            )
        print(
            f"\n{label}: per operation (calls and bytes: median, max in brackets; ms: median (min-max); "
            f"ratio = median ms / median ms at N={base['n']:,})"
        )
        http = f" {'HTTP':>5}" if s3 else ""
        print(f"  {'operation':<27} {'N':>8} {'calls':>11} {'bytes':>20}{http} {'ms':>24} {'ratio':>6}")
        for op in ("commit", *QUERIES):
            for r in mine:
                m = r[op]
                calls = f"{m['calls']:.0f} [{m['calls_max']}]"
                size = f"{fmt_bytes(m['bytes'])} [{fmt_bytes(m['bytes_max'])}]"
                ms = m["ms"]
                times = f"{ms['median']:.1f} ({ms['min']:.1f}-{ms['max']:.1f})"
                ratio = ms["median"] / base[op]["ms"]["median"]
                h = f" {m['http']:>5.0f}" if s3 and m["http"] is not None else (f" {'-':>5}" if s3 else "")
                print(f"  {op:<27} {r['n']:>8,} {calls:>11} {size:>20}{h} {times:>24} {ratio:6.2f}")


def sizes_arg(text: str) -> list[int]:
    """``"10,1_000,10k"`` -> ``[10, 1000, 10000]``."""
    out = set()
    for item in text.split(","):
        item = item.strip().lower().replace("_", "")
        if item:
            out.add(int(item[:-1]) * 1000 if item.endswith("k") else int(item))
    return sorted(out - {0})


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--sizes", default="10,1000,10000,100000", help="local-disk history sizes ('' for none)")
    p.add_argument("--s3-sizes", default="10,1000,10000", help="SeaweedFS history sizes ('' for none)")
    p.add_argument(
        "--commits", type=int, default=None, help="commits measured one by one at each size (default: head + 1)"
    )
    p.add_argument("--repeat", type=int, default=3, help="runs of each query at each size")
    p.add_argument("--head", type=int, default=64, help="index_head_entries")
    p.add_argument("--build-procs", type=int, default=1, help="writer processes building each history")
    p.add_argument("--dir", default=None, help="where the local store goes (default: a temporary folder)")
    p.add_argument("--keep", action="store_true", help="leave the stores in place")
    p.add_argument("--json", type=Path, default=OUT / "scale_history.json", help="where the results go")
    p.add_argument("--report", type=Path, default=None, help="only print the tables of results saved earlier")
    args = p.parse_args()
    signal.signal(signal.SIGTERM, lambda *_: sys.exit(143))  # stop SeaweedFS and clean up on a kill
    if args.report:
        report(json.loads(args.report.read_text())["rows"])
        return
    if args.commits is None:
        args.commits = args.head + 1  # a whole cycle of the head (it is flushed once per head + 1 commits)
    local_sizes, s3_sizes = sizes_arg(args.sizes), sizes_arg(args.s3_sizes)
    rows: list[dict[str, Any]] = []
    started = time.time()
    parent = Path(args.dir) if args.dir else Path(tempfile.mkdtemp(prefix="ckptstore-scale-"))
    root = parent / f"scale-{uuid.uuid4().hex[:8]}"
    try:
        if local_sizes:
            measure("local disk", str(root), None, local_sizes, args, rows)
    finally:
        if not args.keep:
            shutil.rmtree(root, ignore_errors=True)
            if not args.dir:
                shutil.rmtree(parent, ignore_errors=True)
    if s3_sizes:
        from backends.s3 import SeaweedFS

        with SeaweedFS() as server:
            url = server.url(f"scale-{uuid.uuid4().hex[:8]}")
            measure("S3 (SeaweedFS)", url, server.storage_options, s3_sizes, args, rows)
    report(rows)
    print(f"\n{time.time() - started:.0f} s in all; machine: {machine()}")
    save(args, rows)
    print(f"results: {args.json} (print them again with --report {args.json})")


if __name__ == "__main__":
    main()
