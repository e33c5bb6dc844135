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

The files are those of the verified checkpoint: the epoch directory after :meth:`Checkpoint.verify` on
local and NFS stores, the verified download on object stores. ``load(verify=False)`` skips the
re-hash, never the three checks above.
"""

from __future__ import annotations

import contextlib
import io
import os
import stat
import types
import warnings
from collections.abc import Iterator, Mapping
from contextlib import AbstractContextManager
from pathlib import Path
from typing import TYPE_CHECKING, Any, BinaryIO, Protocol, cast

from .._validate import check_relpath
from ..errors import IncompleteCheckpointError, InvalidArgumentError, UnsafeEntryError, UnsafePathError

if TYPE_CHECKING:
    from ..manifest import FileEntry, Manifest

__all__ = ["CheckpointFiles", "CheckpointView", "checkpoint_files"]

_O_CLOEXEC = getattr(os, "O_CLOEXEC", 0)
_O_BINARY = getattr(os, "O_BINARY", 0)
_NOFOLLOW_WALK = os.open in os.supports_dir_fd and hasattr(os, "O_NOFOLLOW") and hasattr(os, "O_DIRECTORY")
"""Open each component relative to its parent's fd, never following a symlink (POSIX); else lstat each."""


class CheckpointView(Protocol):
    """What a reader needs of the checkpoint it reads (a :class:`~ckptstore.Checkpoint` has this shape).

    What its manifest says, and a verified local copy of its files; nothing of the store it came from.
    """

    @property
    def epoch(self) -> int:
        """The epoch (or step) number."""
        ...

    @property
    def url(self) -> str:
        """The checkpoint's location as a URL."""
        ...

    @property
    def manifest(self) -> Manifest:
        """The validated commit record."""
        ...

    @property
    def files(self) -> Mapping[str, FileEntry]:
        """Every file the manifest lists, by name."""
        ...

    @property
    def metrics(self) -> dict[str, float]:
        """The metrics recorded at save time."""
        ...

    @property
    def metadata(self) -> dict[str, Any]:
        """User metadata, as changed since the save."""
        ...

    def local_path(self, *, verify: bool = True) -> AbstractContextManager[Path]:
        """The checkpoint's files in a local folder, re-hashed first (``verify``), for the ``with`` block."""
        ...


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
    def open(self, name: str, mode: str = "rb", *, named_by: str | None = None) -> BinaryIO:
        """Open a listed file for reading (a seekable binary stream; ``mode="r"`` for text).

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
        rel = self._listed(name, named_by)
        stream = os.fdopen(self._open_fd(rel), "rb")
        if mode == "r":
            return cast(BinaryIO, io.TextIOWrapper(stream, encoding="utf-8"))
        return cast(BinaryIO, stream)

    def read_bytes(self, name: str, *, named_by: str | None = None) -> bytes:
        """The content of a listed file (checked as :meth:`open` checks it)."""
        with self.open(name, named_by=named_by) as f:
            return f.read()

    def local_file(self, name: str, *, named_by: str | None = None) -> Path:
        """The local path of a listed file, for libraries that need a path (memory maps, zip readers).

        The path is inside the verified copy of the checkpoint, and every component of it was checked
        with ``lstat``: no symlink, the file a regular file.

        Raises:
            UnsafePathError, IncompleteCheckpointError, UnsafeEntryError: as :meth:`open`.
        """
        rel = self._listed(name, named_by)
        path = self._lstat_walk(rel)
        inside = os.path.realpath(self._root)
        if os.path.commonpath([inside, os.path.realpath(path)]) != inside:  # pragma: no cover - lstat walk
            raise UnsafeEntryError(f"{self.url}/{rel} resolves outside the checkpoint")
        return path

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
    """A :class:`CheckpointFiles` over the verified files of ``checkpoint``, for the ``with`` block.

    Local and NFS stores: the epoch directory, re-hashed first (``verify=True``). Object stores: a
    download into a private temporary folder, verified while it is read and removed afterwards.
    """
    with checkpoint.local_path(verify=verify) as root:
        files = CheckpointFiles(checkpoint, root, verified=verify)
        try:
            yield files
        finally:
            files.close()
