"""Which backend serves a URL: known schemes with install hints, lazy imports, and entry points.

Modelled on fsspec's ``registry``: a table of known schemes names the class that serves each and the
extra that installs its dependencies, nothing is imported until a URL needs it, and a third party can
add a scheme with an entry point in the ``ckptstore.backends`` group (``name = "pkg.mod:Class"``, the
class taking ``(url, storage_options)``). Any other scheme that fsspec knows works through the
generic fsspec backend, in single-writer mode.

Opening is where credentials meet the backend, so it is where secrets are kept in: the URL's
password and the secret-looking storage options are remembered for redaction (:mod:`.._redact`),
every backend's ``url`` is the redacted URL, an ``http(s)://user:password@host`` URL becomes the
HTTP session's ``Authorization`` header (so no path the filesystem prints holds the password), and any
error raised while a filesystem is constructed (credentials checked, a token endpoint contacted)
becomes a typed error with a redacted message and a scrubbed cause.
"""

from __future__ import annotations

import base64
import importlib
import importlib.metadata
import os
import re
from collections.abc import Callable, Mapping
from pathlib import Path
from typing import Any
from urllib.parse import unquote, urlsplit, urlunsplit

from .._redact import redact, redact_url, remember_options, scrub_exception
from ..errors import (
    BackendAuthError,
    BackendUnavailableError,
    CkptStoreError,
    InvalidArgumentError,
    InvalidArgumentTypeError,
    StoreNotFoundError,
    StoreUnavailableError,
    UnsupportedURLError,
)
from ..retry import describe_error, is_auth_failure, is_transient
from .base import Backend

__all__ = ["ENTRY_POINT_GROUP", "KNOWN_BACKENDS", "check_url", "open_backend", "register_backend", "split_url"]

ENTRY_POINT_GROUP = "ckptstore.backends"

#: scheme -> (fsspec protocol, backend class path, the pip extra that provides it, module to import)
KNOWN_BACKENDS: dict[str, tuple[str, str, str | None, str | None]] = {
    "file": ("file", "ckptstore.backends.local:LocalBackend", None, None),
    "memory": ("memory", "ckptstore.backends.memory:MemoryBackend", None, None),
    "s3": ("s3", "ckptstore.backends.s3:S3Backend", "s3", "s3fs"),
    "s3a": ("s3", "ckptstore.backends.s3:S3Backend", "s3", "s3fs"),
    "gs": ("gs", "ckptstore.backends.gcs:GCSBackend", "gcs", "gcsfs"),
    "gcs": ("gs", "ckptstore.backends.gcs:GCSBackend", "gcs", "gcsfs"),
}

_registered: dict[str, Callable[[str, Mapping[str, Any]], Backend]] = {}

#: Defaults for fsspec filesystems: no listing cache (the store must see other writers at once)
#: and a private instance per store (options must not leak between stores).
_FS_DEFAULTS: dict[str, dict[str, Any]] = {
    "s3": {"use_listings_cache": False, "skip_instance_cache": True},
    "gs": {"skip_instance_cache": True},
}
# botocore's own retries (legacy mode: 5 tries with backoff) would stack under the store's policy and
# outlast its deadline; connection attempts fail fast so an outage is seen and retried on schedule.
_S3_CONFIG_DEFAULTS: dict[str, Any] = {"connect_timeout": 10, "retries": {"max_attempts": 1, "mode": "standard"}}

# What botocore itself accepts as a bucket (legacy and S3-compatible names included); access point ARNs pass.
_S3_BUCKET = re.compile(r"[A-Za-z0-9.\-_]{1,255}")
_S3_BUCKET_RULE = (
    "S3 bucket names are 3-63 lowercase letters, digits, dots and hyphens, starting and ending with a letter "
    "or digit (S3-compatible servers may also accept upper case and underscores, never other characters)"
)
_GCS_BUCKET = re.compile(r"[a-z0-9][a-z0-9_.\-]{1,220}[a-z0-9]")
_GCS_BUCKET_RULE = (
    "GCS bucket names are 3-63 characters (up to 222 with dots) of lowercase letters, digits, dashes, "
    "underscores and dots, starting and ending with a letter or digit"
)
#: gcsfs ``token=`` values that choose a method instead of holding a credential.
_GCS_TOKEN_METHODS = {"anon", "google_default", "cache", "cloud", "browser"}
_CREDENTIAL_HINTS = {
    "s3": "pass storage_options={'key': ..., 'secret': ...} or set AWS_ACCESS_KEY_ID and AWS_SECRET_ACCESS_KEY",
    "gs": "pass storage_options={'token': <path of a service-account JSON file, or 'anon' for an emulator>} "
    "or set GOOGLE_APPLICATION_CREDENTIALS",
}


