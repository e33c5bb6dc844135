"""The commit protocol of backends with an atomic directory rename (local disk, NFS).

A save is staged in its own ``work/<writer-id>.<n>`` folder; sealing hashes and fsyncs every file,
writes and fsyncs the manifest and every folder; publishing renames the folder onto ``epochs/NNN``,
which must not exist, and fsyncs ``epochs/`` (DESIGN section 3.1). The rename is the commit point:
a reader sees the whole checkpoint or nothing, also after ``kill -9`` or a power cut. A rename whose
reply was lost (NFS) is recognised by the manifest's commit id, so it is never reported as failed.
"""

from __future__ import annotations

import itertools
import os
import shutil
from pathlib import Path
from typing import TYPE_CHECKING

from .. import _crash
from .._threads import parallel_map
from ..backends.local import LocalBackend
from ..checksum import hash_and_sync
from ..errors import (
    CkptStoreError,
    CommitConflictError,
    CommitFailedError,
    InvalidArgumentError,
    StoreNotWritableError,
)
from ..layout import EPOCHS, MANIFEST_FILE, WORK
from ..manifest import FileEntry, Manifest
from ._common import Target, staged_files

if TYPE_CHECKING:
    from ..transaction import SaveTransaction

__all__ = ["RenameCommit"]


class RenameCommit:
    """Commits by renaming a sealed staging folder onto its epoch folder (a :class:`~._common.Publisher`).

    Args:
        target: The store to publish into; its backend has ``atomic_rename`` and a local root.
        staging: The names of this store's staging folders in use (shared with gc, which leaves them alone).
    """

    def __init__(self, target: Target, staging: set[str]) -> None:
        self._target = target
        self._backend = target.backend
        self._staging = staging
        self._seq = itertools.count()

    @property
    def _root(self) -> Path:
        root = self._backend.local_path()
        if root is None:
            raise InvalidArgumentError(f"{self._target.url} is not on a local filesystem; it has no root directory")
        return root

    def taken(self, epoch: int) -> bool:
        """True if the folder of ``epoch`` exists (committed, or a folder someone put there)."""
        return self._backend.exists(self._target.layout.epoch_key(epoch))

    def begin(self, tx: SaveTransaction) -> None:
        """Create the private staging folder ``work/<writer-id>.<n>``."""
        name = f"{self._target.writer_id}.{next(self._seq)}"
        try:
            self._backend.make_dir(f"{WORK}/{name}")  # type: ignore[attr-defined]  # refuses a symlinked work/
        except CkptStoreError:
            raise
        except PermissionError as exc:
            raise StoreNotWritableError(f"cannot create a staging directory in {self._root}: {exc}") from None
        self._staging.add(name)
        tx._work = self._root / WORK / name

    def seal(self, tx: SaveTransaction) -> Manifest:
        """Hash and fsync every file, then write and fsync the manifest (the commit record)."""
        try:
            return self._seal(tx, tx.path)
        except BaseException:
            tx._abort("commit failed before publishing")
            raise

    def _seal(self, tx: SaveTransaction, work: Path) -> Manifest:
        to_hash = staged_files(tx, work)
        dirs = [Path(dirpath) for dirpath, _, _ in os.walk(work)]
        try:
            tx._synced()  # files written through tx.open() flushed while the next ones were written
            if to_hash:
                hashed = parallel_map(lambda item: (item[0], hash_and_sync(item[1])), to_hash, 2, "ckptstore-seal")
                for rel, (size, digest) in hashed:
                    tx._entries[rel] = FileEntry(path=rel, size=size, xxh3_128=digest)
            _crash.point("after_files")
            manifest = self._target.manifest(tx)
            LocalBackend._write_new(work / MANIFEST_FILE, manifest.to_json())
            for directory in reversed(dirs):
                LocalBackend.fsync_dir(directory)
        except OSError as exc:
            raise CommitFailedError(exc.errno, f"could not write epoch {tx.epoch}: {exc}") from exc
        _crash.point("after_manifest")
        return manifest

    def publish(self, tx: SaveTransaction, manifest: Manifest) -> None:
        """Rename the sealed staging folder onto ``epochs/NNN`` (which must not exist): the commit point."""
        work = tx.path
        target = self._root / EPOCHS / self._target.layout.name(tx.epoch)
        _crash.point("before_rename")
        try:
            self._backend.rename_dir(work, target)  # type: ignore[attr-defined]
        except FileExistsError:
            if not self._target.committed_by(tx.epoch, manifest.commit_id):
                tx._abort("the epoch was committed by another writer")
                raise CommitConflictError(
                    f"epoch {tx.epoch} was committed by another writer while this one was saving; "
                    "nothing of this save was kept"
                ) from None
        except OSError as exc:
            if not self._target.committed_by(tx.epoch, manifest.commit_id):
                tx._abort(f"rename failed: {exc}")
                raise CommitFailedError(exc.errno, f"could not publish epoch {tx.epoch}: {exc}") from exc
        self._staging.discard(work.name)
        tx._work = None
        _crash.point("after_rename")

    def discard(self, tx: SaveTransaction) -> None:
        """Remove the staging folder (or the scratch folder of a skipped save)."""
        work, tx._work = tx._work, None
        if work is None:
            return
        if work.parent == self._root / WORK:
            self._staging.discard(work.name)
            self._backend.delete_tree(f"{WORK}/{work.name}")
        else:
            shutil.rmtree(work, ignore_errors=True)
