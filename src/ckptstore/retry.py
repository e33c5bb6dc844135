"""Retrying transient backend errors: exponential backoff with jitter, bounded by a deadline.

Object stores fail in passing: a connection refused while a server restarts, a reset, a timeout, a
503 ``SlowDown``. :class:`RetryPolicy` (part of :class:`ckptstore.StoreConfig`) says how long the store
keeps trying one operation; :func:`is_transient` says which errors are worth another try (never a
missing object, a refused credential or a failed precondition). When the policy gives up,
:class:`~ckptstore.errors.StoreUnavailableError` carries the last error as its cause.

The functions here are pure except :func:`call`, which sleeps between attempts.
"""

from __future__ import annotations

import errno
import logging
import random
import time
from collections.abc import Callable, Iterator
from typing import TypeVar

import attrs

from ._redact import redact, scrub_exception
from .errors import CkptStoreError, StoreUnavailableError

__all__ = ["RetryPolicy", "backoff_delays", "call", "describe_error", "http_status", "is_auth_failure", "is_transient"]

logger = logging.getLogger("ckptstore")

T = TypeVar("T")

_TRANSIENT_ERRNOS = {
    errno.ECONNREFUSED,
    errno.ECONNRESET,
    errno.ECONNABORTED,
    errno.ETIMEDOUT,
    errno.EPIPE,
    errno.EHOSTUNREACH,
    errno.ENETUNREACH,
    errno.ENETDOWN,
    errno.EAGAIN,
    errno.EBUSY,
}
# Exception class names of the HTTP stacks under s3fs and gcsfs (botocore, aiohttp, requests, urllib3),
# matched by name so the core imports none of them.
_TRANSIENT_NAMES = {
    "EndpointConnectionError",
    "ConnectTimeoutError",
    "ReadTimeoutError",
    "ConnectionClosedError",
    "ProxyConnectionError",
    "ResponseStreamingError",
    "IncompleteReadError",
    "ClientConnectorError",
    "ClientConnectionError",
    "ClientOSError",
    "ServerDisconnectedError",
    "ServerTimeoutError",
    "ClientPayloadError",
    "FSTimeoutError",
    "TimeoutError",
    "ConnectionError",
    "RemoteDisconnected",
}
_TRANSIENT_CODES = {"SlowDown", "ServiceUnavailable", "InternalError", "RequestTimeout", "Throttling", "503", "500"}
_TRANSIENT_STATUS = {429, 500, 502, 503, 504}
# Refused or missing credentials, by exception class name (botocore, google-auth, paramiko, ...) or by
# the error code in the message.
_AUTH_CODES = (
    "InvalidAccessKeyId",
    "SignatureDoesNotMatch",
    "AccessDenied",
    "ExpiredToken",
    "InvalidToken",
    "RefreshError",
    "DefaultCredentialsError",
)
_AUTH_NAMES = {
    *_AUTH_CODES,
    "NoCredentialsError",
    "PartialCredentialsError",
    "MalformedError",
    "AuthenticationException",
}
_AUTH_STATUS = {401, 403}


def _positive(_instance: object, attribute: attrs.Attribute[float], value: float) -> None:
    if not value > 0:
        raise ValueError(f"{attribute.name} must be > 0, got {value!r}")


@attrs.frozen
class RetryPolicy:
    """How long to keep retrying one backend operation that failed in passing.

    Attributes:
        max_attempts: Tries in all, the first included (1 disables retrying).
        initial_backoff: Seconds before the second try.
        max_backoff: Upper bound of one wait.
        multiplier: Growth of the wait per try.
        deadline: Seconds after the first try after which no new try starts.
        jitter: Randomize each wait in ``[wait/2, wait]`` so clients restarting together spread out.
    """

    max_attempts: int = attrs.field(default=10, validator=attrs.validators.ge(1))
    initial_backoff: float = attrs.field(default=0.2, validator=_positive)
    max_backoff: float = attrs.field(default=10.0, validator=_positive)
    multiplier: float = attrs.field(default=2.0, validator=attrs.validators.ge(1.0))
    deadline: float = attrs.field(default=120.0, validator=_positive)
    jitter: bool = True

    @classmethod
    def never(cls) -> RetryPolicy:
        """One try only: errors surface at once (still typed)."""
        return cls(max_attempts=1)


def backoff_delays(policy: RetryPolicy, rng: random.Random | None = None) -> Iterator[float]:
    """The waits between tries: ``max_attempts - 1`` of them, growing, capped, optionally jittered."""
    wait = policy.initial_backoff
    for _ in range(policy.max_attempts - 1):
        capped = min(wait, policy.max_backoff)
        yield (rng or random).uniform(capped / 2, capped) if policy.jitter else capped
        wait *= policy.multiplier


