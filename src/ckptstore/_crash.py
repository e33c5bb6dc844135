"""Named crash points for the crash tests (gofail-style fault injection).

The crash tests must kill a writer at exact moments of the commit protocol (after the files are
durable, after the manifest, after the rename, between pointer updates). A child process started
with ``CKPTSTORE_CRASHPOINT=<name>`` SIGKILLs itself when it reaches that point; otherwise a point
costs one comparison. It is read once at import.
"""

from __future__ import annotations

import os
import signal

_TARGET = os.environ.get("CKPTSTORE_CRASHPOINT", "")

POINTS = (
    "after_files",
    "after_manifest",
    "before_rename",
    "after_rename",
    "after_last",
    "after_pointers",
    "gc_after_trash",
)
INDEX_POINTS = ("index_after_flush", "index_after_merge")
"""Points inside the index's compaction (reached only once the head fills; see test_scale_history.py)."""


def point(name: str) -> None:
    """SIGKILL this process if the environment names ``name`` as the crash point."""
    if _TARGET and name == _TARGET:
        os.kill(os.getpid(), signal.SIGKILL)
