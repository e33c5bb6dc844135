"""Checks applied to every value that comes from a caller before anything touches storage.

A bad epoch, metric or file name must fail here, with a typed error that names it, so that the store
is never left half-changed by input it should have refused. The validators of the options of
:func:`ckptstore.open` are in :mod:`ckptstore._options`.
"""

from __future__ import annotations

import json
import math
import numbers
import re
from collections.abc import Iterable, Iterator, Mapping
from typing import Any

from .errors import (
    InvalidArgumentError,
    InvalidArgumentTypeError,
    InvalidEpochError,
    InvalidMetricError,
    UnsafePathError,
)

RESERVED_NAMES = frozenset({"MANIFEST.json", "METADATA.json", ".claim"})
"""Top-level names inside an epoch directory that belong to ckptstore."""

_MAX_NAME_BYTES = 255

MAX_METADATA_DEPTH = 64
"""Containers (dicts and lists) nested deeper than this are refused in metadata."""

MAX_FILES = 1_000_000
"""Files one checkpoint may hold (what a manifest may list)."""

_CONTROL = re.compile("[\x00-\x1f\x7f-\x9f\u2028\u2029]")
_LOG_ESCAPES = {"\n": "\\n", "\r": "\\r", "\t": "\\t"}


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


def check_count(name: str, value: object) -> int:
    """Return ``value`` if it is a non-negative int (a count or a limit).

    Raises:
        InvalidArgumentTypeError: it is not an int (a bool, a float and a string included).
        InvalidArgumentError: it is negative.
    """
    if isinstance(value, bool) or not isinstance(value, numbers.Integral):
        raise InvalidArgumentTypeError(
            f"{name} must be a non-negative int, got {_short(value)} ({type(value).__name__})"
        )
    if value < 0:
        raise InvalidArgumentError(f"{name} must be a non-negative int, got {value}")
    return int(value)


def check_optional_text(name: str, value: object) -> str | None:
    """Return ``value`` if it is None or a non-empty string (a metric name, a sort key).

    Raises:
        InvalidArgumentTypeError: it is neither.
        InvalidArgumentError: it is an empty string.
    """
    if value is None:
        return None
    if not isinstance(value, str):
        raise InvalidArgumentTypeError(f"{name} must be a string, got {_short(value)} ({type(value).__name__})")
    if not value:
        raise InvalidArgumentError(f"{name} must be a non-empty string")
    return value


def check_metrics(metrics: Mapping[str, Any] | None) -> dict[str, float]:
    """Return the metrics as a plain ``{name: float}`` dict.

    A value must be a real number: an ``int`` or ``float``, any :class:`numbers.Real` (numpy
    scalars, ``Fraction``), or a 0-d array or tensor of a numeric dtype (numpy, torch). Strings and
    bytes are refused even when they spell a number, as are bools, complex numbers and arrays with
    more than one element.

    Raises:
        InvalidMetricError: a name is not a non-empty string, or a value is not a finite real
            number (NaN and infinities are refused: they cannot be compared or stored in JSON; an
            int too large for a float is refused too).
    """
    if metrics is None:
        return {}
    if not isinstance(metrics, Mapping):
        raise InvalidMetricError(f"metrics must be a mapping of name to number, got {type(metrics).__name__}")
    out: dict[str, float] = {}
    for name, value in metrics.items():
        if not isinstance(name, str) or not name:
            raise InvalidMetricError(f"metric names must be non-empty strings, got {name!r}")
        out[name] = _metric_value(name, value)
    return out


