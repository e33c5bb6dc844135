"""Garbage collection: apply the keep policy and remove what failed or finished saves left behind.

gc never deletes best, last, a pinned checkpoint, the one this run resumed from, or another run's
checkpoints (DESIGN 3.5). It plans from the index (cheap) and confirms every deletion from the
checkpoint's own manifest, re-planning when one disagrees (a stale or edited index never decides),
and it protects the best checkpoint by the manifests' metrics even when the ``best`` pointer lags.
Deletions run under the record lock, so they are serialized with commits, pins and index updates; a
pin or pointer that moved since the plan wins. Each checkpoint stops existing in one step (a rename
into ``trash/``; on object stores its manifest goes first), then its files go. Leftovers (staging
directories of writers that are gone, retired epochs, trash, abandoned claims and unfinished
multipart uploads) are found without following a symlink and removed.
"""

from __future__ import annotations

import builtins
import contextlib
import logging
import os
import time
import uuid
from collections.abc import Callable, Collection, Iterable, Iterator

import attrs

from . import _crash
from ._boundary import backend_errors, parse_json, pid_alive
from .backends.base import PendingUpload
from .catalog import best_of
from .checkpoint import Checkpoint
from .commit import claims as claims_module
from .commit.claims import Claims
from .context import Part, StoreContext
from .errors import CkptStoreError
from .index import Index
from .layout import CLAIM_FILE, EPOCHS, INDEX_SEGMENTS, RETIRED, TRASH, WORK, Layout, tail
from .manifests import Manifests
from .pointers import Pointers
from .policies import CheckpointInfo, GcDecision, KeepPolicy, Mode, plan_gc

__all__ = ["Collector", "GcReport"]


@attrs.frozen(kw_only=True)
class GcReport:
    """What :meth:`CheckpointStore.gc` decided (and, unless a dry run, did).

    Attributes:
        decisions: Keep or delete, with the reason, for every committed checkpoint.
        leftovers: ``(path, reason)`` of staging, trash and retired directories removed (or, in a
            dry run, that would be removed).
        dry_run: True if nothing was changed.
    """

    decisions: tuple[GcDecision, ...]
    leftovers: tuple[tuple[str, str], ...]
    dry_run: bool

    def __iter__(self) -> Iterator[GcDecision]:
        return iter(self.decisions)

    @property
    def deleted(self) -> builtins.list[int]:
        """Epochs deleted (or to be deleted)."""
        return [d.epoch for d in self.decisions if d.action == "delete"]

    @property
    def kept(self) -> builtins.list[int]:
        """Epochs kept."""
        return [d.epoch for d in self.decisions if d.action == "keep"]


@attrs.frozen(kw_only=True)
class KeepRules:
    """What the keep policy applies to: this run's checkpoints, ranked by the store's monitor.

    Attributes:
        policy: The keep policy.
        run_id: This run; other runs' checkpoints are always kept.
        monitor: The store's monitor (None: no best).
        mode: Its mode.
        work_grace_seconds: Age after which another host's staging directory or claim is abandoned.
    """

    policy: KeepPolicy
    run_id: str
    monitor: str | None
    mode: Mode
    work_grace_seconds: float


