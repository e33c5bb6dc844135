"""The commit of a sharded save (:mod:`ckptstore.sharded`): agree, stage parts, seal, gather, publish once.

The coordinator (rank 0) opens one save attempt (the shared staging folder ``work/<attempt>/`` where
the backend renames, its claim on ``epochs/NNN/`` on object stores) and broadcasts it; every rank
stages its part in ``rank-NNNNN/`` of it and seals the part with its own part manifest; the
coordinator waits until every part manifest is there, builds the checkpoint's manifest listing every
file of every part, and publishes through the store's commit strategy (:mod:`~ckptstore.commit.rename`
or :mod:`~ckptstore.commit.record`): that one call stays the only commit point. A part marked aborted
or missing at the timeout means nothing is published and the attempt is removed; the other ranks watch
the attempt on the store and raise when it is gone.
"""

from __future__ import annotations

import contextlib
import functools
import itertools
import json
import shutil
import tempfile
import time
import uuid
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import TYPE_CHECKING, Any

import attrs
import xxhash

from .._boundary import backend_errors
from ..backends.base import Backend
from ..backends.local import LocalBackend
from ..errors import CommitConflictError, InvalidArgumentError, ManifestError
from ..layout import MANIFEST_FILE, WORK, Layout
from ..manifest import FileEntry, Manifest
from ..policies import SaveDecision
from ..sharded import ATTEMPT_ID, ShardedSaveError, ShardSpec, ShardTimeoutError, part_folder
from ._common import Publisher, Target
from .claims import Claim, Claims

if TYPE_CHECKING:
    from ..transaction import SaveTransaction

__all__ = ["ShardedCommit"]

_ABORTED = ".aborted"
"""Beside a part folder: its rank raised, the part will never be sealed."""


def _poll(deadline: float, check: Callable[[], Any]) -> Any:
    """Call ``check`` until it returns something other than None, backing off; None at the deadline."""
    delay = 0.005
    while True:
        found = check()
        if found is not None:
            return found
        if time.monotonic() >= deadline:
            return None
        time.sleep(min(delay, max(0.0, deadline - time.monotonic())))
        delay = min(delay * 2, 0.5)


