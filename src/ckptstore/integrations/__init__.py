"""One-line drop-ins for the frameworks people train with.

Each module imports its framework only when used: ``ckptstore.integrations.keras`` (Keras 3),
``.lightning`` (PyTorch Lightning), ``.transformers`` (Hugging Face Trainer), ``.torch`` (RNG state
helpers for hand-written loops), and :class:`ckptstore.Checkpointer` for any plain loop.
"""

from __future__ import annotations

import math
from collections.abc import Mapping
from typing import Any

__all__ = ["finite_scalars"]


def finite_scalars(values: Mapping[str, Any] | None) -> dict[str, float]:
    """The entries of a framework's logs that are finite numbers (tensors and numpy scalars included)."""
    out: dict[str, float] = {}
    for key, value in (values or {}).items():
        if isinstance(value, bool):
            continue
        try:
            number = float(value)
        except (TypeError, ValueError):
            continue
        if math.isfinite(number):
            out[str(key)] = number
    return out
