"""Tensors as ``model.safetensors``: no pickle on either side."""

from __future__ import annotations

from collections.abc import Mapping
from typing import TYPE_CHECKING, Any

from ..errors import InvalidArgumentError
from ._registry import require

if TYPE_CHECKING:
    from ._reader import CheckpointFiles
    from ._writer import CheckpointWriter

__all__ = ["SafetensorsSerializer"]

_FILE = "model.safetensors"
_FRAMEWORK_KEY = "ckptstore.framework"


class SafetensorsSerializer:
    """A ``{name: tensor}`` mapping of torch tensors or numpy arrays as one safetensors file.

    The framework it was saved from is recorded in the file's metadata, and ``load()`` returns the
    same kind (``load(framework="numpy")`` or ``"torch"`` overrides it).
    """

    name = "safetensors"

    def version(self) -> str:
        """See :class:`~ckptstore.serializers.Serializer`."""
        return str(require("safetensors", "safetensors").__version__)

    def save(self, state: Any, tx: CheckpointWriter) -> None:
        """See :class:`~ckptstore.serializers.Serializer`."""
        if not isinstance(state, Mapping) or not state:
            raise InvalidArgumentError("the safetensors serializer takes a non-empty {name: tensor} mapping")
        first = next(iter(state.values()))
        if type(first).__module__.startswith("torch"):
            framework = "torch"
            save = require("safetensors.torch", "torch").save
        else:
            framework = "numpy"
            save = require("safetensors.numpy", "safetensors").save
        data = save(dict(state), metadata={_FRAMEWORK_KEY: framework})
        with tx.open(_FILE) as f:
            f.write(data)

    def load(self, files: CheckpointFiles, **kwargs: Any) -> Any:
        """See :class:`~ckptstore.serializers.Serializer`."""
        safetensors = require("safetensors", "safetensors")
        path = files.local_file(_FILE)  # memory-mapped by safetensors
        framework = kwargs.get("framework")
        if framework is None:
            with safetensors.safe_open(str(path), framework="np") as f:
                framework = (f.metadata() or {}).get(_FRAMEWORK_KEY, "numpy")
        if framework == "torch":
            return require("safetensors.torch", "torch").load_file(str(path), device=kwargs.get("device", "cpu"))
        return require("safetensors.numpy", "safetensors").load_file(str(path))
