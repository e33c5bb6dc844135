"""The serializer protocol and the registry of serializers by name."""

from __future__ import annotations

import importlib
from collections.abc import Callable
from typing import TYPE_CHECKING, Any, Protocol, runtime_checkable

from ..errors import BackendUnavailableError, InvalidArgumentError

if TYPE_CHECKING:
    from ._reader import CheckpointFiles
    from ._writer import CheckpointWriter

__all__ = ["FileWriter", "Serializer", "get_serializer", "register_serializer", "serializer_names"]


@runtime_checkable
class Serializer(Protocol):
    """Turns a state into files of a checkpoint and back.

    Attributes:
        name: The registry name, recorded in the manifest.
    """

    name: str

    def version(self) -> str:
        """Return the version of the library that does the work (recorded in the manifest)."""
        ...

    def save(self, state: Any, tx: CheckpointWriter) -> None:
        """Write ``state`` into the transaction (through ``tx.open`` or into ``tx.path``)."""
        ...

    def load(self, files: CheckpointFiles, **kwargs: Any) -> Any:
        """Read the state back from a committed (and, unless ``load(verify=False)``, verified) checkpoint.

        ``files`` opens only the files the manifest lists (``files.open``, ``files.read_bytes``,
        ``files.local_file`` for libraries that need a path, ``files.map`` for a verified memory map);
        a name read from the serializer's own index goes through the same checks, so it can never
        reach outside the checkpoint.
        """
        ...


class FileWriter:
    """A function ``write(state, tx)`` that writes a checkpoint's files, standing where a serializer goes.

    For ``save_state(epoch, state, serializer=write)``: a framework that writes its own files (a
    Lightning ``.ckpt`` through its ``CheckpointIO``, a folder the Hugging Face Trainer wrote) gets the
    snapshot and background thread of a non-blocking save. The manifest records no serializer (there is
    none to load with), exactly as for files written in ``store.save()``: read them through
    ``local_path()``.
    """

    def __init__(self, write: Callable[[Any, CheckpointWriter], None]) -> None:
        self._write = write
        self.name: str = getattr(write, "__name__", type(write).__name__)

    def version(self) -> str:
        """See :class:`Serializer` (never recorded)."""
        return "1"

    def save(self, state: Any, tx: CheckpointWriter) -> None:
        """Call ``write(state, tx)``."""
        self._write(state, tx)

    def load(self, files: CheckpointFiles, **kwargs: Any) -> Any:
        """Refused: plain files have no loader.

        Raises:
            InvalidArgumentError: always.
        """
        raise InvalidArgumentError(f"{self.name!r} writes files and cannot load them; read them through local_path()")


_BUILTIN: dict[str, str] = {
    "raw": "ckptstore.serializers.raw:RawSerializer",
    "json": "ckptstore.serializers.raw:JsonSerializer",
    "numpy": "ckptstore.serializers.numpy:NumpySerializer",
    "torch": "ckptstore.serializers.torch:TorchSerializer",
    "safetensors": "ckptstore.serializers.safetensors:SafetensorsSerializer",
    "pickle": "ckptstore.serializers.raw:PickleSerializer",
    "jax": "ckptstore.serializers.pytree:PytreeSerializer",
    "pytree": "ckptstore.serializers.pytree:PytreeSerializer",
    "keras": "ckptstore.integrations.keras:KerasModelSerializer",
    "keras_weights": "ckptstore.integrations.keras:KerasWeightsSerializer",
}

_registered: dict[str, Serializer | Callable[[], Serializer]] = {}


def register_serializer(serializer: Serializer) -> None:
    """Make ``serializer`` available by its ``name`` (replacing one of the same name)."""
    if not isinstance(serializer, Serializer):
        raise InvalidArgumentError(f"{serializer!r} does not implement the Serializer protocol")
    _registered[serializer.name] = serializer


def serializer_names() -> list[str]:
    """Return the names of every known serializer."""
    return sorted(set(_BUILTIN) | set(_registered))


def get_serializer(name_or_obj: str | Serializer) -> Serializer:
    """Return the serializer registered under a name (or the object itself).

    Raises:
        InvalidArgumentError: no serializer has that name.
        BackendUnavailableError: its framework is not installed (the message names the extra).
    """
    if not isinstance(name_or_obj, str):
        if not isinstance(name_or_obj, Serializer):
            raise InvalidArgumentError(f"{name_or_obj!r} is not a serializer name or object")
        return name_or_obj
    name = name_or_obj
    found = _registered.get(name)
    if found is not None:
        return found if isinstance(found, Serializer) else found()
    spec = _BUILTIN.get(name)
    if spec is None:
        known = ", ".join(serializer_names())
        raise InvalidArgumentError(f"no serializer named {name!r}; known: {known}")
    module_name, _, attr = spec.partition(":")
    module = importlib.import_module(module_name)
    serializer: Serializer = getattr(module, attr)()
    _registered[name] = serializer
    return serializer


def require(module: str, extra: str) -> Any:
    """Import ``module`` or raise :class:`BackendUnavailableError` naming the pip extra."""
    try:
        return importlib.import_module(module)
    except ImportError as exc:
        raise BackendUnavailableError(
            f"this needs {module.split('.')[0]!r}, which is not installed: pip install 'ckptstore[{extra}]'"
        ) from exc
