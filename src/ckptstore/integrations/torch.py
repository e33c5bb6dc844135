"""RNG state for resumable PyTorch loops: capture every generator a loop uses, restore it exactly.

Everything is stored as tensors and plain Python values, so the ``torch`` serializer loads it with
``weights_only=True`` (no unpickling of arbitrary objects).
"""

from __future__ import annotations

import random
from typing import Any

from ..serializers._registry import require

__all__ = ["capture_rng", "restore_rng"]


def capture_rng() -> dict[str, Any]:
    """The state of Python's, NumPy's (if installed) and torch's CPU generators."""
    torch = require("torch", "torch")
    version, internal, gauss = random.getstate()
    state: dict[str, Any] = {
        "python": {"version": version, "state": torch.tensor(internal, dtype=torch.int64), "gauss": gauss},
        "torch": torch.get_rng_state(),
    }
    try:
        import numpy as np
    except ImportError:  # pragma: no cover - numpy ships with torch's usual installs
        return state
    raw: Any = np.random.get_state(legacy=True)
    kind, keys, pos, has_gauss, cached = raw
    state["numpy"] = {
        "kind": kind,
        "keys": torch.from_numpy(keys.astype(np.int64)),
        "pos": int(pos),
        "has_gauss": int(has_gauss),
        "cached": float(cached),
    }
    return state


def restore_rng(state: dict[str, Any]) -> None:
    """Put the generators back as :func:`capture_rng` found them."""
    python = state["python"]
    random.setstate((python["version"], tuple(int(x) for x in python["state"].tolist()), python["gauss"]))
    torch = require("torch", "torch")
    torch.set_rng_state(state["torch"])
    if "numpy" in state:
        import numpy as np

        n = state["numpy"]
        np.random.set_state((n["kind"], n["keys"].numpy().astype(np.uint32), n["pos"], n["has_gauss"], n["cached"]))
