"""ckptstore: store training checkpoints safely and find the right one later.

>>> import ckptstore
>>> store = ckptstore.open("runs/exp1", keep=ckptstore.keep.linear(5), monitor="val_loss")
>>> with store.save(epoch=3, metrics={"val_loss": 0.21}) as tx:
...     (tx.path / "model.bin").write_bytes(b"...")
>>> store.latest().epoch
3
"""

from __future__ import annotations

from . import keep
from ._version import __version__
from .checkpoint import Checkpoint
from .errors import (
    BackendAuthError,
    BackendUnavailableError,
    CheckpointNotFoundError,
    ChecksumMismatchError,
    CkptStoreError,
    CommitConflictError,
    CommitFailedError,
    DestinationExistsError,
    IncompleteCheckpointError,
    InvalidArgumentError,
    InvalidArgumentTypeError,
    InvalidEpochError,
    InvalidMetricError,
    ManifestError,
    MissingMetricError,
    MonitorMismatchError,
    PostCommitWarning,
    SerializerError,
    SingleWriterWarning,
    StoreNotFoundError,
    StoreNotWritableError,
    StoreUnavailableError,
    UnexpectedFileError,
    UnsafeEntryError,
    UnsafePathError,
    UnsupportedURLError,
    VerificationError,
)
from .find import FileMatch, resolve_latest, select_max, select_min
from .integrations.loop import Checkpointer
from .manifest import FileEntry, Manifest
from .policies import GcDecision, SaveDecision
from .retry import RetryPolicy
from .serializers import Serializer, get_serializer, register_serializer
from .store import CheckpointStore, GcReport, SaveTransaction, StoreConfig
from .store import open_store as open
from .stores import StoreSummary, stores

__all__ = [
    "BackendAuthError",
    "BackendUnavailableError",
    "Checkpoint",
    "CheckpointNotFoundError",
    "CheckpointStore",
    "Checkpointer",
    "ChecksumMismatchError",
    "CkptStoreError",
    "CommitConflictError",
    "CommitFailedError",
    "DestinationExistsError",
    "FileEntry",
    "FileMatch",
    "GcDecision",
    "GcReport",
    "IncompleteCheckpointError",
    "InvalidArgumentError",
    "InvalidArgumentTypeError",
    "InvalidEpochError",
    "InvalidMetricError",
    "Manifest",
    "ManifestError",
    "MissingMetricError",
    "MonitorMismatchError",
    "PostCommitWarning",
    "RetryPolicy",
    "SaveDecision",
    "SaveTransaction",
    "Serializer",
    "SerializerError",
    "SingleWriterWarning",
    "StoreConfig",
    "StoreNotFoundError",
    "StoreNotWritableError",
    "StoreSummary",
    "StoreUnavailableError",
    "UnexpectedFileError",
    "UnsafeEntryError",
    "UnsafePathError",
    "UnsupportedURLError",
    "VerificationError",
    "__version__",
    "get_serializer",
    "keep",
    "open",
    "register_serializer",
    "resolve_latest",
    "select_max",
    "select_min",
    "stores",
]
