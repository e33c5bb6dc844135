"""NumPy arrays as ``.npy`` files, written without a copy and hashed as they are written.

``np.save`` to a stream copies every chunk (``tobytes``); this serializer writes the ``.npy`` header
and then the array's own memory, so saving costs no more than writing the bytes. Object arrays are
refused: they would need pickle. Loading never allows pickle.
"""

from __future__ import annotations

import json
from collections.abc import Mapping
from typing import TYPE_CHECKING, Any

from ..errors import InvalidArgumentError, SerializerError
from ._registry import require

if TYPE_CHECKING:
    from ._reader import CheckpointFiles
    from ._writer import CheckpointWriter

__all__ = ["NumpySerializer", "write_npy"]

_INDEX = "arrays.json"


def write_npy(stream: Any, array: Any) -> None:
    """Write ``array`` in ``.npy`` format to a write-only stream without copying its data."""
    np = require("numpy", "numpy")
    array = np.asarray(array)
    if not array.flags.c_contiguous:  # ascontiguousarray would turn a 0-d array into 1-d
        array = np.ascontiguousarray(array)
    if array.dtype.hasobject:
        raise InvalidArgumentError("object arrays need pickle; the numpy serializer refuses them")
    header = np.lib.format.header_data_from_array_1_0(array)
    try:
        np.lib.format.write_array_header_1_0(stream, header)
    except ValueError:  # header too large for format 1.0
        np.lib.format.write_array_header_2_0(stream, header)
    if array.size:
        stream.write(memoryview(array.reshape(-1).view(np.uint8)))


class NumpySerializer:
    """An array, or a ``{name: array}`` mapping, as ``.npy`` files.

    A single array becomes ``array.npy``. A mapping becomes ``arrays/00000.npy``, ... plus
    ``arrays.json``, which maps the (arbitrary) keys to file names, so keys need not be valid
    file names. ``load(mmap_mode="r")`` memory-maps the arrays instead of reading them.

    ``arrays.json`` is untrusted on load: each name in it must be a file the manifest lists
    (``UnsafePathError`` for a name that would leave the checkpoint, ``IncompleteCheckpointError``
    for one the manifest does not list).
    """

    name = "numpy"

    def version(self) -> str:
        """See :class:`~ckptstore.serializers.Serializer`."""
        return str(require("numpy", "numpy").__version__)

    def save(self, state: Any, tx: CheckpointWriter) -> None:
        """See :class:`~ckptstore.serializers.Serializer`."""
        np = require("numpy", "numpy")
        if isinstance(state, Mapping):
            index: dict[str, str] = {}
            for i, (key, value) in enumerate(state.items()):
                if not isinstance(key, str):
                    raise InvalidArgumentError(f"numpy serializer: keys must be strings, got {key!r}")
                name = f"arrays/{i:05d}.npy"
                with tx.open(name) as f:
                    write_npy(f, np.asarray(value))
                index[key] = name
            with tx.open(_INDEX) as f:
                f.write(json.dumps(index, indent=1).encode())
        else:
            with tx.open("array.npy") as f:
                write_npy(f, np.asarray(state))

    def load(self, files: CheckpointFiles, **kwargs: Any) -> Any:
        """See :class:`~ckptstore.serializers.Serializer`."""
        np = require("numpy", "numpy")
        mmap_mode = kwargs.get("mmap_mode")

        def read(name: str, named_by: str | None = None) -> Any:
            if mmap_mode:  # a memory map needs a path
                return np.load(files.local_file(name, named_by=named_by), allow_pickle=False, mmap_mode=mmap_mode)
            with files.open(name, named_by=named_by) as f:
                return np.load(f, allow_pickle=False)

        if _INDEX not in files:
            return read("array.npy")
        index = json.loads(files.read_bytes(_INDEX))
        if not isinstance(index, dict) or not all(isinstance(v, str) for v in index.values()):
            raise SerializerError(f"{_INDEX} in epoch {files.epoch} must map each key to a file name")
        return {key: read(name, _INDEX) for key, name in index.items()}
