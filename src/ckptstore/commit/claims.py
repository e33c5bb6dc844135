"""Claims on epoch folders: on object stores, the only way a writer (or gc) takes ``epochs/NNN/``.

An object store has no rename, so two writers of one epoch are kept apart by ``epochs/NNN/.claim``,
written create-only (DESIGN section 3.1). This module is the only code that writes or reads a claim:
a writer claims a folder before it uploads anything, takes over a claim whose writer is gone (a dead
process on this host, or a claim older than ``work_grace_seconds``), and gc reaps the folder of an
abandoned save by taking its claim over first, so the old writer can no longer commit. What counts
as abandoned is decided here once, for writers and gc alike.

A save of this process holds a :class:`Claim` while it stages; the in-process registry of held
claims tells a claim of a save still running in this process from one its save left behind.
"""

from __future__ import annotations

import contextlib
import json
import logging
import os
import threading
import time
import uuid
import weakref
from collections.abc import Mapping
from typing import Any

import attrs

from .. import oplog
from .._boundary import backend_errors, parse_json, pid_alive
from ..backends.base import Backend
from ..context import Part, StoreContext
from ..errors import CommitConflictError
from ..layout import CLAIM_FILE, MANIFEST_FILE, Layout

__all__ = ["HOST", "Claim", "Claims", "new_writer_id"]

HOST = oplog.HOST
"""This host's name, as claims, staging folders and manifests record it.

Read at call time, never copied: a test poses as a second host by setting ``ckptstore.commit.claims.HOST``.
"""


def new_writer_id() -> str:
    """A fresh writer id, ``<host>.<pid>.<random>``: claims and staging folders carry it, gc reads it back."""
    return f"{HOST}.{os.getpid()}.{uuid.uuid4().hex[:8]}"


@attrs.define(eq=False)
class Claim:
    """A claim a save of this process took on an epoch folder.

    Attributes:
        writer: The writer id the claim records.
        epoch: The claimed epoch.
        held: True while the save still holds it; False once it committed, withdrew, or lost it to
            another writer (then the folder is no longer this save's to clean up).
    """

    writer: str
    epoch: int
    held: bool = True


_CLAIMS_LOCK = threading.Lock()
_CLAIMING: weakref.WeakSet[Claim] = weakref.WeakSet()
"""The claims taken by saves of this process (a claim is in flight while ``held``)."""


def _claim_in_flight(writer: object, epoch: object) -> bool:
    """True if a save of this process still holds the claim of ``writer`` on ``epoch``."""
    with _CLAIMS_LOCK:
        return any(c.held and c.writer == writer and c.epoch == epoch for c in list(_CLAIMING))


def _age(info: Mapping[str, Any]) -> str:
    claimed = info.get("claimed_at_ns")
    if not isinstance(claimed, int):
        return "an unknown time"
    return f"{(time.time_ns() - claimed) / 1e9:.0f}s"


