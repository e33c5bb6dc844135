"""Progress for long uploads and downloads, on stderr when it is a terminal.

A big checkpoint on a slow link takes minutes; a user should see that it moves. The bar is off when
stderr is not a terminal (CI logs, batch jobs), for transfers under :data:`MIN_BYTES`, and when the
caller passes ``progress=False``. Callers can pass their own callable instead (the CLI hands in a
rich progress bar); it receives ``(done_bytes, total_bytes, description)``.
"""

from __future__ import annotations

import sys
import threading
import time
from collections.abc import Callable
from typing import TextIO

__all__ = ["MIN_BYTES", "Progress", "ProgressOption", "estimate_bytes", "make_progress", "make_stream_progress"]

MIN_BYTES = 64 * 1024 * 1024
"""Transfers smaller than this show no bar."""

ProgressOption = bool | None | Callable[[int, int, str], None]
"""``None``: a bar when stderr is a terminal; ``True``/``False``: force on/off; a callable: yours."""


class Progress:
    """A thread-safe byte counter that reports to a callback or draws one line on a terminal.

    Args:
        total: Bytes expected.
        description: What is being transferred (``upload epoch 3``).
        callback: Receives ``(done, total, description)``; None draws on ``stream``.
        stream: Where the built-in bar is drawn (default stderr).
    """

    def __init__(
        self,
        total: int,
        description: str,
        callback: Callable[[int, int, str], None] | None = None,
        stream: TextIO | None = None,
    ) -> None:
        self.total = total
        self.description = description
        self.done = 0
        self._callback = callback
        self._stream = stream or sys.stderr
        self._lock = threading.Lock()
        self._started = time.monotonic()
        self._last_draw = 0.0
        self._quiet_below = 0  # a streamed transfer of unknown size shows itself once it is this big
        self._drawn = False

    def __call__(self, n: int) -> None:
        """Count ``n`` more bytes."""
        with self._lock:
            self.done += n
            if self._callback is not None:
                self._callback(self.done, self.total, self.description)
                return
            if self.done < self._quiet_below:
                return
            now = time.monotonic()
            if now - self._last_draw >= 0.1 or self.done == self.total:
                self._last_draw = now
                self._draw(now)

    def _draw(self, now: float) -> None:
        rate = self.done / max(now - self._started, 1e-9) / 1e6
        if self.total <= 0 or self.done > self.total:  # streamed, size unknown (or outgrown): count
            self._stream.write(f"\r{self.description}: {self.done / 1e6:,.0f} MB {rate:,.0f} MB/s")
            self._stream.flush()
            return
        fraction = self.done / self.total
        width = 30
        filled = int(width * min(fraction, 1.0))
        self._stream.write(
            f"\r{self.description}: [{'#' * filled}{'.' * (width - filled)}] "
            f"{fraction * 100:5.1f}% {self.done / 1e6:,.0f}/{self.total / 1e6:,.0f} MB {rate:,.0f} MB/s"
        )
        self._stream.flush()

    def close(self) -> None:
        """End the line of the built-in bar (if it was shown)."""
        if self._callback is None:
            with self._lock:
                if self.done < self._quiet_below:
                    return
                self._draw(time.monotonic())
                self._stream.write("\n")
                self._stream.flush()


def make_progress(option: ProgressOption, total: int, description: str) -> Progress | None:
    """The progress reporter for a transfer of ``total`` bytes, or None for no reporting."""
    if option is False:
        return None
    if callable(option):
        return Progress(total, description, callback=option)
    if option is None and (total < MIN_BYTES or not _stderr_is_tty()):
        return None
    return Progress(total, description)


def _stderr_is_tty() -> bool:
    try:
        return sys.stderr.isatty()
    except (AttributeError, ValueError):
        return False


def make_stream_progress(option: ProgressOption, description: str, expected: int | None) -> Progress | None:
    """The reporter for streamed writes (``tx.open()`` to an object store), whose size is known only at the end.

    ``expected`` is the serializer's estimate of the bytes (None if it cannot tell). With the default
    option the bar shows on a terminal once the transfer is big: from the start when ``expected`` is
    at least :data:`MIN_BYTES`, else as soon as that many bytes went out; without an estimate it
    counts bytes and rate instead of a percentage.
    """
    if option is False:
        return None
    total = expected or 0
    if callable(option):
        return Progress(total, description, callback=option)
    if option is None and not _stderr_is_tty():
        return None
    progress = Progress(total, description)
    if option is None and total < MIN_BYTES:
        progress._quiet_below = MIN_BYTES
    return progress


def estimate_bytes(state: object, _depth: int = 0) -> int | None:
    """The bytes of the arrays and buffers in ``state`` (nested dicts, lists, tuples), or None if it has none.

    Counts anything with an integer ``nbytes`` (numpy arrays, torch tensors, jax arrays), ``bytes``
    and ``bytearray``; the serializer's own overhead (headers, pickled structure) is not counted.
    """
    if _depth > 64:
        return None
    try:
        nbytes = getattr(state, "nbytes", None)
    except (RuntimeError, TypeError, ValueError):  # e.g. a sparse torch tensor: leave it to the serializer
        return None
    if isinstance(nbytes, int) and not isinstance(nbytes, bool):
        return nbytes
    if isinstance(state, (bytes, bytearray, memoryview)):
        return len(state)
    items = state.values() if isinstance(state, dict) else state if isinstance(state, (list, tuple)) else None
    if items is None:
        return None
    found = [estimate_bytes(item, _depth + 1) for item in items]
    counted = [n for n in found if n is not None]
    return sum(counted) if counted else None
