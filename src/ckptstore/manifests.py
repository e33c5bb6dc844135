"""Reading commit records: a checkpoint is what its own manifest says, and nothing else decides.

This is the only code that reads ``MANIFEST.json`` files. It lists ``epochs/``, reads and validates
manifests (a folder whose manifest names another epoch, or that is a symlink, is not a checkpoint),
and merges the listing with the index's entries for cheap listings. Destructive decisions (restart's
fall-back, retire, gc's deletions) re-read the manifests through :meth:`Manifests.confirm` and
:meth:`Manifests.get`, never the index.
"""

from __future__ import annotations

import builtins
import contextlib
from collections.abc import Callable, Iterable, Mapping
from typing import Any, TypeVar

from ._boundary import backend_errors
from ._validate import check_epoch
from .checkpoint import Checkpoint, CheckpointSource
from .context import Part, StoreContext
from .errors import (
    CheckpointNotFoundError,
    InvalidArgumentError,
    ManifestError,
    UnexpectedFileError,
    UnsafeEntryError,
    VerificationError,
)
from .layout import EPOCHS, INDEX_FILE, MANIFEST_FILE, Layout
from .manifest import Manifest

__all__ = ["Manifests", "Scan"]

T = TypeVar("T")

Scan = tuple[builtins.list[Checkpoint], builtins.list[tuple[str, Exception]]]
"""Committed checkpoints, and ``(key, why)`` of folders under ``epochs/`` that are not valid ones."""


