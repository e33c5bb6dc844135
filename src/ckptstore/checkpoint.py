"""One committed checkpoint: its files, metrics and metadata, and how to verify, open and load it.

A :class:`Checkpoint` is a view of a directory that has a valid manifest; it never changes what it
points at. Everything it returns was promised by the manifest, and :meth:`Checkpoint.verify` checks
the promise byte for byte: a changed, truncated, missing or extra file raises a typed error that
names the file. Copying the files out (:meth:`Checkpoint.download`, :meth:`Checkpoint.local_path`)
is :mod:`ckptstore.transfer`'s work; a checkpoint hands it the backend, its key and its manifest.
"""

from __future__ import annotations

import contextlib
import datetime as _dt
import json
import math
import os
from collections.abc import Callable, Iterable, Iterator, Mapping
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import TYPE_CHECKING, Any, BinaryIO, Protocol

import xxhash

from ._progress import ProgressOption
from ._validate import RESERVED_NAMES, check_metadata, check_relpath
from .checksum import hash_file, hash_stream
from .errors import (
    CheckpointNotFoundError,
    CkptStoreError,
    IncompleteCheckpointError,
    InvalidArgumentError,
    ManifestError,
    SerializerError,
    UnexpectedFileError,
    UnsafeEntryError,
)
from .manifest import FileEntry, Manifest
from .serializers import CheckpointFiles, Serializer, get_serializer
from .serializers._reader import checkpoint_files
from .transfer import TRANSFER_THREADS as TRANSFER_THREADS  # re-exported: uploads use it too
from .transfer import check_entry, scratch_folder
from .transfer import download as _download

if TYPE_CHECKING:
    from .backends.base import Backend

__all__ = ["EVALUATION_KEY", "EVALUATION_MODES_KEY", "METADATA_FILE", "Checkpoint", "CheckpointSource"]

MANIFEST_FILE = "MANIFEST.json"
METADATA_FILE = "METADATA.json"
EVALUATION_KEY = "evaluation"
"""The metadata key under which :meth:`CheckpointStore.evaluate` records its results."""
EVALUATION_MODES_KEY = "evaluation_modes"
"""The metadata key under which :meth:`CheckpointStore.evaluate` records each metric's mode (min or max)."""
_UNIX_EPOCH = _dt.datetime(1970, 1, 1, tzinfo=_dt.timezone.utc)


class CheckpointSource(Protocol):
    """What a checkpoint needs of the store it came from (a :class:`~ckptstore.CheckpointStore` has this shape).

    The backend to read its files from, the store's URL for messages, and the one write a checkpoint
    asks for: a compare-and-swapped change of its ``METADATA.json`` (the store keeps its index in step).
    """

    @property
    def backend(self) -> Backend:
        """The storage backend the checkpoint's files are read from."""
        ...

    @property
    def url(self) -> str:
        """The store's root as a URL (redacted), the prefix of every checkpoint's URL."""
        ...

    def _update_metadata(
        self, checkpoint: Checkpoint, change: Callable[[dict[str, Any]], dict[str, Any]], what: str
    ) -> dict[str, Any]: ...