def _metric_value(name: str, value: object) -> float:
    """``value`` as a finite float, or :class:`InvalidMetricError` naming the metric."""
    kind = type(value).__name__
    if isinstance(value, (str, bytes, bytearray, memoryview)):
        raise InvalidMetricError(
            f"metric {name!r} must be a number, got the {kind} {_short(value)}; pass float(...) if it is one"
        )
    if isinstance(value, bool) or _dtype_kind(value) == "b":
        raise InvalidMetricError(f"metric {name!r} must be a number, got a bool ({value!r})")
    if not isinstance(value, numbers.Real):
        if isinstance(value, numbers.Complex) or _dtype_kind(value) not in ("", "i", "u", "f"):
            raise InvalidMetricError(f"metric {name!r} must be a real number, got the {kind} {_short(value)}")
        if getattr(value, "ndim", 0) != 0 or not callable(getattr(type(value), "__float__", None)):
            raise InvalidMetricError(
                f"metric {name!r} must be one number (an int, a float, a 0-d array or tensor), "
                f"got {kind} {_short(value)}"
            )
    try:
        number = float(value)  # type: ignore[arg-type]
    except OverflowError:
        raise InvalidMetricError(f"metric {name!r} is {_short(value)}, too large for a float") from None
    except (TypeError, ValueError):
        raise InvalidMetricError(f"metric {name!r} must be a number, got {kind} {_short(value)}") from None
    if not math.isfinite(number):
        raise InvalidMetricError(f"metric {name!r} is {number}; only finite values can be stored")
    return number


def _dtype_kind(value: object) -> str:
    """The kind of an array's or tensor's dtype (numpy's letters: b, i, u, f, c, ...); "" for other values."""
    dtype = getattr(value, "dtype", None)
    if dtype is None:
        return ""
    kind = getattr(dtype, "kind", None)
    if isinstance(kind, str):
        return kind
    text = str(dtype)  # torch: torch.float32, torch.bool, torch.complex64, ...
    if "bool" in text:
        return "b"
    if "complex" in text:
        return "c"
    return "f" if getattr(dtype, "is_floating_point", False) else "i"


def _short(value: object) -> str:
    text = repr(value)
    return text if len(text) <= 60 else f"{text[:40]}...({len(text)} characters)"


def check_metadata(metadata: Mapping[str, Any] | None) -> dict[str, Any]:
    """Return a JSON round-tripped copy of ``metadata``.

    Raises:
        InvalidArgumentTypeError: it is not a mapping, or a key at any depth is not a string (JSON
            would silently turn ``1`` into ``"1"``).
        InvalidArgumentError: it nests dicts and lists deeper than :data:`MAX_METADATA_DEPTH`, is
            circular, or is not JSON-serializable (NaN and infinities included).
    """
    if metadata is None:
        return {}
    if not isinstance(metadata, Mapping):
        raise InvalidArgumentTypeError(f"metadata must be a mapping, got {type(metadata).__name__}")
    check_json_tree(metadata, "metadata")
    try:
        text = json.dumps(dict(metadata), allow_nan=False, sort_keys=True)
    except (TypeError, ValueError, RecursionError) as exc:
        raise InvalidArgumentError(f"metadata must be JSON-serializable: {exc}") from None
    result: dict[str, Any] = json.loads(text)
    return result


def check_json_tree(value: object, what: str, *, max_depth: int = MAX_METADATA_DEPTH) -> None:
    """Refuse non-string keys, nesting deeper than ``max_depth`` and cycles, without recursion.

    Args:
        value: The dicts and lists to walk (other values are left to ``json.dumps``).
        what: What to call it in messages (``metadata``).
        max_depth: Most containers allowed on one path from the top.

    Raises:
        InvalidArgumentTypeError: a key is not a string.
        InvalidArgumentError: too deep, or circular.
    """
    if not isinstance(value, (Mapping, list, tuple)):
        return
    stack: list[tuple[int, Iterator[tuple[str, object]]]] = [(id(value), _children(value, what, "top level"))]
    on_path = {id(value)}
    while stack:
        for _where, child in stack[-1][1]:
            if not isinstance(child, (Mapping, list, tuple)):
                continue
            if id(child) in on_path:
                raise InvalidArgumentError(f"{what} is circular (it contains itself); it cannot be stored as JSON")
            if len(stack) >= max_depth:
                raise InvalidArgumentError(
                    f"{what} nests dicts and lists more than {max_depth} levels deep; flatten it"
                )
            on_path.add(id(child))
            stack.append((id(child), _children(child, what, _where)))
            break
        else:
            on_path.discard(stack.pop()[0])