def http_status(exc: BaseException) -> int | None:
    """The HTTP status an error of botocore, aiohttp, gcsfs or urllib carries, or None."""
    response = getattr(exc, "response", None)
    if isinstance(response, dict):
        status = (response.get("ResponseMetadata") or {}).get("HTTPStatusCode")
        if isinstance(status, int):
            return status
    for attr in ("status", "code"):
        status = getattr(exc, attr, None)
        if isinstance(status, int) and not isinstance(status, bool) and 100 <= status < 600:
            return status
    return None


def _text(exc: BaseException) -> str:
    try:
        return str(exc)
    except Exception:  # an exception whose str() fails says nothing
        return ""


def is_auth_failure(exc: BaseException) -> bool:
    """True if ``exc`` (or its cause chain) says the credentials were refused, malformed or missing."""
    seen: BaseException | None = exc
    while seen is not None:
        if type(seen).__name__ in _AUTH_NAMES or http_status(seen) in _AUTH_STATUS:
            return True
        text = _text(seen)
        if any(code in text for code in _AUTH_CODES):
            return True
        seen = seen.__cause__ or seen.__context__
    return isinstance(exc, PermissionError) and not isinstance(exc, CkptStoreError)


def describe_error(exc: BaseException) -> str:
    """``Type: message`` of ``exc``, redacted, for a typed error's message."""
    text = redact(_text(exc))
    return f"{type(exc).__name__}: {text}" if text else type(exc).__name__


def is_transient(exc: BaseException) -> bool:
    """True if ``exc`` (or an error in its cause chain) is worth retrying: connection, timeout, 5xx, 429."""
    seen: BaseException | None = exc
    while seen is not None:
        if isinstance(seen, CkptStoreError):  # typed already (a retry loop that gave up included)
            return False
        if isinstance(seen, (FileNotFoundError, FileExistsError, PermissionError, IsADirectoryError)):
            return False
        if isinstance(seen, (ConnectionError, TimeoutError)):
            return True
        if isinstance(seen, OSError) and seen.errno in _TRANSIENT_ERRNOS:
            return True
        if any(cls.__name__ in _TRANSIENT_NAMES for cls in type(seen).__mro__ if cls.__module__ != "builtins"):
            return True
        response = getattr(seen, "response", None)
        if isinstance(response, dict):
            code = str((response.get("Error") or {}).get("Code"))
            status = (response.get("ResponseMetadata") or {}).get("HTTPStatusCode")
            if code in _TRANSIENT_CODES or status in _TRANSIENT_STATUS:
                return True
        status = getattr(seen, "status", None) or getattr(seen, "code", None)
        if isinstance(status, int) and status in _TRANSIENT_STATUS:
            return True
        seen = seen.__cause__ or seen.__context__
    return False


def call(
    fn: Callable[[], T],
    policy: RetryPolicy,
    what: str,
    *,
    on_retry: Callable[[int, float, BaseException], None] | None = None,
    sleep: Callable[[float], None] = time.sleep,
    clock: Callable[[], float] = time.monotonic,
) -> T:
    """Run ``fn``, retrying transient errors under ``policy``.

    Args:
        fn: The operation (it must be safe to repeat).
        policy: When to retry and when to give up.
        what: What the operation does, for messages (``read pointers/last.json from s3://b/p``).
        on_retry: Called with (attempt, wait, error) before each wait.
        sleep: The wait (tests pass their own).
        clock: Monotonic seconds.

    Returns:
        What ``fn`` returned.

    Raises:
        StoreUnavailableError: Transient errors lasted past ``max_attempts`` or ``deadline``.
        Exception: Any error that is not transient, unchanged but for secrets (a URL's password, a
            token, ...) redacted from its message and its cause chain.
    """
    started = clock()
    delays = backoff_delays(policy)
    attempt = 0
    while True:
        attempt += 1
        try:
            return fn()
        except Exception as exc:
            scrub_exception(exc)  # whatever leaves here keeps its cause chain, without the secrets it showed
            if not is_transient(exc):
                raise
            wait = next(delays, None)
            elapsed = clock() - started
            if wait is None or elapsed + wait > policy.deadline:
                raise StoreUnavailableError(
                    f"could not {redact(what)}: the backend did not answer after {attempt} tries in {elapsed:.1f}s "
                    f"({describe_error(exc)}); try again when it is back"
                ) from exc
            logger.warning("%s failed (%s); try %d in %.2fs", redact(what), describe_error(exc), attempt + 1, wait)
            if on_retry is not None:
                on_retry(attempt, wait, exc)
            sleep(wait)
