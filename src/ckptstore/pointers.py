"""The ``best`` and ``last`` pointers and the pins: caches of the manifests that never dangle.

A pointer is updated only after a commit, atomically (a JSON record by compare-and-swap under the
record lock, plus a relative symlink where the backend has them), and a missing, dangling or stale
one is repaired from the manifests. ``last`` only moves forward in epoch (except through an explicit
rollback), so concurrent writers leave it on the highest epoch; ``best`` moves on a strict improvement
of the store's monitor, or to an earlier epoch on a tie (the rule :mod:`ckptstore.catalog` ranks by).
Pins protect a checkpoint from every keep policy until unpinned.
"""

from __future__ import annotations

import contextlib
import errno
import json
import logging
import os
import time
from collections.abc import Callable, Iterable
from typing import Any

from ._boundary import CAS_ATTEMPTS, backend_errors, parse_json
from .backends.base import Backend
from .catalog import best_of
from .checkpoint import Checkpoint
from .context import Part, StoreContext
from .errors import CheckpointNotFoundError, CkptStoreError, CommitFailedError, UnsafeEntryError
from .layout import EPOCHS, PINS, POINTER_NAMES, Layout
from .manifests import Manifests
from .policies import Mode, is_better

__all__ = ["Pointers", "pointer_monitor"]

logger = logging.getLogger("ckptstore")


def pointer_monitor(backend: Backend) -> tuple[str, Mode] | None:
    """The metric and mode the ``best`` pointer was last chosen by (stores made before ckptstore.json kept it)."""
    raw = None
    with contextlib.suppress(OSError):
        raw = backend.read_bytes(Layout.pointer_key("best"))
    data = parse_json(raw) if raw is not None else {}
    monitor, mode = data.get("monitor"), data.get("mode")
    if isinstance(monitor, str) and monitor and mode in ("min", "max"):
        return monitor, mode
    return None


def _pointer_epoch(raw: bytes | None) -> int | None:
    if raw is None:
        return None
    epoch = parse_json(raw).get("epoch")
    if isinstance(epoch, int) and not isinstance(epoch, bool) and epoch >= 0:
        return epoch
    return None


