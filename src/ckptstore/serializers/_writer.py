"""What a serializer may write to: the checkpoint being saved, seen through two doors.

A serializer never sees the store. :meth:`Serializer.save` gets a :class:`CheckpointWriter` (the store
passes its ``SaveTransaction``, which has this shape): ``open(name)`` creates a file in the checkpoint
and hashes every byte as it is written (on object stores the bytes stream straight to the bucket);
``path`` is a private local staging folder for libraries that must write to a path or seek. Either
way nothing is visible until the store commits, and a name that escapes the checkpoint is refused.
"""

from __future__ import annotations

from pathlib import Path
from typing import IO, Any, Protocol

__all__ = ["CheckpointWriter"]


class CheckpointWriter(Protocol):
    """The checkpoint being saved, as :meth:`Serializer.save` writes it (``tx`` in ``store.save()``)."""

    @property
    def path(self) -> Path:
        """The local staging folder; files written here become the checkpoint's files."""
        ...

    def open(self, name: str, mode: str = "wb") -> IO[Any]:
        """Create ``name`` (relative, ``/`` between folders) and return a write-only, non-seeking stream.

        ``mode`` is ``"wb"`` (default) or ``"w"`` for UTF-8 text.
        """
        ...
