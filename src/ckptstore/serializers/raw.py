"""Serializers for bytes, JSON, and (only when named) pickle."""

from __future__ import annotations

import json
import pickle
import platform
from collections.abc import Mapping
from typing import TYPE_CHECKING, Any

from ..errors import InvalidArgumentError

if TYPE_CHECKING:
    from ._reader import CheckpointFiles
    from ._writer import CheckpointWriter

__all__ = ["JsonSerializer", "PickleSerializer", "RawSerializer"]


class RawSerializer:
    """Bytes as files: ``bytes`` becomes ``data.bin``; a ``{name: bytes}`` mapping, one file each.

    Loading returns ``bytes`` for a checkpoint holding only ``data.bin``, else ``{name: bytes}``.
    """

    name = "raw"

    def version(self) -> str:
        """See :class:`~ckptstore.serializers.Serializer`."""
        return "1"

    def save(self, state: Any, tx: CheckpointWriter) -> None:
        """See :class:`~ckptstore.serializers.Serializer`."""
        if isinstance(state, (bytes, bytearray, memoryview)):
            state = {"data.bin": state}
        if not isinstance(state, Mapping):
            raise InvalidArgumentError("the raw serializer takes bytes or a mapping of file name to bytes")
        for name, data in state.items():
            if not isinstance(data, (bytes, bytearray, memoryview)):
                raise InvalidArgumentError(f"raw serializer: the value for {name!r} is not bytes")
            with tx.open(name) as f:
                f.write(data)

    def load(self, files: CheckpointFiles, **kwargs: Any) -> Any:
        """See :class:`~ckptstore.serializers.Serializer`."""
        contents = {name: files.read_bytes(name) for name in files.names}
        if list(contents) == ["data.bin"]:
            return contents["data.bin"]
        return contents


class JsonSerializer:
    """A JSON-serializable state as ``state.json`` (NaN and infinities refused)."""

    name = "json"

    def version(self) -> str:
        """See :class:`~ckptstore.serializers.Serializer`."""
        return "1"

    def save(self, state: Any, tx: CheckpointWriter) -> None:
        """See :class:`~ckptstore.serializers.Serializer`."""
        try:
            text = json.dumps(state, allow_nan=False, indent=1, sort_keys=True)
        except (TypeError, ValueError) as exc:
            raise InvalidArgumentError(f"the json serializer cannot encode this state: {exc}") from None
        with tx.open("state.json") as f:
            f.write(text.encode())

    def load(self, files: CheckpointFiles, **kwargs: Any) -> Any:
        """See :class:`~ckptstore.serializers.Serializer`."""
        return json.loads(files.read_bytes("state.json"))


class PickleSerializer:
    """Any picklable state as ``state.pkl``.

    Loading pickle runs arbitrary code, so ckptstore only loads it when the caller passes
    ``serializer="pickle"`` by name; it is never inferred from the manifest.
    """

    name = "pickle"

    def version(self) -> str:
        """See :class:`~ckptstore.serializers.Serializer`."""
        return f"python-{platform.python_version()}-protocol-{pickle.HIGHEST_PROTOCOL}"

    def save(self, state: Any, tx: CheckpointWriter) -> None:
        """See :class:`~ckptstore.serializers.Serializer`."""
        with tx.open("state.pkl") as f:
            pickle.dump(state, f, protocol=pickle.HIGHEST_PROTOCOL)

    def load(self, files: CheckpointFiles, **kwargs: Any) -> Any:
        """See :class:`~ckptstore.serializers.Serializer`."""
        with files.open("state.pkl") as f:
            return pickle.load(f)
