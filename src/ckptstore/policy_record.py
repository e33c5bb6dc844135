"""The keep policy as ``ckptstore.json`` records it: JSON in, JSON out, and in the words a user writes it.

A store records the keep policy it was made with, so a later ``ckptstore.open(url)``, the CLI's ``gc``
and the callbacks apply the same one (see :func:`ckptstore.config.open_descriptor`). Only the policies
of :mod:`ckptstore.keep` have a JSON form; a custom policy object is not recorded. Pure; no I/O.
"""

from __future__ import annotations

from typing import Any

from .errors import InvalidArgumentError
from .policies import KeepPolicy, all_, any_of, best, every, exponential, linear

__all__ = ["describe_policy", "policy_from_json", "policy_to_json"]

_RECORDABLE: dict[str, tuple[type, tuple[str, ...]]] = {
    "linear": (linear, ("n",)),
    "exponential": (exponential, ("n",)),
    "every": (every, ("k",)),
    "best": (best, ("n", "metric", "mode")),
    "all": (all_, ()),
}


def policy_to_json(policy: KeepPolicy) -> dict[str, Any] | None:
    """The JSON form of a policy built from :mod:`ckptstore.keep` (``{"linear": {"n": 3}}``); None for others.

    A custom policy (any object with ``select``) cannot be recorded: the store then records none.
    """
    if isinstance(policy, any_of):
        parts = [policy_to_json(p) for p in policy.policies]
        return None if any(p is None for p in parts) else {"any_of": parts}
    for name, (kind, fields) in _RECORDABLE.items():
        if type(policy) is kind:
            return {name: {field: getattr(policy, field) for field in fields}}
    return None


def policy_from_json(raw: object) -> KeepPolicy:
    """The policy :func:`policy_to_json` recorded.

    Raises:
        InvalidArgumentError: ``raw`` is not the JSON form of a policy.
    """
    if not isinstance(raw, dict) or len(raw) != 1:
        raise InvalidArgumentError(f"a recorded keep policy is an object with one key, got {raw!r}")
    ((name, args),) = raw.items()
    if name == "any_of":
        if not isinstance(args, list) or not args:
            raise InvalidArgumentError(f"any_of needs a non-empty list of policies, got {args!r}")
        return any_of(*(policy_from_json(item) for item in args))  # type: ignore[arg-type]  # its own __init__
    if name not in _RECORDABLE or not isinstance(args, dict):
        raise InvalidArgumentError(f"unknown keep policy {name!r} (or its arguments are not an object)")
    kind, fields = _RECORDABLE[name]
    if set(args) - set(fields):
        raise InvalidArgumentError(f"keep policy {name!r} takes {', '.join(fields) or 'no arguments'}, got {args!r}")
    try:
        policy: KeepPolicy = kind(**args)
    except (TypeError, ValueError) as exc:
        raise InvalidArgumentError(f"keep policy {name!r}: {exc}") from None
    return policy


def describe_policy(raw: object) -> str:
    """A recorded policy in the words a user writes it: ``linear(3)``, ``any_of(linear(3), every(10))``."""
    if not isinstance(raw, dict) or len(raw) != 1:
        return repr(raw)
    ((name, args),) = raw.items()
    if name == "any_of" and isinstance(args, list):
        return f"any_of({', '.join(describe_policy(a) for a in args)})"
    if not isinstance(args, dict):
        return repr(raw)
    shown = ", ".join(
        f"{k}={v!r}" if k != next(iter(args), None) else repr(v) for k, v in args.items() if v is not None
    )
    return f"{'all_' if name == 'all' else name}({shown})"
