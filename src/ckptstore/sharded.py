"""Sharded saves: one checkpoint written by many ranks, visible whole or not at all.

Every rank calls ``store.save(epoch, rank=r, world_size=w)`` (or ``save_state``) and writes only its
own part, ``rank-NNNNN/`` inside the checkpoint. The ranks agree on one save attempt first: the
coordinator (rank 0) validates, decides by the save rules, opens the attempt (a shared staging folder
``work/<attempt>/`` where the backend renames; its claim on ``epochs/NNN/`` on object stores) and
broadcasts it, through the ``broadcast`` the caller passes or through ``torch.distributed`` when it is
initialized. Each rank then seals its part with its own part manifest, ``rank-NNNNN/MANIFEST.json``
(its files, sizes and xxh3-128 digests). The coordinator waits until every part manifest is durable,
writes the checkpoint's ``MANIFEST.json`` (every file of every part, the part manifests among them),
and publishes it in the store's one commit step: the rename of the shared folder onto ``epochs/NNN``
(local disk, NFS), or the create-only write of that manifest (object stores).

A rank that raises marks its part aborted; a rank that dies never seals it. Either way the coordinator
commits nothing: it fails with :class:`ShardedSaveError` (or :class:`ShardTimeoutError` after
``timeout`` seconds), removes the attempt, and the other ranks, which watch the attempt on the store,
raise too. What a killed coordinator leaves is an ordinary abandoned staging folder or claim, which gc
removes. :func:`part` gives one rank its own part as a checkpoint of its own: it reads and verifies
only that part's files.
"""

from __future__ import annotations

import math
import re
import sys
from collections.abc import Callable
from typing import Any

import attrs

from .checkpoint import Checkpoint
from .commit.claims import Claim
from .errors import (
    CheckpointNotFoundError,
    CkptStoreError,
    InvalidArgumentError,
    InvalidArgumentTypeError,
    ManifestError,
)
from .layout import MANIFEST_FILE
from .manifest import MAX_RANKS, Manifest

__all__ = [
    "DEFAULT_TIMEOUT",
    "Agreed",
    "Broadcast",
    "ShardSpec",
    "ShardTimeoutError",
    "ShardedSaveError",
    "check_shard",
    "part",
    "part_folder",
]

Broadcast = Callable[[str | None], str]
"""Called once on every rank with rank 0's message on rank 0 and None elsewhere; returns rank 0's message."""

DEFAULT_TIMEOUT = 1800.0
"""Seconds a rank waits for the others (the coordinator for every part, the others for the commit)."""

ATTEMPT_ID = re.compile(r"[A-Za-z0-9][A-Za-z0-9._-]{0,199}")
"""What a save attempt's id looks like (it names a staging folder: no ``/``, no ``..``)."""


class ShardedSaveError(CkptStoreError, RuntimeError):
    """A sharded save did not commit: a rank raised or died, or the coordinator refused or failed."""


class ShardTimeoutError(ShardedSaveError, TimeoutError):
    """A sharded save did not commit because a rank did not finish within ``timeout`` seconds."""


def part_folder(rank: int) -> str:
    """The folder of rank ``rank``'s part inside a sharded checkpoint (``rank-00003``)."""
    return f"rank-{rank:05d}"


class Agreed:
    """A save attempt agreed elsewhere, e.g. in the plan exchange of ``torch.distributed.checkpoint``.

    Pass it as ``broadcast``: on the coordinator it keeps the message the store proposes (read it from
    :attr:`message` and hand it to the other ranks yourself); on the other ranks build it with that
    message. A framework that agrees this way also reports the outcome to every rank, so a rank other
    than the coordinator returns as soon as its part is sealed (``tx.checkpoint`` is then None) instead
    of watching the store for the commit.
    """

    def __init__(self, message: str | None = None) -> None:
        self.message = message

    def __call__(self, proposal: str | None) -> str:
        """Keep rank 0's ``proposal``; return the agreed message."""
        if proposal is not None:
            self.message = proposal
        if self.message is None:
            raise InvalidArgumentError("Agreed() on a rank other than 0 needs the coordinator's message")
        return self.message


@attrs.define(eq=False)
class ShardSpec:
    """One rank's view of a sharded save (set on its :class:`~ckptstore.transaction.SaveTransaction`)."""

    rank: int
    world_size: int
    broadcast: Broadcast
    timeout: float
    follow: bool = True
    attempt: str = ""
    writer: str = ""
    claim: Claim | None = None

    @property
    def coordinator(self) -> bool:
        """True on rank 0, which commits."""
        return self.rank == 0

    @property
    def folder(self) -> str:
        """This rank's part folder inside the checkpoint."""
        return part_folder(self.rank)

    def record(self, *, with_rank: bool) -> dict[str, Any]:
        """The ``shard`` field of a manifest: the checkpoint's, or (``with_rank``) this rank's part's."""
        shard: dict[str, Any] = {"world_size": self.world_size, "attempt": self.attempt}
        if with_rank:
            shard["rank"] = self.rank
        return shard


