"""Keeping the caches of the manifests current: after every commit, and rebuilt after a failure.

The ``best`` and ``last`` pointers and ``index.json`` are caches: each commit updates them right after
its commit point (``last`` forward, ``best`` if better, the index entry), under the record lock. When
such an update failed (a full disk, an outage), the save still returned its checkpoint; :meth:`rebuild`
then recomputes all three from the manifests.
"""

from __future__ import annotations

from . import _crash
from ._boundary import backend_errors
from .checkpoint import Checkpoint
from .context import Part, StoreContext
from .index import Index
from .manifests import Manifests
from .pointers import Pointers

__all__ = ["Caches"]


class Caches(Part):
    """The pointers and the index of one store, as caches of its manifests.

    Args:
        ctx: The store's context.
        manifests: The truth.
        index: The listing cache.
        pointers: ``best`` and ``last``.
    """

    def __init__(self, ctx: StoreContext, manifests: Manifests, index: Index, pointers: Pointers) -> None:
        super().__init__(ctx)
        self._manifests = manifests
        self._index = index
        self._pointers = pointers

    def after_commit(self, checkpoint: Checkpoint) -> None:
        """Advance ``last``, offer ``best`` and add the index entry of a checkpoint just committed."""
        with backend_errors(self._backend, f"update pointers after epoch {checkpoint.epoch}"), self._lock():
            self._pointers.advance_last(checkpoint.epoch)
            _crash.point("after_last")
            self._pointers.offer_best(checkpoint)
            self._index.update(add=[checkpoint])
        _crash.point("after_pointers")

    def recompute_best(self) -> None:
        """Point ``best`` at the best checkpoint the store lists (by its monitor)."""
        self._pointers.recompute_best(self._manifests.scan(self._index.entries())[0])

    def rebuild(self) -> None:
        """Rebuild the index, ``last`` and ``best`` from the manifests (after a failure past a commit point)."""
        with self._lock():
            self._index.update(rebuild=True)
            newest = self._manifests.highest_above(-1)
            if newest is not None:
                self._pointers.advance_last(newest.epoch)
            self.recompute_best()
        self._log("REPAIR", "pointers and index.json rebuilt from the manifests after an earlier failure")
