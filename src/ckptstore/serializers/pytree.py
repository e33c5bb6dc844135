"""Pytrees of arrays (JAX/flax params, optimizer states, nested dicts of numpy arrays), without pickle.

The arrays go into ``arrays.safetensors`` when safetensors is installed (``arrays.npz`` otherwise,
read back with ``allow_pickle=False``); the tree's shape goes into ``tree.json``: dicts, lists and
tuples as JSON, leaves as references to arrays or as plain JSON scalars. Loading never runs code.
With JAX installed, arrays come back as ``jax.Array`` (``as_jax=False`` for numpy).

``tree.json`` is untrusted on load: an array it names must be in the arrays file
(``IncompleteCheckpointError`` otherwise), the arrays file must be one the manifest lists, and any
other malformed record is a :class:`~ckptstore.errors.SerializerError` naming ``tree.json``.
"""

from __future__ import annotations

import json
from collections.abc import Callable
from typing import TYPE_CHECKING, Any

from ..errors import IncompleteCheckpointError, SerializerError
from ._registry import require
from .safetensors import read_safetensors, write_safetensors

if TYPE_CHECKING:
    from ._reader import CheckpointFiles
    from ._writer import CheckpointWriter

__all__ = ["PytreeSerializer"]

_TREE = "tree.json"
_SAFETENSORS = "arrays.safetensors"
_NPZ = "arrays.npz"


def _encode(node: Any, arrays: dict[str, Any], np: Any) -> Any:
    if isinstance(node, dict):
        if not all(isinstance(k, str) for k in node):
            raise TypeError("pytree dict keys must be strings")
        return {"__dict__": {k: _encode(v, arrays, np) for k, v in node.items()}}
    if isinstance(node, (list, tuple)):
        items = [_encode(v, arrays, np) for v in node]
        return {"__tuple__": items} if isinstance(node, tuple) else {"__list__": items}
    if node is None or isinstance(node, (bool, int, float, str)):
        return node
    if hasattr(node, "__array__") or hasattr(node, "shape"):
        name = f"a{len(arrays)}"
        arrays[name] = np.ascontiguousarray(np.asarray(node))
        return {"__array__": name}
    raise TypeError(f"cannot store a {type(node).__name__} in a pytree checkpoint (arrays, dicts, lists, scalars)")


def _decode(node: Any, array: Callable[[object], Any]) -> Any:
    if isinstance(node, dict):
        if "__array__" in node:
            return array(node["__array__"])
        if isinstance(node.get("__dict__"), dict):
            return {k: _decode(v, array) for k, v in node["__dict__"].items()}
        if isinstance(node.get("__tuple__"), list):
            return tuple(_decode(v, array) for v in node["__tuple__"])
        if isinstance(node.get("__list__"), list):
            return [_decode(v, array) for v in node["__list__"]]
        raise SerializerError(f"{_TREE} holds an unknown pytree node {sorted(node)[:5]}")
    return node


class PytreeSerializer:
    """Nested dicts/lists/tuples of arrays and scalars (``serializer="jax"`` or ``"pytree"``)."""

    name = "jax"

    def version(self) -> str:
        """The JAX version if installed, else numpy's."""
        try:
            return str(require("jax", "jax").__version__)
        except ImportError:
            return "numpy-" + str(require("numpy", "numpy").__version__)

    def save(self, state: Any, tx: CheckpointWriter) -> None:
        """Write the arrays and the tree."""
        np = require("numpy", "numpy")
        arrays: dict[str, Any] = {}
        tree = _encode(state, arrays, np)
        try:
            import safetensors  # noqa: F401  (the format is written here; the library reads it back)
        except ImportError:
            with tx.open(_NPZ) as f:
                np.savez(f, **arrays)
            layout = "npz"
        else:
            with tx.open(_SAFETENSORS) as f:
                write_safetensors(f, arrays)
            layout = "safetensors"
        with tx.open(_TREE, "w") as f:
            f.write(json.dumps({"format": "ckptstore.pytree", "version": 1, "arrays": layout, "tree": tree}))

    def load(self, files: CheckpointFiles, **kwargs: Any) -> Any:
        """Rebuild the tree; ``as_jax`` (default True when JAX is installed) returns jax arrays."""
        np = require("numpy", "numpy")
        record = json.loads(files.read_bytes(_TREE))
        layout = record.get("arrays") if isinstance(record, dict) else None
        if layout not in ("safetensors", "npz") or "tree" not in record:
            raise SerializerError(
                f"{_TREE} in epoch {files.epoch} is not a pytree record (its 'arrays' must be 'safetensors' or 'npz')"
            )
        if layout == "safetensors":
            source = _SAFETENSORS
            with files.reader(source, named_by=_TREE) as reader:
                arrays, _ = read_safetensors(reader, "numpy")
        else:
            source = _NPZ
            with files.open(source, named_by=_TREE) as f, np.load(f, allow_pickle=False) as data:
                arrays = {k: data[k] for k in data.files}
        convert: Any = lambda a: a  # noqa: E731
        if kwargs.get("as_jax", True):
            try:
                import jax.numpy as jnp
            except ImportError:
                pass
            else:
                convert = jnp.asarray

        def array(name: object) -> Any:
            if not isinstance(name, str):
                raise SerializerError(f"{_TREE} in epoch {files.epoch} names an array by {name!r}, not a string")
            if name not in arrays:
                raise IncompleteCheckpointError(
                    f"{_TREE} in epoch {files.epoch} names array {name!r}, which {source} does not hold"
                )
            return convert(arrays[name])

        return _decode(record["tree"], array)
