"""``memory://``: fsspec's in-process memory filesystem, for fast unit tests and examples.

Everything lives in one process, so a process-wide lock makes create-only writes and
compare-and-swap atomic between threads and stores. Nothing survives the process: use it for tests,
never for checkpoints you want to keep.
"""

from __future__ import annotations

import threading

import xxhash

from .base import Capabilities
from .fsspec import FsspecBackend

__all__ = ["MemoryBackend"]

_LOCK = threading.Lock()


class MemoryBackend(FsspecBackend):
    """A store in fsspec's process-global memory filesystem."""

    @property
    def capabilities(self) -> Capabilities:
        """Create-only and compare-and-swap hold within the process (a lock)."""
        return Capabilities(
            atomic_rename=False,
            create_only=True,
            compare_and_swap=True,
            symlinks=False,
            fsync=False,
            mtime_resolution_ns=1_000,
        )

    def write_if(self, key: str, data: bytes, version: str | None) -> bool:
        """Atomic under the process-wide lock."""
        with _LOCK:
            current = self.read_versioned(key)
            if version is None:
                if current is not None:
                    return False
            elif current is None or current[1] != version:
                return False
            self.fs.pipe_file(self._p(key), data)
            return True

    def read_versioned(self, key: str) -> tuple[bytes, str] | None:
        """Content and its hash as the version."""
        try:
            data = self.read_bytes(key)
        except FileNotFoundError:
            return None
        return data, xxhash.xxh3_128_hexdigest(data)

    def write(self, key: str, data: bytes) -> None:
        """Replace under the lock, so a concurrent compare-and-swap sees old or new."""
        with _LOCK:
            self.fs.pipe_file(self._p(key), data)
