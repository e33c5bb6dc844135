"""Checks applied to every value that comes from a caller before anything touches storage.

A bad epoch, metric or file name must fail here, with a typed error that names it, so that the store
is never left half-changed by input it should have refused.
"""

from __future__ import annotations

import json
import math
import numbers
from collections.abc import Mapping
from typing import Any

from .errors import InvalidArgumentError, InvalidEpochError, InvalidMetricError, UnsafePathError

RESERVED_NAMES = frozenset({"MANIFEST.json", "METADATA.json", ".claim"})
"""Top-level names inside an epoch directory that belong to ckptstore."""

_MAX_NAME_BYTES = 255


def check_epoch(epoch: object, width: int) -> int:
    """Return ``epoch`` if it is a non-negative int that fits ``width`` digits.

    Raises:
        InvalidEpochError: otherwise (bools, floats and strings are refused too).
    """
    if isinstance(epoch, bool) or not isinstance(epoch, numbers.Integral):
        raise InvalidEpochError(f"epoch must be a non-negative int, got {epoch!r}")
    value = int(epoch)
    if value < 0:
        raise InvalidEpochError(f"epoch must be a non-negative int, got {value}")
    if value >= 10**width:
        raise InvalidEpochError(f"epoch {value} does not fit the store's naming width of {width} digits")
    return value


def check_optional_int(name: str, value: object) -> int | None:
    """Return ``value`` as an int, or None; refuse negatives and non-integers."""
    if value is None:
        return None
    if isinstance(value, bool) or not isinstance(value, numbers.Integral) or int(value) < 0:
        raise InvalidArgumentError(f"{name} must be a non-negative int or None, got {value!r}")
    return int(value)


def check_metrics(metrics: Mapping[str, Any] | None) -> dict[str, float]:
    """Return the metrics as a plain ``{name: float}`` dict.

    Raises:
        InvalidMetricError: a name is not a non-empty string, or a value is not a finite real
            number (NaN and infinities are refused: they cannot be compared or stored in JSON).
    """
    if metrics is None:
        return {}
    if not isinstance(metrics, Mapping):
        raise InvalidMetricError(f"metrics must be a mapping of name to number, got {type(metrics).__name__}")
    out: dict[str, float] = {}
    for name, value in metrics.items():
        if not isinstance(name, str) or not name:
            raise InvalidMetricError(f"metric names must be non-empty strings, got {name!r}")
        if isinstance(value, bool):
            raise InvalidMetricError(f"metric {name!r} must be a number, got a bool")
        try:
            number = float(value)
        except (TypeError, ValueError):
            raise InvalidMetricError(f"metric {name!r} must be a number, got {value!r}") from None
        if not math.isfinite(number):
            raise InvalidMetricError(f"metric {name!r} is {number}; only finite values can be stored")
        out[name] = number
    return out


def check_metadata(metadata: Mapping[str, Any] | None) -> dict[str, Any]:
    """Return a JSON round-tripped copy of ``metadata``.

    Raises:
        InvalidArgumentError: it is not a mapping with string keys, or not JSON-serializable
            (NaN and infinities included).
    """
    if metadata is None:
        return {}
    if not isinstance(metadata, Mapping):
        raise InvalidArgumentError(f"metadata must be a mapping, got {type(metadata).__name__}")
    try:
        text = json.dumps(dict(metadata), allow_nan=False, sort_keys=True)
    except (TypeError, ValueError) as exc:
        raise InvalidArgumentError(f"metadata must be JSON-serializable: {exc}") from None
    result: dict[str, Any] = json.loads(text)
    return result


def check_relpath(name: object, *, allow_reserved: bool = False) -> str:
    """Return a normalized relative POSIX path for a file inside a checkpoint.

    Raises:
        UnsafePathError: the name is empty, absolute, contains ``..``, a NUL byte, a backslash or
            an empty component, is too long, or is a reserved name.
    """
    if not isinstance(name, str) or not name:
        raise UnsafePathError(f"file names must be non-empty strings, got {name!r}")
    if "\x00" in name:
        raise UnsafePathError(f"file name {name!r} contains a NUL byte")
    if "\\" in name:
        raise UnsafePathError(f"file name {name!r} contains a backslash; use '/' to separate folders")
    if name.startswith("/") or (len(name) > 1 and name[1] == ":"):
        raise UnsafePathError(f"file name {name!r} is absolute; names are relative to the checkpoint")
    parts = name.split("/")
    for part in parts:
        if part in ("", ".", ".."):
            raise UnsafePathError(f"file name {name!r} has an empty, '.' or '..' component")
        if len(part.encode("utf-8", "surrogatepass")) > _MAX_NAME_BYTES:
            raise UnsafePathError(f"file name component {part[:40]!r}... is longer than 255 bytes")
    if not allow_reserved and parts[0] in RESERVED_NAMES and len(parts) == 1:
        raise UnsafePathError(f"{name!r} is reserved for ckptstore's own records")
    return "/".join(parts)
