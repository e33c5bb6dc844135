"""Resuming: find the checkpoint to restart from, fall back past corrupt ones, roll back, retire.

CANDLE's ``restart_mode`` done from the manifests only: candidates come from the listing of
``epochs/``, highest epoch first (the rule the ``last`` pointer follows), each read from its own
manifest and re-hashed unless told not to; one that fails is skipped and logged, and the corrupt
checkpoints newer than the one chosen are retired so the resumed run can write those epochs again.
Retiring takes an epoch out of ``epochs/`` in one step (a rename into ``retired/``; on object stores
the manifest is deleted first) and updates the index before anything moves.
"""

from __future__ import annotations

import contextlib
import logging
import uuid
from collections.abc import Callable

from ._boundary import backend_errors
from .checkpoint import Checkpoint
from .context import Part, StoreContext
from .errors import CheckpointNotFoundError, UnsafeEntryError, VerificationError
from .index import Index
from .layout import CLAIM_FILE, RETIRED, Layout, tail
from .manifests import Manifests
from .pointers import Pointers

__all__ = ["Restarter"]


class Restarter(Part):
    """Restart, rollback and retire for one store.

    Args:
        backend: The store's backend.
        url: The store's URL, for messages.
        lock: The store's record lock (retiring and re-pointing are one step for other writers).
        log: The store's operation log.
        manifests: Where candidates are read from.
        index: Updated before an epoch is retired.
        pointers: ``last`` and ``best`` are re-pointed after a fall-back or rollback.
        recompute_best: Recomputes ``best`` from what the store holds.
    """

    def __init__(
        self,
        ctx: StoreContext,
        manifests: Manifests,
        index: Index,
        pointers: Pointers,
        recompute_best: Callable[[], None],
    ) -> None:
        super().__init__(ctx)
        self._manifests = manifests
        self._index = index
        self._pointers = pointers
        self._recompute_best = recompute_best

    def restart(self, *, required: bool, verify: bool, writable: bool) -> Checkpoint | None:
        """The highest checkpoint that verifies; retire corrupt ones above it and re-point ``last``.

        Raises:
            CheckpointNotFoundError: ``required`` and no checkpoint verifies.
        """
        with backend_errors(self._backend, "list checkpoints"):
            names = sorted(self._manifests.names(), key=int, reverse=True)
        failed: list[tuple[str, Exception]] = []
        chosen: Checkpoint | None = None
        for name in names:
            try:
                candidate = self._manifests.at(Layout.folder_key(name))
                chosen = candidate.verify() if verify else candidate
                break
            except CheckpointNotFoundError:
                continue  # object stores: a save in progress (no manifest yet), or deleted meanwhile
            except VerificationError as exc:
                failed.append((Layout.folder_key(name), exc))
                self._log("VERIFY", f"epoch {int(name)} fails verification, skipped: {exc}", logging.WARNING)
        if chosen is None:
            if required:
                raise CheckpointNotFoundError(f"restart_mode=required but no checkpoint in {self._url} verifies")
            self._log("RESTART", "no valid checkpoint: starting from scratch")
            return None
        if writable:
            with backend_errors(self._backend, "retire corrupt checkpoints"), self._lock():
                for key, _problem in failed:  # all newer than the chosen one, by construction
                    try:
                        self.retire(key, "corrupt")
                    except UnsafeEntryError as exc:  # a symlinked epoch: never moved or deleted through
                        self._log("RETIRE", f"{key} left in place: {exc}", logging.WARNING)
                if failed or self._pointers.read("last") != chosen.epoch:
                    self._pointers.write("last", chosen.epoch)
                self._recompute_best()
        self._log("RESTART", f"resuming from epoch {chosen.epoch}")
        return chosen

    def rollback(self, target: Checkpoint) -> None:
        """Retire every epoch above ``target``, point ``last`` at it and recompute ``best``."""
        with backend_errors(self._backend, "roll back"), self._lock():
            for name in self._manifests.names():
                if int(name) > target.epoch:
                    self.retire(Layout.folder_key(name), f"rollback-to-{target.epoch}")
            self._pointers.write("last", target.epoch)
            self._recompute_best()
        self._log("ROLLBACK", f"last -> epoch {target.epoch}")

    def retire(self, key: str, why: str) -> None:
        """Take an epoch out of ``epochs/`` in one step so its number can be written again.

        Locally it is renamed into ``retired/`` (kept until the next gc); on object stores, where a
        copy would cost a full upload, its manifest is deleted (it stops being a checkpoint) and
        then its files. Its pin goes with it.
        """
        name = tail(key)
        if name.isdigit():  # index first, as in gc
            self._index.update(remove={int(name): f"retired ({why})"})
        backend = self._backend
        if backend.capabilities.atomic_rename:
            dest = f"{RETIRED}/{name}.{why}.{uuid.uuid4().hex[:8]}"
            with contextlib.suppress(FileNotFoundError):
                backend.rename_dir(key, dest)  # type: ignore[attr-defined]
                self._log("RETIRE", f"{name} -> {dest} ({why})")
        else:
            backend.delete(Layout.manifest_key(key))
            backend.delete_tree(key, last=[CLAIM_FILE])
            self._log("RETIRE", f"{name} deleted ({why}; object stores keep no retired copy)")
        if name.isdigit():
            self._pointers.unpin(int(name), " (retired)")
