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
    from ..checkpoint import Checkpoint
    from ..serializers import CheckpointFiles
    from ..store import CheckpointStore

__all__ = ["finite_scalars", "restart_files", "restart_folder"]


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


def _restarted(store: CheckpointStore | str | os.PathLike[str], open_options: Mapping[str, Any]) -> Checkpoint | None:
    """``store.restart("auto")``: the newest checkpoint that verifies (``store`` may be a URL)."""
    from ..store import CheckpointStore, open_store

    if not isinstance(store, CheckpointStore):
        store = open_store(store, **open_options)
    return store.restart("auto")


@contextlib.contextmanager
def restart_folder(store: CheckpointStore | str | os.PathLike[str], **open_options: Any) -> Iterator[Path | None]:
    """The newest checkpoint that verifies, as a local folder for the block; None if there is none.

    For frameworks that resume from a whole folder (Hugging Face's ``resume_from_checkpoint``): the
    folder holds exactly the files the manifest lists (verification refuses any other). On object
    stores the checkpoint is downloaded (verified) for the duration of the block. ``store`` may be a
    URL, opened with ``open_options``.
    """
    checkpoint = _restarted(store, open_options)
    if checkpoint is None:
        yield None
        return
    with checkpoint.local_path(verify=False) as path:  # restart() verified it
        yield path


@contextlib.contextmanager
def restart_files(
    store: CheckpointStore | str | os.PathLike[str], **open_options: Any
) -> Iterator[CheckpointFiles | None]:
    """The newest checkpoint that verifies, as a :class:`~ckptstore.serializers.CheckpointFiles`; None if none.

    For frameworks that resume from one file (Lightning's ``ckpt_path``): ``files.local_file(name)``
    gives its path only if the manifest lists it and it is a regular file (no symlink).
    """
    from ..serializers._reader import checkpoint_files

    checkpoint = _restarted(store, open_options)
    if checkpoint is None:
        yield None
        return
    with checkpoint_files(checkpoint, verify=False) as files:  # restart() verified it
        yield files
