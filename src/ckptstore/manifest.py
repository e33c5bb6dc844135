"""The commit record of a checkpoint: ``MANIFEST.json``.

The manifest is written last, after every file it lists is durable, and a directory without a valid
manifest is not a checkpoint. It lists every file with its size and xxh3-128 digest, so a checkpoint
can be verified byte for byte long after it was written, and it records who wrote it, when (in UTC
nanoseconds), with which metrics and metadata, and which checkpoint it resumed from. It is
schema-versioned and validated on every read: a manifest that does not parse, that is missing a
field, or whose values are out of range (a time past the year 9999, a negative size, a file that is
also the folder of another) raises :class:`~ckptstore.errors.ManifestError` rather than being
half-trusted, so one bad record is skipped and reported while the rest of the store lists.
"""

from __future__ import annotations

import json
import re
from collections.abc import Mapping
from typing import Any

import attrs

from ._validate import MAX_FILES, check_file_set, check_metrics, check_relpath
from .errors import ManifestError

__all__ = [
    "MANIFEST_FORMAT",
    "MANIFEST_VERSION",
    "MAX_EPOCH",
    "MAX_INT",
    "MAX_RANKS",
    "MAX_TIME_NS",
    "MAX_WIDTH",
    "FileEntry",
    "Manifest",
    "check_descriptor",
]

MANIFEST_FORMAT = "ckptstore.manifest"
MANIFEST_VERSION = 1

MAX_WIDTH = 18
"""The most digits an epoch folder name may have (``width`` of a store)."""
MAX_EPOCH = 10**MAX_WIDTH - 1
"""The largest epoch any store can hold."""
MAX_INT = 2**63 - 1
"""The largest size, step, batch or parent epoch a record may hold (a signed 64-bit integer)."""
MAX_TIME_NS = 253402300800 * 10**9 - 1
"""The last nanosecond of the year 9999 (UTC): the latest time a ``datetime`` can show."""

_DIGEST = re.compile(r"[0-9a-f]{32}")
_ATTEMPT = re.compile(r"[A-Za-z0-9][A-Za-z0-9._-]{0,199}")

MAX_RANKS = 1_000_000
"""The most ranks one sharded checkpoint may have."""


def _in_range(low: int, high: int) -> Any:
    """An attrs validator: an int (never a bool) from ``low`` to ``high`` inclusive."""

    def check(_: object, attribute: attrs.Attribute[int], value: int) -> None:
        if isinstance(value, bool) or not isinstance(value, int):
            raise ManifestError(f"field {attribute.name!r} must be an int, got {type(value).__name__}")
        if not low <= value <= high:
            raise ManifestError(f"field {attribute.name!r} must be from {low} to {high}, got {value}")

    return check


def _optional_in_range(low: int, high: int) -> Any:
    inner = _in_range(low, high)

    def check(instance: object, attribute: attrs.Attribute[int | None], value: int | None) -> None:
        if value is not None:
            inner(instance, attribute, value)

    return check