class Pointers(Part):
    """The pointers and pins of one store.

    Args:
        backend: The store's backend.
        layout: The store's key names.
        url: The store's URL, for messages.
        writer_id: Recorded in each pointer update.
        lock: The store's record lock.
        log: The store's operation log.
        manifests: Where pointers are checked and repaired from.
        monitor: The store's monitor (None: no best pointer) and its mode.
    """

    def __init__(self, ctx: StoreContext, manifests: Manifests, monitor: tuple[str | None, Mode]) -> None:
        super().__init__(ctx)
        self._manifests = manifests
        self._monitor, self._mode = monitor

    # -- reading ----------------------------------------------------------------------------------------------
    def read(self, name: str) -> int | None:
        """The epoch a pointer names, from its JSON record or else its symlink; None if absent."""
        raw = None
        with contextlib.suppress(OSError):
            raw = self._backend.read_bytes(Layout.pointer_key(name))
        epoch = _pointer_epoch(raw)
        if epoch is not None:
            return epoch
        local = self._backend.local_path(name)
        if local is None:
            return None
        try:
            target = os.readlink(local)  # the link itself: never followed
        except OSError:
            return None
        folder, _, tail = target.rpartition("/")
        return int(tail) if folder == EPOCHS and tail.isdigit() else None

    def checkpoint(self, name: str) -> Checkpoint | None:
        """The checkpoint a pointer names, if it has a valid manifest (no re-hash)."""
        return self._manifests.get_or_none(self.read(name))

    # -- moving -----------------------------------------------------------------------------------------------
    def update(self, name: str, decide: Callable[[int | None], int | None]) -> int | None:
        """Move a pointer by compare-and-swap: ``decide(current)`` returns the new epoch or None to leave it.

        Retried on conflict, so concurrent writers never lose an update; locally the record lock
        serializes writers and the same code runs once.

        Returns:
            The epoch written, or None if ``decide`` left the pointer alone.
        """
        with self._lock():
            return self._update(name, decide)

    def _update(self, name: str, decide: Callable[[int | None], int | None]) -> int | None:
        key = Layout.pointer_key(name)
        backend = self._backend
        for _attempt in range(CAS_ATTEMPTS):
            current = backend.read_versioned(key)
            epoch = _pointer_epoch(current[0] if current else None)
            if epoch is None and current is None and backend.local_path() is not None:
                epoch = self.read(name)  # a store made before pointers/ had JSON: the symlink
            new = decide(epoch)
            if new is None:
                return None
            record: dict[str, Any] = {
                "epoch": new,
                "target": self._layout.epoch_key(new),
                "updated_at_ns": time.time_ns(),
                "writer": self._ctx.writer_id,
            }
            if name == "best" and self._monitor is not None:
                record["monitor"] = self._monitor
                record["mode"] = self._mode
            if backend.write_if(key, json.dumps(record, indent=1).encode(), current[1] if current else None):
                break
        else:
            raise CommitFailedError(
                errno.EAGAIN, f"could not update the {name} pointer of {self._url}: {CAS_ATTEMPTS} conflicting writers"
            )
        if backend.capabilities.symlinks:
            try:
                backend.replace_symlink(name, self._layout.epoch_key(new))  # type: ignore[attr-defined]
            except OSError as exc:  # pragma: no cover - mount refused the link after the probe
                logger.warning("could not update the %s symlink in %s: %s", name, self._url, exc)
        self._log("POINTER", f"{name} -> epoch {new}")
        return new

    def write(self, name: str, epoch: int) -> None:
        """Point ``name`` at ``epoch`` whatever it names now (rollback, restart)."""
        self.update(name, lambda _current: epoch)

    def advance_last(self, epoch: int) -> None:
        """Move ``last`` to ``epoch`` unless it names a valid higher epoch (it only moves forward)."""
        kept: list[int] = []

        def forward(current: int | None) -> int | None:
            if current is not None and current > epoch and self._manifests.get_or_none(current) is not None:
                kept.append(current)
                return None
            return epoch

        if self.update("last", forward) is None and kept:
            self._log("POINTER", f"last stays at epoch {kept[-1]} (not moved back to {epoch})")

    def offer_best(self, checkpoint: Checkpoint) -> None:
        """Move ``best`` to a newly committed checkpoint if it is better by the monitor (or ties earlier)."""
        monitor = self._monitor
        if monitor is None or monitor not in checkpoint.metrics:
            return
        value = checkpoint.metrics[monitor]

        def better(current: int | None) -> int | None:
            pointed = self._manifests.get_or_none(current)
            if pointed is None or is_better(value, pointed.metrics.get(monitor), self._mode):
                return checkpoint.epoch
            if value == pointed.metrics.get(monitor) and checkpoint.epoch < pointed.epoch:
                return checkpoint.epoch  # a tie goes to the earliest epoch, as in every other path
            return None

        self.update("best", better)

    def remove(self, name: str) -> None:
        """Remove a pointer (its record and its link; never a file or folder someone put in its place)."""
        self._backend.delete(Layout.pointer_key(name))
        if self._backend.local_path() is not None:
            try:
                self._backend.remove_symlink(name)  # type: ignore[attr-defined]
            except UnsafeEntryError as exc:
                logger.warning("%s", exc)

    # -- repairing from the manifests -------------------------------------------------------------------------
    def repair(self, name: str, epoch: int, *, stale: bool = False) -> None:
        """Point ``name`` at ``epoch`` if it is missing or dangling (or, with ``stale``, lower); best effort."""

        def fix(current: int | None) -> int | None:
            pointed = self._manifests.get_or_none(current)
            if pointed is None or (stale and pointed.epoch < epoch):
                what = "stale" if pointed is not None else "missing or dangling"
                self._log("REPAIR", f"{name} pointer was {what}", logging.WARNING)
                return epoch
            return None

        with contextlib.suppress(OSError, CkptStoreError):
            self.update(name, fix)

    def recompute_best(self, checkpoints: Iterable[Checkpoint]) -> None:
        """Point ``best`` at the best of ``checkpoints`` by the monitor (remove it if none has the metric)."""
        monitor = self._monitor
        if monitor is None:
            return
        scored = [c for c in checkpoints if monitor in c.metrics]
        if not scored:
            self.remove("best")
            return
        winner = best_of(scored, lambda c: c.metrics[monitor], self._mode)
        if self.read("best") != winner.epoch:
            self.write("best", winner.epoch)

    # -- pins -------------------------------------------------------------------------------------------------
    def pin(self, checkpoint: Checkpoint) -> None:
        """Protect ``checkpoint`` from every keep policy and gc until :meth:`unpin` (serialized with gc)."""
        with backend_errors(self._backend, f"pin epoch {checkpoint.epoch}"), self._lock():
            if not self._backend.exists(Layout.manifest_key(checkpoint.key)):
                raise CheckpointNotFoundError(f"epoch {checkpoint.epoch} was deleted before it could be pinned")
            created = self._backend.create_only(self._layout.pin_key(checkpoint.epoch), b"{}")
        if created:
            self._log("PIN", f"epoch {checkpoint.epoch}")

    def unpin(self, epoch: int, why: str = "") -> None:
        """Remove the pin of ``epoch`` (no error if it was not pinned)."""
        key = self._layout.pin_key(epoch)
        with backend_errors(self._backend, f"unpin epoch {epoch}"):
            if self._backend.exists(key):
                self._backend.delete(key)
                self._log("UNPIN", f"epoch {epoch}{why}")

    def pinned(self) -> list[int]:
        """The pinned epochs, ascending."""
        with backend_errors(self._backend, "list pins"):
            return sorted(int(n) for n in self._backend.listdir(PINS) if n.isdigit())

    def marks(self) -> dict[int, list[str]]:
        """The epochs that carry a mark: ``best``, ``last``, ``pinned`` (each read once)."""
        last, best, pins = self.read("last"), self.read("best"), set(self.pinned())
        return {
            epoch: [m for m, on in (("best", epoch == best), ("last", epoch == last), ("pinned", epoch in pins)) if on]
            for epoch in sorted({e for e in (last, best) if e is not None} | pins)
        }

    def protected(self) -> dict[int, str]:
        """``{epoch: why}`` for every pinned checkpoint and the targets of ``best`` and ``last``."""
        protected: dict[int, str] = dict.fromkeys(self.pinned(), "pinned")
        for name in POINTER_NAMES:
            target = self.read(name)
            if target is not None:
                protected[target] = name if target not in protected else f"{protected[target]}, {name}"
        return protected
