"""Finding files that ckptstore did not write: the newest by a pattern, and Guild's select-min/max.

Training code often leaves a directory of files named after their epoch and metrics (Keras's
``weights.{epoch:02d}-{val_loss:.2f}.h5``). These functions find the right one on any backend:
:func:`resolve_latest` the newest by modification time (ties broken among the tied files only, by the
numeric-aware largest name), :func:`select_min`/:func:`select_max` the one whose name holds the
smallest/largest number. Each returns a :class:`FileMatch` that can be opened or downloaded (with an
optional new name, as Guild's ``rename``). The rules themselves are pure functions in
:mod:`ckptstore.resolve`.
"""

from __future__ import annotations

import datetime as _dt
import os
import re
from collections.abc import Mapping
from pathlib import Path
from typing import IO, Any

import attrs

from ._validate import RESERVED_NAMES
from .backends.base import Backend
from .backends.registry import open_backend
from .checksum import copy_hashing
from .errors import CheckpointNotFoundError, InvalidArgumentError
from .layout import EPOCHS, INTERNAL_FILES, INTERNAL_FOLDERS, POINTER_NAMES
from .resolve import most_recent, select_by_value

__all__ = [
    "FileMatch",
    "latest_match",
    "resolve_latest",
    "select_max",
    "select_min",
    "split_pattern_url",
    "value_match",
]

_SPECIAL = re.compile(r"[{*?\[]")


@attrs.frozen(kw_only=True)
class FileMatch:
    """One file found by :func:`resolve_latest`, :func:`select_min` or :func:`select_max`.

    Attributes:
        url: The file's full URL.
        path: Its path relative to the directory searched.
        size: Bytes.
        mtime_ns: Modification time (ns, UTC; one-second resolution on S3).
        value: The number read from the name (select-min/max), else None.
        epoch: The committed checkpoint holding the file, when searched in a store.
    """

    url: str
    path: str
    size: int
    mtime_ns: int
    value: float | None = None
    epoch: int | None = None
    _backend: Backend = attrs.field(eq=False, repr=False, alias="backend")

    @property
    def name(self) -> str:
        """The file's base name."""
        return self.path.rsplit("/", 1)[-1]

    @property
    def modified(self) -> _dt.datetime:
        """The modification time, timezone-aware (UTC)."""
        return _dt.datetime.fromtimestamp(self.mtime_ns / 1e9, tz=_dt.timezone.utc)

    def open(self) -> IO[bytes]:
        """A binary stream reading the file."""
        return self._backend.open_read(self.path)

    def read_bytes(self) -> bytes:
        """The file's content."""
        return self._backend.read_bytes(self.path)

    def download(self, dest: str | os.PathLike[str], *, rename: str | None = None) -> Path:
        """Copy the file into the directory ``dest`` (created if missing), under ``rename`` if given.

        ``rename`` is Guild's: a new base name for the copy (``weights.hdf5``), so downstream code
        finds it under a fixed name; the match keeps the original name in :attr:`url`.

        Returns:
            The local file.
        """
        target_dir = Path(dest)
        target_dir.mkdir(parents=True, exist_ok=True)
        name = rename or self.name
        if "/" in name or name in ("", ".", ".."):
            raise InvalidArgumentError(f"rename must be a plain file name, got {name!r}")
        target = target_dir / name
        tmp = target_dir / f".{name}.part"
        with self._backend.open_read(self.path) as src, open(tmp, "wb") as dst:
            copy_hashing(src, dst)
        os.replace(tmp, target)
        return target


def split_pattern_url(url: str) -> tuple[str, str]:
    """Split ``s3://b/run/weights.{epoch:02d}.h5`` into the directory URL and the pattern."""
    match = _SPECIAL.search(url)
    cut = url.rfind("/", 0, match.start() if match else len(url))
    if cut < 0:
        return ".", url
    return url[:cut] or "/", url[cut + 1 :]


def _files(url: str, storage_options: Mapping[str, Any] | None) -> tuple[Backend, dict[str, tuple[int, int]]]:
    backend = open_backend(url, storage_options)
    return backend, backend.stat_files("")


def _match(
    backend: Backend, path: str, stat: tuple[int, int], value: float | None = None, epoch: int | None = None
) -> FileMatch:
    return FileMatch(
        url=f"{backend.url}/{path}",
        path=path,
        size=stat[0],
        mtime_ns=stat[1],
        value=value,
        epoch=epoch,
        backend=backend,
    )


