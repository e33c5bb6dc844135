"""Ordering rules for "the latest" checkpoint.

"Latest" must be the same answer on every backend and after every crash, so it is defined here once:
the newest commit time recorded in the manifest, then the newest mtime (mtime alone is not reliable:
copies, NFS's one-second mtimes and clock skew all break it), and on a tie the lexicographically
largest name compared numeric-aware, so ``epoch10`` beats ``epoch9``.
"""

from __future__ import annotations

import re

__all__ = ["most_recent", "natural_key", "pattern_to_regex", "select_by_value", "template_to_regex"]

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


# -- files ckptstore did not write: templates, globs, regexes -----------------------------------------

_FIELD = re.compile(r"\{([A-Za-z_][A-Za-z0-9_]*)(?::([^{}]*))?\}")


def template_to_regex(template: str) -> re.Pattern[str]:
    """Turn a Keras-style file template into a regex that matches the names it produces.

    ``weights.{epoch:02d}-{val_loss:.2f}.h5`` matches ``weights.07-0.31.h5``; each ``{field}`` becomes
    a named group (integers for ``d`` formats, decimals for ``f``/``e``/``g``, anything else otherwise).

    Raises:
        ValueError: the template has no ``{field}``.
    """
    if not _FIELD.search(template):
        raise ValueError(f"{template!r} has no {{field}} placeholder")
    out, pos, seen = [], 0, set()
    for m in _FIELD.finditer(template):
        out.append(re.escape(template[pos : m.start()]))
        name, spec = m.group(1), m.group(2) or ""
        kind = spec[-1:] if spec else ""
        if kind == "d":
            body = r"[+-]?\d+"
        elif kind in ("f", "e", "g", "F", "E", "G", "%"):
            body = r"[+-]?(?:\d+\.?\d*(?:[eE][+-]?\d+)?|inf|nan)%?"
        else:
            body = r"[^/]+?"
        out.append(f"(?P<{name}>{body})" if name not in seen else f"(?P={name})")
        seen.add(name)
        pos = m.end()
    out.append(re.escape(template[pos:]))
    return re.compile("".join(out))


def pattern_to_regex(pattern: str | re.Pattern[str]) -> re.Pattern[str]:
    """A compiled regex for a pattern.

    A template (``{epoch:02d}``), a glob (``*``, ``?``, ``[``), a regex (a compiled pattern or a
    string starting with ``re:``), or an exact name.
    """
    if isinstance(pattern, re.Pattern):
        return pattern
    if pattern.startswith("re:"):
        return re.compile(pattern[3:])
    if _FIELD.search(pattern):
        return template_to_regex(pattern)
    if any(ch in pattern for ch in "*?["):
        import fnmatch

        return re.compile(fnmatch.translate(pattern))
    return re.compile(re.escape(pattern))


def _matches(regex: re.Pattern[str], path: str) -> re.Match[str] | None:
    """Match the whole relative path, or else the whole base name."""
    return regex.fullmatch(path) or regex.fullmatch(path.rsplit("/", 1)[-1])


def most_recent(files: dict[str, int], pattern: str | re.Pattern[str]) -> str | None:
    """The newest file (by mtime) among those matching ``pattern``; ties broken among the tied files only.

    Args:
        files: Relative path -> mtime in ns.
        pattern: See :func:`pattern_to_regex`.

    Returns:
        The relative path, or None when nothing matches. Among files with the newest mtime the
        numeric-aware largest name wins (Keras compares every matching file's name instead, which can
        pick an older file when mtimes tie only partly).
    """
    regex = pattern_to_regex(pattern)
    matching = {p: t for p, t in files.items() if _matches(regex, p)}
    if not matching:
        return None
    newest = max(matching.values())
    return max((p for p, t in matching.items() if t == newest), key=natural_key)


def select_by_value(files: dict[str, int], regex: str | re.Pattern[str], mode: str) -> tuple[str, float] | None:
    """Guild's select-min/select-max: the file whose first capture group, read as a number, is min/max.

    Args:
        files: Relative path -> mtime in ns (only the names matter).
        regex: A regex with at least one group, matched against the whole relative path or base name.
        mode: ``"min"`` or ``"max"``.

    Returns:
        ``(path, value)``; on a tie the newest file, then the numeric-aware largest name; None when
        no file matches.

    Raises:
        ValueError: the regex has no group, or ``mode`` is neither min nor max.
    """
    compiled = re.compile(regex) if isinstance(regex, str) else regex
    if compiled.groups < 1:
        raise ValueError(f"select needs a regex with a capture group, got {compiled.pattern!r}")
    if mode not in ("min", "max"):
        raise ValueError(f"mode must be 'min' or 'max', got {mode!r}")
    scored: list[tuple[float, int, tuple[tuple[int, int | str], ...], str]] = []
    for path, mtime in files.items():
        m = _matches(compiled, path)
        if m is None or m.group(1) is None:
            continue
        try:
            value = float(m.group(1))
        except ValueError:
            continue
        scored.append((value if mode == "max" else -value, mtime, natural_key(path), path))
    if not scored:
        return None
    best = max(scored)
    return best[3], (best[0] if mode == "max" else -best[0])
