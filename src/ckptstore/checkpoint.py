"""One committed checkpoint: its files, metrics and metadata, and how to verify, open and load it.

A :class:`Checkpoint` is a view of a directory that has a valid manifest; it never changes what it
points at. Everything it returns was promised by the manifest, and :meth:`Checkpoint.verify` checks
the promise byte for byte: a changed, truncated, missing or extra file raises a typed error that
names the file.
"""

from __future__ import annotations

import datetime as _dt
import json
import os
import shutil
from collections.abc import Mapping
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import TYPE_CHECKING, Any, BinaryIO

import xxhash

from ._validate import RESERVED_NAMES, check_relpath
from .checksum import CHUNK_SIZE, hash_file
from .errors import (
    CheckpointNotFoundError,
    ChecksumMismatchError,
    IncompleteCheckpointError,
    InvalidArgumentError,
    ManifestError,
    SerializerError,
    UnexpectedFileError,
)
from .manifest import FileEntry, Manifest
from .serializers import Serializer, get_serializer

if TYPE_CHECKING:
    from .store import CheckpointStore

__all__ = ["METADATA_FILE", "Checkpoint"]

MANIFEST_FILE = "MANIFEST.json"
METADATA_FILE = "METADATA.json"


class Checkpoint:
    """A committed checkpoint.

    Get one from a store (``store.latest()``, ``store.get(3)``, ``tx.checkpoint``); do not build it.

    Attributes:
        manifest: The validated commit record.
        path: The epoch directory on local disk.
    """

    def __init__(self, store: CheckpointStore, path: Path, manifest: Manifest) -> None:
        self._store = store
        self.path = path
        self.manifest = manifest

    def __repr__(self) -> str:
        metrics = ", ".join(f"{k}={v:.6g}" for k, v in sorted(self.metrics.items()))
        return f"<Checkpoint epoch={self.epoch} {metrics} at {self.url}>"

    def __eq__(self, other: object) -> bool:
        if not isinstance(other, Checkpoint):
            return NotImplemented
        return self.path == other.path and self.manifest.commit_id == other.manifest.commit_id

    def __hash__(self) -> int:
        return hash((self.path, self.manifest.commit_id))

    # -- what the manifest says ----------------------------------------------------------------------
    @property
    def epoch(self) -> int:
        """The epoch (or step) number."""
        return self.manifest.epoch

    @property
    def name(self) -> str:
        """The directory name under ``epochs/`` (the zero-padded epoch)."""
        return self.path.name

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
        """User metadata: what was given at save time, updated by later additions."""
        merged = dict(self.manifest.metadata)
        extra = self.path / METADATA_FILE
        try:
            added = json.loads(extra.read_bytes())
        except FileNotFoundError:
            return merged
        except ValueError as exc:
            raise ManifestError(f"{extra} is not valid JSON: {exc}") from None
        if isinstance(added, dict):
            merged.update(added)
        return merged

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
        """The commit time (timezone-aware, UTC)."""
        ns = self.manifest.committed_at_ns
        return _dt.datetime.fromtimestamp(ns / 1e9, tz=_dt.timezone.utc)

    @property
    def url(self) -> str:
        """The checkpoint's location as a URL."""
        return self.path.as_uri()

    # -- reading files -------------------------------------------------------------------------------
    def _file_path(self, name: str) -> Path:
        rel = check_relpath(name)
        if rel not in self.files:
            raise CheckpointNotFoundError(f"checkpoint epoch {self.epoch} has no file {rel!r}")
        return self.path / rel

    def open(self, name: str, mode: str = "rb") -> BinaryIO:
        """Open one of the checkpoint's files for reading.

        Raises:
            InvalidArgumentError: ``mode`` is not a read mode.
            CheckpointNotFoundError: the manifest lists no such file.
        """
        if mode not in ("rb", "r"):
            raise InvalidArgumentError(f"checkpoints are read-only; mode must be 'rb' or 'r', got {mode!r}")
        return open(self._file_path(name), mode)  # type: ignore[return-value]

    def read_bytes(self, name: str) -> bytes:
        """Return the content of one of the checkpoint's files."""
        return self._file_path(name).read_bytes()

    # -- integrity ------------------------------------------------------------------------------------
    def verify(self) -> Checkpoint:
        """Re-hash every file and compare with the manifest.

        Returns:
            self, so ``ck.verify().load()`` reads naturally.

        Raises:
            IncompleteCheckpointError: the manifest or a listed file is missing.
            ManifestError: the manifest changed or no longer parses.
            ChecksumMismatchError: a file's size or digest differs (names the file).
            UnexpectedFileError: a file the manifest does not list is present.
        """
        where = self.path / MANIFEST_FILE
        try:
            on_disk = Manifest.from_json(where.read_bytes(), where=str(where))
        except FileNotFoundError:
            raise IncompleteCheckpointError(f"{where} is missing") from None
        if on_disk != self.manifest:
            raise ManifestError(f"{where} changed since this checkpoint was read")
        listed = self.files
        present: set[str] = set()
        for dirpath, _dirnames, filenames in os.walk(self.path):
            for filename in filenames:
                rel = Path(dirpath, filename).relative_to(self.path).as_posix()
                if rel in RESERVED_NAMES:
                    continue
                if rel not in listed:
                    raise UnexpectedFileError(f"{self.path / rel} is not listed in the manifest of epoch {self.epoch}")
                present.add(rel)
        missing = sorted(set(listed) - present)
        if missing:
            raise IncompleteCheckpointError(
                f"checkpoint epoch {self.epoch} is missing {len(missing)} file(s): {', '.join(missing[:5])}"
            )
        with ThreadPoolExecutor(max_workers=2, thread_name_prefix="ckptstore-verify") as pool:
            results = list(pool.map(lambda e: (e, hash_file(self.path / e.path)), listed.values()))
        for entry, (size, digest) in results:
            if size != entry.size:
                raise ChecksumMismatchError(
                    f"{self.path / entry.path}: size {size} differs from the manifest's {entry.size}"
                    + (" (truncated)" if size < entry.size else "")
                )
            if digest != entry.xxh3_128:
                raise ChecksumMismatchError(
                    f"{self.path / entry.path}: xxh3-128 {digest} differs from the manifest's {entry.xxh3_128}"
                )
        return self

    # -- loading --------------------------------------------------------------------------------------
    def load(self, serializer: str | Serializer | None = None, *, verify: bool = True, **kwargs: Any) -> Any:
        """Verify (by default) and deserialize the checkpoint.

        Args:
            serializer: A name or object; None uses the one recorded in the manifest. Pickle is
                never used unless named here.
            verify: Re-hash every file first (the default); False skips it.
            **kwargs: Passed to the serializer (``map_location``, ``mmap_mode``, ...).

        Raises:
            InvalidArgumentError: no serializer was recorded or given, or the recorded one is pickle
                and the caller did not name it.
            VerificationError: the checkpoint fails verification.
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
        if verify:
            self.verify()
        try:
            return impl.load(self, **kwargs)
        except (InvalidArgumentError, CheckpointNotFoundError):
            raise
        except ImportError:
            raise
        except Exception as exc:
            raise SerializerError(f"serializer {impl.name!r} failed to load epoch {self.epoch}: {exc}") from exc

    def download(self, dest: str | os.PathLike[str], *, verify: bool = True) -> Path:
        """Copy the checkpoint's files (and its manifest) into ``dest``, verifying while copying.

        Args:
            dest: A directory; created if missing. Existing files of the same names are replaced.
            verify: Compare every copied file's digest with the manifest (the default).

        Returns:
            The destination directory.

        Raises:
            ChecksumMismatchError: a file read differs from the manifest (the copy is removed).
        """
        target = Path(dest)
        target.mkdir(parents=True, exist_ok=True)
        for entry in self.manifest.files:
            out = target / entry.path
            out.parent.mkdir(parents=True, exist_ok=True)
            hasher = xxhash.xxh3_128()
            with open(self.path / entry.path, "rb") as src, open(out, "wb") as dst:
                while chunk := src.read(CHUNK_SIZE):
                    hasher.update(chunk)
                    dst.write(chunk)
            if verify and hasher.hexdigest() != entry.xxh3_128:
                out.unlink()
                raise ChecksumMismatchError(
                    f"{self.path / entry.path} does not match its manifest; the copy was removed"
                )
        shutil.copyfile(self.path / MANIFEST_FILE, target / MANIFEST_FILE)
        return target

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
