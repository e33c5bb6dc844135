"""``index.json``: a cache of every committed checkpoint, so a listing costs one read, not one per checkpoint.

This is the only code that reads or writes ``index.json``. The index holds each checkpoint's
manifest, metrics and metadata, and a history of deleted ones (so ``ckptstore plot`` shows the whole
curve). It is a cache: it may lag (a writer killed between its commit and its index update), it is
rebuilt from the manifests whenever it is missing, invalid or asked to be, and nothing destructive is
decided from it. Every update is a compare-and-swap under the store's record lock, so no writer's
update (a commit, gc, metadata) is lost to another's.
"""

from __future__ import annotations

import contextlib
import json
import logging
import time
from collections.abc import Iterable, Mapping
from typing import Any

from ._boundary import CAS_ATTEMPTS, parse_json
from ._validate import check_metrics
from .checkpoint import Checkpoint
from .context import Part, StoreContext
from .errors import InvalidArgumentError
from .layout import EPOCHS, INDEX_FILE, Layout
from .manifest import MAX_EPOCH, MAX_TIME_NS
from .manifests import Manifests

__all__ = ["INDEX_FORMAT", "Index", "history_entry", "index_entry"]

logger = logging.getLogger("ckptstore")

INDEX_FORMAT = "ckptstore.index"


class Index(Part):
    """The index of one store.

    Args:
        backend: The store's backend.
        layout: The store's key names.
        url: The store's URL, for messages.
        lock: The store's record lock (re-entrant), held around every update.
        manifests: Where the truth is, for rebuilding.
    """

    def __init__(self, ctx: StoreContext, manifests: Manifests) -> None:
        super().__init__(ctx)
        self._manifests = manifests

    def entries(self) -> dict[str, Any] | None:
        """The ``checkpoints`` section of a valid index (by epoch folder name), or None."""
        raw = None
        with contextlib.suppress(FileNotFoundError):
            raw = self._backend.read_bytes(INDEX_FILE)
        index = parse_json(raw) if raw is not None else {}
        entries = index.get("checkpoints")
        if index.get("format") == INDEX_FORMAT and isinstance(entries, dict):
            return entries
        return None

    def document(self) -> dict[str, Any]:
        """The whole index (rebuilt in memory from the manifests if it is missing or invalid)."""
        raw = None
        with contextlib.suppress(FileNotFoundError):
            raw = self._backend.read_bytes(INDEX_FILE)
        data = parse_json(raw) if raw is not None else {}
        if data.get("format") != INDEX_FORMAT or not isinstance(data.get("checkpoints"), dict):
            return {"format": INDEX_FORMAT, "version": 1, "checkpoints": self.from_manifests(), "history": {}}
        return data

    def from_manifests(self) -> dict[str, dict[str, Any]]:
        """Index entries for every committed checkpoint, read from the manifests and metadata files."""
        good, _ = self._manifests.scan(None)
        extra = self._backend.read_many(Layout.metadata_key(c.key) for c in good)
        entries = {}
        for c in good:
            raw = extra.get(Layout.metadata_key(c.key))
            md = parse_json(raw) if raw is not None else dict(c.manifest.metadata)
            entries[c.name] = index_entry(c, md)
        return entries

    def update(
        self,
        *,
        add: Iterable[Checkpoint] = (),
        remove: Mapping[int, str] | Iterable[int] = (),
        metadata: Mapping[str, dict[str, Any]] | None = None,
        rebuild: bool = False,
        prune: bool = False,
    ) -> dict[str, Any]:
        """Apply changes to ``index.json`` by compare-and-swap, under the record lock.

        Args:
            add: Newly committed checkpoints (one that is gone already is not added: gc may have
                deleted a commit before its writer got here).
            remove: Epochs deleted (``{epoch: reason}`` or epochs); they move to the index's history,
                so the metric curve stays complete for ``ckptstore plot``.
            metadata: New user metadata by epoch name.
            rebuild: Rebuild the checkpoint entries from the manifests first.
            prune: Drop entries whose epoch folder is gone (one listing of ``epochs/``).

        Returns:
            The index as written.
        """
        with self._lock():
            return self._update(add, remove, metadata, rebuild, prune)

    def _update(
        self,
        add: Iterable[Checkpoint],
        remove: Mapping[int, str] | Iterable[int],
        metadata: Mapping[str, dict[str, Any]] | None,
        rebuild: bool,
        prune: bool,
    ) -> dict[str, Any]:
        backend = self._backend
        additions = {c.name: index_entry(c, c._metadata) for c in add if backend.exists(Layout.manifest_key(c.key))}
        reasons = dict(remove) if isinstance(remove, Mapping) else dict.fromkeys(remove, "deleted")
        removals = {self._layout.name(e): why for e, why in reasons.items()}
        present = set(backend.listdir(EPOCHS)) if prune else None
        fresh = self.from_manifests() if rebuild else None
        record: dict[str, Any] = {}
        for _attempt in range(CAS_ATTEMPTS):
            current = backend.read_versioned(INDEX_FILE)
            data = parse_json(current[0]) if current else {}
            entries = data.get("checkpoints")
            raw_history = data.get("history")
            history: dict[str, Any] = {}  # junk (index.json is a cache anyone may have edited) is dropped
            for tag, item in raw_history.items() if isinstance(raw_history, dict) else ():
                clean = history_entry(item)
                if clean is not None:
                    history[tag] = clean
            if fresh is not None:
                entries = dict(fresh)
            elif not isinstance(entries, dict) or data.get("format") != INDEX_FORMAT:
                entries = self.from_manifests()
            entries.update(additions)
            for name, md in (metadata or {}).items():
                if isinstance(entries.get(name), dict):
                    entries[name]["metadata"] = md
            now = time.time_ns()
            gone_elsewhere = {  # entries whose folder was gone when this update began (a cache may lag, not lie)
                n: "gone (deleted by another process)"
                for n in entries
                if present is not None and n not in present and n not in additions and n.isdigit()
            }
            for name, why in {**gone_elsewhere, **removals}.items():
                gone = entries.pop(name, None)
                if isinstance(gone, dict):
                    commit = gone.get("commit_id")
                    history[f"{name}.{commit[:8] if isinstance(commit, str) else ''}"] = history_entry(
                        {
                            "epoch": int(name),
                            "metrics": gone.get("metrics"),
                            "committed_at_ns": gone.get("committed_at_ns"),
                            "deleted_at_ns": now,
                            "reason": why,
                        }
                    )
            record = {
                "format": INDEX_FORMAT,
                "version": 1,
                "updated_at_ns": now,
                "checkpoints": dict(sorted(entries.items())),
                "history": dict(sorted(history.items())),
            }
            if backend.write_if(INDEX_FILE, json.dumps(record, indent=1).encode(), current[1] if current else None):
                return record
        logger.warning(
            "index.json of %s not updated after %d conflicts; reindex() rebuilds it", self._url, CAS_ATTEMPTS
        )
        return record


