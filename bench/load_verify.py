"""Load a checkpoint back with verification vs a raw read of the same bytes, in one run.

Baseline: a raw read of the same bytes from a cold page cache (allocate the destination, ``readinto``
1 MiB at a time; 8 MiB per call was no floor here, see ``_common.READ_CHUNK``). Compared,
interleaved: ``Checkpoint.load()`` (verifies: every byte hashed with xxh3-128 and compared with the
manifest before the value is returned) for the numpy, torch and safetensors serializers, and the
peers ``np.load`` (each file), ``torch.load`` and safetensors' ``load_file`` without any
verification. A raw read by 4 threads on contiguous ranges is printed too: the store reads files in
parallel, and on a disk that rewards queue depth that is the stricter floor.
Before every timed run the files it reads are evicted from
the page cache with ``posix_fadvise(POSIX_FADV_DONTNEED)`` (they were fsynced, so the pages are clean
and really go; ``--check-cache`` prints the cached fraction measured with ``mincore`` after eviction).

Loaders that memory-map (``torch.load(mmap=True)``, the torch serializer's default, and the peers
``torch.load`` / ``load_file`` of this version are measured as they are called) return before every
page was touched; ``--touch`` adds a sum over every loaded tensor to each timed run, so all paths end
with every byte in memory. Goal (issue 15): every store path <= 1.10x the raw read.

    python bench/load_verify.py --size-mib 1024 --repeat 5 [--touch]
"""

from __future__ import annotations

import gc
from pathlib import Path
from typing import Any

import numpy as np
from _common import (
    Runner,
    cached_fraction,
    clean,
    drop_cache,
    make_arrays,
    parser,
    raw_read,
    raw_read_parallel,
    raw_write,
)

import ckptstore


def _touch(value: Any) -> None:
    """Read every byte of a loaded state (a sum per tensor), so lazily mapped pages are paid for."""
    items = value.values() if isinstance(value, dict) else [value]
    for v in items:
        if hasattr(v, "numpy"):
            v = v.reshape(-1).view(__import__("torch").uint8).numpy()
        elif isinstance(v, np.ndarray):
            v = v.reshape(-1).view(np.uint8)
        else:
            continue
        int(v[::4096].sum())  # one byte per page faults every page in


def main() -> None:
    p = parser(__doc__)
    p.add_argument("--touch", action="store_true", help="touch every page of what was loaded, inside the timing")
    p.add_argument("--check-cache", action="store_true", help="print the cached fraction after each eviction")
    args = p.parse_args()
    arrays = make_arrays(args.size_mib, args.tensors)
    total = sum(a.nbytes for a in arrays.values())
    base = Path(args.dir) / "load"
    clean(base)
    base.mkdir(parents=True)
    raw_write(arrays, base / "raw")
    raw_file = base / "raw" / "raw.bin"
    stores: dict[str, Any] = {}
    peers: dict[str, Path] = {}
    np_dir = base / "np"
    np_dir.mkdir()
    for name, a in arrays.items():
        np.save(np_dir / f"{name}.npy", a)
    peers["np"] = np_dir
    stores["numpy"] = ckptstore.open(base / "s_numpy")
    stores["numpy"].save_state(1, arrays, serializer="numpy")
    try:
        import torch
    except ImportError:
        torch = None
    if torch is not None:
        tensors = {k: torch.from_numpy(v) for k, v in arrays.items()}
        torch.save(tensors, base / "state.pt")
        peers["torch"] = base / "state.pt"
        stores["torch"] = ckptstore.open(base / "s_torch")
        stores["torch"].save_state(1, tensors, serializer="torch")
        try:
            from safetensors.torch import load_file, save_file

            save_file(tensors, str(base / "model.safetensors"))
            peers["st"] = base / "model.safetensors"
            stores["safetensors"] = ckptstore.open(base / "s_safetensors")
            stores["safetensors"].save_state(1, tensors, serializer="safetensors")
        except ImportError:
            load_file = None
        del tensors
    arrays.clear()
    gc.collect()
    r = Runner("load_verify" + ("_touch" if args.touch else ""), args, total, "raw read")
    kept: dict[str, Any] = {}

    def cold(*paths: Path) -> Any:
        def before(rep: int) -> None:
            del rep
            kept.clear()
            gc.collect()
            drop_cache(list(paths))
            if args.check_cache:
                files = [q for q in paths if q.is_file()] or [q for q in paths[0].rglob("*") if q.is_file()]
                print(f"    cached after eviction: {max(cached_fraction(f) for f in files):.3f}")

        return before

    def timed(load: Any) -> Any:
        def run(rep: int) -> None:
            del rep
            value = load()
            if args.touch:
                _touch(value)
            kept["v"] = value  # freed untimed, in the next before()

        return run

    r.add("raw read", timed(lambda: raw_read(raw_file)), cold(raw_file))
    r.add("raw read, 4 threads (stricter floor)", timed(lambda: raw_read_parallel(raw_file)), cold(raw_file))

    def np_load_all() -> dict[str, np.ndarray]:
        return {f.stem: np.load(f) for f in sorted(np_dir.glob("*.npy"))}

    r.add("np.load (each file, no verification)", timed(np_load_all), cold(np_dir))
    r.add("store load(numpy), verified", timed(lambda: stores["numpy"].get(1).load()), cold(base / "s_numpy"))
    if torch is not None:
        r.add(
            "torch.load (no verification)",
            timed(lambda: torch.load(peers["torch"], weights_only=True)),
            cold(peers["torch"]),
        )
        r.add("store load(torch), verified", timed(lambda: stores["torch"].get(1).load()), cold(base / "s_torch"))
        r.add(
            "store load(torch, mmap=False), verified",
            timed(lambda: stores["torch"].get(1).load(mmap=False)),
            cold(base / "s_torch"),
        )
        if load_file is not None:
            r.add(
                "safetensors load_file (no verification)",
                timed(lambda: load_file(str(peers["st"]))),
                cold(peers["st"]),
            )
            r.add(
                "store load(safetensors), verified",
                timed(lambda: stores["safetensors"].get(1).load()),
                cold(base / "s_safetensors"),
            )
    r.run()
    kept.clear()
    clean(base)


if __name__ == "__main__":
    main()
