"""The attrs validators of the options of :func:`ckptstore.open` (``is_bool()``, ``is_int(1)``, ...).

They live apart from :mod:`ckptstore._validate` (the checks of values passed to each call) because
they check a different thing, once: the settings a store is opened with. Each validator guarantees
that a bad option fails while the config is built, before any storage is touched, with an
:class:`~ckptstore.errors.InvalidArgumentTypeError` for a value of the wrong type or an
:class:`~ckptstore.errors.InvalidArgumentError` for a value out of range, naming the option; a
validator's ``repr`` says what it accepts.
"""

from __future__ import annotations

import math
import numbers
from collections.abc import Callable
from typing import Any

import attrs

from ._validate import _CONTROL, _short
from .errors import InvalidArgumentError, InvalidArgumentTypeError


def _got(value: object) -> str:
    return f"{_short(value)} ({type(value).__name__})"


@attrs.frozen(repr=False)
class _IsBool:
    def __call__(self, _: object, attribute: attrs.Attribute[Any], value: object) -> None:
        if not isinstance(value, bool):
            raise InvalidArgumentTypeError(f"option {attribute.name} must be True or False, got {_got(value)}")

    def __repr__(self) -> str:
        return "<is_bool validator>"


@attrs.frozen(repr=False)
class _IsInt:
    low: int
    high: int | None

    def __call__(self, _: object, attribute: attrs.Attribute[Any], value: object) -> None:
        if isinstance(value, bool) or not isinstance(value, numbers.Integral):
            raise InvalidArgumentTypeError(f"option {attribute.name} must be an int, got {_got(value)}")
        number = int(value)
        if number < self.low or (self.high is not None and number > self.high):
            raise InvalidArgumentError(f"option {attribute.name} must be {self._range()}, got {number}")

    def _range(self) -> str:
        return f">= {self.low}" if self.high is None else f"from {self.low} to {self.high}"

    def __repr__(self) -> str:
        return f"<is_int validator {self._range()}>"


@attrs.frozen(repr=False)
class _IsReal:
    positive: bool
    optional: bool

    def __call__(self, _: object, attribute: attrs.Attribute[Any], value: object) -> None:
        if value is None and self.optional:
            return
        if isinstance(value, bool) or not isinstance(value, numbers.Real):
            raise InvalidArgumentTypeError(f"option {attribute.name} must be a number, got {_got(value)}")
        try:
            number = float(value)
        except OverflowError:
            number = math.inf
        if not math.isfinite(number) or (self.positive and not number > 0):
            what = "a finite number > 0" if self.positive else "a finite number"
            raise InvalidArgumentError(f"option {attribute.name} must be {what}, got {_short(value)}")

    def __repr__(self) -> str:
        return f"<is_real validator{' > 0' if self.positive else ''}{' or None' if self.optional else ''}>"


@attrs.frozen(repr=False)
class _IsText:
    """A non-empty string (or None when optional)."""

    optional: bool

    def __call__(self, _: object, attribute: attrs.Attribute[Any], value: object) -> None:
        if value is None and self.optional:
            return
        if not isinstance(value, str):
            raise InvalidArgumentTypeError(f"option {attribute.name} must be a string, got {_got(value)}")
        if not value.strip():
            raise InvalidArgumentError(f"option {attribute.name} must be a non-empty string, got {value!r}")
        self._check(attribute.name, value)

    def _check(self, name: str, value: str) -> None:
        """Further rules of a subclass."""

    def __repr__(self) -> str:
        return f"<{self._kind} validator{' or None' if self.optional else ''}>"

    _kind = "is_text"


@attrs.frozen(repr=False)
class _IsName(_IsText):
    """A non-empty string that is safe in a record and a log line: no control characters, valid UTF-8."""

    _kind = "is_name"

    def _check(self, name: str, value: str) -> None:
        if _CONTROL.search(value):
            raise InvalidArgumentError(
                f"option {name} must not contain line breaks or control characters, got {value!r}"
            )
        try:
            value.encode("utf-8")
        except UnicodeEncodeError:
            raise InvalidArgumentError(f"option {name} must be valid UTF-8, got {value!r}") from None


