"""``index.json``: a cache of every committed checkpoint, so a listing costs a few reads, not one per checkpoint.

This is the only code that reads or writes the index. It holds each checkpoint's manifest, metrics
and metadata, and a history of deleted ones (so ``ckptstore plot`` shows the whole curve). A commit's
cost must not grow with the history, so the index is a small head (``index.json``, the changes since
its segments) over immutable segments (``index.d/``), merged in the background as they pile up (see
:mod:`ckptstore.index_segments`): a commit rewrites a bounded head, whatever the number of checkpoints.

It is a cache: it may lag (a writer killed between its commit and its index update), it is rebuilt
from the manifests whenever it is missing, invalid or asked to be, and nothing destructive is decided
from it. Every change to the head is a compare-and-swap under the store's record lock, so no writer's
update (a commit, gc, metadata, a compaction) is lost to another's; segments are written create-only
under fresh names before a head names them, and removed only after no head names them, so a reader
sees a whole index or retries.
"""

from __future__ import annotations

import contextlib
import json
import logging
import math
import threading
import time
import uuid
from collections.abc import Iterable, Mapping, Sequence
from typing import Any

import attrs

from . import _crash
from ._boundary import CAS_ATTEMPTS, parse_json
from ._validate import check_metrics
from .checkpoint import Checkpoint
from .context import Part, StoreContext
from .errors import InvalidArgumentError
from .index_segments import (
    FANOUT,
    INDEX_FORMAT,
    INDEX_VERSION,
    SEGMENT_FORMAT,
    Delta,
    Head,
    SegmentRef,
    fold,
    merge,
    merge_plan,
    parse_head,
    parse_segment,
    purge_due,
    segment_json,
)
from .layout import EPOCHS, INDEX_FILE, INDEX_SEGMENTS, Layout
from .manifest import MAX_EPOCH, MAX_TIME_NS
from .manifests import Manifests

__all__ = ["HEAD_ENTRIES", "INDEX_FORMAT", "Index", "history_entry", "index_entry"]

logger = logging.getLogger("ckptstore")

HEAD_ENTRIES = 64
"""Records the head holds before it is flushed into a segment (the ``index_head_entries`` option)."""
ORPHAN_GRACE_SECONDS = 60.0
"""A segment no head names is removed by gc only once it is this old (a compactor may be about to name it)."""
HEAD_BYTES = 1 << 20
"""Bytes the head holds before it is flushed, however few records (manifests of sharded saves are large)."""
_READ_ATTEMPTS = 5


def _segment_key(ident: str) -> str:
    return f"{INDEX_SEGMENTS}/{ident}.json"


def _history_key(ident: str) -> str:
    return f"{INDEX_SEGMENTS}/{ident}.history.json"


def _objects(ref: SegmentRef) -> list[str]:
    """The keys of the objects a segment has (a purged one has only its history)."""
    keys = [_segment_key(ref.id)] if ref.entries else []
    return [*keys, _history_key(ref.id)] if ref.history else keys


