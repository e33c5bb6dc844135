"""Secrets never leave the process: the one place that redacts URLs, messages, log records and errors.

Two rules, applied together by :func:`redact`:

* **Structure.** In any text, a URL's password becomes ``***`` (``http://user:***@host/store``), a
  user-info without a password (often a bare token: ``https://TOKEN@host``) becomes ``***@``, and
  the value of a query parameter that carries a credential (``token``, ``access_token``, ``sig``,
  ``X-Amz-Signature``, ``X-Goog-Credential``, ...) becomes ``***``.
* **Knowledge.** Every secret a store was given (the URL's password, the secret-looking
  ``storage_options`` such as ``secret``, ``token``, ``password``, ``session_token``,
  ``client_kwargs.aws_secret_access_key``, the private fields of a service-account file; an access
  key *ID* is an identifier, shown like a user name) is remembered for
  the life of the process by :func:`remember_options` / :func:`remember`, and each occurrence of it is
  replaced by ``***``, wherever and however a library printed it (plain or percent-encoded).

:func:`scrub_exception` applies both to an exception and its whole ``__cause__`` / ``__context__``
chain in place, so a typed error can keep the backend's error as its cause without carrying a
secret. A filter on the ``ckptstore`` logger redacts every record it emits. Secrets shorter than
:data:`MIN_SECRET_LENGTH` characters are only redacted where the structure shows them (replacing,
say, every ``a`` in every message would make the messages unreadable without protecting anything).
"""

from __future__ import annotations

import contextlib
import json
import logging
import os
import re
import threading
from collections.abc import Iterable, Iterator, Mapping
from typing import Any
from urllib.parse import quote, quote_plus, unquote, urlsplit

__all__ = [
    "MASK",
    "MIN_SECRET_LENGTH",
    "RedactingFilter",
    "is_secret_name",
    "leaks",
    "redact",
    "redact_url",
    "remember",
    "remember_options",
    "scrub_exception",
    "url_secrets",
]

MASK = "***"
"""What a secret is replaced by."""

MIN_SECRET_LENGTH = 4
"""Shorter remembered strings are not replaced in free text (URL passwords and query values still are)."""

#: Values of credential options that select a method rather than hold a secret (gcsfs ``token=``).
_NOT_SECRETS = frozenset({"anon", "google_default", "cache", "cloud", "browser", "true", "false", "none", "null"})

#: Option names (lower case, without ``-``, ``_`` and ``.``) that hold a secret, and parts of such names.
#: An access key *ID* (``key``, ``aws_access_key_id``) names a credential like a user name does and is
#: shown (AWS prints it in its own errors); its secret (``secret``, ``aws_secret_access_key``) is not.
_SECRET_NAMES = frozenset({"sig", "pass", "pwd", "auth", "authorization", "connectionstring"})
_SECRET_PARTS = (
    "secret",
    "token",
    "password",
    "passwd",
    "signature",
    "credential",
    "privatekey",
    "apikey",
    "accountkey",
    "customerkey",
    "sastoken",
)
#: Query parameters that hold a secret besides those (``?key=`` is an API key, ``?code=`` an OAuth code).
_SECRET_QUERY_NAMES = frozenset({"key", "code"})
#: Attributes of a credentials object (google-auth, botocore) that hold a secret.
_SECRET_ATTRIBUTES = ("token", "refresh_token", "client_secret", "secret_key", "access_key", "session_token")
#: Fields of a credentials JSON file (service account, authorized user) that hold a secret.
_SECRET_FILE_FIELDS = ("private_key", "private_key_id", "client_secret", "refresh_token", "access_token")
#: Environment variables whose values are secrets the backends read on their own.
_SECRET_ENV = ("AWS_SECRET_ACCESS_KEY", "AWS_SESSION_TOKEN", "AWS_SECURITY_TOKEN", "GOOGLE_OAUTH_ACCESS_TOKEN")

_USERINFO = re.compile(r"(?P<scheme>\b[A-Za-z][A-Za-z0-9+.\-]*://)(?P<userinfo>[^/\s?#'\"<>\\]*)@")
_QUERY_PARAM = re.compile(r"(?P<lead>[?&;])(?P<name>[A-Za-z0-9_.\-]+)=(?P<value>[^&;#\s'\"<>)\]\\]*)")

_lock = threading.Lock()
_known: set[str] = set()
_ordered: tuple[str, ...] = ()


def is_secret_name(name: str, *, query: bool = False) -> bool:
    """True if an option (or, with ``query``, a URL query parameter) called ``name`` holds a secret."""
    norm = re.sub(r"[-_.\s]", "", name.lower())
    if query and norm in _SECRET_QUERY_NAMES:
        return True
    return norm in _SECRET_NAMES or any(part in norm for part in _SECRET_PARTS)


