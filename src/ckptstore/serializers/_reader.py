"""What a serializer may read: the files a checkpoint's manifest lists, and nothing else.

A serializer's own index (numpy's ``arrays.json``, the pytree's ``tree.json``) is data inside the
checkpoint, and a checkpoint may have been written by someone else: a name in it is untrusted input,
and could be ``../../elsewhere/secret.npy`` or an absolute path. :meth:`Checkpoint.load` therefore
never hands a serializer the checkpoint's directory; it hands it a :class:`CheckpointFiles`, which
opens a name only if

- it is a safe relative path (:func:`~ckptstore._validate.check_relpath`; otherwise
  :class:`~ckptstore.errors.UnsafePathError`),
- the manifest lists it (otherwise :class:`~ckptstore.errors.IncompleteCheckpointError`: the
  checkpoint does not hold a file its own content refers to),
- and on disk it is a regular file reached without following a symlink (otherwise
  :class:`~ckptstore.errors.UnsafeEntryError`; FIFOs and devices are refused without blocking).

Verification happens in the read that loads (DESIGN.md section 3: verification before a load
returns, without a second pass over the bytes). :func:`checkpoint_files` first checks the checkpoint's
layout (the manifest on disk is the one that was read, no file is missing, none is unlisted, none is a
symlink or special file); then every file a serializer reads through :meth:`CheckpointFiles.reader`,
:meth:`~CheckpointFiles.open` or :meth:`~CheckpointFiles.read_bytes` is hashed with xxh3-128 while it is
read (each piece as soon as it is read, while it is in the CPU cache) and compared with the manifest
when the reader reaches its end; a file handed out by :meth:`~CheckpointFiles.local_file` is hashed
before its path is returned, and one handed out by :meth:`~CheckpointFiles.map` before it is mapped.
When the serializer returns, every listed file it did not read in order is hashed, and only then does
``load()`` return its value: a corrupted file raises
:class:`~ckptstore.errors.ChecksumMismatchError`, never data (also when the corruption made the
serializer fail first). ``load(verify=False)`` skips the hashing, never the three checks above.
"""

from __future__ import annotations

import contextlib
import io
import mmap
import os
import stat
import threading
import types
import warnings
from collections.abc import Iterator, Mapping
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import TYPE_CHECKING, BinaryIO, cast

from .._nofollow import regular_files
from .._validate import RESERVED_NAMES, check_relpath
from ..checksum import hash_fd
from ..errors import (
    ChecksumMismatchError,
    IncompleteCheckpointError,
    InvalidArgumentError,
    ManifestError,
    SerializerError,
    UnexpectedFileError,
    UnsafeEntryError,
    UnsafePathError,
    VerificationError,
)
from ..layout import MANIFEST_FILE
from ._verifying import VerifyingReader
from ._view import CheckpointView

if TYPE_CHECKING:
    from ..manifest import FileEntry, Manifest

__all__ = ["CheckpointFiles", "CheckpointView", "VerifyingReader", "checkpoint_files"]

_VERIFY_THREADS = 4
"""Files hashed at once when the serializer left some unread (a VM disk serves a few reads in parallel)."""

_O_CLOEXEC = getattr(os, "O_CLOEXEC", 0)
_O_BINARY = getattr(os, "O_BINARY", 0)
_NOFOLLOW_WALK = os.open in os.supports_dir_fd and hasattr(os, "O_NOFOLLOW") and hasattr(os, "O_DIRECTORY")
"""Open each component relative to its parent's fd, never following a symlink (POSIX); else lstat each."""


