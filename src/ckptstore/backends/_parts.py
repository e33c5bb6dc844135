"""Parallel part transfers for object stores: uploads in concurrent parts, downloads by concurrent ranges.

Both sides keep memory bounded and the bytes in order, so the caller's one pass over them (the
xxh3-128 hash of :class:`~ckptstore.checksum.HashingStream` and
:func:`~ckptstore.checksum.copy_hashing`) is unchanged:

* :class:`MultipartWriter` is the sink of ``open_write`` on S3. It fills one part buffer at a time and
  hands each full part to the filesystem's event loop, where up to ``concurrency`` parts are sent at
  once (shared by every writer of the backend); the writer blocks only when that many are in flight.
  Buffers are pooled and reused while any writer is open, so memory is at most
  ``(concurrency + open writers) * part_size``. A part that fails makes the next ``write`` or the
  ``close`` raise, and the multipart upload is aborted: no object appears.
* :class:`~._prefetch.PrefetchReader` is the stream of ``open_read``: a large sequential read
  schedules the next ranges of ``part_size`` bytes ahead of the reader (ranged GETs, the
  ``concurrency`` shared by the open readers), and hands them back in order; small reads and seeks go
  to the filesystem's own buffered file, unchanged.

The knobs are :class:`TransferOptions`, read from the store's ``storage_options``
(``part_size``, ``transfer_concurrency``) and checked with typed errors.
"""

from __future__ import annotations

import asyncio
import contextlib
import io
import threading
from collections.abc import Coroutine, Mapping
from concurrent.futures import Future
from typing import TYPE_CHECKING, Any

import attrs

from ..errors import InvalidArgumentError, InvalidArgumentTypeError

if TYPE_CHECKING:
    from _typeshed import ReadableBuffer

__all__ = [
    "DEFAULT_CONCURRENCY",
    "DEFAULT_PART_SIZE",
    "MultipartWriter",
    "PartBody",
    "PartPool",
    "PartUploader",
    "TransferOptions",
]

MiB = 1024 * 1024
DEFAULT_PART_SIZE = 8 * MiB
"""Bytes per part of an upload and per range of a download, unless ``storage_options['part_size']``."""
DEFAULT_CONCURRENCY = 8
"""Parts (or ranges) in flight at once per store, unless ``storage_options['transfer_concurrency']``."""
MAX_CONCURRENCY = 64
_PART_LIMITS = {"s3": (5 * MiB, 5 * 1024 * MiB, 1), "gs": (256 * 1024, 5 * 1024 * MiB, 256 * 1024)}


def _int_option(options: Mapping[str, Any], name: str, default: int, where: str) -> int:
    value = options.get(name, default)
    if isinstance(value, bool) or not isinstance(value, int):
        raise InvalidArgumentTypeError(
            f"{where}: storage_options[{name!r}] must be an int, got {type(value).__name__} ({value!r})"
        )
    return value


@attrs.frozen(kw_only=True)
class TransferOptions:
    """How large objects move: part size and parallelism.

    Attributes:
        part_size: Bytes per uploaded part and per downloaded range.
        concurrency: Parts or ranges in flight at once, for the whole store (all files together).
    """

    part_size: int = DEFAULT_PART_SIZE
    concurrency: int = DEFAULT_CONCURRENCY

    @classmethod
    def from_storage_options(cls, options: Mapping[str, Any], scheme: str, where: str) -> TransferOptions:
        """Read and check ``part_size`` and ``transfer_concurrency`` from a store's ``storage_options``.

        Args:
            options: The storage options (other keys are ignored).
            scheme: ``"s3"`` or ``"gs"``: their part-size rules differ.
            where: The store's URL, for messages.

        Raises:
            InvalidArgumentTypeError: a value is not an int.
            InvalidArgumentError: a value is out of range (S3: parts of 5 MiB to 5 GiB; GCS: a
                multiple of 256 KiB up to 5 GiB; concurrency 1 to 64).
        """
        part_size = _int_option(options, "part_size", DEFAULT_PART_SIZE, where)
        concurrency = _int_option(options, "transfer_concurrency", DEFAULT_CONCURRENCY, where)
        low, high, multiple = _PART_LIMITS.get(scheme, (1, 5 * 1024 * MiB, 1))
        if not low <= part_size <= high or part_size % multiple:
            rule = f"a multiple of {multiple} bytes " if multiple > 1 else ""
            raise InvalidArgumentError(
                f"{where}: storage_options['part_size'] must be {rule}between {low} and {high} bytes "
                f"(the {scheme} service's limits), got {part_size}"
            )
        if not 1 <= concurrency <= MAX_CONCURRENCY:
            raise InvalidArgumentError(
                f"{where}: storage_options['transfer_concurrency'] must be between 1 and {MAX_CONCURRENCY}, "
                f"got {concurrency}"
            )
        return cls(part_size=part_size, concurrency=concurrency)


