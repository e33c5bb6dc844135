"""One-line drop-ins for the frameworks people train with.

Each module imports its framework only when used: ``ckptstore.integrations.keras`` (Keras 3),
``.lightning`` (PyTorch Lightning), ``.transformers`` (Hugging Face Trainer), ``.torch`` (RNG state
helpers for hand-written loops), and :class:`ckptstore.Checkpointer` for any plain loop.
"""

from __future__ import annotations

import contextlib
import math
import os
from collections.abc import Iterator, Mapping
from pathlib import Path
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from ..store import CheckpointStore

__all__ = ["finite_scalars", "restart_folder"]


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


@contextlib.contextmanager
def restart_folder(store: CheckpointStore | str | os.PathLike[str], **open_options: Any) -> Iterator[Path | None]:
    """The newest checkpoint that verifies, as a local folder for the block; None if there is none.

    On object stores the checkpoint is downloaded (verified) for the duration of the block. ``store``
    may be a URL, opened with ``open_options``.
    """
    from ..store import CheckpointStore, open_store

    if not isinstance(store, CheckpointStore):
        store = open_store(store, **open_options)
    checkpoint = store.restart("auto")
    if checkpoint is None:
        yield None
        return
    with checkpoint.local_path(verify=False) as path:
        yield path
