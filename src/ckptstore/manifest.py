"""The commit record of a checkpoint: ``MANIFEST.json``.

The manifest is written last, after every file it lists is durable, and a directory without a valid
manifest is not a checkpoint. It lists every file with its size and xxh3-128 digest, so a checkpoint
can be verified byte for byte long after it was written, and it records who wrote it, when (in UTC
nanoseconds), with which metrics and metadata, and which checkpoint it resumed from. It is
schema-versioned and validated on every read: a manifest that does not parse, or that is missing a
field, raises :class:`~ckptstore.errors.ManifestError` rather than being half-trusted.
"""

from __future__ import annotations

import json
from collections.abc import Mapping
from typing import Any

import attrs

from ._validate import check_metrics, check_relpath
from .errors import ManifestError

__all__ = ["MANIFEST_FORMAT", "MANIFEST_VERSION", "FileEntry", "Manifest"]

MANIFEST_FORMAT = "ckptstore.manifest"
MANIFEST_VERSION = 1


@attrs.frozen(kw_only=True)
class FileEntry:
    """One file of a checkpoint, as the manifest records it.

    Attributes:
        path: Relative POSIX path inside the epoch directory.
        size: Size in bytes.
        xxh3_128: The xxh3-128 digest as 32 hex characters.
    """

    path: str
    size: int = attrs.field(validator=attrs.validators.ge(0))
    xxh3_128: str = attrs.field(validator=attrs.validators.matches_re(r"[0-9a-f]{32}"))

    def to_dict(self) -> dict[str, Any]:
        """Return the JSON form."""
        return {"path": self.path, "size": self.size, "xxh3_128": self.xxh3_128}


@attrs.frozen(kw_only=True)
class Manifest:
    """Everything a committed checkpoint promises about itself.

    Attributes:
        epoch: The epoch (or step) number the caller gave; also the directory name.
        run_id: The run that wrote it; keep policies only ever delete their own run's checkpoints.
        commit_id: A random id unique to this commit (tells a retried rename apart from a rival's).
        writer: ``{"id", "host", "pid"}`` of the writing process.
        committed_at_ns: Commit time, nanoseconds since the Unix epoch (UTC).
        files: Every user file, sorted by path.
        metrics: Finite metric values.
        metadata: User metadata given at save time (later additions live in METADATA.json).
        step: Optional global step.
        batch: Optional batch index within the epoch (batch-level saves).
        serializer: ``{"name", "version"}`` of the serializer, when one was used.
        framework_versions: Versions of python and the frameworks involved.
        parent: The epoch this run resumed from, if any.
    """

    epoch: int
    run_id: str
    commit_id: str
    writer: Mapping[str, Any]
    committed_at_ns: int
    files: tuple[FileEntry, ...]
    metrics: Mapping[str, float] = attrs.field(factory=dict)
    metadata: Mapping[str, Any] = attrs.field(factory=dict)
    step: int | None = None
    batch: int | None = None
    serializer: Mapping[str, str] | None = None
    framework_versions: Mapping[str, str] = attrs.field(factory=dict)
    parent: int | None = None

    @property
    def total_size(self) -> int:
        """Sum of the sizes of all files."""
        return sum(f.size for f in self.files)

    def to_dict(self) -> dict[str, Any]:
        """Return the JSON form written to ``MANIFEST.json``."""
        return {
            "format": MANIFEST_FORMAT,
            "version": MANIFEST_VERSION,
            "epoch": self.epoch,
            "step": self.step,
            "batch": self.batch,
            "run_id": self.run_id,
            "commit_id": self.commit_id,
            "writer": dict(self.writer),
            "committed_at_ns": self.committed_at_ns,
            "files": [f.to_dict() for f in self.files],
            "total_size": self.total_size,
            "metrics": dict(self.metrics),
            "metadata": dict(self.metadata),
            "serializer": dict(self.serializer) if self.serializer is not None else None,
            "framework_versions": dict(self.framework_versions),
            "parent": self.parent,
        }

    def to_json(self) -> bytes:
        """Return the bytes written to ``MANIFEST.json``."""
        return (json.dumps(self.to_dict(), indent=1, sort_keys=True, allow_nan=False) + "\n").encode()

    @classmethod
    def from_json(cls, data: bytes | str, *, where: str = "MANIFEST.json") -> Manifest:
        """Parse and validate a manifest.

        Args:
            data: The file's content.
            where: What to call it in error messages (usually its path).

        Raises:
            ManifestError: it is not JSON, not a ckptstore manifest, of an unknown version, or a
                field is missing or of the wrong type.
        """
        try:
            raw = json.loads(data)
        except (ValueError, UnicodeDecodeError) as exc:
            raise ManifestError(f"{where} is not valid JSON: {exc}") from None
        return cls.from_dict(raw, where=where)

    @classmethod
    def from_dict(cls, raw: object, *, where: str = "MANIFEST.json") -> Manifest:
        """Validate the JSON form of a manifest; see :meth:`from_json`."""
        if not isinstance(raw, dict):
            raise ManifestError(f"{where} must hold a JSON object")
        if raw.get("format") != MANIFEST_FORMAT:
            raise ManifestError(f"{where} is not a ckptstore manifest (format={raw.get('format')!r})")
        version = raw.get("version")
        if version != MANIFEST_VERSION:
            raise ManifestError(
                f"{where} has manifest version {version!r}; this ckptstore reads version "
                f"{MANIFEST_VERSION} (upgrade ckptstore to read newer stores)"
            )
        try:
            files = tuple(
                FileEntry(
                    path=check_relpath(_typed(f, "path", str, where)),
                    size=_typed(f, "size", int, where),
                    xxh3_128=_typed(f, "xxh3_128", str, where),
                )
                for f in _typed(raw, "files", list, where)
            )
            return cls(
                epoch=_typed(raw, "epoch", int, where),
                run_id=_typed(raw, "run_id", str, where),
                commit_id=_typed(raw, "commit_id", str, where),
                writer=_typed(raw, "writer", dict, where),
                committed_at_ns=_typed(raw, "committed_at_ns", int, where),
                files=files,
                metrics=check_metrics(_typed(raw, "metrics", dict, where)),
                metadata=_typed(raw, "metadata", dict, where),
                step=_optional(raw, "step", int, where),
                batch=_optional(raw, "batch", int, where),
                serializer=_optional(raw, "serializer", dict, where),
                framework_versions=_typed(raw, "framework_versions", dict, where),
                parent=_optional(raw, "parent", int, where),
            )
        except ManifestError:
            raise
        except (TypeError, ValueError, AttributeError) as exc:
            raise ManifestError(f"{where} is malformed: {exc}") from None


def _typed(raw: Any, key: str, kind: type, where: str) -> Any:
    if not isinstance(raw, dict) or key not in raw:
        raise ManifestError(f"{where} is missing the field {key!r}")
    value = raw[key]
    if not isinstance(value, kind) or (kind is int and isinstance(value, bool)):
        raise ManifestError(f"{where}: field {key!r} must be {kind.__name__}, got {type(value).__name__}")
    return value


def _optional(raw: dict[str, Any], key: str, kind: type, where: str) -> Any:
    if raw.get(key) is None:
        return None
    return _typed(raw, key, kind, where)