class ShardedCommit:
    """The coordination of sharded saves around the store's commit strategy.

    Args:
        target: The store to publish into.
        publisher: The store's commit strategy (it seals each part and publishes the checkpoint).
        claims: This writer's claims (object stores).
        quick: The backend without retries, for clean-up after a failure.
        staging: The store's set of staging folders in use (gc leaves them alone).
    """

    def __init__(self, target: Target, publisher: Publisher, claims: Claims, quick: Backend, staging: set[str]) -> None:
        self._target = target
        self._backend = target.backend
        self._publisher = publisher
        self._claims = claims
        self._quick = quick
        self._staging = staging
        self._seq = itertools.count()
        self._rename = target.backend.capabilities.atomic_rename

    # -- agreement -------------------------------------------------------------------------------------
    def refuse(self, spec: ShardSpec, exc: BaseException) -> None:
        """The coordinator could not start: tell every rank why (they raise too)."""
        spec.broadcast(json.dumps({"error": type(exc).__name__, "message": str(exc)}))

    def lead(self, spec: ShardSpec, epoch: int, decision: SaveDecision) -> None:
        """The coordinator opens the attempt (when the rules save) and broadcasts it with the decision."""
        spec.writer = self._target.writer_id
        spec.attempt = f"{spec.writer}.s{next(self._seq)}"
        try:
            if decision.save:
                if self._rename:
                    self._backend.make_dir(f"{WORK}/{spec.attempt}")  # type: ignore[attr-defined]
                    self._staging.add(spec.attempt)
                else:
                    spec.claim = self._claims.claim(epoch)
        except BaseException as exc:
            self.refuse(spec, exc)
            raise
        message = {"attempt": spec.attempt, "writer": spec.writer, "epoch": epoch}
        message.update(save=decision.save, reason=decision.reason, improved=decision.improved)
        spec.broadcast(json.dumps(message))

    def join(self, spec: ShardSpec, epoch: int, error: BaseException | None) -> SaveDecision:
        """A rank other than 0 learns the attempt and the coordinator's decision (raises what it refused)."""
        raw = spec.broadcast(None)
        try:
            message = json.loads(raw)
            if "error" in message:
                kind = CommitConflictError if message["error"] == CommitConflictError.__name__ else ShardedSaveError
                raise kind(f"rank {spec.rank}: the coordinator (rank 0) refused the save: {message['message']}")
            spec.attempt, spec.writer = str(message["attempt"]), str(message["writer"])
            if message["epoch"] != epoch:
                error = error or InvalidArgumentError(
                    f"rank 0 saves epoch {message['epoch']}, rank {spec.rank} {epoch}"
                )
            decision = SaveDecision(
                save=bool(message["save"]), reason=str(message["reason"]), improved=bool(message["improved"])
            )
        except (ValueError, KeyError, TypeError) as exc:
            raise ShardedSaveError(
                f"rank {spec.rank}: the coordinator's message is not a save attempt: {exc}"
            ) from None
        if not ATTEMPT_ID.fullmatch(spec.attempt):
            raise ShardedSaveError(f"rank {spec.rank}: the coordinator sent a bad attempt id {spec.attempt!r}")
        if error is not None:
            if decision.save:
                self._mark_aborted(spec, epoch)
            raise error
        return decision

    # -- stage -------------------------------------------------------------------------------------------
    def _shared(self, spec: ShardSpec) -> Path:
        root = self._backend.local_path()
        assert root is not None
        return root / WORK / spec.attempt

    def begin(self, tx: SaveTransaction) -> None:
        """Give ``tx`` its part: ``rank-NNNNN/`` in the shared staging folder, or a scratch folder and the claim."""
        spec = tx.shard
        assert spec is not None
        if self._rename:
            work = self._shared(spec) / spec.folder
            try:
                work.mkdir()
            except FileNotFoundError:
                raise ShardedSaveError(
                    f"rank {spec.rank}: the save attempt {spec.attempt} of epoch {tx.epoch} is gone (rank 0 gave up)"
                ) from None
            tx._work = work
            return
        tx._work = Path(tempfile.mkdtemp(prefix=f"ckptstore-{self._target.layout.name(tx.epoch)}-{spec.folder}-"))
        tx._claim = spec.claim if spec.coordinator else Claim(spec.writer, tx.epoch)

    def discard(self, tx: SaveTransaction) -> None:
        """Remove this rank's part; on the coordinator the whole attempt; elsewhere mark the part aborted."""
        spec = tx.shard
        assert spec is not None
        work, tx._work = tx._work, None
        claim, tx._claim = tx._claim, None
        if self._rename:
            if spec.coordinator:
                self._staging.discard(spec.attempt)
                self._backend.delete_tree(f"{WORK}/{spec.attempt}")
                return
            if work is not None:
                shutil.rmtree(work, ignore_errors=True)
            self._mark_aborted(spec, tx.epoch)
            return
        if work is not None:
            shutil.rmtree(work, ignore_errors=True)
        if spec.coordinator:
            if claim is not None and claim.held:
                self._claims.release(claim, self._quick)
            return
        if claim is not None and claim.held:
            claim.held = False
            prefix = f"{self._target.layout.epoch_key(tx.epoch)}/{spec.folder}"
            try:
                with backend_errors(self._quick, "clean up"):
                    self._quick.delete_tree(prefix)
            except Exception:
                pass
        self._mark_aborted(spec, tx.epoch)

    def _mark_aborted(self, spec: ShardSpec, epoch: int) -> None:
        """Tell the coordinator this part will never be sealed (best effort: otherwise it times out)."""
        try:
            if self._rename:
                (self._shared(spec) / f"{spec.folder}{_ABORTED}").touch()
            else:
                with backend_errors(self._quick, "mark a part aborted"):
                    self._quick.create_only(self._key(epoch, f"{spec.folder}{_ABORTED}"), b"")
        except Exception:
            pass

    def _key(self, epoch: int, rel: str) -> str:
        return f"{self._target.layout.epoch_key(epoch)}/{rel}"

    # -- seal, wait, publish -------------------------------------------------------------------------------
    def commit(self, tx: SaveTransaction) -> Manifest | None:
        """Seal this rank's part; the coordinator then publishes the checkpoint, the others watch for it.

        Returns:
            The checkpoint's manifest; None on a rank other than 0 that does not follow (:class:`Agreed`).

        Raises:
            ShardTimeoutError: a rank did not seal its part (or rank 0 did not commit) within the timeout.
            ShardedSaveError: a rank aborted, or rank 0 gave up.
        """
        spec = tx.shard
        assert spec is not None
        part_manifest = self._publisher.seal(tx)
        if not self._rename:
            key = self._key(tx.epoch, f"{spec.folder}/{MANIFEST_FILE}")
            with self._aborting(tx), backend_errors(self._backend, f"seal part {spec.rank} of epoch {tx.epoch}"):
                if not self._backend.create_only(key, part_manifest.to_json()):
                    raise CommitConflictError(f"{self._target.url}/{key} exists: another save wrote this part")
        if not spec.coordinator:
            # Sealed: the part is the coordinator's now (its clean-up removes the attempt, parts and all).
            work, tx._work = tx._work, None
            if tx._claim is not None:
                tx._claim.held = False
            if work is not None and not self._rename:
                shutil.rmtree(work, ignore_errors=True)
            return self._follow(tx, spec) if spec.follow else None
        with self._aborting(tx):
            manifest = self._gather(tx, spec, part_manifest)
        if self._rename:
            shared = self._shared(spec)
            try:
                LocalBackend._write_new(shared / MANIFEST_FILE, manifest.to_json())
                LocalBackend.fsync_dir(shared)
            except BaseException:
                tx._abort("could not write the checkpoint's manifest")
                raise
            tx._work = shared
        self._publisher.publish(tx, manifest)  # the commit point
        self._staging.discard(spec.attempt)
        return manifest

    @contextlib.contextmanager
    def _aborting(self, tx: SaveTransaction) -> Iterator[None]:
        """Abort ``tx`` (and with it, on the coordinator, the whole attempt) on any failure."""
        try:
            yield
        except BaseException as exc:
            tx._abort(f"sharded save failed: {exc}")
            raise

    def _read_part(self, tx: SaveTransaction, spec: ShardSpec, rank: int) -> bytes | None:
        """The part manifest of ``rank`` once sealed; raises if it was aborted; None while pending."""
        folder = part_folder(rank)
        aborted = ShardedSaveError(f"epoch {tx.epoch}: rank {rank} aborted its part; nothing was committed")
        with backend_errors(self._backend, f"wait for part {rank} of epoch {tx.epoch}"):
            if self._rename:
                shared = self._shared(spec)
                try:
                    raw = (shared / folder / MANIFEST_FILE).read_bytes()
                except FileNotFoundError:
                    if (shared / f"{folder}{_ABORTED}").exists():
                        raise aborted from None
                    return None
                try:  # written in place by its rank: read again until it is whole
                    Manifest.from_json(raw)
                except ManifestError:
                    return None
                return raw
            try:
                return self._backend.read_bytes(self._key(tx.epoch, f"{folder}/{MANIFEST_FILE}"))
            except FileNotFoundError:
                if self._backend.exists(self._key(tx.epoch, f"{folder}{_ABORTED}")):
                    raise aborted from None
                return None

    def _gather(self, tx: SaveTransaction, spec: ShardSpec, own: Manifest) -> Manifest:
        """Wait for every part manifest, check it, and build the checkpoint's manifest listing them all."""
        deadline = time.monotonic() + spec.timeout
        raws: dict[int, bytes] = {0: own.to_json()}
        for rank in range(spec.world_size):
            if rank in raws:
                continue
            raw = _poll(deadline, functools.partial(self._read_part, tx, spec, rank))
            if raw is None:
                raise ShardTimeoutError(
                    f"epoch {tx.epoch}: rank {rank} did not seal its part within timeout={spec.timeout:g}s "
                    f"(it raised, died or is still writing); nothing was committed"
                )
            raws[rank] = raw
        files: list[FileEntry] = []
        for rank, raw in sorted(raws.items()):
            folder = part_folder(rank)
            where = f"{self._target.url}/{folder}/{MANIFEST_FILE}"
            found = Manifest.from_json(raw, where=where)
            expected = {**spec.record(with_rank=False), "rank": rank}
            if found.epoch != tx.epoch or dict(found.shard or {}) != expected:
                raise ShardedSaveError(f"{where} belongs to another save (epoch {found.epoch}, {found.shard})")
            files.extend(attrs.evolve(e, path=f"{folder}/{e.path}") for e in found.files)
            files.append(
                FileEntry(path=f"{folder}/{MANIFEST_FILE}", size=len(raw), xxh3_128=xxhash.xxh3_128_hexdigest(raw))
            )
        return attrs.evolve(
            own,
            commit_id=uuid.uuid4().hex,
            committed_at_ns=time.time_ns(),
            files=tuple(sorted(files, key=lambda e: e.path)),
            shard=spec.record(with_rank=False),
        )

    def _outcome(self, tx: SaveTransaction, spec: ShardSpec) -> Manifest | BaseException | None:
        """What became of the attempt: its committed manifest, why it failed, or None while open."""
        key = self._target.layout.epoch_key(tx.epoch)

        def committed() -> Manifest | BaseException | None:
            try:
                found = Manifest.from_json(self._backend.read_bytes(Layout.manifest_key(key)))
            except (FileNotFoundError, ManifestError):
                return None
            if (found.shard or {}).get("attempt") == spec.attempt:
                return found
            return CommitConflictError(f"epoch {tx.epoch} was committed by another save; this one was not kept")

        with backend_errors(self._backend, f"wait for the commit of epoch {tx.epoch}"):
            if self._rename:
                if self._shared(spec).exists():
                    return None
                done = committed()
            else:
                done = committed()
                if done is None:
                    try:
                        claim = json.loads(self._backend.read_bytes(Layout.claim_key(key)))
                    except (FileNotFoundError, ValueError):
                        claim = {}
                    if isinstance(claim, dict) and claim.get("writer") == spec.writer:
                        return None
                    done = committed()  # committed between the two reads?
        return done or ShardedSaveError(
            f"rank {spec.rank}: rank 0 gave up epoch {tx.epoch} (a rank failed or timed out); nothing was committed"
        )

    def _follow(self, tx: SaveTransaction, spec: ShardSpec) -> Manifest:
        """A rank other than 0 waits until the coordinator commits the attempt or gives it up."""
        tx._work = None
        outcome = _poll(time.monotonic() + spec.timeout, lambda: self._outcome(tx, spec))
        if outcome is None:
            raise ShardTimeoutError(
                f"rank {spec.rank}: rank 0 did not commit epoch {tx.epoch} within timeout={spec.timeout:g}s"
            )
        if isinstance(outcome, BaseException):
            raise outcome
        assert isinstance(outcome, Manifest)
        return outcome
