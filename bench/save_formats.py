"""Save the same state through the store and through each library's own writer, in one run.

Baseline: a raw write of the same bytes (one file, 8 MiB per ``write``, ``fsync`` of file and folder),
the floor any durable save pays. Compared, interleaved: ``store.save_state`` with the numpy, torch and
safetensors serializers (hash of every byte, fsyncs, manifest, rename, pointers, index); the peers
``np.save`` (one file per array), ``torch.save`` and safetensors' ``save_file``, each followed by
``fsync``; DCP's ``dcp.save`` (one process) and Orbax's ``CheckpointManager.save`` when they import.
Goals (issue 15): every store path <= 1.10x the raw write; the safetensors path <= 1.10x ``save_file``.

    python bench/save_formats.py --size-mib 1024 --repeat 5
"""

from __future__ import annotations

import os
import statistics
from pathlib import Path
from typing import Any

import numpy as np
from _common import Runner, clean, fsync_dir, make_arrays, parser, raw_write

import ckptstore


def main() -> None:
    args = parser(__doc__).parse_args()
    arrays = make_arrays(args.size_mib, args.tensors)
    total = sum(a.nbytes for a in arrays.values())
    base = Path(args.dir) / "save"
    clean(base)
    base.mkdir(parents=True)
    r = Runner("save_formats", args, total, "raw write+fsync")
    out = {name: base / name for name in ("raw", "np", "torch", "st", "s_np", "s_torch", "s_st", "dcp", "orbax")}
    stores: dict[str, Any] = {}

    def fresh(key: str) -> Any:
        def before(rep: int) -> None:
            del rep
            clean(out[key])
            if key.startswith("s_"):
                stores[key] = ckptstore.open(out[key], log_file=True)

        return before

    r.add("raw write+fsync", lambda rep: raw_write(arrays, out["raw"]), fresh("raw"))

    def np_save(rep: int) -> None:
        del rep
        out["np"].mkdir(parents=True)
        for name, a in arrays.items():
            with open(out["np"] / f"{name}.npy", "wb") as f:
                np.save(f, a)
                f.flush()
                os.fsync(f.fileno())
        fsync_dir(out["np"])

    r.add("np.save+fsync (a file per array)", np_save, fresh("np"))
    r.add(
        "store.save_state(numpy)",
        lambda rep: stores["s_np"].save_state(1, arrays, serializer="numpy"),
        fresh("s_np"),
    )
    try:
        import torch
    except ImportError:
        r.skip("torch paths", "torch is not installed")
        torch = None
    if torch is not None:
        tensors = {k: torch.from_numpy(v) for k, v in arrays.items()}

        def torch_save(rep: int) -> None:
            del rep
            out["torch"].mkdir(parents=True)
            with open(out["torch"] / "state.pt", "wb") as f:
                torch.save(tensors, f)
                f.flush()
                os.fsync(f.fileno())
            fsync_dir(out["torch"])

        r.add("torch.save+fsync", torch_save, fresh("torch"))
        r.add(
            "store.save_state(torch)",
            lambda rep: stores["s_torch"].save_state(1, tensors, serializer="torch"),
            fresh("s_torch"),
        )
        try:
            from safetensors.torch import save_file
        except ImportError:
            r.skip("safetensors paths", "safetensors is not installed")
        else:

            def st_save(rep: int) -> None:
                del rep
                out["st"].mkdir(parents=True)
                path = out["st"] / "model.safetensors"
                save_file(tensors, str(path))
                fd = os.open(path, os.O_RDONLY)
                os.fsync(fd)
                os.close(fd)
                fsync_dir(out["st"])

            r.add("safetensors save_file+fsync", st_save, fresh("st"))
            r.add(
                "store.save_state(safetensors)",
                lambda rep: stores["s_st"].save_state(1, tensors, serializer="safetensors"),
                fresh("s_st"),
            )
        try:
            import torch.distributed.checkpoint as dcp

            def dcp_save(rep: int) -> None:
                del rep
                dcp.save(tensors, checkpoint_id=str(out["dcp"]), no_dist=True)

            r.add("dcp.save (one process)", dcp_save, fresh("dcp"))
        except Exception as exc:  # pragma: no cover - depends on the torch build
            r.skip("dcp.save (one process)", f"{type(exc).__name__}: {exc}")
    try:
        import jax
        import orbax.checkpoint as ocp

        jax_arrays = {k: jax.numpy.asarray(v) for k, v in arrays.items()}
        jax.block_until_ready(jax_arrays)
        managers: dict[str, Any] = {}

        def orbax_before(rep: int) -> None:
            del rep
            if "m" in managers:
                managers.pop("m").close()
            clean(out["orbax"])
            managers["m"] = ocp.CheckpointManager(out["orbax"].resolve())

        def orbax_save(rep: int) -> None:
            del rep
            m = managers["m"]
            m.save(1, args=ocp.args.StandardSave(jax_arrays))
            m.wait_until_finished()

        r.add("orbax CheckpointManager.save", orbax_save, orbax_before)
    except Exception as exc:
        r.skip("orbax CheckpointManager.save", f"{type(exc).__name__}: {exc}")

    r.run()
    med = {label: statistics.median(t) for label, t in r.times.items()}
    for ours, peer in [
        ("store.save_state(safetensors)", "safetensors save_file+fsync"),
        ("store.save_state(torch)", "torch.save+fsync"),
        ("store.save_state(numpy)", "np.save+fsync (a file per array)"),
    ]:
        if ours in med and peer in med:
            print(f"  {ours} / {peer}: {med[ours] / med[peer]:.2f}x")
    clean(base)


if __name__ == "__main__":
    main()