class Collector(Part):
    """gc for one store.

    Args:
        backend: The store's backend.
        url: The store's URL, for messages.
        lock: The store's record lock.
        log: The store's operation log.
        manifests: Where deletions are confirmed.
        index: Updated before anything is deleted.
        pointers: Protected epochs (best, last, pins).
        rules: The keep policy and what it applies to.
        active_work: Names of this store's own staging directories in use.
        claims: Removes abandoned uncommitted epoch folders on object stores, and says which are.
        deleted: Called once per checkpoint deleted (the store's statistics).
        writable: Whether index repairs may be written.
    """

    def __init__(
        self,
        ctx: StoreContext,
        *,
        manifests: Manifests,
        index: Index,
        pointers: Pointers,
        rules: KeepRules,
        active_work: Callable[[], Collection[str]],
        claims: Claims,
        deleted: Callable[[], None],
        writable: Callable[[], bool],
    ) -> None:
        super().__init__(ctx)
        self._manifests = manifests
        self._index = index
        self._pointers = pointers
        self._rules = rules
        self._active_work = active_work
        self._claims = claims
        self._on_delete = deleted
        self._writable = writable

    # -- the plan ---------------------------------------------------------------------------------------------
    def run(self, listed: Iterable[Checkpoint], *, dry_run: bool) -> GcReport:
        """Plan (from ``listed``, confirmed from the manifests) and, unless ``dry_run``, delete."""
        checkpoints = {c.epoch: c for c in listed}
        names = {c.name for c in checkpoints.values()}
        confirmed: set[int] = set()
        while True:  # plan from the index (cheap), then confirm every deletion and the best from its manifest
            current = builtins.list(checkpoints.values())
            winner = self._best(current)
            decisions = self.plan(current, winner)
            doubtful = [d.epoch for d in decisions if d.action == "delete" and d.epoch not in confirmed]
            if winner is not None and winner not in confirmed:  # an entry claiming a better value must not
                doubtful.append(winner)  # take the protection of the true best away from it
            if not doubtful:
                break
            fresh = self.confirm([checkpoints[e] for e in doubtful])
            for epoch in doubtful:
                confirmed.add(epoch)
                found = fresh[epoch]
                if found is None:
                    del checkpoints[epoch]  # gone meanwhile, or no valid manifest: not gc's to decide
                else:
                    checkpoints[epoch] = found
        leftovers = self.leftovers(names)
        if dry_run:
            return GcReport(decisions=tuple(decisions), leftovers=tuple(leftovers), dry_run=True)
        with backend_errors(self._backend, "collect garbage"):
            if self._index.lost and self._writable():  # a segment gone for good: the listing read manifests
                self._index.update(rebuild=True)
                self._log("REPAIR", "index.json named a lost segment; rebuilt from the manifests", logging.WARNING)
            deleted = {d.epoch: d.reason for d in decisions if d.action == "delete"}
            if deleted:
                with self._lock():  # serialized with commits, pins and every index update
                    protected = self._pointers.protected()  # a pin or pointer that moved since the plan wins
                    deleted = {e: why for e, why in deleted.items() if e not in protected}
                    # The index first: a crash after it leaves unindexed checkpoints, read from their
                    # manifests, never an entry without one.
                    self._index.update(remove=deleted, known=[checkpoints[e] for e in deleted], prune=True)
                    for epoch, reason in deleted.items():
                        self.delete(checkpoints[epoch], reason)
            for rel, why in leftovers:
                if self.remove_leftover(rel):
                    self._log("GC", f"removed {rel} ({why})")
        decisions = [
            d
            if d.action != "delete" or d.epoch in deleted
            else GcDecision(epoch=d.epoch, action="keep", reason="protected since the plan")
            for d in decisions
        ]
        return GcReport(decisions=tuple(decisions), leftovers=tuple(leftovers), dry_run=False)

    def plan(self, checkpoints: builtins.list[Checkpoint], winner: int | None) -> builtins.list[GcDecision]:
        """Keep or delete for each checkpoint; ``winner``, the best by the monitor, is protected besides the pointer."""
        rules = self._rules
        infos = [
            CheckpointInfo(
                epoch=c.epoch,
                metrics=c.metrics,
                run_id=c.run_id,
                committed_at_ns=c.manifest.committed_at_ns,
                size=c.size,
            )
            for c in sorted(checkpoints, key=lambda c: c.epoch)
        ]
        protected = self._pointers.protected()
        parent = self._ctx.parent()
        if parent is not None:
            protected.setdefault(parent, "this run resumed from it")
        if winner is not None:
            protected.setdefault(winner, "best")  # even when the best pointer is stale or missing
        last = self._pointers.read("last")
        epochs = {c.epoch for c in checkpoints}
        if last not in epochs:  # no pointer, or a dangling one: the highest epoch is the last
            last = max(epochs, default=None)
        return plan_gc(
            infos,
            rules.policy,
            run_id=rules.run_id,
            protected=protected,
            monitor=rules.monitor,
            mode=rules.mode,
            last=last,
            best=winner,
        )

    def _best(self, checkpoints: builtins.list[Checkpoint]) -> int | None:
        """The best epoch by the monitor among ``checkpoints`` (None without a monitor or a scored one)."""
        monitor = self._rules.monitor
        scored = [c for c in checkpoints if monitor is not None and monitor in c.metrics]
        if monitor is None or not scored:
            return None
        return best_of(scored, lambda c: c.metrics[monitor], self._rules.mode).epoch

    def confirm(self, checkpoints: Iterable[Checkpoint]) -> dict[int, Checkpoint | None]:
        """Re-read each checkpoint from its own manifest; repair index entries that disagree with it.

        Returns:
            ``{epoch: checkpoint from its manifest, or None if it has no valid manifest}``.
        """
        fresh, differ = self._manifests.confirm(checkpoints)
        for c in differ:
            self._log("REPAIR", f"index.json entry of epoch {c.epoch} disagreed with its manifest", logging.WARNING)
        if differ and self._writable():
            with contextlib.suppress(OSError, CkptStoreError):
                self._index.update(add=differ)
        return fresh

    # -- deleting ---------------------------------------------------------------------------------------------
    def delete(self, checkpoint: Checkpoint, reason: str) -> None:
        """Delete one checkpoint: it stops existing in one step, then its files go."""
        backend = self._backend
        key = checkpoint.key
        if backend.capabilities.atomic_rename:
            trash = f"{TRASH}/{checkpoint.name}.{uuid.uuid4().hex[:8]}"
            try:
                backend.rename_dir(key, trash)  # type: ignore[attr-defined]
            except FileNotFoundError:
                return
        else:
            trash = key
            backend.delete(Layout.manifest_key(key))
        _crash.point("gc_after_trash")
        self._on_delete()
        self._log("DELETE", f"epoch {checkpoint.epoch}: {reason}")
        backend.delete_tree(trash, last=[CLAIM_FILE])

    def remove_leftover(self, rel: str) -> bool:
        """Remove one leftover found by :meth:`leftovers`; True if it is gone."""
        backend = self._backend
        if rel.startswith(f"{INDEX_SEGMENTS}/"):
            backend.delete(rel)
            return True
        if rel.startswith("upload:"):
            key, _, upload_id = rel[len("upload:") :].rpartition("#")
            backend.abort_upload(PendingUpload(key=key, upload_id=upload_id, initiated_ns=0))
            return True
        if not backend.capabilities.atomic_rename:
            return self._claims.reap(tail(rel))
        if rel.startswith((f"{WORK}/", f"{RETIRED}/")):
            trash = f"{TRASH}/{tail(rel)}.{uuid.uuid4().hex[:8]}"
            with contextlib.suppress(FileNotFoundError):
                backend.rename_dir(rel, trash)  # type: ignore[attr-defined]
                rel = trash
        return backend.delete_tree(rel)

    # -- finding leftovers ------------------------------------------------------------------------------------
    def leftovers(self, committed: Collection[str] | None = None) -> builtins.list[tuple[str, str]]:
        """``(path, why)`` of everything failed or finished saves (and index compactions) left behind.

        Args:
            committed: The epoch folders the caller just listed as committed (else read from the index).
        """
        backend = self._backend
        orphans = self._index.orphans(self._rules.work_grace_seconds)
        if not backend.capabilities.atomic_rename:
            return self._object_leftovers(committed) + orphans
        found: builtins.list[tuple[str, str]] = list(orphans)
        now = time.time()
        active = self._active_work()
        for name in backend.listdir(WORK):  # a symlinked work/, retired/ or trash/ is refused here
            if name in active:
                continue
            why = self._staging_abandoned(name, f"{WORK}/{name}", now)
            if why:
                found.append((f"{WORK}/{name}", why))
        for folder, why in (
            (RETIRED, "retired by rollback or restart"),
            (TRASH, "deleted checkpoint not yet fully removed"),
        ):
            for name in backend.listdir(folder):
                with contextlib.suppress(FileNotFoundError):  # a symlink or special file: refused before gc
                    backend.entry_stat(f"{folder}/{name}")  # type: ignore[attr-defined]  # removes anything
                    found.append((f"{folder}/{name}", why))
        return found

    def _object_leftovers(self, listed: Collection[str] | None) -> builtins.list[tuple[str, str]]:
        """Claimed folders without a manifest whose writer is gone, and their unfinished uploads.

        A folder committed after ``listed`` was taken is pending here; its live claim keeps it, and the
        reaping itself re-checks the manifest before it deletes anything.
        """
        backend = self._backend
        found: builtins.list[tuple[str, str]] = []
        now = time.time_ns()
        with backend_errors(backend, "look for leftovers"):
            committed = (
                set(listed) if listed is not None else {c.name for c in self._manifests.scan(self._index.entries())[0]}
            )
            pending = [n for n in self._manifests.names() if n not in committed]
            claims = backend.read_many(Layout.claim_key(Layout.folder_key(n)) for n in pending)
            abandoned: set[str] = set()
            for name in pending:
                raw = claims.get(Layout.claim_key(Layout.folder_key(name)))
                if raw is None:
                    if not backend.walk(Layout.folder_key(name)):
                        continue  # an empty folder marker (servers with real directories keep them)
                    why: str | None = "files without a claim or a manifest (an interrupted delete)"
                else:
                    why = self._claims.abandoned(parse_json(raw), now, for_gc=True)
                if why is not None:
                    abandoned.add(name)
                    found.append((Layout.folder_key(name), f"uncommitted save: {why}"))
            grace_ns = int(self._rules.work_grace_seconds * 1e9)
            for upload in backend.pending_uploads(EPOCHS):
                epoch_name = upload.key.split("/")[1] if upload.key.count("/") >= 2 else ""
                if epoch_name in abandoned:
                    why = "its save was abandoned"
                elif epoch_name in committed:
                    why = "its checkpoint is committed without it"
                elif now - upload.initiated_ns > grace_ns:
                    why = f"started {(now - upload.initiated_ns) / 1e9:.0f}s ago"
                else:
                    continue
                found.append((f"upload:{upload.key}#{upload.upload_id}", f"unfinished multipart upload: {why}"))
        return found

    def _staging_abandoned(self, name: str, rel: str, now: float) -> str | None:
        """Why the staging directory ``work/<name>`` counts as abandoned; None while its writer may live."""
        try:  # a symlink or special file is refused, never followed
            mtime: float = self._backend.entry_stat(rel).st_mtime  # type: ignore[attr-defined]
        except FileNotFoundError:
            return None
        parts = name.split(".")
        if len(parts) >= 3 and parts[-3].isdigit():
            host, pid = ".".join(parts[:-3]), int(parts[-3])
            if host == claims_module.HOST:  # read at call time: tests pose as another host
                if pid == os.getpid():
                    return "staging directory of an earlier store in this process"
                if not pid_alive(pid):
                    return f"staging directory of process {pid}, which is gone"
                return None
        age = now - mtime
        grace = self._rules.work_grace_seconds
        if age > grace:
            return f"staging directory untouched for {age:.0f}s (grace {grace:.0f}s)"
        return None
