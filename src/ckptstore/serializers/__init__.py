"""Serializers: how a state object becomes files in a checkpoint, and back.

ckptstore does not serialize models itself; a serializer adapts a framework's own format. Each is
found by name in a registry, imports its framework lazily (so ``import ckptstore`` never imports
torch), and writes through :meth:`SaveTransaction.open` so every byte is hashed as it is written.
``pickle`` exists but is never chosen implicitly: loading pickle runs code, so it must be named.
"""

from ._registry import Serializer, get_serializer, register_serializer, serializer_names

__all__ = ["Serializer", "get_serializer", "register_serializer", "serializer_names"]