def register_backend(scheme: str, factory: Callable[[str, Mapping[str, Any]], Backend]) -> None:
    """Serve ``scheme`` with ``factory(url, storage_options)`` (in-process alternative to an entry point)."""
    _registered[scheme] = factory


def split_url(url: str) -> tuple[str, str]:
    """Return ``(scheme, rest)``; a plain path is ``("file", absolute path)``."""
    if "://" not in url:
        return "file", str(Path(url).absolute())
    scheme, _, rest = url.partition("://")
    scheme = scheme.lower()
    if scheme == "file":
        return "file", str(Path(rest).absolute())
    return scheme, rest.rstrip("/")


def check_url(url: object) -> str:
    """The store URL as text, or a typed error for a URL of the wrong type or an empty one.

    Raises:
        InvalidArgumentTypeError: ``url`` is not a ``str`` or an ``os.PathLike`` of ``str``.
        InvalidArgumentError: ``url`` is empty (it would mean the current directory).
    """
    text = os.fspath(url) if isinstance(url, (str, os.PathLike)) else url
    if not isinstance(text, str):
        raise InvalidArgumentTypeError(
            f"the store URL must be a str or a pathlib.Path, got {type(url).__name__} "
            "(e.g. ckptstore.open('runs/exp1') or ckptstore.open('s3://bucket/prefix'))"
        )
    if not text.strip():
        raise InvalidArgumentError("the store URL is empty: name a directory or a URL (use '.' for the current one)")
    return text


def _check_options(storage_options: object) -> dict[str, Any]:
    if storage_options is None:
        return {}
    if not isinstance(storage_options, Mapping):
        raise InvalidArgumentTypeError(
            f"storage_options must be a dict, got {type(storage_options).__name__}"
            " (e.g. storage_options={'endpoint_url': 'http://127.0.0.1:9000'})"
        )
    if not all(isinstance(key, str) for key in storage_options):
        raise InvalidArgumentTypeError("the keys of storage_options must be strings")
    return dict(storage_options)


def _entry_point(scheme: str) -> Callable[[str, Mapping[str, Any]], Backend] | None:
    for entry in importlib.metadata.entry_points(group=ENTRY_POINT_GROUP):
        if entry.name == scheme:
            factory: Callable[[str, Mapping[str, Any]], Backend] = entry.load()
            return factory
    return None


def _load_class(spec: str) -> Any:
    module, _, name = spec.partition(":")
    return getattr(importlib.import_module(module), name)


def open_backend(url: str | os.PathLike[str], storage_options: Mapping[str, Any] | None = None) -> Backend:
    """Return the backend for ``url``.

    Args:
        url: A local path, ``file://``, ``memory://``, ``s3://bucket/prefix``, ``gs://bucket/prefix``
            or any other fsspec URL.
        storage_options: Passed to the fsspec filesystem (endpoint, credentials, ...).

    Raises:
        InvalidArgumentTypeError: ``url`` or ``storage_options`` has the wrong type.
        UnsupportedURLError: no backend serves the scheme, the URL lacks a bucket, names an invalid
            bucket, or carries a query string or credentials where the backend takes none.
        BackendUnavailableError: the backend's package is not installed (names the extra).
        BackendAuthError: the backend could not use the credentials (a malformed key file, a refused token).
        StoreUnavailableError: a server needed to set the backend up (a token endpoint) did not answer.
        InvalidArgumentError: the filesystem refused the storage options.
    """
    text = check_url(url)
    options = _check_options(storage_options)
    remember_options(text, options)
    scheme = split_url(text)[0]
    try:
        return _open(text, options)
    except CkptStoreError:
        raise
    except Exception as exc:  # a filesystem failed while it was set up: type it, outside this handler
        error = _opening_error(exc, redact_url(text), scheme, options)
    raise error  # raised here so that no untyped, unscrubbed error is left as its __context__


