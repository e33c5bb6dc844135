"""The commit protocol of object stores: claim, upload, then write the manifest create-only.

An object store cannot rename a folder, so the commit is a record (DESIGN section 3.1): the writer
claims ``epochs/NNN/`` (:mod:`~ckptstore.commit.claims`), streams or uploads the files into it
(each hashed in the one pass that sends it), and commits by writing ``MANIFEST.json`` create-only.
A folder without a manifest is not a checkpoint. The claim is checked before the manifest is written
and once more after: a writer whose claim was taken over (by gc, once it was older than the grace
period) withdraws its manifest, so a save is never reported committed when its files may be gone.
"""

from __future__ import annotations

import contextlib
import os
import shutil
import tempfile
from collections.abc import Iterator
from pathlib import Path
from typing import TYPE_CHECKING, NoReturn

from .. import _crash
from .._boundary import backend_errors
from .._nofollow import open_regular
from .._progress import ProgressOption, make_progress
from .._threads import parallel_map, remove_later
from ..backends.base import Backend
from ..checkpoint import TRANSFER_THREADS
from ..checksum import _write_error, copy_hashing
from ..errors import CommitConflictError, StoreUnavailableError, UnsafePathError
from ..layout import Layout
from ..manifest import FileEntry, Manifest
from ..retry import RetryPolicy
from ..retry import call as retry_call
from ._common import Target, staged_files
from .claims import Claims

if TYPE_CHECKING:
    from ..transaction import SaveTransaction

__all__ = ["RecordCommit"]


def _raise_typed(exc: BaseException, what: str) -> NoReturn:
    """Re-raise a failed upload typed: an outage, or an I/O error (a failed part) as ``CommitFailedError``."""
    if not isinstance(exc, Exception):
        raise exc
    typed = _write_error(exc, what)
    if typed is exc:
        raise exc
    raise typed from exc


def _let_go(tx: SaveTransaction) -> None:
    """The epoch folder is no longer this save's to clean up (committed, or another writer's now)."""
    if tx._claim is not None:
        tx._claim.held = False


