"""Serializers: how a state object becomes files in a checkpoint, and back.

ckptstore does not serialize models itself; a serializer adapts a framework's own format. Each is
found by name in a registry, imports its framework lazily (so ``import ckptstore`` never imports
torch), and writes through :meth:`CheckpointWriter.open` so every byte is hashed as it is written.
``pickle`` exists but is never chosen implicitly: loading pickle runs code, so it must be named.
Loading gets a :class:`CheckpointFiles`, not the checkpoint's folder: it opens only the files the
manifest lists, so a name in a serializer's own index can never reach outside the checkpoint.

Serializers sit below the store: they see a :class:`CheckpointWriter` when saving and a
:class:`CheckpointFiles` when loading, both defined here, and never import the store or the checkpoint.
"""

from ._reader import CheckpointFiles, CheckpointView
from ._registry import FileWriter, Serializer, get_serializer, register_serializer, serializer_names
from ._writer import CheckpointWriter

__all__ = [
    "CheckpointFiles",
    "CheckpointView",
    "CheckpointWriter",
    "FileWriter",
    "Serializer",
    "get_serializer",
    "register_serializer",
    "serializer_names",
]
