"""Ordering rules for "the latest" checkpoint.

"Latest" must be the same answer on every backend and after every crash, so it is defined here once:
the newest commit time recorded in the manifest, then the newest mtime (mtime alone is not reliable:
copies, NFS's one-second mtimes and clock skew all break it), and on a tie the lexicographically
largest name compared numeric-aware, so ``epoch10`` beats ``epoch9``.
"""

from __future__ import annotations

import re

__all__ = ["natural_key"]

_DIGITS = re.compile(r"(\d+)")


def natural_key(name: str) -> tuple[tuple[int, int | str], ...]:
    """Return a sort key that compares runs of digits as numbers.

    ``sorted(["epoch10", "epoch9"], key=natural_key)`` gives ``["epoch9", "epoch10"]``. Numbers sort
    before text at the same position, and ``"007"`` equals ``"7"`` numerically (the longer
    spelling wins a tie, so the order stays total).
    """
    parts: list[tuple[int, int | str]] = []
    for i, piece in enumerate(_DIGITS.split(name)):
        if i % 2:
            parts.append((0, int(piece)))
            parts.append((0, len(piece)))
        elif piece:
            parts.append((1, piece))
    return tuple(parts)