class CheckpointFiles:
    """The files of one checkpoint, as a serializer may read them (passed to ``Serializer.load``).

    Every method takes a name as the manifest spells it (``arrays/00000.npy``). Names read from a
    serializer's own index are checked exactly like any other: pass ``named_by="arrays.json"`` so the
    error says where a bad name came from. A reader is valid only while the ``load()`` that made it
    runs; on object stores its files are a temporary download that is removed afterwards.

    Attributes:
        checkpoint: The checkpoint being loaded (its metrics, metadata, URL).
        verified: Whether every file was re-hashed against the manifest before the serializer ran
            (False only under ``load(verify=False)``).
    """

    def __init__(self, checkpoint: CheckpointView, root: Path, *, verified: bool) -> None:
        """Read the files of ``checkpoint`` from ``root``, its epoch directory or a verified copy of it.

        Raises:
            IncompleteCheckpointError: ``root`` is missing.
            UnsafeEntryError: ``root`` is a symlink or not a directory.
        """
        self.checkpoint = checkpoint
        self.verified = verified
        self._root = root
        self._files: Mapping[str, FileEntry] = types.MappingProxyType(checkpoint.files)
        self._closed = False
        self._lock = threading.Lock()
        self._good: set[str] = set()
        self._bad: dict[str, ChecksumMismatchError] = {}
        try:
            st = os.lstat(root)
        except FileNotFoundError:
            raise IncompleteCheckpointError(f"{checkpoint.url} is missing") from None
        if not stat.S_ISDIR(st.st_mode):
            raise UnsafeEntryError(
                f"{checkpoint.url} is a symlink or a special file, not a directory; ckptstore never follows one"
            )

    def __repr__(self) -> str:
        state = "closed" if self._closed else ("verified" if self.verified else "not verified")
        return f"<CheckpointFiles epoch={self.epoch} files={len(self._files)} {state} of {self.checkpoint.url}>"

    # -- what the manifest lists -----------------------------------------------------------------------------
    @property
    def epoch(self) -> int:
        """The checkpoint's epoch (or step) number."""
        return self.checkpoint.epoch

    @property
    def manifest(self) -> Manifest:
        """The checkpoint's commit record."""
        return self.checkpoint.manifest

    @property
    def url(self) -> str:
        """The checkpoint's location (for messages)."""
        return self.checkpoint.url

    @property
    def files(self) -> Mapping[str, FileEntry]:
        """Every file the manifest lists, by name (read-only)."""
        return self._files

    @property
    def names(self) -> tuple[str, ...]:
        """The names of every file the manifest lists, sorted."""
        return tuple(sorted(self._files))

    def __contains__(self, name: object) -> bool:
        return isinstance(name, str) and name in self._files

    # -- reading ----------------------------------------------------------------------------------------------
    def reader(self, name: str, *, named_by: str | None = None) -> VerifyingReader:
        """Open a listed file for reading in the pass that verifies it (the fast way to load).

        ``readinto`` of a large buffer reads the file straight into it, 1 MiB at a time, hashing each
        piece right after it is read (while it is in the CPU cache). Closing the reader
        (``with files.reader(name) as r``) reads and hashes whatever was left unread and compares the
        file with the manifest, so a serializer that returns after the ``with`` block returns
        verified data.

        Args:
            name: The file's name as the manifest lists it.
            named_by: Where ``name`` came from (``"arrays.json"``), for the error message.

        Raises:
            UnsafePathError, IncompleteCheckpointError, UnsafeEntryError: as :meth:`open`.
            ChecksumMismatchError: (on close) the file differs from the manifest.
        """
        rel = self._listed(name, named_by)
        return VerifyingReader(self, rel, self._open_fd(rel))

    def open(self, name: str, mode: str = "rb", *, named_by: str | None = None) -> BinaryIO:
        """Open a listed file for reading (a seekable binary stream; ``mode="r"`` for text).

        The stream hashes what it reads; when it is read in order and closed, the file has been
        verified in that read (a stream that was sought is hashed again when the load ends).

        Args:
            name: The file's name as the manifest lists it.
            mode: ``"rb"`` (default) or ``"r"`` (UTF-8 text).
            named_by: Where ``name`` came from (``"arrays.json"``), for the error message.

        Raises:
            UnsafePathError: ``name`` is absolute, has a ``..`` component, or is a reserved name.
            IncompleteCheckpointError: the manifest does not list ``name``, or the file is missing.
            UnsafeEntryError: the file, or a folder on its way, is a symlink or a special file.
        """
        if mode not in ("rb", "r"):
            raise InvalidArgumentError(f"checkpoints are read-only; mode must be 'rb' or 'r', got {mode!r}")
        stream = io.BufferedReader(self.reader(name, named_by=named_by), buffer_size=1 << 20)
        if mode == "r":
            return cast(BinaryIO, io.TextIOWrapper(stream, encoding="utf-8"))
        return cast(BinaryIO, stream)

    def read_bytes(self, name: str, *, named_by: str | None = None) -> bytes:
        """The content of a listed file (checked as :meth:`open` checks it, verified in the same read)."""
        with self.reader(name, named_by=named_by) as f:
            return f.readall()

    def local_file(self, name: str, *, named_by: str | None = None) -> Path:
        """The local path of a listed file, for libraries that need a path (memory maps, zip readers).

        The path is inside the checkpoint's folder (or its verified copy), and every component of it
        was checked with ``lstat``: no symlink, the file a regular file. Unless ``load(verify=False)``,
        the file is hashed (in one read) and compared with the manifest before its
        path is returned; the library's own read then finds it in the page cache.

        Raises:
            UnsafePathError, IncompleteCheckpointError, UnsafeEntryError: as :meth:`open`.
            ChecksumMismatchError: the file differs from the manifest.
        """
        rel = self._listed(name, named_by)
        path = self._lstat_walk(rel)
        inside = os.path.realpath(self._root)
        if os.path.commonpath([inside, os.path.realpath(path)]) != inside:  # pragma: no cover - lstat walk
            raise UnsafeEntryError(f"{self.url}/{rel} resolves outside the checkpoint")
        if self.verified:
            self._hash_now(rel)
        return path

    def map(self, name: str, *, named_by: str | None = None) -> mmap.mmap:
        """A private (copy-on-write) memory map of a listed file, verified before it is returned.

        The file is opened once (no symlink followed, as :meth:`open`), hashed from that descriptor in
        one read (which leaves its pages in the page cache), compared with the manifest,
        and mapped from the same descriptor: the map is the file that was verified, not whatever a
        path names a moment later. Writes into the map stay in this process; the file never changes.
        The map outlives ``load()`` (arrays built on it keep it alive); on object stores it maps the
        temporary download, whose disk space is freed when the last view of it is. As with any
        memory map, a file truncated by another process under a live map faults on access (SIGBUS):
        ckptstore itself never rewrites a committed file.

        Raises:
            UnsafePathError, IncompleteCheckpointError, UnsafeEntryError: as :meth:`open`.
            ChecksumMismatchError: the file differs from the manifest.
            SerializerError: the file is empty (nothing can be mapped).
        """
        rel = self._listed(name, named_by)
        fd = self._open_fd(rel)
        try:
            size = os.fstat(fd).st_size
            if self.verified and not self._is_good(rel):
                size, digest = hash_fd(fd)
                self._check(rel, size, digest)
            if size == 0:
                raise SerializerError(f"{self.url}/{rel} is empty; an empty file cannot be memory-mapped")
            return mmap.mmap(fd, size, access=mmap.ACCESS_COPY)
        finally:
            os.close(fd)

    @property
    def path(self) -> Path:
        """Deprecated: the checkpoint's local folder (what ``Checkpoint.path`` gave serializers before).

        ``path / name`` bypasses every check above; use :meth:`local_file` or :meth:`open`.
        """
        warnings.warn(
            "Serializer.load receives a CheckpointFiles since ckptstore 0.1: use files.local_file(name) or "
            "files.open(name), which refuse names the manifest does not list, instead of files.path / name",
            DeprecationWarning,
            stacklevel=2,
        )
        self._check_open()
        return self._root

    def close(self) -> None:
        """End the reader's life (``load()`` does this when the serializer returns)."""
        self._closed = True

    # -- verification -----------------------------------------------------------------------------------------
    def _check(self, rel: str, size: int, digest: str) -> None:
        """Record the size and digest of ``rel`` as read; raise if they differ from the manifest."""
        entry = self._files[rel]
        where = f"{self.url}/{rel}"
        error: ChecksumMismatchError | None = None
        if size != entry.size:
            error = ChecksumMismatchError(
                f"{where}: size {size} differs from the manifest's {entry.size}"
                + (" (truncated)" if size < entry.size else "")
            )
        elif digest != entry.xxh3_128:
            error = ChecksumMismatchError(f"{where}: xxh3-128 {digest} differs from the manifest's {entry.xxh3_128}")
        with self._lock:
            if error is None:
                self._good.add(rel)
                return
            self._bad.setdefault(rel, error)
        raise error

    def _is_good(self, rel: str) -> bool:
        with self._lock:
            return rel in self._good

    def _hash_now(self, rel: str) -> None:
        """Hash ``rel`` (unless already verified) and compare it with the manifest."""
        if self._is_good(rel):
            return
        fd = self._open_fd(rel)
        try:
            size, digest = hash_fd(fd)
        finally:
            os.close(fd)
        self._check(rel, size, digest)

    def _verify_rest(self) -> None:
        """Hash every listed file not yet verified in order, a few at a time; raise the first mismatch."""
        with self._lock:
            if self._bad:
                raise self._bad[min(self._bad)]
            todo = [rel for rel in sorted(self._files) if rel not in self._good]
        errors: dict[str, Exception] = {}

        def one(rel: str) -> None:
            try:
                self._hash_now(rel)
            except (VerificationError, UnsafeEntryError, IncompleteCheckpointError) as exc:
                errors[rel] = exc

        if len(todo) == 1:
            one(todo[0])
        elif todo:
            with ThreadPoolExecutor(max_workers=_VERIFY_THREADS, thread_name_prefix="ckptstore-verify") as pool:
                list(pool.map(one, todo))
        if errors:
            raise errors[min(errors)]

    def _check_layout(self) -> None:
        """What :meth:`Checkpoint.verify` checks besides the digests, on the folder being read.

        Raises:
            IncompleteCheckpointError: the manifest or a listed file is missing.
            ManifestError: the manifest changed or no longer parses.
            UnexpectedFileError: an unlisted file is present, or an entry is a symlink or special file.
        """
        from ..manifest import Manifest  # the manifest module is above the serializers

        where = f"{self.url}/{MANIFEST_FILE}"
        try:
            fd = self._open_fd(MANIFEST_FILE)
        except (FileNotFoundError, IncompleteCheckpointError):
            raise IncompleteCheckpointError(f"{where} is missing") from None
        except UnsafeEntryError as exc:
            raise UnexpectedFileError(f"epoch {self.epoch} fails verification: {exc}") from exc
        with os.fdopen(fd, "rb") as f:
            raw = f.read()
        if Manifest.from_json(raw, where=where) != self.manifest:
            raise ManifestError(f"{where} changed since this checkpoint was read")
        present: set[str] = set()
        cut = len(os.fspath(self._root)) + 1
        try:
            for entry in regular_files(self._root, why="checkpoints hold regular files only"):
                rel = entry.path[cut:].replace(os.sep, "/")
                if rel in RESERVED_NAMES:
                    continue
                if rel not in self._files:
                    raise UnexpectedFileError(f"{self.url}/{rel} is not listed in the manifest of epoch {self.epoch}")
                present.add(rel)
        except UnsafeEntryError as exc:
            raise UnexpectedFileError(f"epoch {self.epoch} fails verification: {exc}") from exc
        missing = sorted(set(self._files) - present)
        if missing:
            raise IncompleteCheckpointError(
                f"checkpoint epoch {self.epoch} is missing {len(missing)} file(s): {', '.join(missing[:5])}"
            )

    # -- checks -----------------------------------------------------------------------------------------------
    def _check_open(self) -> None:
        if self._closed:
            raise InvalidArgumentError(
                f"the files of epoch {self.epoch} were used after load() returned; read them inside Serializer.load"
            )

    def _listed(self, name: str, named_by: str | None) -> str:
        self._check_open()
        source = (
            f"{named_by} in epoch {self.epoch} names" if named_by else f"epoch {self.epoch}: the serializer asked for"
        )
        try:
            rel = check_relpath(name)
        except UnsafePathError as exc:
            raise UnsafePathError(f"{source} {name!r}, which is not a file inside the checkpoint: {exc}") from None
        if rel not in self._files:
            raise IncompleteCheckpointError(
                f"{source} {rel!r}, which the manifest of {self.url} does not list; "
                "a serializer reads only the files a checkpoint's manifest lists"
            )
        return rel

    def _lstat_walk(self, rel: str) -> Path:
        """Check each component of ``rel`` with lstat: folders, then a regular file, never a symlink."""
        parts = rel.split("/")
        path = self._root
        for i, part in enumerate(parts):
            path = path / part
            shown = f"{self.url}/{'/'.join(parts[: i + 1])}"
            try:
                mode = os.lstat(path).st_mode
            except (FileNotFoundError, NotADirectoryError):
                raise IncompleteCheckpointError(
                    f"{self.url}/{rel} is listed in the manifest of epoch {self.epoch} but missing"
                ) from None
            if stat.S_ISLNK(mode):
                raise UnsafeEntryError(f"{shown} is a symlink; ckptstore never reads a checkpoint's file through one")
            if i < len(parts) - 1 and not stat.S_ISDIR(mode):
                raise IncompleteCheckpointError(f"{shown} is not a folder, so {self.url}/{rel} is missing")
            if i == len(parts) - 1 and not stat.S_ISREG(mode):
                raise UnsafeEntryError(f"{shown} is not a regular file (a FIFO, socket, device or folder)")
        return path

    def _open_fd(self, rel: str) -> int:
        """Open ``rel`` read-only without following a symlink anywhere below the root, and without blocking."""
        if not _NOFOLLOW_WALK:  # pragma: no cover - Windows: no dir_fd; check, then open
            return os.open(self._lstat_walk(rel), os.O_RDONLY | _O_BINARY)
        parts = rel.split("/")
        folder = os.O_RDONLY | os.O_DIRECTORY | os.O_NOFOLLOW | _O_CLOEXEC
        parent = os.open(self._root, folder)  # the epoch folder itself is no symlink either
        try:
            for part in parts[:-1]:
                child = os.open(part, folder, dir_fd=parent)
                os.close(parent)
                parent = child
            fd = os.open(parts[-1], os.O_RDONLY | os.O_NOFOLLOW | os.O_NONBLOCK | _O_CLOEXEC, dir_fd=parent)
        except OSError:
            self._lstat_walk(rel)  # raises the typed error that explains it (symlink, missing, not a folder)
            raise
        finally:
            os.close(parent)
        try:
            if not stat.S_ISREG(os.fstat(fd).st_mode):
                raise UnsafeEntryError(f"{self.url}/{rel} is not a regular file (a FIFO, socket, device or folder)")
            os.set_blocking(fd, True)
        except BaseException:
            os.close(fd)
            raise
        return fd


@contextlib.contextmanager
def checkpoint_files(checkpoint: CheckpointView, *, verify: bool = True) -> Iterator[CheckpointFiles]:
    """A :class:`CheckpointFiles` over the files of ``checkpoint``, verified as they are read.

    Local and NFS stores: the epoch directory; object stores: a download into a private temporary
    folder, removed afterwards. With ``verify``, the layout is checked before the ``with`` block and
    every file is hashed in the read that loads it; files the block did not read in order are hashed
    when it ends, and a mismatch raises :class:`~ckptstore.errors.ChecksumMismatchError` then, so the
    block's result is never used. If the block raises and a file differs from the manifest, the
    mismatch is raised instead (chained to the serializer's error): corruption is the cause.
    """
    with checkpoint.local_path(verify=False) as root:
        files = CheckpointFiles(checkpoint, root, verified=verify)
        try:
            if verify:
                files._check_layout()
            try:
                yield files
            except Exception as exc:
                if verify and not isinstance(exc, VerificationError):
                    try:
                        files._verify_rest()
                    except VerificationError as mismatch:
                        raise mismatch from exc
                raise
            if verify:
                files._verify_rest()
        finally:
            files.close()