def _torch_broadcast() -> Broadcast | None:
    dist = sys.modules.get("torch.distributed")
    if dist is None or not dist.is_available() or not dist.is_initialized():
        return None

    def broadcast(message: str | None) -> str:
        box = [message]
        dist.broadcast_object_list(box, src=0)
        return str(box[0])

    return broadcast


def check_shard(
    rank: int | None, world_size: int | None, broadcast: Broadcast | None, timeout: float | None
) -> ShardSpec | None:
    """Validate the sharding arguments of a save (before anything is written); None for a plain save.

    Raises:
        InvalidArgumentError: only one of ``rank`` and ``world_size``, a rank out of range, a bad
            timeout, or no way to agree (no ``broadcast`` and ``torch.distributed`` not initialized).
        InvalidArgumentTypeError: an argument of the wrong type.
    """
    if rank is None and world_size is None:
        if broadcast is not None or timeout is not None:
            raise InvalidArgumentError("broadcast= and timeout= are for sharded saves: pass rank= and world_size=")
        return None
    if rank is None or world_size is None:
        raise InvalidArgumentError("a sharded save needs both rank= and world_size=")
    for name, value in (("rank", rank), ("world_size", world_size)):
        if isinstance(value, bool) or not isinstance(value, int):
            raise InvalidArgumentTypeError(f"{name} must be an int, got {type(value).__name__}")
    if not 1 <= world_size <= MAX_RANKS:
        raise InvalidArgumentError(f"world_size must be from 1 to {MAX_RANKS}, got {world_size}")
    if not 0 <= rank < world_size:
        raise InvalidArgumentError(f"rank must be from 0 to world_size - 1 = {world_size - 1}, got {rank}")
    if timeout is None:
        timeout = DEFAULT_TIMEOUT
    if isinstance(timeout, bool) or not isinstance(timeout, (int, float)):
        raise InvalidArgumentTypeError(f"timeout must be a number of seconds, got {type(timeout).__name__}")
    if not (math.isfinite(timeout) and timeout > 0):
        raise InvalidArgumentError(f"timeout must be a positive number of seconds, got {timeout!r}")
    if broadcast is not None and not callable(broadcast):
        raise InvalidArgumentTypeError(f"broadcast must be callable, got {type(broadcast).__name__}")
    chosen = broadcast or _torch_broadcast()
    if chosen is None:
        if world_size > 1:
            raise InvalidArgumentError(
                "a sharded save needs a way for the ranks to agree: pass broadcast= (rank 0's message to "
                "every rank) or initialize torch.distributed first"
            )
        chosen = Agreed()
    return ShardSpec(rank, world_size, chosen, float(timeout), follow=not isinstance(broadcast, Agreed))


def part(checkpoint: Checkpoint, rank: int) -> Checkpoint:
    """Rank ``rank``'s part of a sharded checkpoint, as a checkpoint of its own.

    Its manifest is the part manifest, checked against the digest the checkpoint's manifest records,
    so ``part(ck, r).verify()``, ``.load()``, ``.open()`` and ``.local_path()`` read and verify only
    that part's files. The coordinator's shared files are ``part(ck, 0)``.

    Raises:
        InvalidArgumentError: the checkpoint is not sharded, or ``rank`` is out of range.
        VerificationError: the part manifest is missing, damaged, or belongs to another save.
    """
    shard = checkpoint.manifest.shard
    if shard is None:
        raise InvalidArgumentError(f"epoch {checkpoint.epoch} was not saved sharded; it has no parts")
    world = int(shard["world_size"])
    if isinstance(rank, bool) or not isinstance(rank, int) or not 0 <= rank < world:
        raise InvalidArgumentError(f"rank must be from 0 to {world - 1} for epoch {checkpoint.epoch}, got {rank!r}")
    folder = part_folder(rank)
    try:
        raw = checkpoint.read_bytes(f"{folder}/{MANIFEST_FILE}", verify=True)
    except CheckpointNotFoundError:
        raise ManifestError(f"{checkpoint.url} lists no part manifest for rank {rank}") from None
    where = f"{checkpoint.url}/{folder}/{MANIFEST_FILE}"
    found = Manifest.from_json(raw, where=where)
    if found.epoch != checkpoint.epoch or dict(found.shard or {}) != {**shard, "rank": rank}:
        raise ManifestError(f"{where} belongs to another save")
    return Checkpoint(checkpoint._source, f"{checkpoint.key}/{folder}", found)
