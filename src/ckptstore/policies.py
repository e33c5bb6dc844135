"""Keep policies and save decisions: pure functions over checkpoint summaries, with no I/O.

Which checkpoints to keep and whether to save at all are the decisions users most need to predict, so
they live here as small frozen classes that take a list of :class:`CheckpointInfo` and return a
decision with a reason, and a table-driven test can cover them completely. The store applies the
result; nothing here touches storage. The rules that hold for every policy: best, last, pinned
checkpoints and the one a run resumed from are always kept (:func:`plan_gc` keeps them whatever a
policy says), and only the current run's checkpoints are ever candidates for deletion. How they count
(CANDLE's ``keep_limit``, TF's ``max_to_keep``): ``linear(n)`` keeps the ``n`` newest with the last
checkpoint among them, and best and pinned besides, not counted (``linear(3)`` after ten saves with
the best at 3 keeps 3, 8, 9, 10); ``exponential(n)`` counts the same way; ``best(n)`` keeps the ``n``
best, whatever else protects them (Lightning's ``save_top_k``).
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from typing import Literal, Protocol

import attrs

from .errors import InvalidArgumentError, InvalidArgumentTypeError, MissingMetricError

__all__ = [
    "CheckpointInfo",
    "GcDecision",
    "KeepContext",
    "KeepPolicy",
    "SaveDecision",
    "SaveRules",
    "all_",
    "any_of",
    "best",
    "check_keep_policy",
    "decide_save",
    "every",
    "exponential",
    "is_better",
    "linear",
    "plan_gc",
    "resolve_mode",
]

Mode = Literal["min", "max"]

_MAX_HINTS = ("acc", "auc", "f1", "precision", "recall", "fmeasure", "iou", "map", "bleu", "rouge")


def resolve_mode(monitor: str | None, mode: str) -> Mode:
    """Resolve ``"auto"`` the way Keras does, and validate ``"min"``/``"max"``.

    ``auto`` means ``max`` when the metric's name contains one of acc, auc, f1, precision, recall
    (and a few other scores that grow when better), else ``min``.

    Raises:
        InvalidArgumentError: ``mode`` is not min, max or auto.
    """
    if mode == "min":
        return "min"
    if mode == "max":
        return "max"
    if mode != "auto":
        raise InvalidArgumentError(f"mode must be 'min', 'max' or 'auto', got {mode!r}")
    name = (monitor or "").lower()
    return "max" if any(h in name for h in _MAX_HINTS) else "min"


def is_better(value: float, reference: float | None, mode: Mode) -> bool:
    """Return True if ``value`` strictly improves on ``reference`` (None: anything improves)."""
    if reference is None:
        return True
    return value < reference if mode == "min" else value > reference


@attrs.frozen(kw_only=True)
class CheckpointInfo:
    """What a policy may know about a committed checkpoint.

    Attributes:
        epoch: Its epoch number.
        metrics: Its metrics.
        run_id: The run that wrote it.
        committed_at_ns: Commit time in nanoseconds since the Unix epoch.
        size: Total bytes of its files.
    """

    epoch: int
    metrics: Mapping[str, float] = attrs.field(factory=dict)
    run_id: str = ""
    committed_at_ns: int = 0
    size: int = 0


@attrs.frozen(kw_only=True)
class KeepContext:
    """What a keep policy is told besides the checkpoints.

    Attributes:
        protected: Epochs that are kept whatever the policy says (best, last, pinned, the one the run
            resumed from).
        monitor: The store's monitored metric, used by :func:`best` when it names none.
        mode: ``min`` or ``max`` for ``monitor``.
        last: The epoch the ``last`` pointer names (it counts against ``linear``'s and
            ``exponential``'s ``n``: the last checkpoint is one of the ``n`` newest), or None.
        best: The epoch the ``best`` pointer names, or None.
    """

    protected: frozenset[int] = frozenset()
    monitor: str | None = None
    mode: Mode = "min"
    last: int | None = None
    best: int | None = None

    @property
    def uncounted(self) -> frozenset[int]:
        """Protected epochs kept besides a positional policy's ``n``: every protected one but ``last``."""
        return self.protected - {self.last}


class KeepPolicy(Protocol):
    """A keep policy: given the current run's checkpoints, which to keep and why."""

    def select(self, infos: Sequence[CheckpointInfo], ctx: KeepContext) -> dict[int, str]:
        """Return ``{epoch: reason}`` for every checkpoint the policy keeps."""
        ...


_KEEP_HINT = "keep=ckptstore.keep.linear(5)"


def check_keep_policy(value: object, what: str = "keep") -> KeepPolicy:
    """Return ``value`` if it is a keep policy object: it has a ``select(infos, ctx)`` method.

    Args:
        value: The candidate.
        what: What to call it in the message (``option keep``).

    Raises:
        InvalidArgumentTypeError: it is a string, a number, a policy class instead of a policy, or
            anything else without ``select``; the message shows how to make one.
    """
    if isinstance(value, type):
        name = getattr(value, "__name__", "policy")
        raise InvalidArgumentTypeError(
            f"{what} got the class {name}, not a policy: call it, e.g. keep=ckptstore.keep.{name}(5) (or {_KEEP_HINT})"
        )
    if not callable(getattr(value, "select", None)):
        shown = repr(value) if len(repr(value)) <= 40 else f"{repr(value)[:40]}..."
        raise InvalidArgumentTypeError(
            f"{what} must be a keep policy such as {_KEEP_HINT}, ckptstore.keep.best(3) or "
            f"ckptstore.keep.any_of(...), got {shown} ({type(value).__name__})"
        )
    return value  # type: ignore[return-value]


def _positive(_: object, attribute: attrs.Attribute[int], value: int) -> None:
    if isinstance(value, bool) or not isinstance(value, int):
        raise InvalidArgumentTypeError(f"{attribute.name} must be a positive int, got {value!r}")
    if value < 1:
        raise InvalidArgumentError(f"{attribute.name} must be a positive int, got {value!r}")


def _optional_positive(_: object, attribute: attrs.Attribute[int | None], value: int | None) -> None:
    if value is not None:
        _positive(_, attribute, value)  # type: ignore[arg-type]


def _optional_name(_: object, attribute: attrs.Attribute[str | None], value: str | None) -> None:
    if value is not None and (not isinstance(value, str) or not value):
        error = InvalidArgumentTypeError if not isinstance(value, str) else InvalidArgumentError
        raise error(f"{attribute.name} must be a non-empty string or None, got {value!r}")


@attrs.frozen
class linear:
    """Keep the ``n`` newest checkpoints (by epoch), the last checkpoint among them.

    CANDLE's ``keep_limit`` and TF's ``max_to_keep``: ``linear(3)`` after saves 1..10 keeps 8, 9, 10.
    Best and pinned checkpoints are kept besides and do not count: with the best at 3 it keeps 3, 8,
    9, 10. The last checkpoint counts (it is the newest, unless a rollback moved it back; then it
    takes the place of the oldest of the ``n``).

    Args:
        n: How many to keep, the last checkpoint included; best and pinned besides.
    """

    n: int = attrs.field(validator=_positive)

    def select(self, infos: Sequence[CheckpointInfo], ctx: KeepContext) -> dict[int, str]:
        """See :class:`KeepPolicy`."""
        uncounted = ctx.uncounted
        newest = sorted((i.epoch for i in infos if i.epoch not in uncounted), reverse=True)[: self.n]
        if ctx.last is not None and ctx.last not in newest and any(i.epoch == ctx.last for i in infos):
            newest = [ctx.last, *newest[: self.n - 1]]
        return dict.fromkeys(newest, f"linear({self.n}): one of the {self.n} newest")


@attrs.frozen
class exponential:
    """Keep log-spaced checkpoints: dense near the newest, sparse further back.

    Let E be the newest epoch. Every other epoch e falls in bucket ``floor(log2(E - e))``; the
    policy keeps E and the OLDEST epoch of each bucket (keeping the oldest is what keeps the
    spacing stable as E grows). With a cap ``n``, when more than ``n`` remain, the oldest buckets
    are dropped first. Saving epochs 1..64 one by one with no cap leaves 1, 33, 49, 57, 61, 63, 64.

    Args:
        n: At most this many kept (the last checkpoint included; best and pinned besides); None
            for no cap.
    """

    n: int | None = attrs.field(default=None, validator=_optional_positive)

    def select(self, infos: Sequence[CheckpointInfo], ctx: KeepContext) -> dict[int, str]:
        """See :class:`KeepPolicy`."""
        if not infos:
            return {}
        newest = max(i.epoch for i in infos)
        oldest_in_bucket: dict[int, int] = {}
        for info in infos:
            if info.epoch == newest:
                continue
            bucket = math.floor(math.log2(newest - info.epoch))
            current = oldest_in_bucket.get(bucket)
            if current is None or info.epoch < current:
                oldest_in_bucket[bucket] = info.epoch
        label = f"exponential({self.n if self.n is not None else ''})"
        kept: dict[int, str] = {newest: f"{label}: newest"}
        for bucket in sorted(oldest_in_bucket):
            span = f"{newest - 2 ** (bucket + 1) + 1}..{newest - 2**bucket}"
            kept[oldest_in_bucket[bucket]] = f"{label}: oldest of bucket {bucket} (epochs {span})"
        if self.n is not None:
            uncounted = ctx.uncounted
            unprotected = sorted((e for e in kept if e not in uncounted), reverse=True)
            for epoch in unprotected[self.n :]:
                del kept[epoch]
        return kept


@attrs.frozen
class every:
    """Keep every checkpoint whose epoch is divisible by ``k``.

    Args:
        k: The interval.
    """

    k: int = attrs.field(validator=_positive)

    def select(self, infos: Sequence[CheckpointInfo], ctx: KeepContext) -> dict[int, str]:
        """See :class:`KeepPolicy`."""
        return {i.epoch: f"every({self.k})" for i in infos if i.epoch % self.k == 0}


@attrs.frozen
class best:
    """Keep the ``n`` best checkpoints by a metric (Lightning's ``save_top_k``).

    Every checkpoint of the run with the metric competes, protected or not: ``best(1)`` keeps the
    best one, not the best plus the best of the rest. (Last and pinned checkpoints are still kept
    besides by the rules every policy follows.)

    Args:
        n: How many to keep.
        metric: The metric; None means the store's ``monitor``.
        mode: ``min``, ``max`` or ``auto``; None means the store's mode (for its monitor) or auto.
    """

    n: int = attrs.field(validator=_positive)
    metric: str | None = attrs.field(default=None, validator=_optional_name)
    mode: str | None = attrs.field(
        default=None,
        validator=attrs.validators.optional(attrs.validators.in_(("min", "max", "auto"))),
    )

    def select(self, infos: Sequence[CheckpointInfo], ctx: KeepContext) -> dict[int, str]:
        """See :class:`KeepPolicy`."""
        metric = self.metric or ctx.monitor
        if metric is None:
            raise InvalidArgumentError("keep.best() needs a metric: pass metric= or open the store with monitor=")
        if self.mode is not None:
            mode = resolve_mode(metric, self.mode)
        elif metric == ctx.monitor:
            mode = ctx.mode
        else:
            mode = resolve_mode(metric, "auto")
        scored = [i for i in infos if metric in i.metrics]
        scored.sort(key=lambda i: (i.metrics[metric] if mode == "min" else -i.metrics[metric], -i.epoch))
        return {
            i.epoch: f"best({self.n}): {metric}={i.metrics[metric]:.6g} is among the {self.n} best"
            for i in scored[: self.n]
        }


@attrs.frozen
class any_of:
    """Keep what any of the given policies keeps.

    Args:
        policies: The policies to combine.
    """

    policies: tuple[KeepPolicy, ...]

    def __init__(self, *policies: KeepPolicy) -> None:
        if not policies:
            raise InvalidArgumentError("any_of() needs at least one policy")
        for i, policy in enumerate(policies):
            check_keep_policy(policy, f"any_of() argument {i + 1}")
        self.__attrs_init__(tuple(policies))  # type: ignore[attr-defined]

    def select(self, infos: Sequence[CheckpointInfo], ctx: KeepContext) -> dict[int, str]:
        """See :class:`KeepPolicy`."""
        kept: dict[int, str] = {}
        for policy in self.policies:
            for epoch, reason in policy.select(infos, ctx).items():
                kept[epoch] = f"{kept[epoch]}; {reason}" if epoch in kept else reason
        return kept


@attrs.frozen
class all_:
    """Keep everything (the default policy)."""

    def select(self, infos: Sequence[CheckpointInfo], ctx: KeepContext) -> dict[int, str]:
        """See :class:`KeepPolicy`."""
        return {i.epoch: "keep everything (no keep policy)" for i in infos}


@attrs.frozen(kw_only=True)
class GcDecision:
    """What garbage collection does with one checkpoint, and why.

    Attributes:
        epoch: The checkpoint's epoch.
        action: ``"keep"`` or ``"delete"``.
        reason: Why, in words.
    """

    epoch: int
    action: Literal["keep", "delete"]
    reason: str


def plan_gc(
    infos: Sequence[CheckpointInfo],
    policy: KeepPolicy,
    *,
    run_id: str,
    protected: Mapping[int, str],
    monitor: str | None = None,
    mode: Mode = "min",
    last: int | None = None,
    best: int | None = None,
) -> list[GcDecision]:
    """Decide keep or delete for every checkpoint, sorted by epoch.

    Args:
        infos: Every committed checkpoint of the store.
        policy: The keep policy; applied to ``run_id``'s checkpoints only.
        run_id: The current run; other runs' checkpoints are always kept.
        protected: ``{epoch: reason}`` for best, last and pinned checkpoints.
        monitor: The store's monitor, for metric-based policies.
        mode: The monitor's mode.
        last: The epoch of the ``last`` pointer (counted by ``linear`` and ``exponential``).
        best: The epoch of the best checkpoint.
    """
    own = [i for i in infos if i.run_id == run_id]
    ctx = KeepContext(protected=frozenset(protected), monitor=monitor, mode=mode, last=last, best=best)
    kept = policy.select(own, ctx)
    decisions = []
    for info in sorted(infos, key=lambda i: i.epoch):
        if info.epoch in protected:
            decisions.append(GcDecision(epoch=info.epoch, action="keep", reason=protected[info.epoch]))
        elif info.run_id != run_id:
            decisions.append(
                GcDecision(
                    epoch=info.epoch,
                    action="keep",
                    reason=f"written by another run ({info.run_id})",
                )
            )
        elif info.epoch in kept:
            decisions.append(GcDecision(epoch=info.epoch, action="keep", reason=kept[info.epoch]))
        else:
            decisions.append(GcDecision(epoch=info.epoch, action="delete", reason="not kept by the keep policy"))
    return decisions


@attrs.frozen(kw_only=True)
class SaveRules:
    """When to save, with CANDLE's and Keras's parameters.

    Attributes:
        skip_epochs: Epochs below this number are not saved (CANDLE ``ckpt_skip_epochs``).
        save_interval: Save when ``epoch % save_interval == 0``; 0 saves nothing (CANDLE).
        save_best_only: Save only when the monitored metric improves (Keras).
        monitor: The metric that defines "best"; None for no best tracking.
        mode: ``min`` or ``max`` (already resolved from ``auto``).
        initial_value_threshold: A value the metric must beat before the first save (Keras).
    """

    skip_epochs: int = attrs.field(default=0, validator=attrs.validators.ge(0))
    save_interval: int = attrs.field(default=1, validator=attrs.validators.ge(0))
    save_best_only: bool = False
    monitor: str | None = None
    mode: Mode = "min"
    initial_value_threshold: float | None = None

    def __attrs_post_init__(self) -> None:
        if self.save_best_only and self.monitor is None:
            raise InvalidArgumentError("save_best_only=True needs monitor= (the metric that defines best)")
        if self.initial_value_threshold is not None and not math.isfinite(self.initial_value_threshold):
            raise InvalidArgumentError("initial_value_threshold must be finite")


@attrs.frozen(kw_only=True)
class SaveDecision:
    """Whether to save an epoch, and why.

    Attributes:
        save: True to save.
        reason: Why, in words.
        improved: True if the monitored metric beats the best so far (and the threshold).
    """

    save: bool
    reason: str
    improved: bool = False

    def __bool__(self) -> bool:
        return self.save


def decide_save(rules: SaveRules, epoch: int, metrics: Mapping[str, float], best_value: float | None) -> SaveDecision:
    """Decide whether to save ``epoch``.

    Args:
        rules: The store's save rules.
        epoch: The epoch being considered.
        metrics: Its metrics (already validated).
        best_value: The best monitored value saved so far (read from the store), or None.

    Raises:
        MissingMetricError: the store monitors a metric that ``metrics`` lacks.
    """
    improved = False
    value: float | None = None
    if rules.monitor is not None:
        if rules.monitor not in metrics:
            names = ", ".join(sorted(metrics)) or "none"
            raise MissingMetricError(
                f"the store monitors {rules.monitor!r} but the metrics passed for epoch {epoch} "
                f"do not include it (got: {names})"
            )
        value = metrics[rules.monitor]
        reference = best_value
        if rules.initial_value_threshold is not None and (
            reference is None or is_better(rules.initial_value_threshold, reference, rules.mode)
        ):
            reference = rules.initial_value_threshold
        improved = is_better(value, reference, rules.mode)
    if rules.save_interval == 0:
        return SaveDecision(save=False, reason="save_interval=0 disables saving", improved=improved)
    if epoch < rules.skip_epochs:
        return SaveDecision(save=False, reason=f"epoch {epoch} < skip_epochs={rules.skip_epochs}", improved=improved)
    if rules.save_best_only:
        if improved:
            return SaveDecision(save=True, reason=f"{rules.monitor}={value:.6g} improved", improved=True)
        return SaveDecision(
            save=False,
            reason=f"save_best_only: {rules.monitor}={value:.6g} did not improve on {best_value}",
            improved=False,
        )
    if epoch % rules.save_interval == 0:
        return SaveDecision(
            save=True,
            reason=f"epoch {epoch} % save_interval={rules.save_interval} == 0",
            improved=improved,
        )
    if improved:
        return SaveDecision(save=True, reason=f"{rules.monitor}={value:.6g} improved", improved=True)
    return SaveDecision(save=False, reason=f"epoch {epoch} is not a multiple of save_interval={rules.save_interval}")