def _open(text: str, options: dict[str, Any]) -> Backend:
    scheme, rest = split_url(text)
    display = redact_url(text)
    if scheme in _registered:
        return _registered[scheme](text, options)
    if scheme == "file":
        from .local import LocalBackend

        if options:
            raise UnsupportedURLError(f"storage options {sorted(options)} make no sense for the local path {display!r}")
        return LocalBackend(Path(rest))
    if scheme not in KNOWN_BACKENDS:
        factory = _entry_point(scheme)
        if factory is not None:
            return factory(text, options)
    protocol, class_path, extra, module = KNOWN_BACKENDS.get(scheme, (scheme, "", None, None))
    if module is not None:
        try:
            importlib.import_module(module)
        except ImportError as exc:
            raise BackendUnavailableError(
                f"{scheme}:// stores need the {module!r} package: pip install 'ckptstore[{extra}]' ({exc})"
            ) from None
    try:
        import fsspec

        fs_class = fsspec.get_filesystem_class(protocol)
    except ImportError as exc:
        raise BackendUnavailableError(f"{scheme}:// needs a package that is not installed: {exc}") from None
    except ValueError:
        known = ", ".join(sorted({*KNOWN_BACKENDS, *_registered}))
        raise UnsupportedURLError(
            f"{display!r}: no ckptstore backend or fsspec filesystem serves the {scheme!r} scheme "
            f"(known: {known}, or any fsspec protocol; third parties register one under the "
            f"{ENTRY_POINT_GROUP!r} entry-point group)"
        ) from None
    if "?" in rest:
        raise UnsupportedURLError(
            f"{display!r}: a store URL cannot carry a query string: a store is a folder of many objects, and a "
            "signed URL or a token in the URL grants one; pass credentials in storage_options instead"
        )
    if protocol in ("s3", "gs"):
        _check_bucket(display, scheme, protocol, rest.split("/", 1)[0])
    if protocol == "gs":
        _check_gcs_token(display, options)
    display = redact_url(f"{scheme}://{rest}")
    if not class_path:  # any other fsspec protocol: let fsspec parse host, port, ... from the URL
        from fsspec.core import url_to_fs

        from .fsspec import FsspecBackend

        if protocol in ("http", "https"):
            text, options = _http_credentials(text, options, display)
        try:
            fs, root = url_to_fs(text, **options)
        except (TypeError, ValueError) as exc:
            scrub_exception(exc)
            raise UnsupportedURLError(
                f"{display!r}: the fsspec {protocol!r} filesystem refused the URL: {redact(str(exc))}"
            ) from None
        return FsspecBackend(fs, str(root).rstrip("/"), display)
    merged = {**_FS_DEFAULTS.get(protocol, {}), **options}
    if protocol == "s3":  # botocore retries little and times out soon: the store's RetryPolicy decides
        merged["config_kwargs"] = {**_S3_CONFIG_DEFAULTS, **(options.get("config_kwargs") or {})}
    fs = fs_class(**merged)
    root = fs._strip_protocol(f"{protocol}://{rest}") if rest else ""
    root = root.rstrip("/")
    if scheme == "memory":
        root = root or "/ckptstore"
    backend: Backend = _load_class(class_path)(fs, root, display)
    return backend


def _check_bucket(display: str, scheme: str, protocol: str, bucket: str) -> None:
    """Refuse a missing bucket, credentials in the URL, and a bucket name the service would refuse."""
    if not bucket:
        raise UnsupportedURLError(f"{display!r} names no bucket: use {scheme}://BUCKET/PREFIX")
    if "@" in bucket:
        hint = _CREDENTIAL_HINTS["s3" if protocol == "s3" else "gs"]
        raise UnsupportedURLError(
            f"{display!r}: credentials in the URL are not supported for {scheme}:// stores (they would end up "
            f"in messages and bucket names); {hint}"
        )
    if protocol == "s3" and not bucket.startswith("arn:") and not _S3_BUCKET.fullmatch(bucket):
        raise UnsupportedURLError(f"{display!r}: {redact(bucket)!r} is not a valid S3 bucket name: {_S3_BUCKET_RULE}")
    if protocol == "gs" and not _GCS_BUCKET.fullmatch(bucket):
        raise UnsupportedURLError(f"{display!r}: {redact(bucket)!r} is not a valid GCS bucket name: {_GCS_BUCKET_RULE}")