class Index(Part):
    """The index of one store.

    Args:
        ctx: The store's context.
        manifests: Where the truth is, for rebuilding.
        head_entries: Records the head holds before it is flushed into a segment.
    """

    def __init__(self, ctx: StoreContext, manifests: Manifests, *, head_entries: int = HEAD_ENTRIES) -> None:
        super().__init__(ctx)
        self._manifests = manifests
        self._head_cap = head_entries
        self._compaction: threading.Thread | None = None
        self._again = False
        self._guard = threading.Lock()
        self.lost = False
        """A read found the head naming a segment that is gone for good (gc then rebuilds the index)."""

    # -- reading ----------------------------------------------------------------------------------------------
    def _head(self, raw: bytes | None) -> Head | None:
        return parse_head(parse_json(raw)) if raw is not None else None

    def _read_head(self) -> Head | None:
        """The head as it is now; None if it is missing or not an index."""
        with contextlib.suppress(FileNotFoundError):
            return self._head(self._backend.read_bytes(INDEX_FILE))
        return None

    def _segments(self, refs: Sequence[SegmentRef], *, history: bool) -> list[Delta] | None:
        """The deltas of ``refs``, in order (with their history if asked); None if one is gone (compacted meanwhile)."""
        if not refs:
            return []
        wanted = [key for r in refs for key in _objects(r) if history or key == _segment_key(r.id)]
        found = self._backend.read_many(wanted)
        raw = {key: data for key, data in found.items() if data is not None}
        if len(raw) < len(wanted):
            return None
        deltas = []
        for ref in refs:
            entries = parse_json(raw[_segment_key(ref.id)]) if ref.entries else {"format": SEGMENT_FORMAT}
            extra = parse_json(raw[_history_key(ref.id)]) if history and ref.history else None
            delta = parse_segment(entries, extra)
            if delta is None:
                return None
            deltas.append(delta)
        return deltas

    def _fold(self, head: Head, *, history: bool = False) -> tuple[dict[str, Any], dict[str, Any]] | None:
        """The whole index a head describes (its segments read), or None if a segment is gone."""
        deltas = self._segments(head.segments, history=history)
        return None if deltas is None else fold([*deltas, head.delta])

    def view(self, *, history: bool = False) -> tuple[dict[str, Any], dict[str, Any]] | None:
        """``(entries, history)`` of a valid index, or None (missing, invalid, or a segment lost for good).

        Args:
            history: Read the history of deleted checkpoints too (else only the head's is returned).
        """
        for _attempt in range(_READ_ATTEMPTS):
            head = self._read_head()
            if head is None:
                return None
            whole = self._fold(head, history=history)
            if whole is not None:
                return whole
            # a segment was merged away between reading the head and reading it: read the head again
        self.lost = True
        logger.warning("index.json of %s names a segment that is gone; listings read the manifests", self._url)
        return None

    def entries(self) -> dict[str, Any] | None:
        """The checkpoint entries of a valid index (by epoch folder name), or None."""
        whole = self.view()
        return whole[0] if whole is not None else None

    def document(self) -> dict[str, Any]:
        """The whole index (rebuilt in memory from the manifests if it is missing or invalid)."""
        whole = self.view(history=True)
        entries, raw_history = whole if whole is not None else (self.from_manifests(), {})
        history = {tag: clean for tag, item in raw_history.items() if (clean := history_entry(item)) is not None}
        return {
            "format": INDEX_FORMAT,
            "version": INDEX_VERSION,
            "checkpoints": dict(sorted(entries.items())),
            "history": dict(sorted(history.items())),
        }

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

    # -- writing ----------------------------------------------------------------------------------------------
    def update(
        self,
        *,
        add: Iterable[Checkpoint] = (),
        remove: Mapping[int, str] | Iterable[int] = (),
        known: Iterable[Checkpoint] = (),
        rebuild: bool = False,
        prune: bool = False,
    ) -> None:
        """Apply changes to the index by compare-and-swap of its head, under the record lock.

        Its cost does not depend on how many checkpoints the store holds, except for ``rebuild``,
        ``prune`` and removals of entries older than the head (which read the segments once).

        Args:
            add: Checkpoints newly committed, or whose metadata changed (one that is gone already is
                not added: gc may have deleted a commit before its writer got here).
            remove: Epochs deleted (``{epoch: reason}`` or epochs); they move to the index's history,
                so the metric curve stays complete for ``ckptstore plot``.
            known: The checkpoints being removed, as the caller read them (their history records
                are made from these, so the segments need not be read).
            rebuild: Rebuild the entries from the manifests (history is kept).
            prune: Drop entries whose epoch folder is gone (one listing of ``epochs/``).
        """
        with self._lock():
            flushed = self._update(add, remove, {c.name: index_entry(c, None) for c in known}, rebuild, prune)
        if flushed:
            self._schedule()

    def _update(
        self,
        add: Iterable[Checkpoint],
        remove: Mapping[int, str] | Iterable[int],
        described: dict[str, dict[str, Any]],
        rebuild: bool,
        prune: bool,
    ) -> bool:
        backend = self._backend
        additions = {c.name: index_entry(c, c._metadata) for c in add if backend.exists(Layout.manifest_key(c.key))}
        reasons = dict(remove) if isinstance(remove, Mapping) else dict.fromkeys(remove, "deleted")
        removals = {self._layout.name(e): why for e, why in reasons.items()}
        present = set(backend.listdir(EPOCHS)) if prune else None
        fresh = self.from_manifests() if rebuild else None
        unreadable: str | None = None  # the head version whose segments could not be read
        for _attempt in range(CAS_ATTEMPTS):
            current = backend.read_versioned(INDEX_FILE)
            version = current[1] if current else None
            head = self._head(current[0]) if current else None
            whole: tuple[dict[str, Any], dict[str, Any]] | None = None
            needs = fresh is not None or prune or any(n not in described for n in removals)
            if head is not None and head.segments and needs:
                whole = self._fold(head, history=fresh is not None)  # only these need what the segments hold
                if whole is None:
                    if unreadable != version:
                        unreadable = version
                        continue  # merged away meanwhile: read the head again
                    head = None  # a segment is gone for good: rebuild from the manifests
            replaced: tuple[SegmentRef, ...] = ()
            if head is None or fresh is not None:
                history = whole[1] if whole is not None else dict(head.delta.history) if head is not None else {}
                replaced = head.segments if head is not None else ()
                base = Delta(checkpoints=fresh if fresh is not None else self.from_manifests(), history=history)
                head, whole = Head(delta=base), (dict(base.checkpoints), history)
            entries = dict(head.delta.checkpoints)
            removed = set(head.delta.removed)
            history = dict(head.delta.history)
            entries.update(additions)
            removed -= additions.keys()
            now = time.time_ns()
            known = whole[0] if whole is not None else entries
            gone_elsewhere = {  # entries whose folder was gone when this update began (a cache may lag, not lie)
                n: "gone (deleted by another process)"
                for n in known
                if present is not None and n not in present and n not in additions and n.isdigit()
            }
            for name, why in {**gone_elsewhere, **removals}.items():
                gone = entries.pop(name, None) or described.get(name) or known.get(name)
                if head.segments:
                    removed.add(name)  # shadows the entry in a segment
                if isinstance(gone, dict):
                    commit = gone.get("commit_id")
                    history[f"{name}.{commit[:8] if isinstance(commit, str) else ''}"] = {
                        "epoch": int(name),
                        "metrics": gone.get("metrics"),
                        "committed_at_ns": gone.get("committed_at_ns"),
                        "deleted_at_ns": now,
                        "reason": why,
                    }
            clean = {tag: c for tag, item in history.items() if (c := history_entry(item)) is not None}
            delta = Delta(checkpoints=entries, removed=frozenset(removed), history=clean)
            body = _encode(Head(segments=head.segments, delta=delta).to_json(now))
            flushed = None
            if delta.size > self._head_cap or len(body) > HEAD_BYTES:  # full: its delta becomes a segment
                flushed = self._write_segment(delta, _level_for(delta.size, self._head_cap), now)
                body = _encode(Head(segments=(*head.segments, flushed)).to_json(now))
                _crash.point("index_after_flush")
            if backend.write_if(INDEX_FILE, body, version):
                self.lost = self.lost and fresh is None and not replaced
                self._delete_segments(replaced)  # a rebuild's predecessors: no head names them now
                return flushed is not None
            if flushed is not None:
                self._delete_segments([flushed])  # nobody names it
        logger.warning(
            "index.json of %s not updated after %d conflicts; reindex() rebuilds it", self._url, CAS_ATTEMPTS
        )
        return False

    def _write_segment(self, delta: Delta, level: int, now: int) -> SegmentRef:
        """Write a segment under a fresh name (its history first: a segment appears whole or is never named)."""
        ident = uuid.uuid4().hex  # a random 128-bit name: create-only never meets an existing one
        entries, history = segment_json(delta, now)
        if history is not None:
            self._backend.create_only(_history_key(ident), _encode(history))
        self._backend.create_only(_segment_key(ident), _encode(entries))
        return SegmentRef(
            id=ident, level=level, count=delta.size, history=history is not None, removed=len(delta.removed)
        )

    def _delete_segments(self, refs: Iterable[SegmentRef]) -> None:
        for ref in refs:
            for key in _objects(ref):
                self._backend.delete(key)

    # -- compaction -------------------------------------------------------------------------------------------
    def _schedule(self) -> None:
        """Merge segments in a background thread (one per store; a request while it runs runs it again)."""
        with self._guard:
            if self._compaction is not None:
                self._again = True
                return
            self._compaction = threading.Thread(target=self._compact_loop, name="ckptstore-index", daemon=True)
            self._compaction.start()

    def _compact_loop(self) -> None:
        while True:
            try:
                self.compact()
            except Exception as exc:  # a cache: a failed merge is retried at the next flush, never raised
                logger.warning("index compaction of %s failed (retried later): %s", self._url, exc)
            with self._guard:
                if not self._again:
                    self._compaction = None
                    return
                self._again = False

    def wait(self) -> None:
        """Wait for a background compaction to finish."""
        with self._guard:
            thread = self._compaction
        if thread is not None:
            thread.join()

    def compact(self) -> int:
        """Merge trailing runs of ``FANOUT`` segments of one level until none is left; return the merges made.

        The merged segment is written under a new name first; the head then names it instead of the
        ones it replaces, by compare-and-swap, only if those are still where they were; the old ones
        are deleted after. A compactor killed at any point leaves the index valid (and, at worst, an
        unnamed segment that gc removes).
        """
        merges = 0
        for _attempt in range(CAS_ATTEMPTS):
            head = self._read_head()
            if head is None:
                return merges
            if purge_due(head.segments, self._head_cap):
                merges += self._purge(head)
                continue
            plan = merge_plan(head.segments)
            if plan is None:
                return merges
            start, end = plan
            chosen = head.segments[start:end]
            deltas = self._segments(chosen, history=True)
            if deltas is None:
                continue
            merged = deltas[0]
            for delta in deltas[1:]:
                merged = merge(merged, delta, bottom=start == 0)
            ref = self._write_segment(merged, max(r.level for r in chosen) + 1, time.time_ns())
            _crash.point("index_after_merge")
            if not self._swap(head.segments, start, end, (ref,)):
                self._delete_segments([ref])
                continue
            merges += 1
            self._delete_segments(chosen)
        return merges

    def _purge(self, head: Head) -> int:
        """Fold every segment's entries into one, keeping the older segments' history where it is.

        Returns:
            1 if the head now names the purged segment, else 0 (the head changed: compaction reads it again).
        """
        deltas = self._segments(head.segments, history=False)
        if deltas is None:
            return 0
        live = Delta(checkpoints=fold(deltas)[0])
        ref = self._write_segment(live, max(r.level for r in head.segments), time.time_ns())
        kept = tuple(attrs.evolve(r, entries=False, removed=0) for r in head.segments if r.history)
        _crash.point("index_after_merge")
        # The purged segment goes first: it holds every entry, the others only history (whose order
        # does not matter), so levels still never rise from oldest to newest.
        if not self._swap(head.segments, 0, len(head.segments), (ref, *kept)):
            self._delete_segments([ref])
            return 0
        self._delete_segments(attrs.evolve(r, history=False) for r in head.segments)  # their entries objects
        return 1

    def _swap(self, old: Sequence[SegmentRef], start: int, end: int, new: Sequence[SegmentRef]) -> bool:
        """Name ``new`` in the head instead of its segments ``[start, end)``, if those are still ``old``."""
        backend = self._backend
        with self._lock():
            current = backend.read_versioned(INDEX_FILE)
            now = self._head(current[0]) if current else None
            if current is None or now is None or now.segments[start:end] != tuple(old[start:end]):
                return False
            swapped = Head(segments=(*now.segments[:start], *new, *now.segments[end:]), delta=now.delta)
            return backend.write_if(INDEX_FILE, _encode(swapped.to_json(time.time_ns())), current[1])

    def orphans(self, grace_seconds: float) -> list[tuple[str, str]]:
        """``(key, why)`` of segments no head names, older than the grace period (a crashed compactor's)."""
        backend = self._backend
        listed = backend.stat_files(INDEX_SEGMENTS)
        if not listed:
            return []
        head = self._read_head()
        named = {key for ref in (head.segments if head is not None else ()) for key in _objects(ref)}
        grace = max(grace_seconds, ORPHAN_GRACE_SECONDS)
        now = time.time_ns()
        return [
            (f"{INDEX_SEGMENTS}/{rel}", f"index segment no head names, {(now - mtime) / 1e9:.0f}s old")
            for rel, (_size, mtime) in sorted(listed.items())
            if f"{INDEX_SEGMENTS}/{rel}" not in named and (now - mtime) / 1e9 > grace
        ]


def _level_for(count: int, cap: int) -> int:
    """The level of a segment of ``count`` records (a flushed head: 0; a rebuilt index: as if merged)."""
    return max(0, math.ceil(math.log(max(count, 1) / max(cap, 1), FANOUT))) if count > cap * FANOUT else 0


def _encode(record: Mapping[str, Any]) -> bytes:
    return json.dumps(record, separators=(",", ":")).encode()


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