class PartPool:
    """The parts in flight of one backend, and the buffers they are built in (reused while in use).

    Args:
        options: Part size and concurrency.
    """

    def __init__(self, options: TransferOptions) -> None:
        self.options = options
        self.slots = threading.BoundedSemaphore(options.concurrency)
        self._lock = threading.Lock()
        self._free: list[bytearray] = []
        self._users = 0
        self.readers = 0

    def enter(self) -> None:
        """A writer opens."""
        with self._lock:
            self._users += 1

    def leave(self) -> None:
        """A writer closes; with none left, the idle buffers are let go (memory returns to the system)."""
        with self._lock:
            self._users -= 1
            if self._users <= 0:
                self._users = 0
                self._free.clear()

    def reader(self, delta: int) -> None:
        """A reader opens (+1) or closes (-1); the read-ahead budget is shared among those open."""
        with self._lock:
            self.readers = max(0, self.readers + delta)

    def ahead(self) -> int:
        """Ranges one reader may have in flight: the concurrency shared among the open readers."""
        return max(1, self.options.concurrency // max(1, self.readers))

    def take(self) -> bytearray:
        """A part buffer: an idle one if any, else a new one (its pages are touched only when filled)."""
        with self._lock:
            if self._free:
                return self._free.pop()
        return bytearray(self.options.part_size)

    def give(self, buffer: bytearray) -> None:
        """Return a buffer whose part was sent."""
        with self._lock:
            if self._users > 0 and len(self._free) <= self.options.concurrency:
                self._free.append(buffer)


class PartBody(io.BytesIO):
    """A request body that reads a part buffer in place (an ``io.BytesIO`` that copies nothing up front).

    Given as bytes, a part would be copied whole into the socket transport's buffer while it is sent
    (so memory doubles with every part in flight); as this stream, aiohttp sends it 256 KiB at a time
    and waits for the socket to drain, and botocore can read it again (checksums, a retry).

    Args:
        data: The part's bytes (not copied; must stay unchanged until the request is done).
    """

    def __init__(self, data: bytes | bytearray | memoryview) -> None:
        super().__init__()
        self._data = memoryview(data).cast("B").toreadonly()
        self._at = 0

    def __len__(self) -> int:
        """Bytes left to read (botocore's content length)."""
        return self._data.nbytes - self._at

    def readable(self) -> bool:
        """Return True."""
        return True

    def seekable(self) -> bool:
        """Return True."""
        return True

    def writable(self) -> bool:
        """Return False."""
        return False

    def tell(self) -> int:
        """The position."""
        return self._at

    def seek(self, offset: int, whence: int = io.SEEK_SET) -> int:
        """Move the position (clamped to the part)."""
        base = {io.SEEK_SET: 0, io.SEEK_CUR: self._at, io.SEEK_END: self._data.nbytes}[whence]
        self._at = max(0, min(base + offset, self._data.nbytes))
        return self._at

    def read(self, size: int | None = -1) -> memoryview:  # type: ignore[override]
        """Up to ``size`` bytes from the position, as a read-only view of the part (nothing is copied).

        A view, not ``bytes``: botocore reads the body once for its CRC-32 and once more to sign it
        (SHA-256 over HTTP), and aiohttp once to send it, and each consumer takes any bytes-like
        object (``zlib.crc32``, ``hashlib``, ``transport.write``, ``bytes % (...)`` for aws-chunked
        framing). Copying each slice with ``tobytes()`` cost a third of the upload's client CPU
        (``memmove``, 15 % of the samples of a 1 GiB upload under ``perf``).
        """
        end = self._data.nbytes if size is None or size < 0 else min(self._at + size, self._data.nbytes)
        out = self._data[self._at : end]
        self._at = end
        return out

    def read1(self, size: int | None = -1) -> memoryview:  # type: ignore[override]
        """Same as :meth:`read`."""
        return self.read(size)

    def getbuffer(self) -> memoryview:
        """A view of the whole part (aiohttp measures the body with it)."""
        return memoryview(self._data)

    def getvalue(self) -> bytes:
        """The whole part, copied."""
        return self._data.tobytes()

    def write(self, b: Any) -> int:
        """Refuse: the body is read-only."""
        raise io.UnsupportedOperation("write")

    def close(self) -> None:
        """Keep the view usable: aiohttp closes bodies, botocore may read them again for a retry."""


class PartUploader:
    """The service calls of one multipart upload (coroutines run on the filesystem's loop)."""

    async def put_whole(self, data: bytes | bytearray | memoryview) -> None:
        """Create the object with one request (an object smaller than one part)."""
        raise NotImplementedError

    async def start(self) -> None:
        """Begin the multipart upload."""
        raise NotImplementedError

    async def put_part(self, number: int, data: bytearray | memoryview) -> Any:
        """Send part ``number`` (from 1); returns what :meth:`complete` needs of it."""
        raise NotImplementedError

    async def complete(self, parts: list[Any]) -> None:
        """Assemble the parts, in order, into the object."""
        raise NotImplementedError

    async def abort(self) -> None:
        """Drop the multipart upload and its parts."""
        raise NotImplementedError


class MultipartWriter(io.RawIOBase):
    """A write-only stream that uploads its bytes in parts, several at once; the object appears on close.

    Args:
        uploader: The service calls.
        loop: The event loop the uploader's coroutines run on (the filesystem's I/O thread).
        pool: The backend's part budget and buffers.
        label: The object's URL, for messages.
    """

    def __init__(self, uploader: PartUploader, loop: asyncio.AbstractEventLoop, pool: PartPool, label: str) -> None:
        super().__init__()
        self._uploader = uploader
        self._loop = loop
        self._pool = pool
        self._label = label
        self._part_size = pool.options.part_size
        self._buffer: bytearray | None = None
        self._filled = 0
        self._size = 0
        self._started = False
        self._pending: list[Future[Any]] = []
        self._error: BaseException | None = None
        self._finished = False
        self._forgotten = False
        pool.enter()

    # -- io protocol -------------------------------------------------------------------------------
    _forgotten = False

    @property
    def closed(self) -> bool:
        """True once closed, discarded or forgotten."""
        return self._forgotten or bool(super().closed)

    @closed.setter
    def closed(self, value: bool) -> None:
        """``closed = True`` forgets the stream as fsspec files allow: it never completes the upload."""
        if value and not self.closed:
            self._finished = True
            self._release()
            self._forgotten = True

    def writable(self) -> bool:
        """Return True."""
        return True

    def seekable(self) -> bool:
        """Return False: parts go out in order."""
        return False

    def tell(self) -> int:
        """Bytes written so far."""
        return self._size

    def write(self, b: ReadableBuffer) -> int:
        """Copy ``b`` into part buffers, sending each one as it fills."""
        if self.closed:
            raise ValueError("write to closed file")
        self._raise_failure()
        view = memoryview(b).cast("B")
        total = view.nbytes
        offset = 0
        while offset < total:
            if self._buffer is None:
                self._buffer = self._pool.take()
                self._filled = 0
            n = min(self._part_size - self._filled, total - offset)
            self._buffer[self._filled : self._filled + n] = view[offset : offset + n]
            self._filled += n
            offset += n
            if self._filled == self._part_size:
                self._send_part()
        self._size += total
        return total

    def _run(self, coro: Coroutine[Any, Any, Any]) -> Any:
        return asyncio.run_coroutine_threadsafe(coro, self._loop).result()

    def _raise_failure(self) -> None:
        if self._error is not None:
            raise self._error

    def _send_part(self) -> None:
        """Hand the full buffer to the loop; block while ``concurrency`` parts are in flight."""
        buffer, filled = self._buffer, self._filled
        assert buffer is not None
        self._buffer, self._filled = None, 0
        if not self._started:
            self._run(self._uploader.start())
            self._started = True
        self._pool.slots.acquire()
        try:
            self._raise_failure()
        except BaseException:
            self._pool.slots.release()
            self._pool.give(buffer)
            raise
        data: bytearray | memoryview = buffer if filled == len(buffer) else memoryview(buffer)[:filled]
        future = asyncio.run_coroutine_threadsafe(self._uploader.put_part(len(self._pending) + 1, data), self._loop)
        future.add_done_callback(lambda f: self._part_done(f, buffer))
        self._pending.append(future)

    def _part_done(self, future: Future[Any], buffer: bytearray) -> None:
        self._pool.slots.release()
        if future.cancelled():  # a cancelled request may still read the buffer: never reuse it
            return
        error = future.exception()
        if error is not None:
            if self._error is None:
                self._error = error
            return
        self._pool.give(buffer)

    def close(self) -> None:
        """Send the last part and complete the upload (or abort it, and raise, if a part failed)."""
        if self.closed:
            return
        try:
            if not self._finished:
                self._finish()
        finally:
            self._release()
            super().close()

    def _finish(self) -> None:
        self._finished = True
        if not self._started:  # the whole object fits in one part: one request
            buffer, filled = self._buffer, self._filled
            data: bytes | memoryview = b"" if buffer is None else memoryview(buffer)[:filled]
            self._run(self._uploader.put_whole(data))
            return
        try:
            if self._filled:
                self._send_part()
            parts = [future.result() for future in self._pending]
            self._run(self._uploader.complete(parts))
        except BaseException:
            self._abort_upload()
            raise

    def _abort_upload(self) -> None:
        for future in self._pending:
            future.cancel()
        for future in self._pending:
            with contextlib.suppress(BaseException):
                future.result()
        if self._started:
            with contextlib.suppress(Exception):
                self._run(self._uploader.abort())

    def _release(self) -> None:
        if self._buffer is not None:
            self._pool.give(self._buffer)
            self._buffer = None
        self._pool.leave()

    def discard(self) -> None:
        """Drop the upload without completing it: the parts in flight are cancelled and the upload aborted."""
        if self.closed:
            return
        try:
            if not self._finished:
                self._finished = True
                self._abort_upload()
        finally:
            self._release()
            super().close()