def remember(values: Iterable[object]) -> None:
    """Treat each string in ``values`` as a secret from now on (in this process): :func:`redact` replaces it."""
    added: set[str] = set()
    for value in values:
        if not isinstance(value, str):
            continue
        text = value.strip()
        if len(text) < MIN_SECRET_LENGTH or text.lower() in _NOT_SECRETS:
            continue
        forms = {text, value, quote(text, safe=""), quote_plus(text), unquote(text)}
        if "\n" in text:  # a PEM key: each line on its own too (messages may cut it or escape the newlines)
            forms.add(text.replace("\n", "\\n"))
            forms.update(line for line in text.splitlines() if len(line) >= 16)
        added.update(f for f in forms if len(f) >= MIN_SECRET_LENGTH)
    if not added - _known:
        return
    global _ordered
    with _lock:
        _known.update(added)
        _ordered = tuple(sorted(_known, key=len, reverse=True))


def url_secrets(url: str) -> list[str]:
    """The secrets a URL carries: its password (or bare user-info) and its credential query values."""
    found: list[str] = []
    for match in _USERINFO.finditer(url):
        user, sep, password = match.group("userinfo").partition(":")
        found.append(password if sep else user)
    try:
        query = urlsplit(url).query if "://" in url else ""
    except ValueError:
        query = ""
    for match in _QUERY_PARAM.finditer("?" + query if query else ""):
        if is_secret_name(match.group("name"), query=True):
            found.append(match.group("value"))
    return [f for f in found if f]


def _collect(value: Any, out: list[str], depth: int = 0) -> None:
    """Every string inside ``value`` (mappings, sequences, credential objects)."""
    if depth > 8:
        return
    if isinstance(value, str):
        out.append(value)
    elif isinstance(value, bytes):
        out.append(value.decode("utf-8", "replace"))
    elif isinstance(value, tuple) and "password" in getattr(value, "_fields", ()):
        # aiohttp.BasicAuth: the login is no secret
        _collect(getattr(value, "password", None), out, depth + 1)
    elif isinstance(value, Mapping):
        for item in value.values():
            _collect(item, out, depth + 1)
    elif isinstance(value, (list, tuple, set, frozenset)):
        for item in value:
            _collect(item, out, depth + 1)
    elif value is not None and not isinstance(value, (int, float, bool)):
        for attr in _SECRET_ATTRIBUTES:
            try:
                found = getattr(value, attr, None)
            except Exception:  # a property that fails holds nothing we can read
                continue
            if isinstance(found, str):
                out.append(found)


def _file_secrets(path: str) -> list[str]:
    """The secret fields of a credentials JSON file (best effort; the path itself is not a secret)."""
    try:
        if os.path.getsize(path) > 1 << 20:
            return []
        with open(path, encoding="utf-8") as handle:
            data = json.load(handle)
    except (OSError, ValueError):
        return []
    if not isinstance(data, dict):
        return []
    return [str(data[field]) for field in _SECRET_FILE_FIELDS if isinstance(data.get(field), str)]


def _option_secrets(options: Mapping[str, Any], out: list[str], depth: int = 0) -> None:
    for name, value in options.items():
        if depth == 0 and name == "token" and isinstance(value, str) and os.path.isfile(value):
            out.extend(_file_secrets(value))  # gcsfs: a path to a key file; the path is not a secret
        elif isinstance(name, str) and is_secret_name(name):
            _collect(value, out)
        elif isinstance(value, Mapping) and depth < 8:
            _option_secrets(value, out, depth + 1)


def remember_options(url: str, options: Mapping[str, Any] | None) -> None:
    """Remember the secrets of a store's URL, storage options and the backends' credential variables."""
    found = url_secrets(url)
    if options:
        _option_secrets(options, found)
    found.extend(os.environ[name] for name in _SECRET_ENV if os.environ.get(name))
    remember(found)


def _userinfo(match: re.Match[str]) -> str:
    user, sep, _password = match.group("userinfo").partition(":")
    return f"{match.group('scheme')}{user}:{MASK}@" if sep else f"{match.group('scheme')}{MASK}@"


def _param(match: re.Match[str]) -> str:
    if not match.group("value") or not is_secret_name(match.group("name"), query=True) or match.group("value") == MASK:
        return match.group(0)
    return f"{match.group('lead')}{match.group('name')}={MASK}"


def redact(text: str) -> str:
    """``text`` with every URL password, credential query value and remembered secret replaced by ``***``."""
    if not text:
        return text
    out = _USERINFO.sub(_userinfo, text) if "@" in text else text
    if "=" in out:
        out = _QUERY_PARAM.sub(_param, out)
    for secret in _ordered:
        if secret in out:
            out = out.replace(secret, MASK)
    return out


def redact_url(url: str) -> str:
    """A URL fit to show: ``http://user:PW@host/s?token=T`` -> ``http://user:***@host/s?token=***``."""
    return redact(url)


def leaks(text: str) -> bool:
    """True if ``text`` shows a secret that :func:`redact` would hide."""
    return redact(text) != text


# -- exceptions ---------------------------------------------------------------------------------------
_HEAPTYPE = 1 << 9
_redacting_classes: dict[type[BaseException], type[BaseException]] = {}