def _children(node: object, what: str, where: str) -> Iterator[tuple[str, object]]:
    if isinstance(node, Mapping):
        for key, child in node.items():
            if not isinstance(key, str):
                raise InvalidArgumentTypeError(
                    f"{what} keys must be strings, got the {type(key).__name__} key {key!r} at {where}; "
                    "JSON would silently store it as a string"
                )
            yield f"key {key!r}", child
    else:
        assert isinstance(node, (list, tuple))
        for i, child in enumerate(node):
            yield f"item {i} of {where}", child


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


def check_portable_name(rel: str) -> str:
    """Return ``rel`` if every backend can store it and give it back: it must be valid UTF-8.

    A lone surrogate (what ``os.fsdecode`` makes of bytes that are not UTF-8) is a fine local file
    name, but no object store can hold it, so a checkpoint with it could never be copied there.

    Raises:
        UnsafePathError: it holds a lone surrogate.
    """
    try:
        rel.encode("utf-8")
    except UnicodeEncodeError:
        raise UnsafePathError(
            f"file name {rel!r} is not valid UTF-8 (a lone surrogate, as os.fsdecode makes of undecodable bytes); "
            "no object store can hold it: rename the file"
        ) from None
    return rel


def check_file_set(names: Iterable[str], *, portable: bool = True) -> None:
    """Refuse a set of file names that cannot be restored side by side as files.

    A name that is also a folder of another name (``a`` and ``a/b``) can be stored as two objects
    but never downloaded or loaded: a directory cannot also be a file.

    Args:
        names: The relative paths of one checkpoint (already checked by :func:`check_relpath`).
        portable: Also require valid UTF-8 (see :func:`check_portable_name`); False when reading
            records that a local store may have written before this rule.

    Raises:
        UnsafePathError: a name is listed twice, is the folder of another, is not UTF-8, or there
            are more than :data:`MAX_FILES`.
    """
    seen: set[str] = set()
    for name in names:
        if name in seen:
            raise UnsafePathError(f"file {name!r} is listed twice")
        seen.add(name)
        if len(seen) > MAX_FILES:
            raise UnsafePathError(f"a checkpoint holds at most {MAX_FILES} files")
        if portable:
            check_portable_name(name)
    for name in sorted(seen):
        folder = name.rpartition("/")[0]
        while folder:
            if folder in seen:
                raise UnsafePathError(clash_message(folder, name))
            folder = folder.rpartition("/")[0]


def clash_message(file: str, below: str) -> str:
    """The message for a file ``file`` that is also the folder of ``below``."""
    return f"{file!r} would be both a file and the folder of {below!r}; no disk can restore both: rename one"


def check_key_length(rel: str, key: str, size: int, limit: int | None) -> None:
    """Refuse a file whose full key (or local path) is longer than the backend accepts.

    Args:
        rel: The file's name in the checkpoint (for the message).
        key: Its full key or path (for the message).
        size: The length of ``key`` in bytes, as the backend counts it.
        limit: The backend's limit (``Capabilities.max_key_bytes``); None for none known.

    Raises:
        UnsafePathError: the key is too long.
    """
    if limit is not None and size > limit:
        raise UnsafePathError(
            f"file name {_short(rel)} is too long: its full key {_short(key)} is {size} bytes, and this backend "
            f"accepts at most {limit} bytes; shorten the name (or the store's path)"
        )


def escape_log_text(text: str) -> str:
    r"""``text`` on one line: line breaks and other control characters become escapes (``\n``, ``\x1b``).

    Every character ``str.splitlines`` breaks at is escaped (C0 and C1 controls, U+2028, U+2029), so
    a user string (a metric name, a file name) can never start a forged line in the log.
    """
    return _CONTROL.sub(_escape_char, text)


def _escape_char(match: re.Match[str]) -> str:
    char = match.group()
    known = _LOG_ESCAPES.get(char)
    if known is not None:
        return known
    code = ord(char)
    return f"\\x{code:02x}" if code < 0x100 else f"\\u{code:04x}"
