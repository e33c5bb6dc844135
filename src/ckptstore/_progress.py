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

__all__ = ["MIN_BYTES", "Progress", "ProgressOption", "make_progress"]

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

    def __call__(self, n: int) -> None:
        """Count ``n`` more bytes."""
        with self._lock:
            self.done += n
            if self._callback is not None:
                self._callback(self.done, self.total, self.description)
                return
            now = time.monotonic()
            if now - self._last_draw >= 0.1 or self.done >= self.total:
                self._last_draw = now
                self._draw(now)

    def _draw(self, now: float) -> None:
        fraction = self.done / self.total if self.total else 1.0
        width = 30
        filled = int(width * min(fraction, 1.0))
        rate = self.done / max(now - self._started, 1e-9) / 1e6
        self._stream.write(
            f"\r{self.description}: [{'#' * filled}{'.' * (width - filled)}] "
            f"{fraction * 100:5.1f}% {self.done / 1e6:,.0f}/{self.total / 1e6:,.0f} MB {rate:,.0f} MB/s"
        )
        self._stream.flush()

    def close(self) -> None:
        """End the line of the built-in bar."""
        if self._callback is None:
            with self._lock:
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