def _check_gcs_token(display: str, options: Mapping[str, Any]) -> None:
    """A ``token`` that names a JSON key file must exist (gcsfs would send a missing path to Google as a token)."""
    token = options.get("token")
    if isinstance(token, str) and token.endswith(".json") and not os.path.isfile(token):
        raise BackendAuthError(
            f"{display}: the credentials file {token!r} (storage_options['token']) does not exist or is not a "
            f"file; {_CREDENTIAL_HINTS['gs']}"
        )


def _http_credentials(text: str, options: dict[str, Any], display: str) -> tuple[str, dict[str, Any]]:
    """Move ``user:password@`` out of an http(s) URL into the session's ``Authorization`` header.

    The filesystem's paths are full URLs, so the password would otherwise be in every path it prints.
    """
    parts = urlsplit(text)
    userinfo, at, host = parts.netloc.rpartition("@")
    if not at:
        return text, options
    client_kwargs = dict(options.get("client_kwargs") or {})
    headers = dict(client_kwargs.get("headers") or {})
    given = [h for h in (*headers, *(options.get("headers") or {})) if str(h).lower() == "authorization"]
    if client_kwargs.get("auth") is not None or given:
        raise InvalidArgumentError(
            f"{display}: credentials both in the URL and in storage_options (auth or an Authorization header); "
            "give them once"
        )
    user, _, password = userinfo.partition(":")
    pair = f"{unquote(user)}:{unquote(password)}".encode()
    headers["Authorization"] = "Basic " + base64.b64encode(pair).decode("ascii")
    client_kwargs["headers"] = headers
    return urlunsplit(parts._replace(netloc=host)), {**options, "client_kwargs": client_kwargs}


def _chain(exc: BaseException, depth: int = 3) -> str:
    """The first errors of ``exc``'s cause chain, redacted: ``KeyError: 'x' <- MalformedError: ...``."""
    parts: list[str] = []
    seen: BaseException | None = exc
    while seen is not None and len(parts) < depth:
        parts.append(describe_error(seen))
        seen = seen.__cause__ or seen.__context__
    return " <- ".join(parts)


def _opening_error(exc: Exception, display: str, scheme: str, options: Mapping[str, Any]) -> CkptStoreError:
    """The typed error for ``exc``, raised while the backend of ``display`` was set up."""
    clean = scrub_exception(exc)
    what = _chain(exc, depth=1 if is_transient(exc) else 3)
    kind = "gs" if scheme in ("gs", "gcs") else scheme
    token = options.get("token")
    token_file = token if kind == "gs" and isinstance(token, str) and os.path.isfile(token) else None
    gives_credentials = kind == "gs" and token is not None and token not in _GCS_TOKEN_METHODS
    error: CkptStoreError
    if isinstance(exc, ImportError):
        error = BackendUnavailableError(
            f"{display}: the {scheme} backend needs a package that is not installed ({what})"
        )
    elif is_transient(exc):
        error = StoreUnavailableError(
            f"{display}: could not set up the {scheme} backend: a server it needs (the storage service or the "
            f"credentials' token endpoint) did not answer ({what}); check the network and try again"
        )
    elif is_auth_failure(exc) or gives_credentials:
        source = f"the credentials file {token_file!r}" if token_file else "the credentials it was given"
        hint = _CREDENTIAL_HINTS.get(kind, "check the credentials in storage_options")
        error = BackendAuthError(f"{display}: the {scheme} backend could not use {source} ({what}); {hint}")
    elif isinstance(exc, FileNotFoundError):
        error = StoreNotFoundError(f"{display}: the {scheme} backend found nothing to open ({what})")
    elif isinstance(exc, TypeError):
        error = InvalidArgumentTypeError(f"{display}: the {scheme} filesystem refused the storage options ({what})")
    elif isinstance(exc, OSError):
        error = StoreUnavailableError(f"{display}: could not set up the {scheme} backend ({what})")
    else:
        error = InvalidArgumentError(
            f"{display}: the {scheme} filesystem refused the URL or the storage options ({what})"
        )
    error.__cause__ = exc if clean else None
    error.__suppress_context__ = True
    return error
