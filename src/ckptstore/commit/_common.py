"""What both commit strategies share: their interface, the manifest they write, the files they find.

:class:`Publisher` is the shape of a commit strategy; :class:`Target` is the store a strategy
publishes into and the writer its manifests name. The manifest is built here once, for both
strategies, after every file was hashed: its file list is exactly what the transaction wrote, each
name checked against the backend's limits, so a commit record never promises a file no disk could
restore.
"""

from __future__ import annotations

import os
import platform
import sys
import time
import uuid
from pathlib import Path
from typing import TYPE_CHECKING, Protocol

import attrs

from .._nofollow import regular_files
from .._validate import RESERVED_NAMES, check_file_set, check_key_length, check_relpath
from .._version import __version__
from ..context import StoreContext
from ..errors import ManifestError, UnsafePathError
from ..layout import Layout
from ..manifest import Manifest
from . import claims

if TYPE_CHECKING:
    from ..transaction import SaveTransaction

__all__ = ["Publisher", "Target", "framework_versions", "staged_files"]


class Publisher(Protocol):
    """A commit strategy: how a staged checkpoint becomes visible, on backends of one capability.

    A failure in :meth:`seal` or :meth:`publish` aborts the transaction (nothing of it is kept) and
    raises; once :meth:`publish` returns, the checkpoint is committed.
    """

    def taken(self, epoch: int) -> bool:
        """True if ``epoch`` is committed already (checked before anything is staged)."""
        ...

    def begin(self, tx: SaveTransaction) -> None:
        """Give ``tx`` its staging folder, and take what publishing needs (a claim on object stores)."""
        ...

    def seal(self, tx: SaveTransaction) -> Manifest:
        """Make every staged file durable and hashed, and build the manifest (the commit record)."""
        ...

    def publish(self, tx: SaveTransaction, manifest: Manifest) -> None:
        """The commit point: make the sealed checkpoint visible under ``epochs/NNN``, whole, in one step."""
        ...

    def discard(self, tx: SaveTransaction) -> None:
        """Remove what ``tx`` staged, uploaded or claimed (best effort; gc finishes what is left)."""
        ...


@attrs.frozen(kw_only=True)
class Target(StoreContext):
    """The store a strategy publishes into (its context), and the manifest it writes there.

    The writer id, run id and parent of the context are what the manifests record of the writer.
    """

    def manifest(self, tx: SaveTransaction) -> Manifest:
        """The manifest of ``tx``, whose files are all written and hashed."""
        names = sorted(tx._entries)
        check_file_set(names)  # `a` beside `a/b`, names not UTF-8: no disk could restore them
        prefix, limit = tx.prefix, self.backend.capabilities.max_key_bytes
        for name in names:
            check_key_length(name, f"{prefix}/{name}", self.backend.key_bytes(f"{prefix}/{name}"), limit)
        serializer = None
        if tx.serializer is not None:
            serializer = {"name": str(tx.serializer.name), "version": str(tx.serializer.version())}
        return Manifest(
            epoch=tx.epoch,
            run_id=self.run_id,
            commit_id=uuid.uuid4().hex,
            writer={"id": self.writer_id, "host": claims.HOST, "pid": os.getpid()},
            committed_at_ns=time.time_ns(),
            files=tuple(sorted(tx._entries.values(), key=lambda e: e.path)),
            metrics=tx.metrics,
            metadata=tx.metadata,
            step=tx.step,
            batch=tx.batch,
            serializer=serializer,
            framework_versions=framework_versions(),
            parent=self.parent(),
            shard=tx.shard.record(with_rank=True) if tx.shard is not None else None,
        )

    def committed_by(self, epoch: int, commit_id: str) -> bool:
        """True if ``epoch`` holds this very commit (an NFS rename or a PUT whose reply was lost)."""
        try:
            raw = self.backend.read_bytes(Layout.manifest_key(self.layout.epoch_key(epoch)))
            return Manifest.from_json(raw).commit_id == commit_id
        except (OSError, ManifestError):
            return False


def staged_files(tx: SaveTransaction, work: Path) -> list[tuple[str, Path]]:
    """The regular files written into ``work`` (not through ``tx.open``), each checked.

    Nothing is opened here: a symlink, FIFO, socket or device anywhere in ``work`` is refused from its
    directory entry (a FIFO would block the read that hashes it forever).
    """
    found: list[tuple[str, Path]] = []
    for entry in regular_files(work, error=UnsafePathError, why="checkpoints hold regular files only"):
        full = Path(entry.path)
        rel = full.relative_to(work).as_posix()
        if rel in RESERVED_NAMES:
            raise UnsafePathError(f"{rel!r} is reserved for ckptstore's own records")
        check_relpath(rel)
        if rel not in tx._entries:
            found.append((rel, full))
        elif tx._claimed:
            raise UnsafePathError(f"{rel!r} was written both through tx.open() and into tx.path")
    check_file_set([*tx._entries, *(rel for rel, _ in found)])  # before any upload: `a` beside `a/b`, ...
    return found


def framework_versions() -> dict[str, str]:
    """The versions of Python, ckptstore and the frameworks loaded in this process (for the manifest)."""
    versions = {"python": platform.python_version()}
    for name in ("numpy", "torch", "keras", "jax", "safetensors"):
        module = sys.modules.get(name)
        version = getattr(module, "__version__", None)
        if isinstance(version, str):
            versions[name] = version
    versions["ckptstore"] = __version__
    return versions
