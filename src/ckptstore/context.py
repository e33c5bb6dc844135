"""What every part of a store is handed when the store is opened: one object, not the same five arguments.

A part (manifests, index, pointers, claims, gc, restart, the commit strategies) reaches the backend,
the key names, the store's URL, the record lock and the log only through its :class:`StoreContext`,
and never through the store itself: that is what keeps the dependencies running one way (the store
composes the parts; no part imports ``store.py``).
"""

from __future__ import annotations

from collections.abc import Callable

import attrs

from ._boundary import RecordLock
from .backends.base import Backend
from .layout import Layout
from .oplog import OpLog

__all__ = ["Part", "StoreContext"]


@attrs.frozen(kw_only=True)
class StoreContext:
    """One open store, as its parts see it.

    Attributes:
        backend: The store's backend (with retries on remote backends).
        layout: The store's key names.
        url: The store's URL, for messages (redacted).
        lock: The record lock every writer of a shared record takes.
        log: The store's operation log.
        writer_id: This writer's id (host, pid, a random part).
        run_id: The run this process writes as.
        parent: The epoch this run resumed from, read when needed (None for a fresh run).
    """

    backend: Backend
    layout: Layout
    url: str
    lock: RecordLock
    log: OpLog
    writer_id: str
    run_id: str
    parent: Callable[[], int | None]


class Part:
    """Base of the store's parts: keeps the context and the names every part uses from it."""

    def __init__(self, ctx: StoreContext) -> None:
        self._ctx = ctx
        self._backend = ctx.backend
        self._layout = ctx.layout
        self._url = ctx.url
        self._lock = ctx.lock
        self._log = ctx.log
