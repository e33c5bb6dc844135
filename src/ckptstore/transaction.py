"""``SaveTransaction``: the stage step of the save pipeline, one checkpoint being written.

A transaction hands a serializer (or the user's ``with`` block) the two doors of DESIGN section 3.4:
:attr:`SaveTransaction.path`, a private staging folder, and :meth:`SaveTransaction.open`, a write-only
stream that hashes every byte as it is written (on object stores, straight into the claimed epoch
folder). It checks every name on the way in (nothing escapes the checkpoint, no name is written
twice, no file is also a folder) and records what was written. It never publishes: leaving the
block hands it to its :class:`SavePipeline` (to seal and publish, now or in the background), and an
exception hands it back to be discarded, so nothing of an aborted save is ever visible.
"""

from __future__ import annotations

import contextlib
import logging
import os
import time
from concurrent.futures import Future
from pathlib import Path
from types import TracebackType
from typing import IO, TYPE_CHECKING, Any, Protocol

from ._progress import Progress, ProgressOption, make_stream_progress
from ._validate import check_key_length, check_portable_name, check_relpath, clash_message
from .checksum import HashingStream, HashingWriter
from .errors import InvalidArgumentError, UnsafePathError
from .manifest import FileEntry

if TYPE_CHECKING:
    from .backends.base import Backend
    from .checkpoint import Checkpoint
    from .commit.claims import Claim
    from .policies import SaveDecision
    from .serializers import Serializer
    from .sharded import ShardSpec

__all__ = ["SavePipeline", "SaveTransaction"]


class SavePipeline(Protocol):
    """What a transaction needs of the pipeline that runs it (:class:`ckptstore.pipeline.Pipeline`)."""

    @property
    def backend(self) -> Backend:
        """The store's backend: names are checked against its limits, and ``open`` may stream to it."""
        ...

    @property
    def url(self) -> str:
        """The store's URL, for messages (redacted)."""
        ...

    def epoch_key(self, epoch: int) -> str:
        """The epoch folder the checkpoint is published as (``epochs/00000003``)."""
        ...

    def begin(self, tx: SaveTransaction) -> None:
        """Give ``tx`` its staging folder (and, on object stores, the claim on its epoch)."""
        ...

    def finish(self, tx: SaveTransaction) -> Checkpoint | Future[Checkpoint]:
        """Seal and publish ``tx``: the checkpoint, or a future of it for a non-blocking save."""
        ...

    def discard(self, tx: SaveTransaction) -> None:
        """Remove whatever ``tx`` staged, uploaded or claimed (best effort)."""
        ...

    def log(self, event: str, message: str, level: int = logging.INFO) -> None:
        """Record one event in the store's log."""
        ...

    @property
    def progress(self) -> ProgressOption:
        """The store's progress option (``StoreConfig.progress``), for streamed uploads."""
        ...


