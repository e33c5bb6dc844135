"""User metadata after the commit: ``METADATA.json`` beside the manifest, changed without losing an update.

The commit record is never rewritten, so a checkpoint still verifies after its metadata changed
(Determined's ``add_metadata``/``remove_metadata``). Each change is a compare-and-swap of
``METADATA.json`` under the record lock, then the index entry follows; a change that races the
checkpoint's deletion leaves nothing behind.
"""

from __future__ import annotations

import errno
import json
from collections.abc import Callable
from typing import Any

from ._boundary import CAS_ATTEMPTS, backend_errors
from ._validate import check_metadata
from .checkpoint import Checkpoint
from .context import Part, StoreContext
from .errors import CheckpointNotFoundError, CommitFailedError
from .index import Index
from .layout import Layout

__all__ = ["Metadata"]


class Metadata(Part):
    """The metadata records of one store.

    Args:
        ctx: The store's context.
        index: Updated after each change.
    """

    def __init__(self, ctx: StoreContext, index: Index) -> None:
        super().__init__(ctx)
        self._index = index

    def update(
        self, checkpoint: Checkpoint, change: Callable[[dict[str, Any]], dict[str, Any]], what: str
    ) -> dict[str, Any]:
        """Apply ``change`` to a checkpoint's ``METADATA.json`` by compare-and-swap, then to the index.

        Raises:
            CheckpointNotFoundError: the checkpoint was deleted meanwhile (nothing is left behind).
        """
        key = Layout.metadata_key(checkpoint.key)
        backend = self._backend
        with backend_errors(backend, f"update metadata of epoch {checkpoint.epoch}"), self._lock():
            for _attempt in range(CAS_ATTEMPTS):
                current, version, exists = checkpoint._read_metadata()
                updated = check_metadata(change(dict(current)))
                if backend.write_if(key, json.dumps(updated, indent=1).encode(), version if exists else None):
                    break
            else:
                raise CommitFailedError(errno.EAGAIN, f"could not update metadata of epoch {checkpoint.epoch}")
            if not backend.exists(Layout.manifest_key(checkpoint.key)):  # deleted meanwhile: leave nothing
                backend.delete(key)
                raise CheckpointNotFoundError(f"epoch {checkpoint.epoch} was deleted while its metadata changed")
            checkpoint._metadata = updated
            self._index.update(add=[checkpoint])
        self._log("METADATA", f"epoch {checkpoint.epoch}: {what}")
        return updated
