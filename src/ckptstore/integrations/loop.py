"""The ten-line pattern for a hand-written training loop: restore, train, save, repeat.

    ckpt = ckptstore.Checkpointer("runs/exp1", monitor="val_loss", keep=ckptstore.keep.linear(3))
    start, state = ckpt.restore(default=(0, None))
    for epoch in range(start + 1, epochs + 1):
        ...
        ckpt.save(epoch, {"model": model.state_dict(), ...}, metrics={"val_loss": v})

``restore`` returns the newest checkpoint that verifies (falling back past damaged ones), so a loop
killed at any moment resumes where its last whole checkpoint left it.
"""

from __future__ import annotations

import os
from collections.abc import Mapping
from typing import Any

from ..checkpoint import Checkpoint
from ..errors import InvalidArgumentError
from ..policies import KeepPolicy
from ..serializers import Serializer
from ..store import CheckpointStore, open_store

__all__ = ["Checkpointer", "choose_serializer"]


def _leaves(state: Any) -> Any:
    if isinstance(state, Mapping):
        for value in state.values():
            yield from _leaves(value)
    elif isinstance(state, (list, tuple)):
        for value in state:
            yield from _leaves(value)
    else:
        yield state


def choose_serializer(state: Any) -> str:
    """``torch`` when the state holds torch objects, else ``jax`` (pytrees of arrays and scalars, no pickle).

    Raises:
        InvalidArgumentError: a leaf is neither (pass ``serializer=`` explicitly).
    """
    kinds = set()
    for leaf in _leaves(state):
        module = type(leaf).__module__.split(".")[0]
        if module == "torch":
            return "torch"
        if leaf is None or isinstance(leaf, (bool, int, float, str)) or hasattr(leaf, "__array__"):
            kinds.add("tree")
        else:
            kinds.add(type(leaf).__name__)
    unknown = kinds - {"tree"}
    if unknown:
        raise InvalidArgumentError(
            f"cannot choose a serializer for leaves of type {sorted(unknown)}; pass serializer='torch', 'json', ..."
        )
    return "jax"


class Checkpointer:
    """Save every ``every`` epochs, keep what the policy says, and restore the newest valid state.

    Args:
        store: A store or a URL for :func:`ckptstore.open`.
        every: Save when ``epoch % every == 0``.
        monitor: The metric that defines best (and that ``save_best_only`` watches).
        mode: ``min``, ``max`` or ``auto``.
        keep: The keep policy.
        serializer: ``"auto"`` (:func:`choose_serializer`), a name, or a serializer.
        save_best_only: Save only improvements of ``monitor``.
        blocking: False returns from ``save`` after a snapshot of ``state`` (its arrays and tensors copied
            into buffers reused across saves); serializing, writing, the commit, pointers, index and gc
            run in the store's background thread, and ``save`` returns None. An error is raised by the
            next ``save``, by :meth:`close` or at exit (see :meth:`CheckpointStore.save_state`).
        storage_options: For a URL on an object store.
    """

    def __init__(
        self,
        store: CheckpointStore | str | os.PathLike[str],
        *,
        every: int = 1,
        monitor: str | None = None,
        mode: str = "auto",
        keep: KeepPolicy | None = None,
        serializer: str | Serializer = "auto",
        save_best_only: bool = False,
        blocking: bool = True,
        storage_options: Mapping[str, Any] | None = None,
    ) -> None:
        if isinstance(store, CheckpointStore):
            self.store = store
        else:
            self.store = open_store(
                store,
                monitor=monitor,
                mode=mode,
                keep=keep,
                save_interval=every,
                save_best_only=save_best_only,
                storage_options=storage_options,
            )
        self.serializer = serializer
        self.blocking = blocking
        self.restored: Checkpoint | None = None

    def __repr__(self) -> str:
        restored = f" restored={self.restored.epoch}" if self.restored is not None else ""
        return f"<Checkpointer serializer={self.serializer!r}{restored} store={self.store!r}>"

    def restore(self, default: tuple[int, Any] = (0, None), **load_kwargs: Any) -> tuple[int, Any]:
        """Return ``(epoch, state)`` of the newest checkpoint that verifies, or ``default``.

        Later saves record the restored epoch as their parent.
        """
        checkpoint = self.store.restart("auto")
        self.restored = checkpoint
        if checkpoint is None:
            return default
        serializer = None if self.serializer == "auto" else self.serializer
        return checkpoint.epoch, checkpoint.load(serializer, verify=False, **load_kwargs)

    def save(
        self,
        epoch: int,
        state: Any,
        metrics: Mapping[str, Any] | None = None,
        metadata: Mapping[str, Any] | None = None,
        *,
        force: bool = False,
    ) -> Checkpoint | None:
        """Save ``state`` as ``epoch`` if the rules say so; return the checkpoint (None if skipped or not blocking)."""
        if not force and not self.store.should_save(epoch, metrics):
            return None
        serializer = choose_serializer(state) if self.serializer == "auto" else self.serializer
        if isinstance(serializer, str) and not serializer:
            raise InvalidArgumentError("serializer must not be empty")
        return self.store.save_state(
            epoch, state, serializer=serializer, metrics=metrics, metadata=metadata, blocking=self.blocking, force=True
        )

    def close(self) -> None:
        """Wait for a background save and release the store."""
        self.store.close()

    def __enter__(self) -> Checkpointer:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()
