"""What a backend can do, declared rather than inferred from its type."""

from __future__ import annotations

import attrs

__all__ = ["Capabilities"]


@attrs.frozen(kw_only=True)
class Capabilities:
    """The properties of a storage backend that the commit and pointer strategies depend on.

    Attributes:
        atomic_rename: A directory can be renamed in one atomic step onto a name that does not exist
            (local disk, NFS); commits then stage in ``work/`` and rename.
        create_only: A write can be made to fail if the object exists (O_EXCL, If-None-Match).
        compare_and_swap: An object can be replaced only if it is unchanged since it was read.
        symlinks: Relative symlinks can be created (the ``best``/``last`` links).
        fsync: Files and directories can be flushed to stable storage.
        mtime_resolution_ns: Granularity of modification times (1 s on some NFS servers).
    """

    atomic_rename: bool
    create_only: bool
    compare_and_swap: bool
    symlinks: bool
    fsync: bool
    mtime_resolution_ns: int = 1
