"""Snapshots for non-blocking saves: copy what the caller may change, into buffers reused across saves.

``save_state(..., blocking=False)`` returns as soon as the state is safe from the caller's next
optimizer step; serializing, hashing, writing, fsync, the commit, pointers, index and gc run in the
background. What "safe" costs is one copy of the mutable bytes, into host buffers kept from one save
to the next (so after the first save there is no allocation and no page fault: the time blocked is
a plain ``memcpy``).

What is copied and what is not:

- numpy arrays are copied into a reused array of the same shape and dtype, unless they are
  read-only all the way down (the array and every base it views): those the caller hands over.
- torch tensors are detached and copied into a reused CPU tensor; a CUDA tensor is copied into a
  pinned host buffer with ``non_blocking=True`` and an event the background waits for before it
  reads the buffer.
- ``bytes``, ``str``, numbers, ``None`` and other immutable scalars are kept as they are.
- ``dict``, ``list`` and ``tuple`` containers are rebuilt around the copies.
- anything else is deep-copied (``copy.deepcopy``).

numpy and torch are never imported here: a value is recognised as an array or a tensor only when its
module is already loaded (it must be, for the caller to hold one).
"""

from __future__ import annotations

import copy
import sys
import threading
from collections.abc import Callable
from typing import Any

__all__ = ["Snapshot", "SnapshotBuffers"]

_IMMUTABLE = (bytes, str, int, float, complex, bool, type(None), frozenset)


class Snapshot:
    """A copy of a state, and what must happen before the background may read it.

    Attributes:
        state: The copy (same structure as the caller's state).
        copied_bytes: Bytes copied into buffers (0 when everything was handed over as it was).
    """

    def __init__(
        self, state: Any, copied_bytes: int, ready: list[Callable[[], None]], release: Callable[[], None]
    ) -> None:
        self.state = state
        self.copied_bytes = copied_bytes
        self._ready = ready
        self._release = release

    def wait_ready(self) -> None:
        """Wait for device-to-host copies still running (CUDA events); a no-op for host memory."""
        for wait in self._ready:
            wait()
        self._ready = []

    def release(self) -> None:
        """Give the buffers back for the next save (after the background is done with them)."""
        self._release()


class SnapshotBuffers:
    """Sets of host buffers, one per save in flight, each reused by the next save that gets it.

    A buffer is found by the state's path to it (``("model", "weight")``) and reused when the shape
    and dtype match, so a training loop that saves the same state dict every epoch allocates once.
    """

    def __init__(self) -> None:
        self._free: list[dict[tuple[Any, ...], Any]] = []
        self._lock = threading.Lock()

    def take(self, state: Any) -> Snapshot:
        """Copy ``state`` (see the module docstring); the caller may change its state once this returns."""
        with self._lock:
            buffers = self._free.pop() if self._free else {}
        used: dict[tuple[Any, ...], Any] = {}
        ready: list[Callable[[], None]] = []
        counter = [0]
        try:
            copied = _copy(state, (), buffers, used, ready, counter, 0)
        except BaseException:
            self._give_back(buffers)
            raise
        buffers.update(used)  # kept whole: a save that copied nothing must not lose the others' buffers

        def release() -> None:
            self._give_back(buffers)

        return Snapshot(copied, counter[0], ready, release)

    def _give_back(self, buffers: dict[tuple[Any, ...], Any]) -> None:
        with self._lock:
            self._free.append(buffers)


def _copy(
    value: Any,
    path: tuple[Any, ...],
    buffers: dict[tuple[Any, ...], Any],
    used: dict[tuple[Any, ...], Any],
    ready: list[Callable[[], None]],
    counter: list[int],
    depth: int,
) -> Any:
    if depth > 200:
        raise RecursionError("the state is nested more than 200 levels deep")
    if isinstance(value, _IMMUTABLE):
        return value
    if isinstance(value, dict):  # dict, OrderedDict (a torch state_dict), ...: rebuilt as the same type
        pairs = [(k, _copy(v, (*path, k), buffers, used, ready, counter, depth + 1)) for k, v in value.items()]
        try:
            rebuilt = type(value)(pairs)
        except TypeError:
            return dict(pairs)
        extra = getattr(value, "__dict__", None)
        if extra:  # a torch state_dict's ``_metadata`` (module versions) travels with it
            rebuilt.__dict__.update(copy.deepcopy(extra))
        return rebuilt
    if isinstance(value, (list, tuple)) and type(value) in (list, tuple):
        items = [_copy(v, (*path, i), buffers, used, ready, counter, depth + 1) for i, v in enumerate(value)]
        return items if isinstance(value, list) else tuple(items)
    numpy = sys.modules.get("numpy")
    if numpy is not None and isinstance(value, numpy.ndarray):
        if _read_only(numpy, value):
            return value  # handed over: nothing can change it
        buffer = buffers.get(path)
        if buffer is None or buffer.shape != value.shape or buffer.dtype != value.dtype:
            buffer = numpy.empty_like(value, order="C")
        numpy.copyto(buffer, value)
        used[path] = buffer
        counter[0] += value.nbytes
        return buffer
    torch = sys.modules.get("torch")
    if torch is not None and isinstance(value, torch.Tensor):
        return _copy_tensor(torch, value, path, buffers, used, ready, counter)
    return copy.deepcopy(value)


def _read_only(numpy: Any, array: Any) -> bool:
    """True if neither ``array`` nor any array it views can be written."""
    current = array
    while isinstance(current, numpy.ndarray):
        if current.flags.writeable:
            return False
        current = current.base
    return current is None or isinstance(current, bytes)


def _copy_tensor(
    torch: Any,
    tensor: Any,
    path: tuple[Any, ...],
    buffers: dict[tuple[Any, ...], Any],
    used: dict[tuple[Any, ...], Any],
    ready: list[Callable[[], None]],
    counter: list[int],
) -> Any:
    tensor = tensor.detach()
    buffer = buffers.get(path)
    cuda = tensor.is_cuda
    if buffer is None or buffer.shape != tensor.shape or buffer.dtype != tensor.dtype:
        buffer = torch.empty(tensor.shape, dtype=tensor.dtype, device="cpu", pin_memory=cuda)
    if cuda:  # a device-to-host copy that overlaps with the caller; the background waits for its event
        buffer.copy_(tensor, non_blocking=True)
        event = torch.cuda.Event()
        event.record()
        ready.append(event.synchronize)
    else:
        buffer.copy_(tensor)
    used[path] = buffer
    counter[0] += tensor.numel() * tensor.element_size()
    return buffer
