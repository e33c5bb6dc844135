"""The store's own account of what it did: ``ckpt.log`` (``log/`` objects), the report, the table.

Every operation that changes a store leaves one line here, so a person can read what happened and
when (CANDLE's ``ckpt.log``). A line is one event: user strings (metric and file names, reasons) are
escaped so they cannot forge another line, and secrets never reach it. The log is best effort: a
write that fails never fails or delays the operation it records.
"""

from __future__ import annotations

import contextlib
import datetime as _dt
import logging
import os
import socket
from collections.abc import Callable, Iterable, Mapping
from typing import TYPE_CHECKING, Any, Protocol

from ._boundary import backend_errors
from ._redact import redact
from ._validate import escape_log_text
from .backends.base import Backend

if TYPE_CHECKING:
    import datetime

__all__ = ["HOST", "OpLog", "Stats", "fmt_metrics", "human", "render_table", "stats_text"]

logger = logging.getLogger("ckptstore")

HOST = socket.gethostname()
"""This host's name, as claims, staging folders and log lines record it."""

Stats = dict[str, float]
"""What this process did: ``saved``, ``bytes``, ``seconds``, ``skipped``, ``deleted``."""


class OpLog:
    """Writes and reads one store's operation log.

    Args:
        backend: The store's backend (reads).
        quick: The same backend without retries (log writes never wait for an outage).
        url: The store's URL, as messages show it (already redacted).
        writer_id: This writer's id, for backends that keep one log object per writer.
        enabled: Write ``ckpt.log`` / log objects at all (``StoreConfig.log_file``).
        writable: Whether the store can be written now (a read-only store logs to ``logging`` only).
    """

    def __init__(
        self,
        backend: Backend,
        quick: Backend,
        url: str,
        writer_id: str,
        *,
        enabled: bool,
        writable: Callable[[], bool],
    ) -> None:
        self._backend = backend
        self._quick = quick
        self._url = url
        self._writer_id = writer_id
        self._enabled = enabled
        self._writable = writable

    def __call__(self, event: str, message: str, level: int = logging.INFO) -> None:
        """Record one event: a ``logging`` record of the ``ckptstore`` logger and a log line."""
        event, message = escape_log_text(event), escape_log_text(message)
        logger.log(level, "%s %s: %s", escape_log_text(self._url), event, message)
        if not (self._enabled and self._writable()):
            return
        stamp = _dt.datetime.now(_dt.timezone.utc).strftime("%Y-%m-%dT%H:%M:%S.%fZ")
        line = redact(f"{stamp} {HOST}:{os.getpid()} {event:<8} {message}")  # secrets never reach the log
        with contextlib.suppress(Exception):  # best effort, and no retries: the log never delays a save
            self._quick.append_log(line, self._writer_id)

    def lines(self) -> list[str]:
        """Every log line, oldest first."""
        with backend_errors(self._backend, "read the log"):
            return self._backend.read_log()


def human(size: int) -> str:
    """A byte count for people (``8.8 KB``; powers of 1000)."""
    value = float(size)
    for unit in ("B", "KB", "MB", "GB", "TB"):
        if value < 1000 or unit == "TB":
            return f"{value:.0f} {unit}" if unit == "B" else f"{value:.1f} {unit}"
        value /= 1000
    return f"{size} B"  # pragma: no cover


def fmt_metrics(metrics: Mapping[str, float]) -> str:
    """Metrics as ``name=value`` pairs, sorted by name."""
    return " ".join(f"{k}={v:.6g}" for k, v in sorted(metrics.items()))


def stats_text(url: str, summary: Mapping[str, Any], stats: Stats) -> str:
    """The two lines of :meth:`CheckpointStore.report`: what the store holds, what this process did."""
    rate = stats["bytes"] / stats["seconds"] / 1e6 if stats["seconds"] else 0.0
    return (
        f"ckptstore {url}: {summary['checkpoints']} checkpoint(s), {human(summary['total_size'])}; "
        f"last={summary['last']} best={summary['best']} pinned={summary['pinned']}\n"
        f"this process: saved {stats['saved']:.0f} ({human(int(stats['bytes']))}, {stats['seconds']:.2f}s, "
        f"{rate:.0f} MB/s), skipped {stats['skipped']:.0f}, deleted {stats['deleted']:.0f}"
    )


class _Row(Protocol):
    @property
    def epoch(self) -> int: ...
    @property
    def size(self) -> int: ...
    @property
    def metrics(self) -> dict[str, float]: ...
    @property
    def committed_at(self) -> datetime.datetime: ...


def render_table(checkpoints: Iterable[_Row], marks: Mapping[int, list[str]]) -> str:
    """A plain-text table of ``checkpoints``, each with its marks (best, last, pinned)."""
    rows_in = list(checkpoints)
    metric_names = sorted({m for c in rows_in for m in c.metrics})
    header = ["epoch", "committed (UTC)", "size", *metric_names, "marks"]
    rows = [header]
    for c in rows_in:
        rows.append(
            [
                str(c.epoch),
                c.committed_at.strftime("%Y-%m-%d %H:%M:%S"),
                human(c.size),
                *(f"{c.metrics[m]:.4f}" if m in c.metrics else "-" for m in metric_names),
                ",".join(marks.get(c.epoch, [])),
            ]
        )
    widths = [max(len(r[i]) for r in rows) for i in range(len(header))]
    lines = ["  ".join(cell.ljust(w) for cell, w in zip(row, widths, strict=False)).rstrip() for row in rows]
    lines.insert(1, "  ".join("-" * w for w in widths))
    return "\n".join(lines)
