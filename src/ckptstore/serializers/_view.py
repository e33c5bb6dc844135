"""What a serializer's reader needs of the checkpoint it reads: the :class:`CheckpointView` protocol."""

from __future__ import annotations

from collections.abc import Mapping
from contextlib import AbstractContextManager
from pathlib import Path
from typing import TYPE_CHECKING, Any, Protocol

if TYPE_CHECKING:
    from ..manifest import FileEntry, Manifest

__all__ = ["CheckpointView"]


class CheckpointView(Protocol):
    """What a reader needs of the checkpoint it reads (a :class:`~ckptstore.Checkpoint` has this shape).

    What its manifest says, and a verified local copy of its files; nothing of the store it came from.
    """

    @property
    def epoch(self) -> int:
        """The epoch (or step) number."""
        ...

    @property
    def url(self) -> str:
        """The checkpoint's location as a URL."""
        ...

    @property
    def manifest(self) -> Manifest:
        """The validated commit record."""
        ...

    @property
    def files(self) -> Mapping[str, FileEntry]:
        """Every file the manifest lists, by name."""
        ...

    @property
    def metrics(self) -> dict[str, float]:
        """The metrics recorded at save time."""
        ...

    @property
    def metadata(self) -> dict[str, Any]:
        """User metadata, as changed since the save."""
        ...

    def local_path(self, *, verify: bool = True) -> AbstractContextManager[Path]:
        """The checkpoint's files in a local folder, re-hashed first (``verify``), for the ``with`` block."""
        ...
