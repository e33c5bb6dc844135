"""Save 1 GiB of numpy arrays through the store vs plain writes, measured in the same run.

Baseline: the same bytes written with ``open``/``write`` in 8 MiB chunks and ``fsync`` per file (the
floor any durable save must pay). Compared: ``store.save_state(..., serializer="numpy")`` (hashing,
fsyncs, manifest, rename, directory fsyncs, pointers), and ``torch.save`` + fsync of the same tensors
when torch is installed. Each variant runs ``--repeat`` times interleaved; the median time is used and
ratios to the baseline are printed (goal: store <= 1.10x).

    python bench/save_throughput.py [--size-mib 1024] [--arrays 16] [--repeat 3] [--dir bench/out]
"""

from __future__ import annotations

import argparse
import os
import shutil
import statistics
import time
from collections.abc import Callable
from pathlib import Path

import numpy as np

import ckptstore

CHUNK = 8 * 1024 * 1024


def plain_write(arrays: dict[str, np.ndarray], out: Path) -> None:
    out.mkdir(parents=True)
    for name, arr in arrays.items():
        view = memoryview(arr.reshape(-1).view(np.uint8))
        with open(out / f"{name}.bin", "wb", buffering=0) as f:
            for i in range(0, len(view), CHUNK):
                f.write(view[i : i + CHUNK])
            os.fsync(f.fileno())
    fd = os.open(out, os.O_RDONLY)
    os.fsync(fd)
    os.close(fd)


def store_save(arrays: dict[str, np.ndarray], out: Path) -> None:
    store = ckptstore.open(out, log_file=True)
    store.save_state(1, arrays, serializer="numpy")


def torch_save(arrays: dict[str, np.ndarray], out: Path) -> None:
    import torch

    out.mkdir(parents=True)
    tensors = {k: torch.from_numpy(v) for k, v in arrays.items()}
    with open(out / "state.pt", "wb") as f:
        torch.save(tensors, f)
        f.flush()
        os.fsync(f.fileno())


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--size-mib", type=int, default=1024)
    parser.add_argument("--arrays", type=int, default=16)
    parser.add_argument("--repeat", type=int, default=3)
    parser.add_argument("--dir", default="bench/out")
    args = parser.parse_args()

    per = args.size_mib * 1024 * 1024 // args.arrays // 4
    rng = np.random.default_rng(0)
    arrays = {f"layer{i}": rng.standard_normal(per, dtype=np.float32) for i in range(args.arrays)}
    total = sum(a.nbytes for a in arrays.values())
    variants: dict[str, Callable[[dict[str, np.ndarray], Path], None]] = {
        "plain write+fsync": plain_write,
        "ckptstore save_state(numpy)": store_save,
    }
    try:
        import torch  # noqa: F401

        variants["torch.save+fsync"] = torch_save
    except ImportError:
        print("torch not installed: skipping torch.save")
    base = Path(args.dir)
    times: dict[str, list[float]] = {name: [] for name in variants}
    for rep in range(args.repeat):
        for name, fn in variants.items():
            out = base / f"{rep}-{name.split()[0]}"
            shutil.rmtree(out, ignore_errors=True)
            os.sync()
            start = time.perf_counter()
            fn(arrays, out)
            times[name].append(time.perf_counter() - start)
            shutil.rmtree(out, ignore_errors=True)
    floor = statistics.median(times["plain write+fsync"])
    print(f"{total / 2**30:.2f} GiB in {args.arrays} arrays, {args.repeat} runs each, median seconds:")
    for name, samples in times.items():
        median = statistics.median(samples)
        print(
            f"  {name:<30} {median:6.3f} s  {total / median / 1e6:7.0f} MB/s  ratio {median / floor:5.2f}x"
            f"  (runs: {', '.join(f'{s:.3f}' for s in samples)})"
        )
    shutil.rmtree(base, ignore_errors=True)


if __name__ == "__main__":
    main()
