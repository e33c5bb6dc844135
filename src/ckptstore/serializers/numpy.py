"""NumPy arrays as ``.npy`` files, written without a copy and hashed as they are written.

``np.save`` to a stream copies every chunk (``tobytes``); this serializer writes the ``.npy`` header
and then the array's own memory, so saving costs no more than writing the bytes. Loading reads the
header, allocates the array and reads the file straight into the array's memory in the pass that
hashes it (several files at once). Object arrays are refused: they would need pickle. Loading never
allows pickle.
"""

from __future__ import annotations

import json
import math
from collections.abc import Mapping
from concurrent.futures import ThreadPoolExecutor
from typing import TYPE_CHECKING, Any

from ..errors import InvalidArgumentError, SerializerError
from ._registry import require

if TYPE_CHECKING:
    from ._reader import CheckpointFiles, VerifyingReader
    from ._writer import CheckpointWriter

__all__ = ["NumpySerializer", "read_npy", "write_npy"]

_INDEX = "arrays.json"
_READ_THREADS = 4
"""Files read at once: a VM disk or an NVMe drive serves a few reads in parallel faster than one."""


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


def read_npy(reader: VerifyingReader) -> Any:
    """Read a ``.npy`` file into a new array: the header, then the data straight into the array.

    Raises:
        SerializerError: not a ``.npy`` file, an object dtype (that would need pickle), or a size
            that does not match the header (checked before anything is allocated).
    """
    np = require("numpy", "numpy")
    fmt = np.lib.format
    where = reader.label
    try:
        version = fmt.read_magic(reader)
        if version == (1, 0):
            shape, fortran, dtype = fmt.read_array_header_1_0(reader)
        elif version == (2, 0):
            shape, fortran, dtype = fmt.read_array_header_2_0(reader)
        else:
            shape, fortran, dtype = fmt._read_array_header(reader, version)
    except (ValueError, OSError, SyntaxError, TypeError) as exc:
        raise SerializerError(f"{where} is not a valid .npy file: {exc}") from None
    if dtype.hasobject:
        raise SerializerError(f"{where} holds Python objects, which would need pickle; ckptstore never loads that")
    nbytes = math.prod(shape) * dtype.itemsize
    if nbytes != reader.size - reader.tell():
        raise SerializerError(f"{where}: the header describes {nbytes} bytes of data, the file holds a different size")
    array = np.empty(shape, dtype=dtype, order="F" if fortran else "C")
    if nbytes:
        flat = (array.T if fortran else array).reshape(-1).view(np.uint8)
        if reader.readinto(memoryview(flat)) != nbytes:
            raise SerializerError(f"{where} ends before its data")
    return array


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
            if mmap_mode:  # a memory map needs a path (hashed first, then mapped from the page cache)
                return np.load(files.local_file(name, named_by=named_by), allow_pickle=False, mmap_mode=mmap_mode)
            with files.reader(name, named_by=named_by) as f:
                return read_npy(f)

        if _INDEX not in files:
            return read("array.npy")
        index = json.loads(files.read_bytes(_INDEX))
        if not isinstance(index, dict) or not all(isinstance(v, str) for v in index.values()):
            raise SerializerError(f"{_INDEX} in epoch {files.epoch} must map each key to a file name")
        keys, names = list(index), list(index.values())
        if len(names) <= 1:
            return {key: read(name, _INDEX) for key, name in zip(keys, names, strict=True)}
        with ThreadPoolExecutor(
            max_workers=min(_READ_THREADS, len(names)), thread_name_prefix="ckptstore-load"
        ) as pool:
            arrays = list(pool.map(lambda name: read(name, _INDEX), names))
        return dict(zip(keys, arrays, strict=True))
