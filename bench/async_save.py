"""How long a non-blocking save blocks the training loop, against a plain copy of the same bytes.

Goal (issue "Speed", 2): ``save_state(..., blocking=False)`` blocks only for a snapshot: <= 1.1x a plain
copy (``np.copyto`` into buffers allocated once) of the same bytes, and <= 5 ms whatever the size for
immutable inputs (read-only arrays the caller hands over). The first save allocates the snapshot
buffers and is reported apart; the runs after it reuse them. Every variant runs ``--repeat`` times,
interleaved; medians with min and max are printed. The background work (serialize, hash, write, fsync,
commit) is waited for outside the timed part.

    python bench/async_save.py [--size-mib 1024] [--arrays 16] [--repeat 5] [--dir bench/out]
"""

from __future__ import annotations

import argparse
import shutil
import statistics
import time
from collections.abc import Callable
from pathlib import Path

import numpy as np

import ckptstore


def make_state(size_mib: int, arrays: int) -> dict[str, np.ndarray]:
    per = size_mib * 1024 * 1024 // arrays // 4
    rng = np.random.default_rng(0)
    return {f"layer{i}": rng.random(per, dtype=np.float32) for i in range(arrays)}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--size-mib", type=int, default=256)
    parser.add_argument("--arrays", type=int, default=16)
    parser.add_argument("--repeat", type=int, default=5)
    parser.add_argument("--dir", type=Path, default=Path("bench/out/async"))
    args = parser.parse_args()
    shutil.rmtree(args.dir, ignore_errors=True)
    state = make_state(args.size_mib, args.arrays)
    frozen = {k: v.copy() for k, v in state.items()}
    for array in frozen.values():
        array.setflags(write=False)
    buffers = {k: np.empty_like(v) for k, v in state.items()}
    for k, v in state.items():  # touch the baseline's buffers once, as the store's first save does its own
        np.copyto(buffers[k], v)
    store = ckptstore.open(args.dir / "store", log_file=False)
    epoch = [0]

    def save(value: dict[str, np.ndarray]) -> float:
        epoch[0] += 1
        started = time.perf_counter()
        store.save_state(epoch[0], value, serializer="numpy", blocking=False)
        blocked = time.perf_counter() - started
        store.wait()  # the background work, outside the timed part
        return blocked

    def copy() -> float:
        started = time.perf_counter()
        for k, v in state.items():
            np.copyto(buffers[k], v)
        return time.perf_counter() - started

    first = save(state)  # allocates the snapshot buffers
    variants: dict[str, Callable[[], float]] = {
        "plain copy (baseline)": copy,
        "save_state(blocking=False)": lambda: save(state),
        "save_state(blocking=False), read-only arrays": lambda: save(frozen),
    }
    times: dict[str, list[float]] = {name: [] for name in variants}
    for _ in range(args.repeat):
        for name, run in variants.items():
            times[name].append(run())
    base = statistics.median(times["plain copy (baseline)"])
    print(f"{args.size_mib} MiB in {args.arrays} arrays, {args.repeat} interleaved runs (median [min, max])")
    print(f"first non-blocking save (allocates its buffers): {first * 1e3:.1f} ms blocked")
    for name, values in times.items():
        med = statistics.median(values)
        print(
            f"{name:48s} {med * 1e3:9.2f} ms [{min(values) * 1e3:.2f}, {max(values) * 1e3:.2f}]"
            f"  ratio {med / base:5.2f}"
        )
    store.close()
    shutil.rmtree(args.dir, ignore_errors=True)


if __name__ == "__main__":
    main()
