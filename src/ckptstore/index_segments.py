"""The shape of ``index.json`` as a small head over immutable segments: pure functions, no I/O.

A commit must not cost more as the history grows, so the index is not one document rewritten whole.
It is a log-structured merge of *deltas*: ``index.json`` (the head) holds the changes since its
segments (at most a few dozen entries, so each commit rewrites a small, bounded object), and names the
immutable segments under ``index.d/`` that hold everything older, oldest first. When the head fills,
its delta becomes a new level-0 segment; when ``FANOUT`` segments of one level follow each other at the
end of the list, they merge into one segment of the next level. Each entry is thus rewritten about
``log_FANOUT(N / head size)`` times over its life, and a full read touches ``O(FANOUT * log N)``
objects.

A store with a keep policy removes as often as it adds; once the segments carry ``PURGE_FACTOR``
head-fulls of removals, their entries are folded into one segment placed first, and the older segments
keep only their history (:func:`purge_due`), so a full read stays proportional to what is live.

A delta maps folder names to index entries (set by it), lists names it removed, and carries history
records of deleted checkpoints. Applying deltas oldest first gives the index; :func:`merge` folds two
consecutive deltas into one that applies the same way, which is what makes compaction safe to run at
any time. Everything read here is a cache anyone may have edited: junk is dropped, never trusted.
"""

from __future__ import annotations

import re
from collections.abc import Iterable, Mapping, Sequence
from typing import Any

import attrs

__all__ = [
    "FANOUT",
    "INDEX_FORMAT",
    "INDEX_VERSION",
    "SEGMENT_FORMAT",
    "Delta",
    "Head",
    "SegmentRef",
    "fold",
    "merge",
    "merge_plan",
    "parse_delta",
    "parse_head",
    "purge_due",
]

INDEX_FORMAT = "ckptstore.index"
INDEX_VERSION = 2
"""Version 1 was one document with every entry; it reads as a head without segments."""
SEGMENT_FORMAT = "ckptstore.index-segment"
FANOUT = 8
"""Segments of one level merged at a time (and the most of one level that stay side by side)."""
PURGE_FACTOR = 4
"""Removals the segments may carry, in head-fulls, before their entries are folded into one (see purge_due)."""

_SEGMENT_ID = re.compile(r"^[0-9a-f]{8,64}$")


@attrs.frozen(kw_only=True)
class Delta:
    """Changes to the index, applied in order after the deltas before it.

    Attributes:
        checkpoints: Entries set (by epoch folder name).
        removed: Names removed (never also in ``checkpoints``).
        history: Records of deleted checkpoints, by a unique tag.
    """

    checkpoints: Mapping[str, Any] = attrs.field(factory=dict)
    removed: frozenset[str] = frozenset()
    history: Mapping[str, Any] = attrs.field(factory=dict)

    @property
    def size(self) -> int:
        """How many records it carries (what the head's cap counts)."""
        return len(self.checkpoints) + len(self.removed) + len(self.history)

    def to_json(self) -> dict[str, Any]:
        """Its JSON fields (sorted, so equal deltas serialize equally)."""
        return {
            "checkpoints": dict(sorted(self.checkpoints.items())),
            "removed": sorted(self.removed),
            "history": dict(sorted(self.history.items())),
        }


@attrs.frozen(kw_only=True)
class SegmentRef:
    """A segment the head names.

    A segment is one object of entries (``index.d/<id>.json``) and, when it carries history, one of
    history (``index.d/<id>.history.json``), so what listings need is read without the history.

    Attributes:
        id: Its object id.
        level: 0 for a flushed head; k + 1 for a merge of level-k segments.
        count: Records it carries (for reports).
        history: It has a history object.
        removed: Names its entries object removes (dead weight that :func:`purge_due` counts).
        entries: It has an entries object (a purge keeps only the history of older segments).
    """

    id: str
    level: int
    count: int
    history: bool = False
    removed: int = 0
    entries: bool = True

    def to_json(self) -> dict[str, Any]:
        """Its JSON form in the head."""
        return {
            "id": self.id,
            "level": self.level,
            "count": self.count,
            "history": self.history,
            "removed": self.removed,
            "entries": self.entries,
        }


@attrs.frozen(kw_only=True)
class Head:
    """``index.json``: segments, oldest first, then the delta since them.

    Attributes:
        segments: The segments, oldest first.
        delta: Changes since the last segment.
    """

    segments: tuple[SegmentRef, ...] = ()
    delta: Delta = attrs.field(factory=Delta)

    def to_json(self, now_ns: int) -> dict[str, Any]:
        """The head as written."""
        return {
            "format": INDEX_FORMAT,
            "version": INDEX_VERSION,
            "updated_at_ns": now_ns,
            "segments": [s.to_json() for s in self.segments],
            **self.delta.to_json(),
        }


def apply(state: dict[str, Any], history: dict[str, Any], delta: Delta) -> None:
    """Apply ``delta`` to an index held as ``state`` (entries) and ``history``, in place."""
    for name in delta.removed:
        state.pop(name, None)
    state.update(delta.checkpoints)
    history.update(delta.history)


def fold(deltas: Iterable[Delta]) -> tuple[dict[str, Any], dict[str, Any]]:
    """The index (entries, history) that ``deltas``, applied oldest first, describe."""
    state: dict[str, Any] = {}
    history: dict[str, Any] = {}
    for delta in deltas:
        apply(state, history, delta)
    return state, history