def _clean(value: Any, pending: list[BaseException]) -> Any:
    """``value`` with its strings redacted (a new container only where something changed)."""
    if isinstance(value, str):
        return redact(value)
    if isinstance(value, BaseException):
        pending.append(value)
        return value
    if isinstance(value, (list, tuple)):
        items = [_clean(v, pending) for v in value]
        if all(a is b for a, b in zip(items, value, strict=True)):
            return value
        return type(value)(items) if type(value) in (list, tuple) else items
    if isinstance(value, dict):
        cleaned = {k: _clean(v, pending) for k, v in value.items()}
        return value if all(cleaned[k] is value[k] for k in value) else cleaned
    return value


def _exception_leaks(exc: BaseException) -> bool:
    for show in (str, repr):
        try:
            if leaks(show(exc)):
                return True
        except Exception:  # a str() that fails prints nothing
            continue
    return False


def _redacting_class(cls: type[BaseException]) -> type[BaseException] | None:
    """A subclass of ``cls`` (same name) whose str() and repr() are redacted; None for builtin types."""
    if not cls.__flags__ & _HEAPTYPE:
        return None
    sub = _redacting_classes.get(cls)
    if sub is None:

        def __str__(self: BaseException) -> str:
            return redact(cls.__str__(self))

        def __repr__(self: BaseException) -> str:
            return redact(cls.__repr__(self))

        namespace = {"__str__": __str__, "__repr__": __repr__, "__module__": cls.__module__}
        namespace["__qualname__"] = cls.__qualname__
        sub = type(cls.__name__, (cls,), namespace)
        _redacting_classes[cls] = sub
    return sub


def _scrub_one(exc: BaseException, pending: list[BaseException]) -> bool:
    with contextlib.suppress(Exception):  # an exception type that refuses new args keeps its own
        exc.args = tuple(_clean(a, pending) for a in exc.args)
    if isinstance(exc, OSError):
        for attr in ("strerror", "filename", "filename2"):
            value = getattr(exc, attr, None)
            if isinstance(value, str) and leaks(value):
                setattr(exc, attr, redact(value))
    for name, value in list(getattr(exc, "__dict__", {}).items()):
        cleaned = _clean(value, pending)
        if cleaned is not value:
            with contextlib.suppress(Exception):
                exc.__dict__[name] = cleaned
    grouped = getattr(exc, "exceptions", None)  # an ExceptionGroup's members
    if isinstance(grouped, (list, tuple)):
        pending.extend(e for e in grouped if isinstance(e, BaseException))
    if not _exception_leaks(exc):
        return True
    sub = _redacting_class(type(exc))
    if sub is None or type(exc) is sub:
        return False
    try:
        exc.__class__ = sub
    except TypeError:
        return False
    return not _exception_leaks(exc)


def scrub_exception(exc: BaseException) -> bool:
    """Redact secrets in ``exc`` and its whole cause/context chain, in place.

    Strings in ``args``, in an ``OSError``'s file names and in the instance attributes are redacted;
    an exception whose ``str()`` or ``repr()`` still shows a secret (built from other state) gets a
    subclass of its own type, same name, whose ``str()`` and ``repr()`` are redacted.

    Returns:
        True if nothing in the chain shows a secret any more.
    """
    clean = True
    pending: list[BaseException] = [exc]
    for current in _walk(pending):
        clean = _scrub_one(current, pending) and clean  # it adds errors it finds in args to ``pending``
    return clean


def exception_chain(exc: BaseException) -> Iterator[BaseException]:
    """``exc`` and everything reachable through ``__cause__`` / ``__context__``, each once."""
    return _walk([exc])


def _walk(pending: list[BaseException]) -> Iterator[BaseException]:
    """Drain ``pending`` (which may grow meanwhile), following each error's cause and context, once each."""
    seen: set[int] = set()
    while pending:
        current = pending.pop()
        if id(current) in seen:
            continue
        seen.add(id(current))
        yield current
        pending += [e for e in (current.__cause__, current.__context__) if e is not None]


# -- logging ------------------------------------------------------------------------------------------
class RedactingFilter(logging.Filter):
    """Redact every record of the ``ckptstore`` logger: its message and its formatted traceback."""

    def filter(self, record: logging.LogRecord) -> bool:
        """Rewrite ``record`` in place; never drops it."""
        try:
            message = record.getMessage()
        except Exception:  # a broken format string is the handler's business
            return True
        clean = redact(message)
        if clean != message:
            record.msg, record.args = clean, ()
        if record.exc_info and record.exc_info[1] is not None:
            scrub_exception(record.exc_info[1])
        if record.exc_text:
            record.exc_text = redact(record.exc_text)
        return True


def _install_filter() -> None:
    target = logging.getLogger("ckptstore")
    if not any(isinstance(f, RedactingFilter) for f in target.filters):
        target.addFilter(RedactingFilter())


_install_filter()
