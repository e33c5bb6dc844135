"""Listing the stores below a folder or a bucket prefix: one summary per run (Determined's experiment list).

``ckptstore.stores("runs/")`` walks the folders below ``runs/`` (a local path or any store URL), stops
at each folder that holds a ``ckptstore.json`` (a store; what is inside it is not searched), and
returns one :class:`StoreSummary` per store, by name: how many checkpoints, the best one and its
value, the last one, the total size and the time of the last commit. It reads what ``ckptstore ls``
of each store reads (one listing and the index), never the checkpoints' files. A store that cannot
be read is listed with the error instead of failing the whole listing.
"""

from __future__ import annotations

import datetime as _dt
import os
from collections.abc import Mapping
from typing import Any

import attrs

from ._boundary import backend_errors
from ._redact import redact_url
from .backends.base import Backend
from .backends.registry import open_backend
from .backends.retrying import RetryingBackend
from .errors import CheckpointNotFoundError, CkptStoreError, InvalidArgumentError, StoreNotFoundError
from .layout import STORE_FILE
from .retry import RetryPolicy
from .store import CheckpointStore, open_store

__all__ = ["StoreSummary", "stores", "summarize"]

MAX_DEPTH = 4
"""How many folder levels below the URL are searched for stores by default."""


@attrs.frozen(kw_only=True)
class StoreSummary:
    """One store found by :func:`stores`.

    Attributes:
        name: Its path relative to the URL searched (``exp1``, ``sweep/lr0.1``; ``.`` for the URL itself).
        url: Its URL (credentials redacted).
        checkpoints: How many committed checkpoints it holds.
        unit: What its numbers count: ``epoch``, or ``step`` when every checkpoint records its
            global step as its number (Hugging Face Trainer stores).
        monitor: The metric that defines best (recorded in ``ckptstore.json``), or None.
        mode: ``min`` or ``max`` for ``monitor``, or None.
        best: The number of the best checkpoint, or None (no monitor, or no checkpoint scored).
        best_value: The monitor's value at ``best``, or None.
        last: The number of the latest checkpoint, or None when the store is empty.
        size: Bytes of all its checkpoints' files.
        last_commit: When its newest checkpoint was committed (UTC), or None.
        error: Why the store could not be read (then the counts are 0 and the rest None).
    """

    name: str
    url: str
    checkpoints: int = 0
    unit: str = "epoch"
    monitor: str | None = None
    mode: str | None = None
    best: int | None = None
    best_value: float | None = None
    last: int | None = None
    size: int = 0
    last_commit: _dt.datetime | None = None
    error: str | None = None

    def to_dict(self) -> dict[str, Any]:
        """The summary as JSON-friendly values (``last_commit`` in ISO 8601)."""
        data = attrs.asdict(self)
        data["last_commit"] = self.last_commit.isoformat() if self.last_commit is not None else None
        return data


def summarize(store: CheckpointStore, name: str = ".") -> StoreSummary:
    """The :class:`StoreSummary` of an open store (one listing and the index; the pointers if needed)."""
    checkpoints = store.list(sort_by="epoch")
    monitor = store.config.monitor
    best = None
    if monitor is not None and any(monitor in c.all_metrics for c in checkpoints):
        try:
            best = store.best()
        except CheckpointNotFoundError:  # deleted since the listing
            best = None
    last = checkpoints[-1].epoch if checkpoints else None
    if checkpoints:
        try:
            last = store.latest().epoch
        except CheckpointNotFoundError:
            last = None
    unit = "step" if checkpoints and all(c.step is not None and c.step == c.epoch for c in checkpoints) else "epoch"
    return StoreSummary(
        name=name,
        url=store.url,
        checkpoints=len(checkpoints),
        unit=unit,
        monitor=monitor,
        mode=store.mode if monitor is not None else None,
        best=best.epoch if best is not None else None,
        best_value=best.all_metrics.get(monitor) if best is not None and monitor is not None else None,
        last=last,
        size=sum(c.size for c in checkpoints),
        last_commit=max((c.committed_at for c in checkpoints), default=None),
    )


def _find(backend: Backend, max_depth: int) -> list[str]:
    """Relative paths of the folders below the root that hold a store descriptor, sorted."""
    if backend.exists(STORE_FILE):
        return ["."]
    found: list[str] = []
    level = [""]
    for _depth in range(max_depth):
        following: list[str] = []
        for folder in level:
            for child in backend.listdir(folder):
                if child.startswith("."):
                    continue
                path = f"{folder}/{child}" if folder else child
                if backend.exists(f"{path}/{STORE_FILE}"):
                    found.append(path)
                else:
                    following.append(path)
        level = following
        if not level:
            break
    return sorted(found)


def _join(url: str, rel: str) -> str:
    if rel == ".":
        return url
    return f"{url.rstrip('/')}/{rel}"


def stores(
    url: str | os.PathLike[str],
    storage_options: Mapping[str, Any] | None = None,
    *,
    max_depth: int = MAX_DEPTH,
    retry: RetryPolicy | None = None,
) -> list[StoreSummary]:
    """The stores at or below ``url``, each summarized (like Determined's experiment list or Guild's ``runs``).

    >>> for run in ckptstore.stores("runs/"):  # doctest: +SKIP
    ...     print(run.name, run.checkpoints, run.best, run.best_value, run.last)

    Args:
        url: A local folder or a URL (``s3://bucket/runs``); when it is a store itself, the list
            holds that one store (named ``.``).
        storage_options: Options for the backend (endpoint, credentials, ...), as for :func:`ckptstore.open`.
        max_depth: How many folder levels below ``url`` to search (a store's own folders are never searched).
        retry: How long to retry a backend that does not answer (default: :class:`RetryPolicy`'s).

    Returns:
        One summary per store, sorted by name; [] when there is none below ``url``.

    Raises:
        StoreNotFoundError: ``url`` is a local path that does not exist, or its bucket does not exist.
        InvalidArgumentError: ``max_depth`` is below 1.
        UnsupportedURLError, BackendUnavailableError, BackendAuthError, StoreUnavailableError: as for
            :func:`ckptstore.open`.
    """
    if isinstance(max_depth, bool) or not isinstance(max_depth, int) or max_depth < 1:
        raise InvalidArgumentError(f"max_depth must be an int >= 1, got {max_depth!r}")
    text = os.fspath(url)
    policy = retry if retry is not None else RetryPolicy()
    backend: Backend = open_backend(text, storage_options)
    local = backend.local_path()
    if local is not None and not local.is_dir():
        raise StoreNotFoundError(f"no store at {redact_url(str(local))}: no such folder")
    if local is None:
        backend = RetryingBackend(backend, policy)
    with backend_errors(backend, "look for stores"):
        if local is None:
            try:
                backend.check_container()
            except FileNotFoundError:
                raise StoreNotFoundError(f"no store at {redact_url(backend.url)}: its bucket does not exist") from None
        found = _find(backend, max_depth)
    summaries = []
    for rel in found:
        child = _join(text, rel)
        try:
            store = open_store(child, create=False, storage_options=storage_options, retry=policy)
            summaries.append(summarize(store, rel))
        except CkptStoreError as exc:
            summaries.append(StoreSummary(name=rel, url=redact_url(child), error=str(exc)))
    return summaries