@attrs.frozen(repr=False)
class _IsChoice:
    choices: tuple[str, ...]

    def __call__(self, _: object, attribute: attrs.Attribute[Any], value: object) -> None:
        names = ", ".join(repr(c) for c in self.choices)
        if not isinstance(value, str):
            raise InvalidArgumentTypeError(f"option {attribute.name} must be one of {names}, got {_got(value)}")
        if value not in self.choices:
            raise InvalidArgumentError(f"option {attribute.name} must be one of {names}, got {value!r}")

    def __repr__(self) -> str:
        return f"<is_choice validator {self.choices}>"


@attrs.frozen(repr=False)
class _IsProgress:
    def __call__(self, _: object, attribute: attrs.Attribute[Any], value: object) -> None:
        if value is not None and not isinstance(value, bool) and not callable(value):
            raise InvalidArgumentTypeError(
                f"option {attribute.name} must be None, True, False or a callable(done, total, description), "
                f"got {_got(value)}"
            )

    def __repr__(self) -> str:
        return "<is_progress validator>"


@attrs.frozen(repr=False)
class _IsKeepPolicy:
    def __call__(self, _: object, attribute: attrs.Attribute[Any], value: object) -> None:
        from .policies import check_keep_policy

        if value is not None:
            check_keep_policy(value, f"option {attribute.name}")

    def __repr__(self) -> str:
        return "<is_keep_policy validator>"


@attrs.frozen(repr=False)
class _IsInstance:
    kind: type
    hint: str

    def __call__(self, _: object, attribute: attrs.Attribute[Any], value: object) -> None:
        if not isinstance(value, self.kind):
            raise InvalidArgumentTypeError(
                f"option {attribute.name} must be a {self.kind.__name__} ({self.hint}), got {_got(value)}"
            )

    def __repr__(self) -> str:
        return f"<is_instance validator {self.kind.__name__}>"


def is_bool() -> Callable[[Any, attrs.Attribute[Any], Any], None]:
    """A validator: exactly True or False (not 0, 1 or "yes")."""
    return _IsBool()


def is_int(low: int, high: int | None = None) -> Callable[[Any, attrs.Attribute[Any], Any], None]:
    """A validator: an int (never a bool or a float) from ``low`` to ``high`` (inclusive)."""
    return _IsInt(low, high)


def is_real(*, positive: bool = False, optional: bool = False) -> Callable[[Any, attrs.Attribute[Any], Any], None]:
    """A validator: a finite real number (never a bool or a string), > 0 if ``positive``, or None if ``optional``."""
    return _IsReal(positive, optional)


def is_name(*, optional: bool = False) -> Callable[[Any, attrs.Attribute[Any], Any], None]:
    """A validator: a non-empty UTF-8 string without line breaks or control characters (run ids)."""
    return _IsName(optional)


def is_text(*, optional: bool = False) -> Callable[[Any, attrs.Attribute[Any], Any], None]:
    """A validator: a non-empty string (metric names)."""
    return _IsText(optional)


def is_choice(*choices: str) -> Callable[[Any, attrs.Attribute[Any], Any], None]:
    """A validator: one of the given strings."""
    return _IsChoice(tuple(choices))


def is_progress() -> Callable[[Any, attrs.Attribute[Any], Any], None]:
    """A validator: None, a bool, or a progress callback."""
    return _IsProgress()


def is_keep_policy() -> Callable[[Any, attrs.Attribute[Any], Any], None]:
    """A validator: None or a keep policy object (``ckptstore.keep.linear(5)``, ...)."""
    return _IsKeepPolicy()


def is_instance(kind: type, hint: str) -> Callable[[Any, attrs.Attribute[Any], Any], None]:
    """A validator: an instance of ``kind``; ``hint`` says how to make one."""
    return _IsInstance(kind, hint)
