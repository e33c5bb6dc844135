"""Answering questions about a store: listings, top-n, latest, best, the files under its root, verification.

Every answer comes from the manifests (read through the index where that is only a speed-up, as in
:meth:`Manifests.scan`); the pointers are used only when they agree with them, and a missing or
dangling pointer is repaired through the callback the store hands in (it knows whether it may
write). Ranking goes through :mod:`ckptstore.catalog`, so listings, ``best`` and gc never disagree.
"""

from __future__ import annotations

import builtins
import contextlib
import logging
import math
import warnings
from collections.abc import Callable, Mapping, Sequence
from typing import Any, Literal, Protocol

import attrs

from ._boundary import backend_errors
from ._validate import check_count, check_metrics, check_optional_text
from .catalog import ordered
from .checkpoint import EVALUATION_KEY, EVALUATION_MODES_KEY, Checkpoint, merged_metrics, recorded_modes
from .context import Part, StoreContext
from .errors import CheckpointNotFoundError, InvalidArgumentError, VerificationError
from .find import store_files
from .index import Index
from .manifests import Manifests
from .pointers import Pointers
from .policies import Mode, resolve_mode
from .serializers import Serializer

__all__ = ["Queries"]

Repair = Callable[[str, int, bool], None]


class Queries(Part):
    """The read side of one store.

    Args:
        ctx: The store's context.
        manifests: The truth.
        index: The listing cache.
        pointers: ``best`` and ``last``, trusted only when the manifests agree.
        monitor: The store's monitor and mode (``best``'s definition).
        repair: ``repair(name, epoch, stale)`` re-points a pointer the store found wrong.
    """

    def __init__(
        self,
        ctx: StoreContext,
        manifests: Manifests,
        index: Index,
        pointers: Pointers,
        monitor: tuple[str | None, Mode],
        repair: Repair,
    ) -> None:
        super().__init__(ctx)
        self._manifests = manifests
        self._index = index
        self._pointers = pointers
        self._monitor, self._mode = monitor
        self._repair = repair

    def scan(self, *, use_index: bool = True) -> tuple[list[Checkpoint], list[tuple[str, Exception]]]:
        """Every committed checkpoint, and folders under ``epochs/`` that are not valid ones (see Manifests.scan)."""
        return self._manifests.scan(self._index.entries() if use_index else None)

    def listing(
        self, sort_by: str | None, order: Literal["asc", "desc"] | None, limit: int | None
    ) -> builtins.list[Checkpoint]:
        """See :meth:`CheckpointStore.list` (the arguments are validated here)."""
        sort_by = check_optional_text("sort_by", sort_by)
        if order not in (None, "asc", "desc"):
            raise InvalidArgumentError(f"order must be 'asc' or 'desc', got {order!r}")
        if limit is not None:
            limit = check_count("limit", limit)
        key = sort_by if sort_by is not None else self._monitor or "epoch"
        if limit is not None:
            first = self._first(key, order, limit)
            if first is not None:
                return first
        checkpoints = sorted(self.scan()[0], key=lambda c: c.epoch)
        if key == "epoch":
            result = checkpoints if order != "desc" else checkpoints[::-1]
        elif key == "time":
            result = sorted(checkpoints, key=lambda c: (c.manifest.committed_at_ns, c.epoch), reverse=order == "desc")
        else:
            mode = self.mode_for(key, checkpoints)
            direction = order or ("asc" if mode == "min" else "desc")
            result = ordered(checkpoints, by=lambda c: c.all_metrics.get(key), order=direction)
        return result if limit is None else result[:limit]

    def _first(self, key: str, order: Literal["asc", "desc"] | None, limit: int) -> builtins.list[Checkpoint] | None:
        """The first ``limit`` checkpoints of a listing, building only those; None if the full listing must decide.

        By epoch only the epoch folders' names and ``limit`` manifests are read. By a metric or time,
        the index's entries are ranked as they are and only the first ``limit`` become checkpoints (an
        entry that does not validate sends the listing down the full path, which reads its manifest).
        """
        if key == "epoch":
            names = sorted(self._manifests.names(), key=int, reverse=order == "desc")
            found: builtins.list[Checkpoint] = []
            for start in range(0, len(names), limit):  # an invalid folder is skipped, as in a full listing
                read = self._manifests.read_names(names[start : start + limit])[0]
                found += sorted(read, key=lambda c: c.epoch, reverse=order == "desc")
                if len(found) >= limit:
                    break
            return found[:limit]
        entries = self._index.entries()
        if entries is None:
            return None
        candidates, unindexed = self._manifests.sort_out(entries, _Entry.of)
        candidates += [_Entry.wrap(c) for c in self._manifests.read_names(unindexed)[0]]
        if key == "time":
            ranked = sorted(candidates, key=lambda c: (c.time_ns, c.epoch), reverse=order == "desc")
        else:
            direction = order or ("asc" if self.mode_for(key, candidates) == "min" else "desc")
            ranked = ordered(candidates, by=lambda c: c.all_metrics.get(key), order=direction)
        chosen = [c.checkpoint(self._manifests) for c in ranked[:limit]]
        return None if any(c is None for c in chosen) else [c for c in chosen if c is not None]

    def top(self, n: int, metric: str | None) -> builtins.list[Checkpoint]:
        """See :meth:`CheckpointStore.top`."""
        n = check_count("top() n", n)
        metric = check_optional_text("metric", metric) or self._monitor
        if metric is None:
            raise InvalidArgumentError("top() needs a metric: pass metric= or open the store with monitor=")
        return [c for c in self.listing(metric, None, n) if metric in c.all_metrics]

    def latest(self) -> Checkpoint:
        """See :meth:`CheckpointStore.latest`."""
        pointed = self._pointers.checkpoint("last")
        newer = self._manifests.highest_above(pointed.epoch if pointed is not None else -1)
        if newer is None:
            if pointed is None:
                raise CheckpointNotFoundError(f"the store at {self._url} holds no checkpoint")
            return pointed
        # No pointer, or a writer died between its commit and its pointer update: repair it.
        self._repair("last", newer.epoch, pointed is not None)
        return newer

    def best(self, metric: str | None, mode: str | None) -> Checkpoint:
        """See :meth:`CheckpointStore.best`."""
        monitor = metric or self._monitor
        if monitor is None:
            raise InvalidArgumentError("best() needs a metric: pass metric= or open the store with monitor=")
        is_monitor = monitor == self._monitor and (mode is None or resolve_mode(monitor, mode) == self._mode)
        if is_monitor:
            pointed = self._pointers.checkpoint("best")
            if pointed is not None and monitor in pointed.metrics:
                return pointed
        order: Literal["asc", "desc"] | None = None
        if mode is not None:
            order = "asc" if resolve_mode(monitor, mode) == "min" else "desc"
        first = self.listing(monitor, order, 1)  # ranked by catalog.ordered: ties to the earliest, as best_of
        if not first or monitor not in first[0].all_metrics:
            raise CheckpointNotFoundError(f"no checkpoint in {self._url} has the metric {monitor!r}")
        winner = first[0]
        if is_monitor:
            self._repair("best", winner.epoch, False)
        return winner

    def choose(self, which: object, top_n: int | None, metric: str | None) -> builtins.list[Checkpoint]:
        """The checkpoints :meth:`CheckpointStore.download` fetches: ``best``, ``latest``, an epoch, or the top n."""
        if top_n is not None:
            return self.top(top_n, metric)
        if which == "best":
            return [self.best(metric, None)]
        if which == "latest":
            return [self.latest()]
        if isinstance(which, int) and not isinstance(which, bool):
            return [self._manifests.get(which)]
        raise InvalidArgumentError(f"which must be 'best', 'latest' or an epoch, got {which!r}")

    def summary(self, stats: Mapping[str, Any]) -> dict[str, Any]:
        """What :meth:`CheckpointStore.report` returns: what the store holds, and what this process did."""
        checkpoints = self.listing("epoch", None, None)
        return {
            "url": self._url,
            "checkpoints": len(checkpoints),
            "total_size": sum(c.size for c in checkpoints),
            "last": self._pointers.read("last"),
            "best": self._pointers.read("best"),
            "monitor": self._monitor,
            "pinned": self._pointers.pinned(),
            "this_process": dict(stats),
        }

    def mode_for(self, metric: str, checkpoints: Sequence[_Ranked]) -> Mode:
        """Which end of ``metric`` is best.

        The store's mode for its monitor; else the mode :meth:`evaluate` recorded with the metric (the
        newest record); else a guess from its name (``acc`` and friends: max).
        """
        if metric == self._monitor:
            return self._mode
        for checkpoint in sorted(checkpoints, key=lambda c: c.epoch, reverse=True):  # the newest record wins
            recorded = checkpoint.evaluation_modes.get(metric)
            if recorded is not None:  # "min" or "max" (evaluation_modes keeps only those)
                return "min" if recorded == "min" else "max"
        return resolve_mode(metric, "auto")

    def best_value(self) -> float | None:
        """The monitor's value of the best checkpoint, or None (no monitor, or nothing scored yet)."""
        if self._monitor is None:
            return None
        with contextlib.suppress(CheckpointNotFoundError):
            return self.best(None, None).metrics.get(self._monitor)
        return None

    def files(self) -> tuple[dict[str, tuple[int, int]], dict[str, int]]:
        """Files of committed checkpoints and files outside ckptstore's own folders (see :func:`store_files`)."""
        with backend_errors(self._backend, "list files"):
            return store_files(self._backend, {c.name: c.epoch for c in self.scan()[0]})

    def verify_all(self, confirm: Callable[[list[Checkpoint]], Mapping[int, Checkpoint | None]]) -> list[Checkpoint]:
        """Re-hash every checkpoint; raise the first failure (noting how many more), after logging each."""
        good, bad = self.scan()
        failures: builtins.list[Exception] = [exc for _, exc in bad]
        verified = []
        fresh = confirm(good)  # what the manifests say, never what the index says
        for listed in sorted(good, key=lambda c: c.epoch):
            try:
                checkpoint = fresh[listed.epoch] or self._manifests.get(listed.epoch)
                verified.append(checkpoint.verify())
            except CheckpointNotFoundError:
                continue  # deleted since the listing
            except VerificationError as exc:
                failures.append(exc)
                self._log("VERIFY", f"epoch {listed.epoch} failed: {exc}", logging.WARNING)
        if failures:
            first = failures[0]
            if len(failures) > 1:
                raise type(first)(f"{first} (and {len(failures) - 1} more failure(s); see ckpt.log)") from first
            raise first
        return verified

    def evaluate(
        self,
        fn: Callable[[Any], Any],
        metric: str,
        mode: Literal["min", "max", "auto"],
        *,
        load: bool,
        serializer: str | Serializer | None,
    ) -> builtins.list[tuple[Checkpoint, float]]:
        """See :meth:`CheckpointStore.evaluate`."""
        resolved = resolve_mode(metric, mode)
        results: builtins.list[tuple[Checkpoint, float]] = []
        for checkpoint in self.listing("epoch", None, None):
            try:  # verified in the same read that loads or downloads it
                if load and (serializer is not None or checkpoint.manifest.serializer):
                    outcome = fn(checkpoint.load(serializer))
                else:
                    with checkpoint.local_path() as path:
                        outcome = fn(path)
            except VerificationError as exc:
                self._log(
                    "EVALUATE", f"epoch {checkpoint.epoch} skipped: it fails verification: {exc}", logging.WARNING
                )
                warnings.warn(f"epoch {checkpoint.epoch} skipped: {exc}", stacklevel=3)
                continue
            if isinstance(outcome, Mapping):
                outcome = outcome.get(metric)
            value = check_metrics({metric: outcome})[metric]
            evaluation = checkpoint.metadata.get(EVALUATION_KEY)
            modes = checkpoint.metadata.get(EVALUATION_MODES_KEY)
            checkpoint.add_metadata(
                {
                    EVALUATION_KEY: {**(evaluation if isinstance(evaluation, dict) else {}), metric: value},
                    EVALUATION_MODES_KEY: {**(modes if isinstance(modes, dict) else {}), metric: resolved},
                }
            )
            self._log("EVALUATE", f"epoch {checkpoint.epoch} {metric}={value:.6g}")
            results.append((checkpoint, value))
        results.sort(key=lambda item: (item[1], item[0].epoch), reverse=resolved == "max")
        return results