class Manifests(Part):
    """The commit records of one store.

    Args:
        backend: The store's backend.
        layout: The store's key names.
        url: The store's URL, for messages.
        source: What the checkpoints it returns read through (the store).
    """

    def __init__(self, ctx: StoreContext, source: CheckpointSource) -> None:
        super().__init__(ctx)
        self._source = source

    def parse(self, key: str, data: bytes) -> Manifest:
        """Validate the manifest of the folder ``key``; it must name that folder's epoch."""
        where = f"{self._url}/{key}/{MANIFEST_FILE}"
        manifest = Manifest.from_json(data, where=where)
        if self._layout.epoch_key(manifest.epoch) != key:
            raise ManifestError(f"{where} says epoch {manifest.epoch}, but its folder is {key}")
        return manifest

    def read_bytes(self, key: str) -> bytes | None:
        """The raw manifest of ``key``; None if absent; a symlinked entry is an ``UnexpectedFileError``."""
        try:
            return self._backend.read_bytes(Layout.manifest_key(key))
        except FileNotFoundError:
            return None
        except UnsafeEntryError as exc:
            raise UnexpectedFileError(f"{self._url}/{key} is not a checkpoint: {exc}") from None

    def read(self, key: str) -> Manifest:
        """The validated manifest of the folder ``key``.

        Raises:
            CheckpointNotFoundError: no such folder (or, on object stores, no manifest yet).
            ManifestError: a local folder without a manifest, or an invalid one.
            UnexpectedFileError: the folder is a symlink.
        """
        try:
            with backend_errors(self._backend, f"read {key}"):
                data = self._backend.read_bytes(Layout.manifest_key(key))
        except UnsafeEntryError as exc:  # a symlinked epoch folder: not a checkpoint this store vouches for
            raise UnexpectedFileError(f"{self._url}/{key} is not a checkpoint: {exc}") from None
        except FileNotFoundError:
            if self._backend.capabilities.atomic_rename and self._backend.exists(key):
                raise ManifestError(f"{self._url}/{key} has no {MANIFEST_FILE}; it is not a checkpoint") from None
            raise CheckpointNotFoundError(f"no checkpoint at {self._url}/{key}") from None
        return self.parse(key, data)

    def at(self, key: str) -> Checkpoint:
        """The checkpoint in the folder ``key`` as listed, read from its manifest (see :meth:`read`)."""
        return Checkpoint(self._source, key, self.read(key))

    def get(self, epoch: int) -> Checkpoint:
        """The committed checkpoint of ``epoch``, read from its manifest.

        Raises:
            InvalidEpochError: ``epoch`` is not a valid epoch for this store.
            CheckpointNotFoundError: no such checkpoint.
            VerificationError: its manifest is invalid.
        """
        epoch = check_epoch(epoch, self._layout.width)
        key = self._layout.epoch_key(epoch)
        try:
            manifest = self.read(key)
        except CheckpointNotFoundError:
            raise CheckpointNotFoundError(f"no checkpoint for epoch {epoch} in {self._url}") from None
        return Checkpoint(self._source, key, manifest)

    def committed(self, epoch: int) -> bool:
        """True if ``epoch`` has a manifest (no validation: the cheap ``epoch in store``)."""
        return self._backend.exists(Layout.manifest_key(self._layout.epoch_key(epoch)))

    def get_or_none(self, epoch: int | None) -> Checkpoint | None:
        """:meth:`get`, or None when ``epoch`` is None or names no valid checkpoint."""
        if epoch is None:
            return None
        try:
            return self.get(epoch)
        except (CheckpointNotFoundError, VerificationError, InvalidArgumentError):
            return None

    def names(self) -> builtins.list[str]:
        """The epoch folder names under ``epochs/``, as listed (unsorted numbers, sorted text)."""
        return [n for n in self._backend.listdir(EPOCHS) if n.isdigit()]

    def highest_above(self, epoch: int) -> Checkpoint | None:
        """The highest-numbered valid checkpoint above ``epoch``; manifests read lazily.

        One listing of only the names after ``epoch``'s (zero-padded, so text order is numeric
        order): its cost follows the epochs above ``epoch``, not the store's size.
        """
        after = self._layout.name(epoch) if epoch >= 0 else ""
        above = [n for n in self._backend.listdir_after(EPOCHS, after) if n.isdigit()]
        for name in sorted(above, key=int, reverse=True):
            if int(name) <= epoch:
                break
            with contextlib.suppress(CheckpointNotFoundError, VerificationError):
                return self.get(int(name))
        return None

    def from_index_entry(self, name: str, entry: Mapping[str, Any]) -> Checkpoint | None:
        """The checkpoint an ``index.json`` entry describes, or None if the entry is not valid for ``name``."""
        try:
            manifest = Manifest.from_dict(entry.get("manifest"), where=f"{self._url}/{INDEX_FILE}")
        except (ValueError, TypeError):
            return None
        if self._layout.name(manifest.epoch) != name:
            return None
        metadata = entry.get("metadata")
        return Checkpoint(
            self._source, Layout.folder_key(name), manifest, metadata=metadata if isinstance(metadata, dict) else None
        )

    def scan(self, entries: Mapping[str, Any] | None) -> Scan:
        """Every committed checkpoint, and folders under ``epochs/`` that are not valid ones.

        One listing of ``epochs/``, plus the index's ``entries`` if given: a checkpoint the index lacks
        (a writer died before updating it) is read from its manifest, and an index entry whose folder
        is gone is dropped, so the index may lag but never hides or invents a checkpoint. On object
        stores a folder without a manifest is a save in progress (or abandoned), not damage.
        """
        good, unindexed = self.sort_out(entries, self.from_index_entry)
        read, bad = self.read_names(unindexed)
        return good + read, bad

    def sort_out(
        self, entries: Mapping[str, Any] | None, build: Callable[[str, Mapping[str, Any]], T | None]
    ) -> tuple[builtins.list[T], builtins.list[str]]:
        """One listing of ``epochs/``, each folder's index entry turned into ``build(name, entry)``.

        Returns:
            What ``build`` made, and the names it made nothing of (no entry, or one that is not valid),
            to be read from their manifests.
        """
        built: builtins.list[T] = []
        unindexed: builtins.list[str] = []
        with backend_errors(self._backend, "list checkpoints"):
            for name in self.names():
                entry = (entries or {}).get(name)
                item = build(name, entry) if isinstance(entry, dict) else None
                if item is None:
                    unindexed.append(name)
                else:
                    built.append(item)
        return built, unindexed

    def read_names(self, names: Iterable[str]) -> Scan:
        """The checkpoints of the epoch folders ``names`` read from their manifests, and the invalid ones.

        The manifests are read concurrently where the backend can; see :meth:`scan` for what is invalid.
        """
        unindexed = builtins.list(names)
        good: builtins.list[Checkpoint] = []
        bad: builtins.list[tuple[str, Exception]] = []
        with backend_errors(self._backend, "read manifests"):
            unsafe: dict[str, Exception] = {}
            try:
                raw = self._backend.read_many(f"{EPOCHS}/{n}/{MANIFEST_FILE}" for n in unindexed)
            except UnsafeEntryError:  # a symlinked epoch folder among them: read one by one, report it
                raw = {}
                for name in unindexed:
                    try:
                        raw[f"{EPOCHS}/{name}/{MANIFEST_FILE}"] = self.read_bytes(Layout.folder_key(name))
                    except UnexpectedFileError as exc:
                        unsafe[Layout.folder_key(name)] = exc
        for name in unindexed:
            key = Layout.folder_key(name)
            if key in unsafe:
                bad.append((key, unsafe[key]))
                continue
            data = raw.get(Layout.manifest_key(key))
            if data is None:
                if self._backend.capabilities.atomic_rename:
                    bad.append(
                        (key, ManifestError(f"{self._url}/{key} has no {MANIFEST_FILE}; it is not a checkpoint"))
                    )
                continue
            try:
                good.append(Checkpoint(self._source, key, self.parse(key, data)))
            except VerificationError as exc:
                bad.append((key, exc))
        return good, bad

    def confirm(
        self, checkpoints: Iterable[Checkpoint]
    ) -> tuple[dict[int, Checkpoint | None], builtins.list[Checkpoint]]:
        """Re-read each checkpoint from its own manifest.

        Returns:
            ``{epoch: checkpoint from its manifest, or None if it has no valid manifest}``, and the
            fresh checkpoints whose manifest differs from the one given (a stale or edited index).
        """
        wanted = builtins.list(checkpoints)
        with backend_errors(self._backend, "read manifests"):
            raw = self._backend.read_many(Layout.manifest_key(c.key) for c in wanted)
        out: dict[int, Checkpoint | None] = {}
        differ: builtins.list[Checkpoint] = []
        for c in wanted:
            data = raw.get(Layout.manifest_key(c.key))
            try:
                fresh = Checkpoint(self._source, c.key, self.parse(c.key, data)) if data is not None else None
            except VerificationError:
                fresh = None
            out[c.epoch] = fresh
            if fresh is not None and fresh.manifest != c.manifest:
                differ.append(fresh)
        return out, differ