class Claims(Part):
    """The claims of one store's writer.

    Args:
        backend: The store's backend (retrying).
        layout: The store's key names.
        url: The store's URL, for messages (redacted).
        writer_id: This writer's id (:func:`new_writer_id`).
        run_id: The run the claims record.
        work_grace_seconds: Age after which another host's claim counts as abandoned.
        log: The store's log.
    """

    def __init__(self, ctx: StoreContext, work_grace_seconds: float) -> None:
        super().__init__(ctx)
        self.grace = work_grace_seconds

    def _record(self, epoch: int) -> bytes:
        return json.dumps(
            {
                "writer": self._ctx.writer_id,
                "host": HOST,
                "pid": os.getpid(),
                "run_id": self._ctx.run_id,
                "epoch": epoch,
                "claimed_at_ns": time.time_ns(),
            }
        ).encode()

    def claim(self, epoch: int) -> Claim:
        """Claim ``epochs/NNN/`` with a create-only ``.claim``; take over a claim whose writer is gone.

        Raises:
            CommitConflictError: the epoch is committed, or another live writer holds it.
        """
        self._take(epoch)
        held = Claim(self._ctx.writer_id, epoch)
        with _CLAIMS_LOCK:
            _CLAIMING.add(held)
        return held

    def _take(self, epoch: int) -> None:
        fs, prefix = self._backend, self._layout.epoch_key(epoch)
        key = Layout.claim_key(prefix)
        with backend_errors(fs, f"claim epoch {epoch}"):
            if fs.create_only(key, self._record(epoch)):
                return
            if fs.exists(Layout.manifest_key(prefix)):
                raise CommitConflictError(f"epoch {epoch} is already committed at {self._url}/{prefix}")
            current = fs.read_versioned(key)
            if current is None:  # released between our two requests: try once more
                if fs.create_only(key, self._record(epoch)):
                    return
                raise CommitConflictError(f"epoch {epoch} was claimed by another writer at the same moment")
            info = parse_json(current[0])
            why = self.abandoned(info, time.time_ns())
            if why is None:
                raise CommitConflictError(
                    f"epoch {epoch} is being written by {info.get('writer', 'another writer')} "
                    f"(claimed {_age(info)} ago); choose another epoch, or wait until it commits or its claim "
                    f"is older than work_grace_seconds={self.grace:g}"
                )
            if not fs.write_if(key, self._record(epoch), current[1]):
                raise CommitConflictError(f"epoch {epoch}: another writer took over the abandoned claim first")
            self._log("TAKEOVER", f"epoch={epoch} claim of {info.get('writer', '?')} ({why})", logging.WARNING)
            for rel in fs.walk(prefix):
                if rel != CLAIM_FILE:
                    fs.delete(f"{prefix}/{rel}")

    def abandoned(self, info: Mapping[str, Any], now_ns: int, *, for_gc: bool = False) -> str | None:
        """Why a claim (or a staging directory) counts as abandoned; None while its writer may live.

        A claim that gc took over to remove an abandoned save (``"gc": true``) is abandoned for another
        gc at once (finishing the removal twice is harmless), for a writer only once that gc is gone.
        """
        host, pid = info.get("host"), info.get("pid")
        if info.get("gc") is True:
            if for_gc:
                return "left by a gc that took it over"
            if host == HOST and isinstance(pid, int) and not pid_alive(pid):
                return f"left by a gc, process {pid} on this host, which is gone"
            host = pid = None  # a live gc's claim: only its age decides
        if host == HOST and isinstance(pid, int) and pid != os.getpid() and not pid_alive(pid):
            return f"its writer, process {pid} on this host, is gone"
        if host == HOST and pid == os.getpid() and not _claim_in_flight(info.get("writer"), info.get("epoch")):
            return "its save in this process ended without committing (its clean-up failed: an outage?)"
        claimed = info.get("claimed_at_ns")
        if isinstance(claimed, int):
            age = (now_ns - claimed) / 1e9
            if age > self.grace:
                return f"claimed {age:.0f}s ago (grace {self.grace:.0f}s)"
        elif not info:
            return "unreadable claim"
        return None

    def holds(self, epoch: int, backend: Backend | None = None) -> bool:
        """True if this writer's claim is on ``epoch`` now (read through ``backend``, default the store's)."""
        try:
            raw = (backend or self._backend).read_bytes(Layout.claim_key(self._layout.epoch_key(epoch)))
        except FileNotFoundError:
            return False
        return parse_json(raw).get("writer") == self._ctx.writer_id

    def release(self, claim: Claim, backend: Backend) -> None:
        """Let go of a claim of a save that did not commit, and remove what it uploaded (best effort).

        Only while the claim is still this writer's and no manifest appeared: a folder another writer
        took over, or a commit, is left alone. The claim goes last, so the folder stays claimed until
        it is empty. Clean-up does not retry (``backend`` is the store's without retries): gc removes
        what an outage leaves behind.
        """
        claim.held = False
        prefix = self._layout.epoch_key(claim.epoch)
        with contextlib.suppress(Exception), backend_errors(backend, "clean up"):
            if self.holds(claim.epoch, backend) and not backend.exists(Layout.manifest_key(prefix)):
                backend.delete_tree(prefix, last=[CLAIM_FILE])

    def reap(self, name: str) -> bool:
        """Remove the uncommitted folder ``epochs/<name>`` of an abandoned save; never break a commit.

        gc first takes the claim over by compare-and-swap (re-read right here, so a claim refreshed or
        retaken since the listing is left alone), so the old writer can no longer commit: it checks its
        claim before writing its manifest and again after, and withdraws a manifest written in between.
        Then gc re-checks that no manifest exists, deletes the files it lists (never a manifest), and
        drops its claim only if still no manifest appeared.

        Returns:
            True if the folder is gone.
        """
        fs, prefix = self._backend, Layout.folder_key(name)
        claim, manifest = Layout.claim_key(prefix), Layout.manifest_key(prefix)
        tombstone = json.dumps(
            {
                "writer": f"gc.{self._ctx.writer_id}",
                "gc": True,
                "host": HOST,
                "pid": os.getpid(),
                "epoch": int(name) if name.isdigit() else None,
                "claimed_at_ns": time.time_ns(),
            }
        ).encode()
        current = fs.read_versioned(claim)
        if current is None:
            if fs.exists(manifest) or not fs.create_only(claim, tombstone):
                return False
        else:
            if self.abandoned(parse_json(current[0]), time.time_ns(), for_gc=True) is None:
                return False  # its writer refreshed or a new writer took it since the listing
            if not fs.write_if(claim, tombstone, current[1]):
                return False  # someone else changed it first: leave it to them
        if fs.exists(manifest):
            self._log("GC", f"{prefix} was committed while gc looked at it: left alone", logging.WARNING)
            return False
        for rel in fs.walk(prefix):
            if rel not in (CLAIM_FILE, MANIFEST_FILE):
                fs.delete(f"{prefix}/{rel}")
        if fs.exists(manifest):  # its writer raced us: it sees our claim and withdraws the manifest
            return False
        fs.delete(claim)
        return True
