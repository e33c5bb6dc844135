"""Downloads by parallel ranges: :class:`PrefetchReader`, the stream ``open_read`` returns on object stores.

A read of 1 MiB or more at the position where the previous read ended schedules the next ranges of
``part_size`` bytes (ranged GETs on the filesystem's event loop, as many at once as the store's
``transfer_concurrency`` shared by the readers open) and hands them back in order, so the one pass
that hashes a download sees its bytes in order. Small reads and seeks go to the filesystem's own
buffered file, unchanged.
"""

from __future__ import annotations

import asyncio
import collections
import contextlib
import io
from collections.abc import Awaitable, Callable
from concurrent.futures import Future
from typing import TYPE_CHECKING, Any

from ._parts import MiB, PartPool

if TYPE_CHECKING:
    from _typeshed import WriteableBuffer

__all__ = ["Fetch", "PrefetchReader"]

_PREFETCH_MIN_READ = 1 * MiB
"""A read at least this large (or a read of everything) starts the read-ahead window."""


Fetch = Callable[[int, int], Awaitable[bytes]]
"""``fetch(start, end)``: the bytes ``[start, end)`` of the object (a coroutine run on the loop)."""


class PrefetchReader(io.RawIOBase):
    """A reader that fetches ranges ahead, in parallel, for large sequential reads; otherwise ``inner``.

    Args:
        inner: The filesystem's own buffered file (seeks and small reads go there).
        size: The object's size.
        fetch: Coroutine function for a range.
        loop: The loop ``fetch`` runs on.
        pool: The backend's transfer budget: range size, and the read-ahead shared by open readers.
    """

    def __init__(self, inner: Any, size: int, fetch: Fetch, loop: asyncio.AbstractEventLoop, pool: PartPool) -> None:
        super().__init__()
        self._inner = inner
        self.size = size
        self._fetch = fetch
        self._loop = loop
        self._pool = pool
        self._range = pool.options.part_size
        pool.reader(+1)
        self._pos = 0
        self._window: collections.deque[tuple[int, Future[bytes]]] = collections.deque()
        self._next = 0  # start of the next range to schedule
        self._head: bytes | None = None  # the first range of the window, once fetched
        self._head_start = 0

    def readable(self) -> bool:
        """Return True."""
        return True

    def seekable(self) -> bool:
        """Return True (a seek drops the read-ahead)."""
        return True

    def tell(self) -> int:
        """The position."""
        return self._pos

    def seek(self, offset: int, whence: int = io.SEEK_SET) -> int:
        """Move the position; a move away from the read-ahead drops it."""
        if whence == io.SEEK_SET:
            target = offset
        elif whence == io.SEEK_CUR:
            target = self._pos + offset
        elif whence == io.SEEK_END:
            target = self.size + offset
        else:
            raise ValueError(f"invalid whence ({whence})")
        if target < 0:
            raise OSError(22, "negative seek position")
        if target != self._pos:
            self._drop_window()
            self._pos = target
        return self._pos

    def _drop_window(self) -> None:
        for _, future in self._window:
            future.cancel()
        self._window.clear()
        self._head = None

    def _fill_window(self) -> None:
        if not self._window:
            self._next = self._pos
        ahead = self._pool.ahead()
        while len(self._window) < ahead and self._next < self.size:
            end = min(self._next + self._range, self.size)
            coro = self._fetch(self._next, end)
            self._window.append((self._next, asyncio.run_coroutine_threadsafe(coro, self._loop)))  # type: ignore[arg-type]
            self._next = end

    def _take(self, n: int) -> bytes:
        """Up to ``n`` bytes at the position, from the window (which is at the position)."""
        if self._head is None:
            self._fill_window()
            start, future = self._window[0]
            data = future.result()
            expected = min(start + self._range, self.size) - start
            if len(data) != expected:
                self._drop_window()
                raise OSError(5, f"a ranged read returned {len(data)} bytes instead of {expected}")
            self._head, self._head_start = data, start
        offset = self._pos - self._head_start
        # a whole range goes out as it came (no copy)
        out = self._head if offset == 0 and n >= len(self._head) else self._head[offset : offset + n]
        self._pos += len(out)
        if self._pos >= self._head_start + len(self._head):
            self._window.popleft()
            self._head = None
            self._fill_window()
        return out

    def read(self, size: int | None = -1) -> bytes:
        """Read up to ``size`` bytes (all that is left if negative)."""
        if self.closed:
            raise ValueError("read of closed file")
        remaining = self.size - self._pos
        n = remaining if size is None or size < 0 else min(size, remaining)
        if n <= 0:
            return b""
        if not self._window and n < _PREFETCH_MIN_READ:
            self._inner.seek(self._pos)
            data: bytes = self._inner.read(n)
            self._pos += len(data)
            return data
        first = self._take(n)
        if len(first) == n:
            return first
        pieces = [first]
        got = len(first)
        while got < n:
            piece = self._take(n - got)
            pieces.append(piece)
            got += len(piece)
        return b"".join(pieces)

    def readinto(self, b: WriteableBuffer) -> int:
        """Read into ``b``."""
        view = memoryview(b).cast("B")
        data = self.read(view.nbytes)
        view[: len(data)] = data
        return len(data)

    def readall(self) -> bytes:
        """Read to the end."""
        return self.read(-1)

    def close(self) -> None:
        """Drop the read-ahead and close the inner file."""
        if self.closed:
            return
        self._drop_window()
        self._pool.reader(-1)
        with contextlib.suppress(Exception):
            self._inner.close()
        super().close()
