"""PyTorch state dicts in ``torch.save``'s format, loaded with ``weights_only=True`` unless asked otherwise.

Saving runs ``torch.save``'s own writer over ``tx.open()`` (hashed as it is written) without the zip
CRC-32 of every record: the xxh3-128 digest in the manifest already covers every byte, and the CRC is
a second per-byte pass that costs about as much as writing to the page cache. ``torch.load`` reads
the files unchanged (it does not check record CRCs). Loading hashes the file in one read
and then memory-maps it (``torch.load(mmap=True)``), so the tensors are the page-cache pages that read
brought in, not a second copy; ``load(mmap=False)`` reads them into private memory instead.
"""

from __future__ import annotations

import os
import pickle
from typing import TYPE_CHECKING, Any

from ._registry import require

if TYPE_CHECKING:
    from ._reader import CheckpointFiles
    from ._writer import CheckpointWriter

__all__ = ["TorchSerializer"]


class TorchSerializer:
    """A state (usually a state dict) as ``state.pt``.

    ``load(map_location="cpu", weights_only=True)``: ``weights_only=False`` unpickles arbitrary
    objects and runs their code, so it is only used when passed explicitly.
    """

    name = "torch"

    def version(self) -> str:
        """See :class:`~ckptstore.serializers.Serializer`."""
        return str(require("torch", "torch").__version__)

    def save(self, state: Any, tx: CheckpointWriter) -> None:
        """See :class:`~ckptstore.serializers.Serializer`."""
        torch = require("torch", "torch")
        with tx.open("state.pt") as f:
            _save_without_crc(torch, state, f)

    def load(self, files: CheckpointFiles, **kwargs: Any) -> Any:
        """See :class:`~ckptstore.serializers.Serializer`."""
        torch = require("torch", "torch")
        path = files.local_file("state.pt")  # hashed (one read) before the path is returned
        return torch.load(
            path,
            map_location=kwargs.get("map_location", "cpu"),
            weights_only=kwargs.get("weights_only", True),
            mmap=kwargs.get("mmap", os.name == "posix"),
        )


def _save_without_crc(torch: Any, state: Any, stream: Any) -> None:
    """``torch.save(state, stream)`` without the per-record CRC-32 (same format, same alignment).

    Falls back to ``torch.save`` itself if this torch lacks the pieces (``PyTorchFileWriter`` taking a
    CRC flag, ``torch.serialization._save``).
    """
    serialization = torch.serialization
    try:
        writer_cls = torch._C.PyTorchFileWriter
        save_impl = serialization._save
        alignment = serialization._get_storage_alignment()
        writer = writer_cls(stream, False, alignment)
    except (AttributeError, TypeError):
        torch.save(state, stream)
        return
    save_impl(state, writer, pickle, serialization.DEFAULT_PROTOCOL, False)
    writer.write_end_of_file()
