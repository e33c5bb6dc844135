"""A listed file of a checkpoint, hashed in the same read a serializer makes of it.

:meth:`CheckpointFiles.reader` hands one to a serializer: each piece is hashed while the next is read,
and closing it compares the file with the manifest, so a load never needs a second pass over the bytes.
"""

from __future__ import annotations

import contextlib
import os
from typing import Protocol

from ..checksum import HashingReader

__all__ = ["Owner", "VerifyingReader"]


class Owner(Protocol):
    """What a reader needs of the :class:`~ckptstore.serializers.CheckpointFiles` that opened it."""

    @property
    def verified(self) -> bool:
        """Whether files are hashed and compared with the manifest."""
        ...

    @property
    def url(self) -> str:
        """The checkpoint's URL, for messages."""
        ...

    def _is_good(self, rel: str) -> bool: ...

    def _check(self, rel: str, size: int, digest: str) -> None: ...


class VerifyingReader(HashingReader):
    """A listed file being read by a serializer, hashed in the same read (see :meth:`CheckpointFiles.reader`).

    Attributes:
        size: The file's size on disk.
        label: The file's URL, for messages.
    """

    def __init__(self, owner: Owner, rel: str, fd: int) -> None:
        try:
            size = os.fstat(fd).st_size
        except BaseException:
            os.close(fd)
            raise
        super().__init__(fd, hashing=owner.verified)
        self._owner = owner
        self._rel = rel
        self.size = size
        self.label = f"{owner.url}/{rel}"

    def readall(self) -> bytes:
        """Read to the end of the file in one pass, hashed as it is read."""
        buf = bytearray(max(self.size - self.tell(), 0))
        n = self.readinto(buf) if buf else 0
        del buf[n:]
        rest = super().readall()  # the file grew since fstat (it then fails verification)
        return bytes(buf) + rest if rest else bytes(buf)

    def close(self) -> None:
        """Read and hash what is left, compare the file with the manifest, and close it.

        Raises:
            ChecksumMismatchError: the file differs from the manifest (the load fails).
        """
        if self.closed:
            return
        try:
            if self.sequential and not self._owner._is_good(self._rel):
                size, digest = self.finish()
                self._owner._check(self._rel, size, digest)
        finally:
            super().close()

    def __del__(self) -> None:
        """Close the file without verifying (a reader dropped unclosed is hashed when the load ends)."""
        with contextlib.suppress(Exception):
            HashingReader.close(self)