def merge(older: Delta, newer: Delta, *, bottom: bool = False) -> Delta:
    """One delta that applies as ``older`` then ``newer`` do.

    Args:
        older: The earlier delta.
        newer: The delta right after it.
        bottom: Nothing is older than ``older`` (the first segment): removals then have nothing
            left to remove and are dropped, so deletions do not pile up forever.
    """
    entries = {n: e for n, e in older.checkpoints.items() if n not in newer.removed}
    entries.update(newer.checkpoints)
    removed = frozenset() if bottom else (older.removed | newer.removed) - entries.keys()
    return Delta(checkpoints=entries, removed=removed, history={**older.history, **newer.history})


def merge_plan(segments: Sequence[SegmentRef], fanout: int = FANOUT) -> tuple[int, int] | None:
    """The slice ``[start, end)`` of segments to merge next, or None.

    New segments are appended at level 0, so levels never rise from oldest to newest; the trailing
    run of one level is merged once it reaches ``fanout`` (like carrying in a counter of base
    ``fanout``). Segments out of that order (an edited head) merge as soon as ``fanout`` of equal
    level trail the list, so the head never grows without bound.
    """
    if len(segments) < fanout:
        return None
    tail = segments[-fanout:]
    if all(s.level == tail[0].level for s in tail):
        return len(segments) - fanout, len(segments)
    if len(segments) > 6 * fanout:  # mixed levels the rule above would leave (a rebuilt or edited head)
        return len(segments) - fanout, len(segments)
    return None


def purge_due(segments: Sequence[SegmentRef], head_entries: int) -> bool:
    """True when the segments carry so many removals that their entries should be folded into one.

    A store with a keep policy deletes as often as it commits; a removal only cancels the entry it
    shadows when a merge reaches the oldest segment, so without a purge the names of deleted
    checkpoints (and their dead entries) would pile up and every full read would grow with the
    history. Purging once they reach ``PURGE_FACTOR`` head-fulls keeps that bounded.
    """
    return sum(s.removed for s in segments) >= PURGE_FACTOR * head_entries


def _clean_names(raw: object) -> frozenset[str]:
    return frozenset(n for n in raw if isinstance(n, str) and n.isdigit()) if isinstance(raw, list) else frozenset()


def _clean_mapping(raw: object) -> dict[str, Any]:
    if not isinstance(raw, dict):
        return {}
    return {k: v for k, v in raw.items() if isinstance(k, str) and isinstance(v, dict)}


def parse_delta(data: Mapping[str, Any]) -> Delta:
    """The delta in a head or a segment (entries that are not objects, and bad names, dropped)."""
    entries = {k: v for k, v in _clean_mapping(data.get("checkpoints")).items() if k.isdigit()}
    return Delta(
        checkpoints=entries,
        removed=_clean_names(data.get("removed")) - entries.keys(),
        history=_clean_mapping(data.get("history")),
    )


def parse_segment(entries: Mapping[str, Any], history: Mapping[str, Any] | None) -> Delta | None:
    """The delta a segment's objects hold (its history only if given), or None if it is not a segment."""
    if entries.get("format") != SEGMENT_FORMAT or (history is not None and history.get("format") != SEGMENT_FORMAT):
        return None
    delta = parse_delta(entries)
    return attrs.evolve(delta, history=parse_delta(history).history) if history is not None else delta


def segment_json(delta: Delta, now_ns: int) -> tuple[dict[str, Any], dict[str, Any] | None]:
    """A segment's entries object and its history object (None without history), as written."""
    fields = delta.to_json()
    entries = {"format": SEGMENT_FORMAT, "created_at_ns": now_ns, "checkpoints": fields["checkpoints"]}
    entries["removed"] = fields["removed"]
    history = {"format": SEGMENT_FORMAT, "created_at_ns": now_ns, "history": fields["history"]}
    return entries, history if delta.history else None


def parse_head(data: Mapping[str, Any]) -> Head | None:
    """The head in ``index.json``, or None if it is not an index (a version 1 index has no segments)."""
    if data.get("format") != INDEX_FORMAT or not isinstance(data.get("checkpoints"), dict):
        return None
    refs: list[SegmentRef] = []
    raw = data.get("segments")
    for item in raw if isinstance(raw, list) else ():
        if not isinstance(item, dict):
            return None  # a head whose segments cannot be read is not one to build on
        ident, level, count = item.get("id"), item.get("level"), item.get("count")
        if not (isinstance(ident, str) and _SEGMENT_ID.match(ident)):
            return None
        lvl = level if isinstance(level, int) and not isinstance(level, bool) and 0 <= level <= 64 else 0
        size = count if isinstance(count, int) and not isinstance(count, bool) else 0
        gone = item.get("removed")
        refs.append(
            SegmentRef(
                id=ident,
                level=lvl,
                count=size,
                history=item.get("history") is True,
                removed=gone if isinstance(gone, int) and not isinstance(gone, bool) and gone >= 0 else 0,
                entries=item.get("entries") is not False,
            )
        )
    if len({r.id for r in refs}) != len(refs):
        return None
    return Head(segments=tuple(refs), delta=parse_delta(data))
