"""Shared pieces of the local benchmarks: the state, interleaved timing, cache dropping, reports.

Every script measures its baseline in the same run as the paths it compares, runs the variants
interleaved (A B C A B C ...) so a slow minute of a shared disk hits all of them alike, and prints the
median, min and max of each with the ratio of the medians to the baseline. Results also go to
``bench/out/<script>-<size>MiB.json`` for ``bench/plot.py``.
"""

from __future__ import annotations

import argparse
import contextlib
import json
import os
import platform
import shutil
import statistics
import sys
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np

CHUNK = 8 * 1024 * 1024
OUT = Path(__file__).resolve().parent / "out"


def parser(doc: str | None) -> argparse.ArgumentParser:
    """The common options: ``--size-mib``, ``--tensors``, ``--repeat``, ``--dir``, ``--only``."""
    p = argparse.ArgumentParser(description=doc, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--size-mib", type=int, default=64, help="total bytes of the state (64, 1024, 4096)")
    p.add_argument("--tensors", type=int, default=16, help="number of float32 tensors the bytes are split into")
    p.add_argument("--repeat", type=int, default=5, help="interleaved runs of each variant")
    p.add_argument("--dir", default=str(OUT / "scratch"), help="where files are written (same disk as a store)")
    p.add_argument("--only", default="", help="comma-separated substrings: run only matching variants (+ baseline)")
    return p


def make_arrays(size_mib: int, tensors: int) -> dict[str, np.ndarray]:
    """``tensors`` float32 arrays totalling ``size_mib`` MiB (random, so nothing compresses or dedups)."""
    per = size_mib * 1024 * 1024 // tensors // 4
    rng = np.random.default_rng(0)
    return {f"layer{i:02d}.weight": rng.standard_normal(per, dtype=np.float32) for i in range(tensors)}


def fsync_dir(path: Path) -> None:
    """Fsync a directory (the entry of a new file is durable only then)."""
    fd = os.open(path, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


def drop_cache(paths: list[Path]) -> None:
    """Evict ``paths`` (files or trees) from the page cache with ``posix_fadvise(POSIX_FADV_DONTNEED)``.

    The files were fsynced, so their pages are clean and the kernel drops them; the next read comes
    from the disk. Per file, so other processes' cache is left alone (no ``drop_caches``).
    """
    for path in paths:
        files = [path] if path.is_file() else [p for p in path.rglob("*") if p.is_file()]
        for f in files:
            fd = os.open(f, os.O_RDONLY)
            try:
                os.fdatasync(fd)
                os.posix_fadvise(fd, 0, 0, os.POSIX_FADV_DONTNEED)
            finally:
                os.close(fd)


def cached_fraction(path: Path) -> float:
    """The fraction of ``path``'s pages in the page cache (``mincore``), to check :func:`drop_cache` worked."""
    import ctypes
    import mmap

    size = path.stat().st_size
    if not size:
        return 0.0
    libc = ctypes.CDLL(None, use_errno=True)
    libc.mmap.restype = ctypes.c_void_p
    libc.mmap.argtypes = [ctypes.c_void_p, ctypes.c_size_t, ctypes.c_int, ctypes.c_int, ctypes.c_int, ctypes.c_long]
    libc.munmap.argtypes = [ctypes.c_void_p, ctypes.c_size_t]
    libc.mincore.argtypes = [ctypes.c_void_p, ctypes.c_size_t, ctypes.c_void_p]
    fd = os.open(path, os.O_RDONLY)
    try:
        addr = libc.mmap(None, size, mmap.PROT_READ, mmap.MAP_SHARED, fd, 0)
        try:
            pages = (size + mmap.PAGESIZE - 1) // mmap.PAGESIZE
            vec = (ctypes.c_ubyte * pages)()
            libc.mincore(addr, size, vec)
            return sum(v & 1 for v in vec) / pages
        finally:
            libc.munmap(addr, size)
    finally:
        os.close(fd)


def raw_write(arrays: dict[str, np.ndarray], out: Path) -> None:
    """The floor: the same bytes into one file, 8 MiB per ``write``, then ``fsync`` (file and folder)."""
    out.mkdir(parents=True)
    with open(out / "raw.bin", "wb", buffering=0) as f:
        for arr in arrays.values():
            view = memoryview(arr.reshape(-1).view(np.uint8))
            for i in range(0, len(view), CHUNK):
                f.write(view[i : i + CHUNK])
        os.fsync(f.fileno())
    fsync_dir(out)


READ_CHUNK = 1024 * 1024
"""Bytes per ``readinto`` of the raw-read floor.

Reading 8 MiB per call into freshly allocated memory was no floor on this machine: at 1 GiB it took
0.9-2.7 s, against 0.53 s for 1 MiB per call and 0.52 s into memory already faulted in (each 8 MiB
call faults its destination in inside the read). Until 2026-12-06 the floor read 8 MiB per call, and
ratios to it (1 GiB: 0.16-0.28) flattered every loader; they are not comparable with later ones.
"""


def raw_read(path: Path) -> np.ndarray:
    """The floor of a load: allocate the destination and ``readinto`` it 1 MiB at a time (:data:`READ_CHUNK`)."""
    size = path.stat().st_size
    buf = np.empty(size, dtype=np.uint8)
    view = memoryview(buf)
    with open(path, "rb", buffering=0) as f:
        done = 0
        while done < size:
            n = f.readinto(view[done : done + READ_CHUNK])
            if not n:
                break
            done += n
    return buf


def raw_read_parallel(path: Path, threads: int = 4) -> np.ndarray:
    """:func:`raw_read` with ``threads`` readers on contiguous ranges (a disk that likes queue depth)."""
    from concurrent.futures import ThreadPoolExecutor

    size = path.stat().st_size
    buf = np.empty(size, dtype=np.uint8)
    view = memoryview(buf)
    step = -(-size // threads // CHUNK) * CHUNK or CHUNK

    def part(start: int) -> None:
        fd = os.open(path, os.O_RDONLY)
        try:
            end = min(start + step, size)
            pos = start
            while pos < end:
                n = os.preadv(fd, [view[pos : min(pos + READ_CHUNK, end)]], pos)
                if not n:
                    break
                pos += n
        finally:
            os.close(fd)

    with ThreadPoolExecutor(max_workers=threads) as pool:
        list(pool.map(part, range(0, size, step)))
    return buf


COMPACT = Path("/proc/sys/vm/compact_memory")


def compact_memory() -> bool:
    """Ask the kernel to compact free memory (untimed, before every run), when this process may.

    numpy asks for transparent huge pages on large arrays (``madvise``), and with the kernel's
    ``defrag=madvise`` a huge-page fault compacts memory synchronously when free memory is
    fragmented, which the variant run before it (mapping, freeing gigabytes) leaves behind. So every
    variant starts from compacted memory. It did not remove the raw-read floor's stalls here (64 MiB:
    33 ms to 228 ms in one run, with or without it): those come with faulting in freshly allocated
    memory inside the read (see :data:`READ_CHUNK`). Where ``/proc/sys/vm/compact_memory`` is not
    writable (not root, not Linux) nothing is done and the report says so.
    """
    try:
        COMPACT.write_text("1\n")
    except OSError:
        return False
    return True


class Runner:
    """Runs named variants interleaved and reports medians, mins, maxes and ratios to a baseline."""

    def __init__(self, name: str, args: argparse.Namespace, total_bytes: int, baseline: str) -> None:
        self.name = name
        self.args = args
        self.total = total_bytes
        self.baseline = baseline
        self.variants: dict[str, tuple[Callable[[int], Any], Callable[[int], Any] | None]] = {}
        self.times: dict[str, list[float]] = {}
        self.skipped: dict[str, str] = {}
        self.compacted = True  # every timed run started from compacted memory (see compact_memory)
        only = [s.strip() for s in args.only.split(",") if s.strip()]
        self._only = only

    def add(self, label: str, run: Callable[[int], Any], before: Callable[[int], Any] | None = None) -> None:
        """Add a variant; ``before(rep)`` runs untimed first (clean up, drop the cache)."""
        if self._only and label != self.baseline and not any(s in label for s in self._only):
            return
        self.variants[label] = (run, before)
        self.times[label] = []

    def skip(self, label: str, why: str) -> None:
        """Record a variant that could not run, and why (printed and saved)."""
        self.skipped[label] = why

    def run(self) -> None:
        """Run every variant ``--repeat`` times, interleaved; print the table; save the JSON."""
        for rep in range(self.args.repeat):
            for label, (fn, before) in self.variants.items():
                if before is not None:
                    before(rep)
                os.sync()
                self.compacted = compact_memory() and self.compacted
                start = time.perf_counter()
                fn(rep)
                self.times[label].append(time.perf_counter() - start)
            print(f"  run {rep + 1}/{self.args.repeat} done", file=sys.stderr, flush=True)
        self.report()

    def report(self) -> None:
        """Print the table and write ``bench/out/<name>-<size>MiB.json``."""
        floor = statistics.median(self.times[self.baseline])
        floor_min = min(self.times[self.baseline])
        gib = self.total / 2**30
        print(
            f"\n{self.name}: {gib:.3f} GiB in {self.args.tensors} tensors, {self.args.repeat} interleaved runs; "
            f"ratio = median / median of {self.baseline!r}; min ratio = min / min of it"
        )
        print(
            f"  {'variant':<44} {'median s':>9} {'min s':>8} {'max s':>8} {'s/GiB':>7} {'ratio':>6} {'min ratio':>9}"
            "  (min-max ratio)"
        )
        rows = []
        for label, samples in self.times.items():
            med, lo, hi = statistics.median(samples), min(samples), max(samples)
            ratio = med / floor
            print(
                f"  {label:<44} {med:9.3f} {lo:8.3f} {hi:8.3f} {med / gib:7.2f} {ratio:6.2f} {lo / floor_min:9.2f}"
                f"  ({lo / floor:.2f}-{hi / floor:.2f})"
            )
            rows.append(
                {
                    "variant": label,
                    "median": med,
                    "min": lo,
                    "max": hi,
                    "ratio": ratio,
                    "min_ratio": lo / floor_min,
                    "samples": samples,
                }
            )
        for label, why in self.skipped.items():
            print(f"  {label:<44} skipped: {why}")
        OUT.mkdir(parents=True, exist_ok=True)
        record = {
            "bench": self.name,
            "size_mib": self.args.size_mib,
            "bytes": self.total,
            "tensors": self.args.tensors,
            "repeat": self.args.repeat,
            "baseline": self.baseline,
            "rows": rows,
            "skipped": self.skipped,
            "machine": machine(),
            "compacted_before_each_run": self.compacted,
            "when": time.strftime("%Y-%m-%d %H:%M:%S"),
        }
        (OUT / f"{self.name}-{self.args.size_mib}MiB.json").write_text(json.dumps(record, indent=1))


def machine() -> dict[str, Any]:
    """What the figures were measured on."""
    cpu = platform.processor() or platform.machine()
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                cpu = line.split(":", 1)[1].strip()
                break
    except OSError:
        pass
    mem = 0
    with contextlib.suppress(ValueError, OSError):
        mem = os.sysconf("SC_PAGE_SIZE") * os.sysconf("SC_PHYS_PAGES")
    return {
        "cpu": cpu,
        "cores": os.cpu_count(),
        "ram_gib": round(mem / 2**30, 1),
        "kernel": platform.release(),
        "python": platform.python_version(),
    }


def clean(path: Path) -> None:
    """Remove a file or a tree if present."""
    if path.is_dir():
        shutil.rmtree(path, ignore_errors=True)
    elif path.exists():
        path.unlink()