class SaveTransaction:
    """One checkpoint being written; use it as a context manager from :meth:`CheckpointStore.save`.

    Inside the block, write files into :attr:`path` (a private local staging directory) or stream
    them through :meth:`open` (on object stores straight into the bucket). Leaving the block commits;
    an exception inside it aborts, removes what was staged or uploaded, and commits nothing.

    Attributes:
        epoch: The epoch being saved.
        decision: Why the store saves (or skips) this epoch.
        shard: This rank's share of a sharded save (:mod:`ckptstore.sharded`); None for a plain save.
    """

    def __init__(
        self,
        pipeline: SavePipeline,
        epoch: int,
        *,
        metrics: dict[str, float],
        metadata: dict[str, Any],
        step: int | None,
        batch: int | None,
        decision: SaveDecision,
        blocking: bool,
        serializer: Serializer | None = None,
        shard: ShardSpec | None = None,
    ) -> None:
        self._pipeline = pipeline
        self.shard = shard
        self.epoch = epoch
        self.metrics = metrics
        self.metadata = metadata
        self.step = step
        self.batch = batch
        self.decision = decision
        self.blocking = blocking
        self.serializer = serializer
        # Set by the commit strategy: the staging folder, and on object stores the claim on the epoch.
        self._work: Path | None = None
        self._claim: Claim | None = None
        self._entries: dict[str, FileEntry] = {}  # what was written and closed, hashed
        self._open_writers: dict[str, HashingWriter | HashingStream] = {}
        self._syncing: list[Future[None]] = []  # fsyncs of closed tx.open() files, still running
        self._folders: dict[str, str] = {}  # every folder of a tx.open() name -> one name below it
        self._future: Future[Checkpoint] | None = None
        self._checkpoint: Checkpoint | None = None
        self._started = time.monotonic()
        self.expected_bytes: int | None = None  # the serializer's estimate, for a streamed upload's bar
        self._stream_bar: Progress | None = None

    def __repr__(self) -> str:
        if self._checkpoint is not None:
            state = "committed"
        elif self.skipped:
            state = f"skipped ({self.decision.reason})"
        elif self._future is not None:
            state = "committing in the background"
        else:
            state = "open" if self._work is not None else "not started"
        metrics = "".join(f" {k}={v:.6g}" for k, v in sorted(self.metrics.items()))
        return f"<SaveTransaction epoch={self.epoch}{metrics} {state} in {self._pipeline.url}>"

    @property
    def skipped(self) -> bool:
        """True if the store's save rules decided not to save this epoch (see :attr:`decision`)."""
        return not self.decision.save

    @property
    def path(self) -> Path:
        """The local staging directory; write files here. Exists only inside the ``with`` block."""
        if self._work is None:
            raise InvalidArgumentError("tx.path is only available inside the 'with store.save(...)' block")
        return self._work

    @property
    def prefix(self) -> str:
        """Where this transaction's files go in the store: the epoch folder, or this rank's part folder in it."""
        key = self._pipeline.epoch_key(self.epoch)
        return key if self.shard is None else f"{key}/{self.shard.folder}"

    @property
    def _claimed(self) -> bool:
        """True while this save holds a claim on its epoch folder (object stores): files stream there."""
        return self._claim is not None and self._claim.held

    def open(self, name: str, mode: str = "wb") -> IO[Any]:
        """Create a file in the checkpoint and return a write-only stream that hashes what it writes.

        The stream does not seek (``torch.save``, ``np.save``, ``np.savez`` and ``pickle.dump``
        work with it). Locally, closing it fsyncs the file; on object stores the bytes go straight
        to the bucket as a multipart upload holding one part in memory. Writers that must seek use
        :attr:`path`.

        Args:
            name: Relative path inside the checkpoint (``/`` separates folders).
            mode: ``"wb"`` (default) or ``"w"`` for UTF-8 text.

        Raises:
            UnsafePathError: the name escapes the checkpoint, is reserved, was written already, is
                a file and a folder at once (``a`` and ``a/b``), is not valid UTF-8, or is longer
                than the backend accepts (``capabilities.max_key_bytes``, counting the store's path).
        """
        if mode not in ("wb", "w", "xb", "x"):
            raise InvalidArgumentError(f"tx.open() writes new files; mode must be 'wb' or 'w', got {mode!r}")
        rel = check_portable_name(check_relpath(name))
        target = self.path / rel
        fs, key = self._pipeline.backend, f"{self.prefix}/{rel}"
        check_key_length(rel, key, fs.key_bytes(key), fs.capabilities.max_key_bytes)
        if not self._claimed and fs.local_path() is not None:
            check_key_length(rel, str(target), len(os.fsencode(target)), fs.capabilities.max_key_bytes)
        if rel in self._entries or rel in self._open_writers:
            raise UnsafePathError(f"{rel!r} was already written in this checkpoint")
        if rel in self._folders or target.is_dir():
            raise UnsafePathError(clash_message(rel, self._folders.get(rel, f"{rel}/... in tx.path")))
        folder = rel.rpartition("/")[0]
        while folder:
            if folder in self._entries or folder in self._open_writers or (self.path / folder).is_file():
                raise UnsafePathError(clash_message(folder, rel))
            folder = folder.rpartition("/")[0]
        if target.exists():
            raise UnsafePathError(f"{rel!r} was already written in this checkpoint")

        def done(size: int, digest: str) -> None:
            self._entries[rel] = FileEntry(path=rel, size=size, xxh3_128=digest)
            self._open_writers.pop(rel, None)

        writer: HashingWriter | HashingStream
        if self._claimed:  # object stores: straight into the claimed epoch folder
            if self._stream_bar is None:
                self._stream_bar = make_stream_progress(
                    self._pipeline.progress, f"upload epoch {self.epoch}", self.expected_bytes
                )
            writer = HashingStream(
                fs.open_write(key), f"{self._pipeline.url}/{key}", on_close=done, progress=self._stream_bar
            )
        else:
            target.parent.mkdir(parents=True, exist_ok=True)
            writer = HashingWriter(target, on_close=done, deferred=self._syncing.append)
        self._open_writers[rel] = writer
        folder = rel.rpartition("/")[0]
        while folder and folder not in self._folders:
            self._folders[folder] = rel
            folder = folder.rpartition("/")[0]
        if "b" in mode:
            return writer  # type: ignore[return-value]
        return _TextWriter(writer)  # type: ignore[return-value]

    @property
    def checkpoint(self) -> Checkpoint | None:
        """The committed checkpoint (waits for a non-blocking commit); None if the save was skipped."""
        if self._future is not None:
            return self._future.result()
        return self._checkpoint

    def __enter__(self) -> SaveTransaction:
        self._pipeline.begin(self)
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        bar, self._stream_bar = self._stream_bar, None
        if bar is not None:
            bar.close()
        if exc_type is not None or self.skipped:
            self._abort(f"aborted by {exc_type.__name__}" if exc_type is not None else None)
            return
        result = self._pipeline.finish(self)
        if isinstance(result, Future):
            self._future = result
        else:
            self._checkpoint = result

    def _check_closed(self) -> None:
        """End the stage: every stream opened with :meth:`open` must be closed, or the save is aborted."""
        if self._open_writers:
            names = ", ".join(sorted(self._open_writers))
            self._abort("file(s) opened with tx.open() were not closed")
            raise InvalidArgumentError(f"file(s) opened with tx.open() were not closed: {names}")

    def _synced(self) -> None:
        """Wait until every file closed through ``tx.open()`` is durable; raise the first fsync failure."""
        pending, self._syncing = self._syncing, []
        failures = [exc for f in pending if (exc := f.exception()) is not None]
        if failures:
            raise failures[0]

    def _abort(self, why: str | None) -> None:
        """Abort every open stream and discard what was staged; log why (``None``: skipped by the rules)."""
        for writer in list(self._open_writers.values()):
            writer.abort()
        self._open_writers.clear()
        with contextlib.suppress(OSError):
            self._synced()  # their descriptors are closed before the staging folder goes
        self._pipeline.discard(self)
        if why is not None:
            self._pipeline.log("ABORT", f"epoch={self.epoch} {why}; nothing committed")
        else:
            self._pipeline.log("SKIP", f"epoch={self.epoch} {self.decision.reason}")


class _TextWriter:
    """A minimal UTF-8 text facade over :class:`HashingWriter` for ``tx.open(name, "w")``."""

    def __init__(self, raw: HashingWriter | HashingStream) -> None:
        self._raw = raw

    def write(self, text: str) -> int:
        self._raw.write(text.encode("utf-8"))
        return len(text)

    def close(self) -> None:
        self._raw.close()

    def __enter__(self) -> _TextWriter:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()
