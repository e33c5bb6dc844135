"""PyTorch state dicts with ``torch.save``, loaded with ``weights_only=True`` unless asked otherwise."""

from __future__ import annotations

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
            torch.save(state, f)

    def load(self, files: CheckpointFiles, **kwargs: Any) -> Any:
        """See :class:`~ckptstore.serializers.Serializer`."""
        torch = require("torch", "torch")
        return torch.load(
            files.local_file("state.pt"),
            map_location=kwargs.get("map_location", "cpu"),
            weights_only=kwargs.get("weights_only", True),
        )
