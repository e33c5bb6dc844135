"""Which backend serves a URL: known schemes with install hints, lazy imports, and entry points.

Modelled on fsspec's ``registry``: a table of known schemes names the class that serves each and the
extra that installs its dependencies, nothing is imported until a URL needs it, and a third party can
add a scheme with an entry point in the ``ckptstore.backends`` group (``name = "pkg.mod:Class"``, the
class taking ``(url, storage_options)``). Any other scheme that fsspec knows works through the
generic fsspec backend, in single-writer mode.
"""

from __future__ import annotations

import importlib
import importlib.metadata
import os
from collections.abc import Callable, Mapping
from pathlib import Path
from typing import Any

from ..errors import BackendUnavailableError, UnsupportedURLError
from .base import Backend

__all__ = ["ENTRY_POINT_GROUP", "KNOWN_BACKENDS", "open_backend", "register_backend", "split_url"]

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
        UnsupportedURLError: no backend serves the scheme, or the URL lacks a bucket.
        BackendUnavailableError: the backend's package is not installed (names the extra).
    """
    text = os.fspath(url)
    options = dict(storage_options or {})
    scheme, rest = split_url(text)
    if scheme in _registered:
        return _registered[scheme](text, options)
    if scheme == "file":
        from .local import LocalBackend

        if options:
            raise UnsupportedURLError(f"storage options {sorted(options)} make no sense for the local path {text!r}")
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
            f"{text!r}: no ckptstore backend or fsspec filesystem serves the {scheme!r} scheme "
            f"(known: {known}, or any fsspec protocol; third parties register one under the "
            f"{ENTRY_POINT_GROUP!r} entry-point group)"
        ) from None
    if protocol in ("s3", "gs") and not rest.split("/", 1)[0]:
        raise UnsupportedURLError(f"{text!r} names no bucket: use {scheme}://BUCKET/PREFIX")
    display = f"{scheme}://{rest}"
    if not class_path:  # any other fsspec protocol: let fsspec parse host, port, ... from the URL
        from fsspec.core import url_to_fs

        from .fsspec import FsspecBackend

        try:
            fs, root = url_to_fs(text, **options)
        except (TypeError, ValueError) as exc:
            raise UnsupportedURLError(f"{text!r}: the fsspec {protocol!r} filesystem refused the URL: {exc}") from None
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