class RecordCommit:
    """Commits by a create-only manifest in a claimed epoch folder (a :class:`~._common.Publisher`).

    Args:
        target: The store to publish into.
        claims: This writer's claims.
        quick: The store's backend without retries, for clean-up after a failure.
        retry: How uploads of staged files retry.
        progress: Progress bars for uploads (``StoreConfig.progress``).
    """

    def __init__(
        self, target: Target, claims: Claims, *, quick: Backend, retry: RetryPolicy, progress: ProgressOption
    ) -> None:
        self._target = target
        self._backend = target.backend
        self._claims = claims
        self._quick = quick
        self._retry = retry
        self._progress = progress

    def taken(self, epoch: int) -> bool:
        """True if ``epoch`` has a manifest (a folder without one is a save in progress, or abandoned)."""
        return self._backend.exists(Layout.manifest_key(self._target.layout.epoch_key(epoch)))

    def begin(self, tx: SaveTransaction) -> None:
        """A local scratch folder for files written into ``tx.path``, and the claim on the epoch."""
        tx._work = Path(tempfile.mkdtemp(prefix=f"ckptstore-{self._target.layout.name(tx.epoch)}-"))
        try:
            tx._claim = self._claims.claim(tx.epoch)
        except BaseException:
            shutil.rmtree(tx._work, ignore_errors=True)
            tx._work = None
            raise

    @contextlib.contextmanager
    def _aborting(self, tx: SaveTransaction) -> Iterator[None]:
        """Abort ``tx`` on any failure before the manifest is written (a conflict leaves the folder alone)."""
        try:
            yield
        except BaseException as exc:
            if isinstance(exc, CommitConflictError):
                _let_go(tx)  # the prefix belongs to another writer now: leave it alone
            tx._abort(f"commit failed before publishing: {exc}")
            raise

    def seal(self, tx: SaveTransaction) -> Manifest:
        """Upload the files written into ``tx.path`` (hashing each in its one read), then build the manifest."""
        with self._aborting(tx):
            self._upload_staged(tx, tx.prefix)  # the epoch folder, or a rank's part folder in it
            _crash.point("after_files")
            return self._target.manifest(tx)

    def publish(self, tx: SaveTransaction, manifest: Manifest) -> None:
        """Write the manifest create-only while the claim is still ours: the commit point."""
        prefix = self._target.layout.epoch_key(tx.epoch)
        with self._aborting(tx), backend_errors(self._backend, f"commit epoch {tx.epoch}"):
            if not self._claims.holds(tx.epoch):
                raise CommitConflictError(
                    f"epoch {tx.epoch}: this writer's claim was taken over while it was uploading "
                    "(it was older than work_grace_seconds); nothing of this save was kept"
                )
            _crash.point("before_rename")
            created = self._backend.create_only(Layout.manifest_key(prefix), manifest.to_json())
        if not created and not self._target.committed_by(tx.epoch, manifest.commit_id):
            _let_go(tx)
            tx._abort("the epoch was committed by another writer")
            raise CommitConflictError(
                f"epoch {tx.epoch} was committed by another writer while this one was saving "
                "(the backend does not enforce create-only claims: single-writer mode)"
            )
        self._confirm_claim(tx, manifest)
        _crash.point("after_rename")
        if tx._work is not None:
            remove_later(tx._work)  # freeing a large file's cached pages is not the caller's wait
            tx._work = None
        _let_go(tx)

    def _confirm_claim(self, tx: SaveTransaction, manifest: Manifest) -> None:
        """Check the claim once more after the manifest is written; withdraw the commit if it was taken over.

        gc (or another writer) may take over a claim it judges abandoned between this writer's last
        check and its manifest write, and then delete the files. The taker changes the claim before it
        deletes anything, so a claim that is still ours here means the commit stands; otherwise the
        manifest is withdrawn and the save fails: a writer never reports a commit it cannot vouch for.
        """
        manifest_key = Layout.manifest_key(self._target.layout.epoch_key(tx.epoch))
        try:
            with backend_errors(self._backend, f"confirm the commit of epoch {tx.epoch}"):
                if self._claims.holds(tx.epoch):
                    return
                if self._target.committed_by(tx.epoch, manifest.commit_id):
                    self._backend.delete(manifest_key)
        except StoreUnavailableError as exc:
            raise StoreUnavailableError(
                f"{exc}; epoch {tx.epoch} may or may not be committed: store.get({tx.epoch}) tells once the "
                "backend is back"
            ) from exc
        _let_go(tx)  # the prefix is the taker's now
        tx._abort("the claim was taken over while committing; the manifest was withdrawn")
        raise CommitConflictError(
            f"epoch {tx.epoch}: this writer's claim was taken over (by gc or another writer, because it was older "
            f"than work_grace_seconds={self._claims.grace:g}) while it committed; the commit was "
            "withdrawn and nothing of this save was kept. Raise work_grace_seconds above the longest save."
        )

    def _upload_staged(self, tx: SaveTransaction, prefix: str) -> None:
        """Upload the files written into ``tx.path`` in parallel, hashing each in its one read."""
        staged = staged_files(tx, tx.path)
        total = sum(path.stat().st_size for _, path in staged)
        bar = make_progress(self._progress, total, f"upload epoch {tx.epoch}")

        def upload(item: tuple[str, Path]) -> tuple[str, tuple[int, str]]:
            rel, path = item
            key = f"{prefix}/{rel}"
            fd, _ = open_regular(path, error=UnsafePathError, why="checkpoints hold regular files only")
            with os.fdopen(fd, "rb", buffering=0) as src:
                sink = self._backend.open_write(key)  # S3: parts go out in parallel, ``part_size`` each
                try:
                    result = copy_hashing(src, sink, bar)
                except BaseException as exc:
                    discard = getattr(sink, "discard", None)
                    with contextlib.suppress(Exception):
                        discard() if callable(discard) else sink.close()
                    _raise_typed(exc, f"uploading {self._target.url}/{key} failed")
                try:
                    sink.close()  # the last part, then the object appears (or the upload is aborted)
                except Exception as exc:
                    _raise_typed(exc, f"finishing the upload of {self._target.url}/{key} failed")
            return rel, result

        try:
            with backend_errors(self._backend, f"upload epoch {tx.epoch}"):
                results = parallel_map(
                    lambda item: retry_call(
                        lambda: upload(item), self._retry, f"upload {prefix}/{item[0]} to {self._target.url}"
                    ),
                    staged,
                    TRANSFER_THREADS,
                    "ckptstore-put",
                )
        finally:
            if bar is not None:
                bar.close()
        for rel, (size, digest) in results:
            tx._entries[rel] = FileEntry(path=rel, size=size, xxh3_128=digest)

    def discard(self, tx: SaveTransaction) -> None:
        """Remove the scratch folder; let go of the claim and remove what was uploaded under it."""
        work, tx._work = tx._work, None
        if work is not None:
            shutil.rmtree(work, ignore_errors=True)
        if tx._claim is not None and tx._claim.held:
            self._claims.release(tx._claim, self._quick)