@attrs.frozen(kw_only=True)
class FileEntry:
    """One file of a checkpoint, as the manifest records it.

    Attributes:
        path: Relative POSIX path inside the epoch directory.
        size: Size in bytes.
        xxh3_128: The xxh3-128 digest as 32 hex characters.
    """

    path: str
    size: int = attrs.field(validator=_in_range(0, MAX_INT))
    xxh3_128: str = attrs.field(validator=attrs.validators.matches_re(_DIGEST))

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
        shard: Only in sharded saves (:mod:`ckptstore.sharded`): ``{"world_size", "attempt"}`` in the
            checkpoint's manifest, ``{"world_size", "attempt", "rank"}`` in a rank's part manifest.
            Absent from every other manifest, so manifests written before it stay valid as they are.
    """

    epoch: int = attrs.field(validator=_in_range(0, MAX_EPOCH))
    run_id: str
    commit_id: str
    writer: Mapping[str, Any]
    committed_at_ns: int = attrs.field(validator=_in_range(0, MAX_TIME_NS))
    files: tuple[FileEntry, ...]
    metrics: Mapping[str, float] = attrs.field(factory=dict)
    metadata: Mapping[str, Any] = attrs.field(factory=dict)
    step: int | None = attrs.field(default=None, validator=_optional_in_range(0, MAX_INT))
    batch: int | None = attrs.field(default=None, validator=_optional_in_range(0, MAX_INT))
    serializer: Mapping[str, str] | None = None
    framework_versions: Mapping[str, str] = attrs.field(factory=dict)
    parent: int | None = attrs.field(default=None, validator=_optional_in_range(0, MAX_EPOCH))
    shard: Mapping[str, Any] | None = attrs.field(default=None)

    @shard.validator
    def _check_shard(self, _: attrs.Attribute[Any], value: Mapping[str, Any] | None) -> None:
        if value is None:
            return
        if not isinstance(value, Mapping) or not set(value) <= {"world_size", "attempt", "rank"}:
            raise ManifestError("field 'shard' must hold world_size, attempt and (in a part) rank")
        world = value.get("world_size")
        if isinstance(world, bool) or not isinstance(world, int) or not 1 <= world <= MAX_RANKS:
            raise ManifestError(f"field shard.world_size must be an int from 1 to {MAX_RANKS}, got {world!r}")
        attempt = value.get("attempt")
        if not isinstance(attempt, str) or not _ATTEMPT.fullmatch(attempt):
            raise ManifestError(f"field shard.attempt must be a short id of letters, digits, '.', '-', got {attempt!r}")
        if "rank" in value:
            rank = value["rank"]
            if isinstance(rank, bool) or not isinstance(rank, int) or not 0 <= rank < world:
                raise ManifestError(f"field shard.rank must be an int from 0 to {world - 1}, got {rank!r}")

    def __attrs_post_init__(self) -> None:
        if self.total_size > MAX_INT:
            raise ManifestError(f"the files' sizes add up to {self.total_size}, more than {MAX_INT}")

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
            **({"shard": dict(self.shard)} if self.shard is not None else {}),
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
        except RecursionError:
            raise ManifestError(f"{where} nests JSON too deeply to be a manifest") from None
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
            entries = _typed(raw, "files", list, where)
            if len(entries) > MAX_FILES:
                raise ManifestError(f"{where} lists {len(entries)} files, more than {MAX_FILES}")
            files = tuple(
                FileEntry(
                    path=check_relpath(_typed(f, "path", str, where)),
                    size=_typed(f, "size", int, where),
                    xxh3_128=_typed(f, "xxh3_128", str, where),
                )
                for f in entries
            )
            check_file_set((f.path for f in files), portable=False)
            return cls(
                epoch=_typed(raw, "epoch", int, where),
                run_id=_text(raw, "run_id", where),
                commit_id=_text(raw, "commit_id", where),
                writer=_scalars(raw, "writer", where, (str, int)),
                committed_at_ns=_typed(raw, "committed_at_ns", int, where),
                files=files,
                metrics=check_metrics(_typed(raw, "metrics", dict, where)),
                metadata=_typed(raw, "metadata", dict, where),
                step=_optional(raw, "step", int, where),
                batch=_optional(raw, "batch", int, where),
                serializer=_scalars(raw, "serializer", where, (str,)) if raw.get("serializer") is not None else None,
                framework_versions=_scalars(raw, "framework_versions", where, (str,)),
                parent=_optional(raw, "parent", int, where),
                shard=_optional(raw, "shard", dict, where),
            )
        except ManifestError as exc:
            if str(exc).startswith(where):
                raise
            raise ManifestError(f"{where}: {exc}") from None
        except (TypeError, ValueError, AttributeError, ArithmeticError) as exc:
            raise ManifestError(f"{where} is malformed: {exc}") from None


def check_descriptor(descriptor: Mapping[str, Any], where: str) -> None:
    """Check the fields of a store descriptor (``ckptstore.json``) that every reader relies on.

    Args:
        descriptor: The parsed JSON object.
        where: Its location, for messages.

    Raises:
        ManifestError: ``width`` is not an int from 1 to :data:`MAX_WIDTH` (a bool is refused), or
            ``store_id`` is not a non-empty string; the message names the file and the field.
    """
    width = descriptor.get("width")
    if isinstance(width, bool) or not isinstance(width, int) or not 1 <= width <= MAX_WIDTH:
        raise ManifestError(f"{where}: field 'width' must be an int from 1 to {MAX_WIDTH}, got {width!r}")
    store_id = descriptor.get("store_id")
    if not isinstance(store_id, str) or not store_id:
        raise ManifestError(f"{where}: field 'store_id' must be a non-empty string, got {store_id!r}")


def _typed(raw: Any, key: str, kind: type, where: str) -> Any:
    if not isinstance(raw, dict) or key not in raw:
        raise ManifestError(f"{where} is missing the field {key!r}")
    value = raw[key]
    if not isinstance(value, kind) or (kind is int and isinstance(value, bool)):
        raise ManifestError(f"{where}: field {key!r} must be {kind.__name__}, got {type(value).__name__}")
    return value


def _text(raw: Any, key: str, where: str) -> str:
    value: str = _typed(raw, key, str, where)
    if not value:
        raise ManifestError(f"{where}: field {key!r} must be a non-empty string")
    return value


def _scalars(raw: Any, key: str, where: str, kinds: tuple[type, ...]) -> dict[str, Any]:
    """A JSON object whose values are all of ``kinds`` (never a bool for int), or None."""
    value: dict[str, Any] = _typed(raw, key, dict, where)
    for name, item in value.items():
        if item is not None and (isinstance(item, bool) or not isinstance(item, kinds)):
            kind = " or ".join(k.__name__ for k in kinds)
            raise ManifestError(f"{where}: field {key}.{name} must be {kind}, got {type(item).__name__}")
    return value


def _optional(raw: dict[str, Any], key: str, kind: type, where: str) -> Any:
    if raw.get(key) is None:
        return None
    return _typed(raw, key, kind, where)
