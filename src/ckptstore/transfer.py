"""Copying a checkpoint's files out of the store: in parallel, verified while read, never a wrong file left.

:class:`~ckptstore.Checkpoint` calls these functions for :meth:`~ckptstore.Checkpoint.download` and
:meth:`~ckptstore.Checkpoint.local_path`; they are handed the backend, the checkpoint's key and URL and
its manifest, and know nothing of the store. The guarantees: a destination that is in the way (a file
where a folder goes, or the reverse) is refused before anything is written; each file is written under
a temporary name and renamed into place only after its size and xxh3-128 digest matched the manifest,
so a destination never holds a file that differs from the checkpoint; ``MANIFEST.json`` is copied
last, so a copy that has one is complete. :func:`check_entry` is the one comparison of what was read
with what the manifest promised, for verification and reads as well as downloads.
"""

from __future__ import annotations

import contextlib
import os
import shutil
import tempfile
import uuid
from collections.abc import Iterable, Iterator
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import TYPE_CHECKING

from ._progress import ProgressOption, make_progress
from .checksum import copy_hashing
from .errors import ChecksumMismatchError, DestinationExistsError, InvalidArgumentTypeError
from .layout import MANIFEST_FILE

if TYPE_CHECKING:
    from .backends.base import Backend
    from .manifest import FileEntry, Manifest

__all__ = ["TRANSFER_THREADS", "check_destination", "check_entry", "download", "scratch_folder"]

TRANSFER_THREADS = 4
"""Files copied at once by downloads and uploads. Within a file, object stores move several parts at
once (``storage_options['transfer_concurrency']``, shared by all the files in flight; see
:mod:`ckptstore.backends._parts`), so memory stays bounded by the store's part budget."""


def download(
    backend: Backend,
    key: str,
    url: str,
    manifest: Manifest,
    dest: str | os.PathLike[str],
    *,
    verify: bool = True,
    progress: ProgressOption = None,
) -> Path:
    """Copy the files and the manifest of the checkpoint at ``key`` into ``dest`` (see ``Checkpoint.download``).

    ``url`` is the checkpoint's URL, for messages. Returns the destination directory.
    """
    if not isinstance(dest, (str, os.PathLike)):
        raise InvalidArgumentTypeError(f"download() needs a destination path, got {type(dest).__name__}")
    target = Path(dest)
    names = [*(e.path for e in manifest.files), MANIFEST_FILE]
    check_destination(target, names, manifest.epoch)
    # Everything goes into a hidden sibling first; only a fully verified copy is moved into place, so a
    # failure (a digest mismatch, an outage, Ctrl-C) leaves nothing at the destination.
    staging = target.parent / f".{target.name}.{uuid.uuid4().hex[:8]}.partial"
    try:
        staging.mkdir(parents=True)
    except (FileExistsError, NotADirectoryError) as exc:  # a parent became a file meanwhile
        raise DestinationExistsError(f"cannot download epoch {manifest.epoch} into {target}: {exc}") from None
    bar = make_progress(progress, manifest.total_size, f"download epoch {manifest.epoch}")

    def fetch(entry: FileEntry) -> None:
        out = staging / entry.path
        out.parent.mkdir(parents=True, exist_ok=True)
        with backend.open_read(f"{key}/{entry.path}") as src, open(out, "xb") as dst:
            size, digest = copy_hashing(src, dst, bar)
        if verify:
            check_entry(f"{url}/{entry.path}", entry, size, digest)

    try:
        with ThreadPoolExecutor(max_workers=TRANSFER_THREADS, thread_name_prefix="ckptstore-get") as pool:
            for future in [pool.submit(fetch, e) for e in manifest.files]:
                future.result()
        (staging / MANIFEST_FILE).write_bytes(backend.read_bytes(f"{key}/{MANIFEST_FILE}"))
        _move_into_place(staging, target, names, manifest.epoch)
    finally:
        if bar is not None:
            bar.close()
        shutil.rmtree(staging, ignore_errors=True)
    return target


def _move_into_place(staging: Path, target: Path, names: Iterable[str], epoch: int) -> None:
    """Rename a verified download onto ``target``: the folder at once, or file by file into an existing one."""
    try:
        os.rename(staging, target)  # a new destination: one rename
        return
    except OSError as exc:
        if not target.is_dir():
            raise DestinationExistsError(f"cannot download epoch {epoch} into {target}: {exc}") from None
    check_destination(target, names, epoch)  # an existing folder: its files of the same names are replaced
    for name in names:
        out = target / name
        out.parent.mkdir(parents=True, exist_ok=True)
        os.replace(staging / name, out)


@contextlib.contextmanager
def scratch_folder(name: str) -> Iterator[Path]:
    """A new temporary folder (``ckptstore-<name>-...``) for a download, removed with everything in it."""
    scratch = Path(tempfile.mkdtemp(prefix=f"ckptstore-{name}-"))
    try:
        yield scratch
    finally:
        shutil.rmtree(scratch, ignore_errors=True)


def check_destination(target: Path, names: Iterable[str], epoch: int) -> None:
    """Refuse a download destination that is in the way, before anything is written.

    ``target`` and its parents must be folders (or not exist); below it, a folder must not stand
    where a file goes, nor a file where a folder goes.
    """
    where = f"cannot download epoch {epoch} into {target}"
    for path in (target, *target.parents):
        if path.exists():
            if not path.is_dir():
                raise DestinationExistsError(f"{where}: {path} is a file, not a folder; choose another destination")
            break
    if not target.is_dir():
        return  # nothing below it yet
    folders: set[str] = set()
    for name in names:
        if (target / name).is_dir():
            raise DestinationExistsError(f"{where}: {target / name} is a folder where the file {name!r} goes")
        folder = name.rpartition("/")[0]
        while folder and folder not in folders:
            folders.add(folder)
            folder = folder.rpartition("/")[0]
    for folder in sorted(folders):
        path = target / folder
        if path.exists() and not path.is_dir():
            raise DestinationExistsError(f"{where}: {path} is a file where the folder {folder!r} goes")


def check_entry(where: str, entry: FileEntry, size: int, digest: str) -> None:
    """Raise :class:`~ckptstore.errors.ChecksumMismatchError` (naming ``where``) unless size and digest match."""
    if size != entry.size:
        raise ChecksumMismatchError(
            f"{where}: size {size} differs from the manifest's {entry.size}"
            + (" (truncated)" if size < entry.size else "")
        )
    if digest != entry.xxh3_128:
        raise ChecksumMismatchError(f"{where}: xxh3-128 {digest} differs from the manifest's {entry.xxh3_128}")