class _Ranked(Protocol):
    """What ranking and :meth:`Queries.mode_for` read of a checkpoint or an index entry."""

    @property
    def epoch(self) -> int: ...

    @property
    def evaluation_modes(self) -> dict[str, str]: ...

    @property
    def all_metrics(self) -> dict[str, float]: ...


@attrs.frozen
class _Entry:
    """An index entry ranked as it is (no validation), or a checkpoint read from its manifest."""

    name: str
    epoch: int
    time_ns: int
    all_metrics: dict[str, float]
    evaluation_modes: dict[str, str]
    entry: Mapping[str, Any] | None = None
    read: Checkpoint | None = None

    @classmethod
    def of(cls, name: str, entry: Mapping[str, Any]) -> _Entry | None:
        """The entry's fields if they have the right types (the checkpoint is validated when built)."""
        manifest, metadata = entry.get("manifest"), entry.get("metadata")
        if not isinstance(manifest, dict) or not isinstance(metadata, dict):
            return None
        metrics, when = manifest.get("metrics"), manifest.get("committed_at_ns")
        if not isinstance(metrics, dict) or not isinstance(when, int) or isinstance(when, bool):
            return None
        if not all(isinstance(v, float) and math.isfinite(v) for v in metrics.values()):
            return None  # JSON numbers the manifest would refuse or turn: leave it to the full path
        return cls(name, int(name), when, merged_metrics(metrics, metadata), recorded_modes(metadata), entry=entry)

    @classmethod
    def wrap(cls, c: Checkpoint) -> _Entry:
        """A checkpoint read from its manifest."""
        return cls(c.name, c.epoch, c.manifest.committed_at_ns, c.all_metrics, c.evaluation_modes, read=c)

    def checkpoint(self, manifests: Manifests) -> Checkpoint | None:
        """The checkpoint (validated from the entry), or None if the entry does not validate."""
        if self.read is not None:
            return self.read
        return manifests.from_index_entry(self.name, self.entry) if self.entry is not None else None
