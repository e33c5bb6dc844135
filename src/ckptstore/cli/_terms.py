"""Core error messages in the command's terms: Python advice (``storage_options={...}``) becomes CLI flags.

The core speaks Python (``pass create=True``, ``store.best(metric='acc')``); a person at a shell needs
``-S key=...`` and ``--metric acc``. :func:`cli_terms` rewrites the known phrases and leaves the rest.
"""

from __future__ import annotations

import re

__all__ = ["cli_terms"]

_PY_DICT = re.compile(r"storage_options=\{([^{}]*)\}")
_PY_ITEM = re.compile(r"'([\w.]+)':\s*('[^']*'|[^,}]*)")
_REWRITES: tuple[tuple[re.Pattern[str], str], ...] = (
    (re.compile(r" \(pass create=True to make one\)"), " (the command reads existing stores; check the path)"),
    (re.compile(r"open an existing store there with create=False to read it, or write"), "read it, or write"),
    (re.compile(r": open an existing one with create=False"), ""),
    (re.compile(r"the credentials in storage_options"), "the credentials given with -S KEY=VALUE"),
    (re.compile(r"pass credentials in storage_options instead"), "pass credentials with -S KEY=VALUE instead"),
    (re.compile(r"pass metric= or open the store with monitor="), "pass --metric NAME (the store records no monitor)"),
    (re.compile(r"\bstore\.best\(metric=('[^']*')\)"), r"--metric \1"),
    (re.compile(r"\bstore\.list\(sort_by=('[^']*')(, order=\.\.\.)?\)"), r"ckptstore ls --sort-by \1"),
)


def _flags(match: re.Match[str]) -> str:
    items = _PY_ITEM.findall(match.group(1))
    if not items:
        return "-S KEY=VALUE"
    return " ".join(f"-S {key}={value[1:-1] if value.startswith(chr(39)) else '...'}" for key, value in items)


def cli_terms(message: str) -> str:
    """A core error message with its Python advice (``storage_options={...}``, ``create=True``) in CLI flags."""
    text = _PY_DICT.sub(_flags, message)
    for pattern, replacement in _REWRITES:
        text = pattern.sub(replacement, text)
    return text