class Checkpoint:
    """A committed checkpoint.

    Get one from a store (``store.latest()``, ``store.get(3)``, ``tx.checkpoint``); do not build it.

    Attributes:
        manifest: The validated commit record.
        key: The epoch folder relative to the store root (``epochs/00000003``).
    """

    def __init__(
        self,
        source: CheckpointSource,
        key: str,
        manifest: Manifest,
        *,
        metadata: dict[str, Any] | None = None,
    ) -> None:
        self._source = source
        self.key = key
        self.manifest = manifest
        self._metadata = metadata  # as recorded in index.json when listed from it; None: read on demand

    @property
    def path(self) -> Path:
        """The epoch directory on local disk (local and NFS stores only).

        Raises:
            InvalidArgumentError: the store is not on a local filesystem; use :meth:`local_path`
                or :meth:`download`.
        """
        local = self._source.backend.local_path(self.key)
        if local is None:
            raise InvalidArgumentError(
                f"{self.url} is not on a local filesystem; use 'with ck.local_path() as path:' or ck.download(dest)"
            )
        return local

    def __repr__(self) -> str:
        metrics = ", ".join(f"{k}={v:.6g}" for k, v in sorted(self.metrics.items()))
        return f"<Checkpoint epoch={self.epoch} {metrics} at {self.url}>"

    def __eq__(self, other: object) -> bool:
        if not isinstance(other, Checkpoint):
            return NotImplemented
        return self.url == other.url and self.manifest.commit_id == other.manifest.commit_id

    def __hash__(self) -> int:
        return hash((self.url, self.manifest.commit_id))

    # -- what the manifest says ----------------------------------------------------------------------
    @property
    def epoch(self) -> int:
        """The epoch (or step) number."""
        return self.manifest.epoch

    @property
    def name(self) -> str:
        """The directory name under ``epochs/`` (the zero-padded epoch)."""
        return self.key.rsplit("/", 1)[-1]

    @property
    def step(self) -> int | None:
        """The global step, if given at save time."""
        return self.manifest.step

    @property
    def batch(self) -> int | None:
        """The batch within the epoch, for batch-level saves."""
        return self.manifest.batch

    @property
    def metrics(self) -> dict[str, float]:
        """The metrics recorded at save time."""
        return dict(self.manifest.metrics)

    @property
    def metadata(self) -> dict[str, Any]:
        """User metadata: what was given at save time, as changed by :meth:`add_metadata`.

        Changes (also by :meth:`remove_metadata`) live in ``METADATA.json`` beside the manifest.
        """
        return self._read_metadata()[0]

    def _read_metadata(self) -> tuple[dict[str, Any], str | None, bool]:
        """The metadata, the version of ``METADATA.json`` (for compare-and-swap), and whether it exists."""
        key = f"{self.key}/{METADATA_FILE}"
        current = self._source.backend.read_versioned(key)
        if current is None:
            return dict(self.manifest.metadata), None, False
        try:
            value = json.loads(current[0])
        except (ValueError, RecursionError) as exc:
            raise ManifestError(f"{self.url}/{METADATA_FILE} is not valid JSON: {exc}") from None
        if not isinstance(value, dict):
            raise ManifestError(f"{self.url}/{METADATA_FILE} is not a JSON object")
        return value, current[1], True

    def add_metadata(self, values: Mapping[str, Any]) -> dict[str, Any]:
        """Merge ``values`` into the metadata at the top level (Determined's ``add_metadata``).

        An existing top-level key is replaced whole: ``{"m": {"acc": 1}}`` after ``{"m": {"loss": 2}}``
        leaves ``{"m": {"acc": 1}}``. The commit record is not rewritten, so verification still holds;
        concurrent updates are compare-and-swapped (object stores) or locked (local), so none is lost.

        Returns:
            The metadata after the change.

        Raises:
            InvalidArgumentError: ``values`` is not a JSON-serializable dict.
        """
        clean = check_metadata(values)
        return self._source._update_metadata(self, lambda current: {**current, **clean}, f"set {sorted(clean)}")

    def remove_metadata(self, keys: Iterable[str]) -> dict[str, Any]:
        """Remove top-level keys (and everything beneath them); absent keys are ignored.

        Returns:
            The metadata after the change.
        """
        if isinstance(keys, str):
            raise InvalidArgumentError("remove_metadata takes a list of keys, e.g. ['metrics']")
        names = [str(k) for k in keys]
        return self._source._update_metadata(
            self, lambda current: {k: v for k, v in current.items() if k not in names}, f"removed {sorted(names)}"
        )

    @property
    def evaluation_modes(self) -> dict[str, str]:
        """``{metric: "min" | "max"}`` as :meth:`CheckpointStore.evaluate` recorded them (index data when listed)."""
        return recorded_modes(self._metadata if self._metadata is not None else self.metadata)

    @property
    def all_metrics(self) -> dict[str, float]:
        """Metrics recorded at save time plus those recorded later by :meth:`CheckpointStore.evaluate`."""
        return merged_metrics(self.manifest.metrics, self._metadata if self._metadata is not None else self.metadata)

    @property
    def files(self) -> dict[str, FileEntry]:
        """Every user file by relative path."""
        return {f.path: f for f in self.manifest.files}

    @property
    def size(self) -> int:
        """Total bytes of the user files."""
        return self.manifest.total_size

    @property
    def run_id(self) -> str:
        """The run that wrote this checkpoint."""
        return self.manifest.run_id

    @property
    def parent(self) -> int | None:
        """The epoch the writing run had resumed from, if any."""
        return self.manifest.parent

    @property
    def committed_at(self) -> _dt.datetime:
        """The commit time (timezone-aware, UTC), exact to the microsecond (no float rounding)."""
        return _UNIX_EPOCH + _dt.timedelta(microseconds=self.manifest.committed_at_ns // 1000)

    @property
    def url(self) -> str:
        """The checkpoint's location as a URL."""
        return f"{self._source.url}/{self.key}"

    # -- reading files -------------------------------------------------------------------------------
    def _file_key(self, name: str) -> str:
        return f"{self.key}/{self._entry(name).path}"

    def _entry(self, name: str) -> FileEntry:
        """The manifest's entry for ``name``: only a safe relative name that the manifest lists has one."""
        rel = check_relpath(name)
        entry = self.files.get(rel)
        if entry is None:
            raise CheckpointNotFoundError(
                f"checkpoint epoch {self.epoch} has no file {rel!r}; it holds {', '.join(sorted(self.files)[:10])}"
            )
        return entry

    def open(self, name: str, mode: str = "rb") -> BinaryIO:
        """Open one of the checkpoint's files for reading (as stored: the stream is not verified).

        Raises:
            InvalidArgumentError: ``mode`` is not a read mode.
            UnsafePathError: ``name`` is absolute, has a ``..`` component, or is a reserved name.
            CheckpointNotFoundError: the manifest lists no such file.
        """
        if mode not in ("rb", "r"):
            raise InvalidArgumentError(f"checkpoints are read-only; mode must be 'rb' or 'r', got {mode!r}")
        stream = self._source.backend.open_read(self._file_key(name))
        if mode == "r":
            import io

            return io.TextIOWrapper(stream, encoding="utf-8")  # type: ignore[return-value]
        return stream  # type: ignore[return-value]

    def read_bytes(self, name: str, *, verify: bool = True) -> bytes:
        """Return the content of one of the checkpoint's files, checked against the manifest.

        Args:
            name: The file's name as the manifest lists it.
            verify: Compare the size and xxh3-128 digest of what was read with the manifest (the
                default; the hash is computed from the bytes in memory, not by a second read).

        Raises:
            UnsafePathError: ``name`` is absolute, has a ``..`` component, or is a reserved name.
            CheckpointNotFoundError: the manifest lists no such file.
            ChecksumMismatchError: ``verify`` and the content differs from the manifest.
        """
        entry = self._entry(name)
        data = self._source.backend.read_bytes(f"{self.key}/{entry.path}")
        if verify:
            check_entry(f"{self.url}/{entry.path}", entry, len(data), xxhash.xxh3_128_hexdigest(data))
        return data

    # -- integrity ------------------------------------------------------------------------------------
    def verify(self) -> Checkpoint:
        """Re-hash every file and compare with the manifest.

        Returns:
            self, so ``ck.verify().load()`` reads naturally.

        Raises:
            IncompleteCheckpointError: the manifest or a listed file is missing.
            ManifestError: the manifest changed or no longer parses.
            ChecksumMismatchError: a file's size or digest differs (names the file).
            UnexpectedFileError: a file the manifest does not list is present, or a file (or the
                epoch folder) is a symlink or a special file: it is neither followed nor opened.
        """
        try:
            self._verify()
        except UnsafeEntryError as exc:
            raise UnexpectedFileError(f"epoch {self.epoch} fails verification: {exc}") from exc
        return self

    def _verify(self) -> None:
        fs = self._source.backend
        where = f"{self.url}/{MANIFEST_FILE}"
        try:
            on_disk = Manifest.from_json(fs.read_bytes(f"{self.key}/{MANIFEST_FILE}"), where=where)
        except FileNotFoundError:
            raise IncompleteCheckpointError(f"{where} is missing") from None
        if on_disk != self.manifest:
            raise ManifestError(f"{where} changed since this checkpoint was read")
        listed = self.files
        present: set[str] = set()
        for rel in fs.walk(self.key):
            if rel in RESERVED_NAMES:
                continue
            if rel not in listed:
                raise UnexpectedFileError(f"{self.url}/{rel} is not listed in the manifest of epoch {self.epoch}")
            present.add(rel)
        missing = sorted(set(listed) - present)
        if missing:
            raise IncompleteCheckpointError(
                f"checkpoint epoch {self.epoch} is missing {len(missing)} file(s): {', '.join(missing[:5])}"
            )
        local = fs.local_path(self.key)

        def digest(entry: FileEntry) -> tuple[int, str]:
            if local is not None:
                return hash_file(local / entry.path)
            with fs.open_read(f"{self.key}/{entry.path}") as stream:
                return hash_stream(stream)

        with ThreadPoolExecutor(max_workers=TRANSFER_THREADS, thread_name_prefix="ckptstore-verify") as pool:
            results = list(pool.map(lambda e: (e, digest(e)), listed.values()))
        for entry, (size, found) in results:
            check_entry(f"{self.url}/{entry.path}", entry, size, found)

    # -- loading --------------------------------------------------------------------------------------
    def load(self, serializer: str | Serializer | None = None, *, verify: bool = True, **kwargs: Any) -> Any:
        """Verify (by default) and deserialize the checkpoint.

        Args:
            serializer: A name or object; None uses the one recorded in the manifest. Pickle is
                never used unless named here.
            verify: Re-hash every file first (the default); False skips it. Either way the
                serializer reads only files the manifest lists, through a
                :class:`~ckptstore.serializers.CheckpointFiles`.
            **kwargs: Passed to the serializer (``map_location``, ``mmap_mode``, ...).

        Raises:
            InvalidArgumentError: no serializer was recorded or given, or the recorded one is pickle
                and the caller did not name it.
            VerificationError: the checkpoint fails verification; or (``IncompleteCheckpointError``)
                the serializer needs a file the manifest does not list, e.g. one its own index names.
            UnsafePathError: the serializer's index names a file outside the checkpoint.
            UnsafeEntryError: a file it reads is a symlink or a special file.
            SerializerError: the serializer raised.
        """
        if serializer is None:
            recorded = (self.manifest.serializer or {}).get("name")
            if recorded is None:
                raise InvalidArgumentError(
                    f"epoch {self.epoch} was saved without a serializer; pass serializer= or read its files"
                )
            if recorded == "pickle":
                raise InvalidArgumentError(
                    f"epoch {self.epoch} was saved with pickle, which runs code when loaded; "
                    "pass serializer='pickle' if you trust it"
                )
            serializer = recorded
        impl = get_serializer(serializer)
        # Local stores: the verified epoch folder; object stores: one verified download.
        with checkpoint_files(self, verify=verify) as files:
            return self._load_with(impl, files, kwargs)

    def _load_with(self, impl: Serializer, files: CheckpointFiles, kwargs: dict[str, Any]) -> Any:
        try:
            return impl.load(files, **kwargs)
        except (CkptStoreError, ImportError):
            raise
        except Exception as exc:
            raise SerializerError(f"serializer {impl.name!r} failed to load epoch {self.epoch}: {exc}") from exc

    def download(
        self,
        dest: str | os.PathLike[str],
        *,
        verify: bool = True,
        progress: ProgressOption = None,
    ) -> Path:
        """Copy the checkpoint's files and manifest into ``dest``, in parallel, verifying while reading.

        Everything is downloaded into a hidden sibling of ``dest`` first and moved into place only
        when every file's digest matched the manifest (one rename for a new ``dest``), so a failed
        download leaves nothing at ``dest``: never a partial folder, never a file that differs.

        Args:
            dest: A directory; created if missing. Existing files of the same names are replaced.
            verify: Compare every file's digest with the manifest (the default).
            progress: None shows a bar on a terminal for big checkpoints; False never; a callable
                receives ``(done, total, description)``.

        Returns:
            The destination directory.

        Raises:
            ChecksumMismatchError: a file read differs from the manifest (nothing is left at ``dest``).
            DestinationExistsError: ``dest`` (or a folder the files go into) is a file, or a folder
                stands where a file goes; checked before anything is written.
            InvalidArgumentTypeError: ``dest`` is not a path.
        """
        return _download(
            self._source.backend, self.key, self.url, self.manifest, dest, verify=verify, progress=progress
        )

    @contextlib.contextmanager
    def local_path(self, *, verify: bool = True, progress: ProgressOption = None) -> Iterator[Path]:
        """A verified local copy of the checkpoint for the duration of the ``with`` block.

        On a local or NFS store this is the epoch directory itself (verified, not copied); on an
        object store the files are downloaded into a temporary directory that is removed afterwards.

        Args:
            verify: Re-hash (local) or verify while downloading (remote); the default.
            progress: See :meth:`download`.
        """
        local = self._source.backend.local_path(self.key)
        if local is not None:
            if verify:
                self.verify()
            yield local
            return
        with scratch_folder(self.name) as scratch:
            yield self.download(scratch, verify=verify, progress=progress)

    def info(self) -> Mapping[str, Any]:
        """A JSON-friendly summary (epoch, time, size, metrics, metadata, files)."""
        return {
            "epoch": self.epoch,
            "committed_at": self.committed_at.isoformat(),
            "size": self.size,
            "metrics": self.metrics,
            "metadata": self.metadata,
            "run_id": self.run_id,
            "files": {p: {"size": f.size, "xxh3_128": f.xxh3_128} for p, f in self.files.items()},
            "url": self.url,
        }


def recorded_modes(metadata: Mapping[str, Any]) -> dict[str, str]:
    """``{metric: "min" | "max"}`` that :meth:`CheckpointStore.evaluate` recorded in a checkpoint's metadata."""
    modes = metadata.get(EVALUATION_MODES_KEY)
    if not isinstance(modes, dict):
        return {}
    return {name: mode for name, mode in modes.items() if isinstance(name, str) and mode in ("min", "max")}


def merged_metrics(metrics: Mapping[str, float], metadata: Mapping[str, Any]) -> dict[str, float]:
    """Metrics recorded at save time plus the finite ones :meth:`CheckpointStore.evaluate` recorded in metadata."""
    merged = dict(metrics)
    evaluation = metadata.get(EVALUATION_KEY)
    if isinstance(evaluation, dict):
        for name, value in evaluation.items():
            if isinstance(value, (int, float)) and not isinstance(value, bool) and name not in merged:
                try:
                    number = float(value)
                except OverflowError:
                    continue  # METADATA.json is user-editable: an out-of-range value ranks nothing
                if math.isfinite(number):
                    merged[name] = number
    return merged
