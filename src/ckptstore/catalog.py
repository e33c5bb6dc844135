"""How checkpoints are ordered and which one is "best": pure functions, the same rule everywhere.

Listings (``list``, ``top``, the CLI's ``ls``), the ``best`` pointer's repair and recompute, and gc's
protection of the best checkpoint all rank through these functions, so they can never disagree: a
tie goes to the earliest epoch (the first to reach the value, which is also the rule the ``best``
pointer follows as saves arrive), and checkpoints without the metric come last, by epoch. No I/O.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable, Sequence
from typing import Literal, Protocol, TypeVar

from .policies import Mode

__all__ = ["Ranked", "best_of", "ordered"]


class Ranked(Protocol):
    """What ranking needs of a checkpoint."""

    @property
    def epoch(self) -> int:
        """The epoch (ties go to the earliest)."""
        ...


R = TypeVar("R", bound=Ranked)


def best_of(scored: Sequence[R], value: Callable[[R], float], mode: Mode) -> R:
    """The best of ``scored`` by ``value``; on a tie, the earliest epoch."""
    sign = 1 if mode == "min" else -1
    return min(scored, key=lambda c: (sign * value(c), c.epoch))


def ordered(
    checkpoints: Iterable[R],
    *,
    by: Callable[[R], float | None],
    order: Literal["asc", "desc"],
) -> list[R]:
    """``checkpoints`` sorted by ``by`` (ties: earliest epoch first); those where ``by`` is None last, by epoch."""
    items = sorted(checkpoints, key=lambda c: c.epoch)
    scored = [(c, v) for c in items if (v := by(c)) is not None]
    unscored = [c for c in items if by(c) is None]
    sign = -1 if order == "desc" else 1
    scored.sort(key=lambda item: (sign * item[1], item[0].epoch))
    return [c for c, _ in scored] + unscored
