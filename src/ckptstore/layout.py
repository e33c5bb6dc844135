"""Every name a store uses on its backend: one place, so the layout on disk is written down once.

DESIGN section 2 is the contract: ``epochs/NNN`` holds committed checkpoints (the number zero-padded
to the store's width), each with its ``MANIFEST.json`` (the commit record) and an optional
``METADATA.json``; ``work/`` stages saves where the backend can rename; ``pointers/``, ``pins/``,
``index.json``, ``ckptstore.json`` and ``ckpt.log`` (``log/`` on object stores) are the store's
records. Nothing here does I/O: a :class:`Layout` turns epochs into keys and keys back into epochs.
"""

from __future__ import annotations

import attrs

__all__ = [
    "CLAIM_FILE",
    "EPOCHS",
    "INDEX_FILE",
    "INDEX_SEGMENTS",
    "INTERNAL_FILES",
    "INTERNAL_FOLDERS",
    "LOCAL_FOLDERS",
    "LOG_FILE",
    "MANIFEST_FILE",
    "METADATA_FILE",
    "PINS",
    "POINTERS",
    "POINTER_LOCK",
    "POINTER_NAMES",
    "RETIRED",
    "STORE_FILE",
    "TRASH",
    "WORK",
    "Layout",
    "tail",
]

STORE_FILE = "ckptstore.json"
"""The store descriptor: format, version, store id, naming width, monitor and mode."""
INDEX_FILE = "index.json"
"""A cache of every committed checkpoint's manifest and metadata (rebuildable from the manifests): the head."""
INDEX_SEGMENTS = "index.d"
"""The index's immutable segments, which its head names (see :mod:`ckptstore.index_segments`)."""
LOG_FILE = "ckpt.log"
"""The human-readable operation log on local backends (object stores write ``log/`` objects)."""
MANIFEST_FILE = "MANIFEST.json"
"""The commit record of one checkpoint, written last."""
METADATA_FILE = "METADATA.json"
"""User metadata added after the commit (not in the manifest's file list)."""
CLAIM_FILE = ".claim"
"""An object-store writer's create-only claim on an epoch folder."""

EPOCHS = "epochs"
WORK = "work"
TRASH = "trash"
RETIRED = "retired"
POINTERS = "pointers"
PINS = "pins"
POINTER_NAMES = ("best", "last")
POINTER_LOCK = f"{POINTERS}/.lock"
"""The lock every writer of a shared record holds (locally; object stores compare-and-swap)."""

LOCAL_FOLDERS = (EPOCHS, WORK, POINTERS, PINS, TRASH, RETIRED)
"""The folders a local store creates when it is opened for writing."""
INTERNAL_FOLDERS = frozenset({WORK, TRASH, RETIRED, POINTERS, PINS, INDEX_SEGMENTS, "log", "probe"})
"""Top-level folders that belong to ckptstore (never searched for the user's files)."""
INTERNAL_FILES = frozenset({STORE_FILE, INDEX_FILE, LOG_FILE})
"""Top-level files that belong to ckptstore."""


def tail(key: str) -> str:
    """The last component of a ``/``-separated key (``epochs/00000003`` -> ``00000003``)."""
    return key.rstrip("/").rsplit("/", 1)[-1]


@attrs.frozen
class Layout:
    """The keys of one store, whose epoch folders are named with ``width`` digits.

    Attributes:
        width: Digits in an epoch folder's name (from the store descriptor).
    """

    width: int

    def name(self, epoch: int) -> str:
        """The folder name of ``epoch`` (``00000003``)."""
        return f"{epoch:0{self.width}d}"

    def epoch_key(self, epoch: int) -> str:
        """The folder of ``epoch`` (``epochs/00000003``)."""
        return f"{EPOCHS}/{self.name(epoch)}"

    @staticmethod
    def folder_key(name: str) -> str:
        """The folder of an epoch by its folder name."""
        return f"{EPOCHS}/{name}"

    @staticmethod
    def manifest_key(key: str) -> str:
        """The manifest inside the epoch folder ``key``."""
        return f"{key}/{MANIFEST_FILE}"

    @staticmethod
    def metadata_key(key: str) -> str:
        """The metadata file inside the epoch folder ``key``."""
        return f"{key}/{METADATA_FILE}"

    @staticmethod
    def claim_key(key: str) -> str:
        """The claim inside the epoch folder ``key``."""
        return f"{key}/{CLAIM_FILE}"

    @staticmethod
    def pointer_key(name: str) -> str:
        """The JSON record of the ``best`` or ``last`` pointer."""
        return f"{POINTERS}/{name}.json"

    def pin_key(self, epoch: int) -> str:
        """The marker that pins ``epoch``."""
        return f"{PINS}/{self.name(epoch)}"