def history_entry(raw: object) -> dict[str, Any] | None:
    """A record of ``index.json``'s history (a deleted checkpoint) cleaned of junk; None if it is junk.

    The epoch must be an int in range; metrics that are not finite numbers and times that are not
    ints in range are dropped, so ``ckptstore plot`` and the index's own updates never trip on them.
    """
    if not isinstance(raw, dict):
        return None
    epoch = raw.get("epoch")
    if isinstance(epoch, bool) or not isinstance(epoch, int) or not 0 <= epoch <= MAX_EPOCH:
        return None
    metrics = raw.get("metrics")
    clean: dict[str, float] = {}
    for name, value in metrics.items() if isinstance(metrics, dict) else ():
        with contextlib.suppress(InvalidArgumentError):
            clean.update(check_metrics({name: value}) if isinstance(value, (int, float)) else {})
    entry: dict[str, Any] = {"epoch": epoch, "metrics": clean}
    for key in ("committed_at_ns", "deleted_at_ns"):
        value = raw.get(key)
        ok = isinstance(value, int) and not isinstance(value, bool) and 0 <= value <= MAX_TIME_NS
        entry[key] = value if ok else None
    reason = raw.get("reason")
    entry["reason"] = reason if isinstance(reason, str) else ""
    return entry


def index_entry(checkpoint: Checkpoint, metadata: Mapping[str, Any] | None) -> dict[str, Any]:
    """The index entry of a checkpoint: its manifest, the fields listings sort by, its metadata."""
    return {
        "epoch": checkpoint.epoch,
        "metrics": checkpoint.metrics,
        "size": checkpoint.size,
        "committed_at_ns": checkpoint.manifest.committed_at_ns,
        "run_id": checkpoint.run_id,
        "commit_id": checkpoint.manifest.commit_id,
        "metadata": dict(metadata) if metadata is not None else dict(checkpoint.manifest.metadata),
        "manifest": checkpoint.manifest.to_dict(),
    }