def latest_match(
    backend: Backend,
    files: Mapping[str, tuple[int, int]],
    pattern: str | re.Pattern[str],
    owner: Mapping[str, int] | None = None,
) -> FileMatch:
    """The newest of ``files`` (path -> (size, mtime)) matching ``pattern``; ``owner`` maps paths to epochs.

    Raises:
        CheckpointNotFoundError: no file matches.
    """
    found = most_recent({p: st[1] for p, st in files.items()}, pattern)
    if found is None:
        raise CheckpointNotFoundError(f"no file under {backend.url} matches {_show(pattern)}")
    return _match(backend, found, files[found], None, (owner or {}).get(found))


def value_match(
    backend: Backend,
    files: Mapping[str, tuple[int, int]],
    regex: str | re.Pattern[str],
    mode: str,
    owner: Mapping[str, int] | None = None,
) -> FileMatch:
    """Guild's select-min/max over ``files`` (see :func:`select_min`).

    Raises:
        CheckpointNotFoundError: no file matches.
        InvalidArgumentError: the regex is invalid or has no group.
    """
    try:
        found = select_by_value({p: st[1] for p, st in files.items()}, regex, mode)
    except (ValueError, re.error) as exc:
        raise InvalidArgumentError(str(exc)) from None
    if found is None:
        raise CheckpointNotFoundError(f"no file under {backend.url} matches {_show(regex)} with a number in its group")
    return _match(backend, found[0], files[found[0]], found[1], (owner or {}).get(found[0]))


def resolve_latest(
    url: str | os.PathLike[str],
    pattern: str | re.Pattern[str] | None = None,
    *,
    storage_options: Mapping[str, Any] | None = None,
) -> FileMatch:
    """The newest file matching a Keras template, a glob or a regex, on any backend.

    ``resolve_latest("runs/x/weights.{epoch:02d}-{val_loss:.2f}.h5")`` or
    ``resolve_latest("s3://b/run1", "*.ckpt")``. Newest modification time wins; among files with the
    same newest time, the numeric-aware largest name (so ``epoch10`` beats ``epoch9``).

    Args:
        url: A directory URL, or a URL ending in the pattern.
        pattern: The pattern, if ``url`` is only the directory. Templates use ``{field}``
            placeholders; globs ``*``, ``?``, ``[...]``; a regex is a compiled pattern or a string
            starting with ``re:``. Matched against the path relative to the directory, or its base name.
        storage_options: Options for the backend.

    Raises:
        CheckpointNotFoundError: no file matches.
    """
    text = os.fspath(url)
    if pattern is None:
        text, pattern = split_pattern_url(text)
    backend, files = _files(text, storage_options)
    return latest_match(backend, files, pattern)


def _select(url: str | os.PathLike[str], regex: str | re.Pattern[str], mode: str, options: Any) -> FileMatch:
    backend, files = _files(os.fspath(url), options)
    return value_match(backend, files, regex, mode)


def select_min(
    url: str | os.PathLike[str], regex: str | re.Pattern[str], *, storage_options: Mapping[str, Any] | None = None
) -> FileMatch:
    """Guild's ``select-min``: the file whose first regex group, read as a number, is smallest.

    Raises:
        CheckpointNotFoundError: no file matches.
        InvalidArgumentError: the regex is invalid or has no group.
    """
    return _select(url, regex, "min", storage_options)


def select_max(
    url: str | os.PathLike[str], regex: str | re.Pattern[str], *, storage_options: Mapping[str, Any] | None = None
) -> FileMatch:
    r"""Guild's ``select-max``: ``select_max("s3://b/run1", r"weights\.\d+-0\.(\d+)\.hdf5")``.

    Raises:
        CheckpointNotFoundError: no file matches.
        InvalidArgumentError: the regex is invalid or has no group.
    """
    return _select(url, regex, "max", storage_options)


def _show(pattern: str | re.Pattern[str]) -> str:
    return repr(pattern.pattern if isinstance(pattern, re.Pattern) else pattern)


def store_files(backend: Backend, committed: Mapping[str, int]) -> tuple[dict[str, tuple[int, int]], dict[str, int]]:
    """The files :func:`latest_match` and :func:`value_match` search in a store: path -> (size, mtime ns).

    The user files of committed checkpoints (``committed``: folder name -> epoch; the second result
    maps each such file to its epoch) and files other tools put in the store; never ckptstore's own
    records (manifests, claims, the index, pointers, the log) or uncommitted saves.
    """
    files: dict[str, tuple[int, int]] = {}
    owner: dict[str, int] = {}
    for path, stat in backend.stat_files("").items():
        parts = path.split("/")
        if parts[0] == EPOCHS:
            if len(parts) < 3 or parts[1] not in committed or parts[-1] in RESERVED_NAMES:
                continue
            owner[path] = committed[parts[1]]
        elif parts[0] in INTERNAL_FOLDERS or path in INTERNAL_FILES or parts[0] in POINTER_NAMES:
            continue
        files[path] = stat
    return files, owner
