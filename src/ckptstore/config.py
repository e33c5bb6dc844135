"""How a store is configured: the options of ``open()`` and the store descriptor, ``ckptstore.json``.

Every option is validated when the store is opened, before anything is written (a bad one is a typed
error with a hint). The descriptor records what must stay the same for the life of a store: its
format version, its id (the default run id), the width of epoch folder names, and the metric and
mode that define "best" (recorded at creation, or by compare-and-swap at the first open that names
one; a later open with another monitor is refused). A new descriptor is written create-only, so two
processes creating one store agree on its id.
"""

from __future__ import annotations

import contextlib
import datetime as _dt
import errno
import json
import os
import uuid
from collections.abc import Callable
from contextlib import AbstractContextManager
from pathlib import Path
from typing import Any

import attrs

from ._boundary import CAS_ATTEMPTS, backend_errors, parse_json
from ._options import (
    is_bool,
    is_choice,
    is_instance,
    is_int,
    is_keep_policy,
    is_name,
    is_progress,
    is_real,
    is_text,
)
from ._progress import ProgressOption
from ._redact import redact
from .backends.base import Backend
from .backends.local import LocalBackend
from .errors import (
    CkptStoreError,
    CommitFailedError,
    InvalidArgumentError,
    InvalidArgumentTypeError,
    ManifestError,
    MonitorMismatchError,
    StoreNotFoundError,
    StoreNotWritableError,
)
from .layout import LOCAL_FOLDERS, STORE_FILE
from .manifest import check_descriptor
from .oplog import OpLog
from .pointers import pointer_monitor
from .policies import KeepPolicy, Mode, SaveRules, resolve_mode
from .policy_record import describe_policy, policy_from_json, policy_to_json
from .retry import RetryPolicy

__all__ = [
    "DEFAULT_WIDTH",
    "STORE_FORMAT",
    "STORE_VERSION",
    "Opened",
    "StoreConfig",
    "config_from_options",
    "open_descriptor",
]

STORE_FORMAT = "ckptstore.store"
STORE_VERSION = 1
DEFAULT_WIDTH = 8


@attrs.frozen(kw_only=True)
class StoreConfig:
    """How a store saves, keeps and restarts; every option of :func:`ckptstore.open`.

    Attributes:
        keep: The keep policy (``ckptstore.keep.linear(5)``, ...); None keeps everything.
        monitor: The metric that defines "best" (``val_loss``); None for no best tracking.
        mode: ``min``, ``max`` or ``auto`` (max for names with acc/auc/f1/precision/recall).
        skip_epochs: Do not save epochs below this number (CANDLE).
        save_interval: Save when ``epoch % save_interval == 0``; 0 disables saving (CANDLE).
        save_best_only: Save only when the monitored metric improves (Keras).
        initial_value_threshold: The first save must beat this value (Keras).
        run_id: The run this process belongs to; defaults to the store's own id, so a restarted job
            is the same run. Runs sharing a store pass their own.
        verify_on_load: Re-hash on ``load`` and ``restart`` (default True).
        gc_on_save: Apply the keep policy after every commit (default True).
        work_grace_seconds: Age after which another host's staging directory counts as abandoned.
        width: Digits in epoch directory names; used when the store is created.
        log_file: Write ``ckpt.log`` (object stores: ``log/`` objects); default True.
        progress: Progress bars for big uploads: None (default) on a terminal only, True, False,
            or a callable receiving ``(done_bytes, total_bytes, description)``.
        pending_saves: Non-blocking saves in flight at most (default 1); a further save waits.
        index_head_entries: Records ``index.json`` holds before they move into a segment (default
            64): what each commit rewrites, whatever the store's history (see docs/scale.md).
        retry: Retries of transient backend failures (remote backends).
    """

    keep: KeepPolicy | None = attrs.field(default=None, validator=is_keep_policy())
    monitor: str | None = attrs.field(default=None, validator=is_text(optional=True))
    mode: str = attrs.field(default="auto", validator=is_choice("min", "max", "auto"))
    skip_epochs: int = attrs.field(default=0, validator=is_int(0))
    save_interval: int = attrs.field(default=1, validator=is_int(0))
    save_best_only: bool = attrs.field(default=False, validator=is_bool())
    initial_value_threshold: float | None = attrs.field(default=None, validator=is_real(optional=True))
    run_id: str | None = attrs.field(default=None, validator=is_name(optional=True))
    verify_on_load: bool = attrs.field(default=True, validator=is_bool())
    gc_on_save: bool = attrs.field(default=True, validator=is_bool())
    work_grace_seconds: float = attrs.field(default=3600.0, validator=is_real(positive=True))
    width: int = attrs.field(default=DEFAULT_WIDTH, validator=is_int(1, 18))
    log_file: bool = attrs.field(default=True, validator=is_bool())
    progress: ProgressOption = attrs.field(default=None, eq=False, validator=is_progress())
    pending_saves: int = attrs.field(default=1, validator=is_int(1, 64))
    index_head_entries: int = attrs.field(default=64, validator=is_int(1, 4096))
    retry: RetryPolicy = attrs.field(
        factory=RetryPolicy, validator=is_instance(RetryPolicy, "ckptstore.RetryPolicy(max_attempts=..., deadline=...)")
    )

    def __attrs_post_init__(self) -> None:
        _ = self.save_rules  # validates the combination (save_best_only needs monitor, ...)

    @property
    def resolved_mode(self) -> Mode:
        """``mode`` with ``auto`` resolved for ``monitor``."""
        return resolve_mode(self.monitor, self.mode)

    @property
    def save_rules(self) -> SaveRules:
        """The save decision parameters."""
        return SaveRules(
            skip_epochs=self.skip_epochs,
            save_interval=self.save_interval,
            save_best_only=self.save_best_only,
            monitor=self.monitor,
            mode=self.resolved_mode,
            initial_value_threshold=self.initial_value_threshold,
        )


def config_from_options(options: dict[str, Any], *, create: object, where: str = "ckptstore.open") -> StoreConfig:
    """Build a :class:`StoreConfig` from keyword options, with typed errors that name every option.

    Raises:
        InvalidArgumentTypeError: an option is unknown or of the wrong type, or ``create`` is not a bool.
        InvalidArgumentError: an option is out of range.
    """
    fields = attrs.fields_dict(StoreConfig)
    unknown = sorted(name for name in options if name not in fields)
    if unknown:
        raise InvalidArgumentTypeError(
            f"unknown option(s) for {where}: {', '.join(unknown)}; the options are create, storage_options, "
            f"{', '.join(fields)}"
        )
    if not isinstance(create, bool):
        raise InvalidArgumentTypeError(f"option create must be True or False, got {create!r}")
    try:
        return StoreConfig(**options)
    except CkptStoreError:
        raise
    except TypeError as exc:
        raise InvalidArgumentTypeError(f"mistyped option for {where}: {exc}") from None
    except (ValueError, ArithmeticError) as exc:
        raise InvalidArgumentError(f"invalid option for {where}: {exc}") from None


@attrs.frozen(kw_only=True)
class Opened:
    """What opening a store found out.

    Attributes:
        descriptor: ``ckptstore.json`` as it is on the backend now.
        config: The options, bound to the monitor and mode the store records.
        writable: Whether this process can write the store.
    """

    descriptor: dict[str, Any]
    config: StoreConfig
    writable: bool


def open_descriptor(
    backend: Backend,
    url: str,
    config: StoreConfig,
    *,
    create: bool,
    lock: Callable[[], AbstractContextManager[None]],
    log: OpLog,
) -> Opened:
    """Read (or create) the store descriptor, validate it, and bind ``config`` to its monitor.

    Locally it also creates the root (with ``create``) and the store's folders; nothing is written
    when an option or the descriptor is refused.

    Raises:
        StoreNotFoundError: no store and ``create=False``, or its bucket or parent does not exist.
        StoreNotWritableError: no store, and it cannot be created here.
        ManifestError: the descriptor is not a valid one.
        MonitorMismatchError: ``config`` names another monitor or mode than the store records.
    """
    writable = True
    with backend_errors(backend, "open the store"):
        local = backend.local_path()
        if local is not None:
            writable = _prepare_local_root(local, create)
        raw = None
        with contextlib.suppress(FileNotFoundError):
            raw = backend.read_bytes(STORE_FILE)
        if raw is None:
            if not writable:
                raise StoreNotWritableError(f"{url} is not a ckptstore store and cannot be written")
            if not create:
                raise StoreNotFoundError(f"{url} is not a ckptstore store (no {STORE_FILE})")
            fresh: dict[str, Any] = {
                "format": STORE_FORMAT,
                "version": STORE_VERSION,
                "store_id": uuid.uuid4().hex,
                "created_at": _dt.datetime.now(_dt.timezone.utc).isoformat(),
                "width": config.width,
            }
            if config.monitor is not None:  # best is bound to its metric from the start
                fresh["monitor"] = config.monitor
                fresh["mode"] = config.resolved_mode
            recordable = policy_to_json(config.keep) if config.keep is not None else None
            if recordable is not None:  # so gc from the CLI, or a later open, applies the same policy
                fresh["keep"] = recordable
            try:
                backend.check_container()
                backend.create_only(STORE_FILE, json.dumps(fresh, indent=1).encode())
            except FileNotFoundError as exc:
                raise StoreNotFoundError(
                    f"cannot create a store at {url}: its bucket or parent does not exist "
                    f"({redact(str(exc))}); create the bucket first"
                ) from None
            raw = backend.read_bytes(STORE_FILE)
    where = f"{url}/{STORE_FILE}"
    try:
        descriptor = json.loads(raw)
        if not isinstance(descriptor, dict):
            raise ManifestError(f"{where} is not a JSON object")
        if descriptor.get("format") != STORE_FORMAT or descriptor.get("version") != STORE_VERSION:
            raise ManifestError(f"{where} is not a version-{STORE_VERSION} ckptstore descriptor")
        check_descriptor(descriptor, where)  # width: an int 1..18, not a bool; store_id: a string
    except (ValueError, RecursionError) as exc:
        if isinstance(exc, ManifestError):
            raise
        raise ManifestError(f"{where} is not valid JSON: {exc}") from None
    descriptor, config = _bind_monitor(backend, url, config, descriptor, writable=writable, lock=lock, log=log)
    if local is not None and writable:
        for sub in LOCAL_FOLDERS:
            backend.make_dir(sub)  # type: ignore[attr-defined]  # refuses a symlink: never followed
    return Opened(descriptor=descriptor, config=config, writable=writable)


def _bind_monitor(
    backend: Backend,
    url: str,
    config: StoreConfig,
    descriptor: dict[str, Any],
    *,
    writable: bool,
    lock: Callable[[], AbstractContextManager[None]],
    log: OpLog,
) -> tuple[dict[str, Any], StoreConfig]:
    """Bind ``config`` to the monitor, mode and keep policy recorded in ``ckptstore.json``; record them on first use.

    ``best`` means one thing per store: a store records its monitor and mode when it is created with
    one, or at the first open that names one (by compare-and-swap, so two first opens agree). A later
    open without ``monitor=`` uses them; one with another monitor (or an explicit other mode) is
    refused before anything is written. The keep policy is recorded the same way (when it is one of
    :mod:`ckptstore.keep`'s); a later open without ``keep=`` uses it, one with another keeps its own
    for that process (the record is not rewritten).

    Returns:
        The descriptor as it is on the backend now, and the bound options.

    Raises:
        MonitorMismatchError: ``monitor``/``mode`` differ from what the store recorded.
        ManifestError: the recorded values are malformed.
    """
    where = f"{url}/{STORE_FILE}"
    for _attempt in range(CAS_ATTEMPTS):
        config, updates = _recorded_monitor(backend, url, config, descriptor)
        config, keep_updates = _recorded_keep(where, config, descriptor)
        updates.update(keep_updates)
        if not updates or not writable:
            return descriptor, config
        updated = {**descriptor, **updates}
        with backend_errors(backend, f"record the monitor and keep policy in {STORE_FILE}"), lock():
            current = backend.read_versioned(STORE_FILE)
            if current is None:
                raise StoreNotFoundError(f"{where} disappeared while the store was being opened")
            unchanged = parse_json(current[0]) == descriptor
            if unchanged and backend.write_if(STORE_FILE, json.dumps(updated, indent=1).encode(), current[1]):
                if "monitor" in updates:
                    log("MONITOR", f"best is chosen by {updated['monitor']} ({updated['mode']})")
                if "keep" in updates:
                    log("KEEP", f"keep policy recorded: {describe_policy(updated['keep'])}")
                return updated, config
            descriptor = parse_json(current[0])  # another process recorded first: check against it
    raise CommitFailedError(errno.EAGAIN, f"could not record the monitor in {where}: too many concurrent opens")


def _recorded_monitor(
    backend: Backend, url: str, config: StoreConfig, descriptor: dict[str, Any]
) -> tuple[StoreConfig, dict[str, Any]]:
    """``config`` bound to the recorded monitor and mode, and the fields to record (none, or both)."""
    where = f"{url}/{STORE_FILE}"
    recorded, recorded_mode = descriptor.get("monitor"), descriptor.get("mode")
    if recorded is not None and (not isinstance(recorded, str) or not recorded or recorded_mode not in ("min", "max")):
        raise ManifestError(
            f"{where}: 'monitor' must be a metric name and 'mode' 'min' or 'max' "
            f"(found {recorded!r}, {recorded_mode!r}); fix or remove them"
        )
    legacy = None
    if recorded is None:  # stores made before the descriptor kept it: what the best pointer records
        legacy = pointer_monitor(backend)
        if legacy is not None:
            recorded, recorded_mode = legacy
    wanted, wanted_mode = config.monitor, config.mode
    if recorded is None:
        if wanted is None:
            return config, {}
        return config, {"monitor": config.monitor, "mode": config.resolved_mode}
    if wanted is not None and wanted != recorded:
        raise MonitorMismatchError(
            f"the store at {url} ranks checkpoints by {recorded!r} ({recorded_mode}), as recorded in "
            f"{STORE_FILE}; it cannot be opened with monitor={wanted!r}. Open it without monitor= (or "
            f"with monitor={recorded!r}), and rank by another metric with store.best(metric={wanted!r}) "
            f"or store.list(sort_by={wanted!r})"
        )
    if wanted_mode != "auto" and wanted_mode != recorded_mode:
        raise MonitorMismatchError(
            f"the store at {url} ranks {recorded!r} with mode={recorded_mode!r}, as recorded in "
            f"{STORE_FILE}; it cannot be opened with mode={wanted_mode!r}. Open it with mode='auto' or "
            f"{recorded_mode!r}; rank the other way with store.list(sort_by={recorded!r}, order=...)"
        )
    config = attrs.evolve(config, monitor=recorded, mode=str(recorded_mode))
    return config, ({"monitor": recorded, "mode": recorded_mode} if legacy is not None else {})


def _recorded_keep(where: str, config: StoreConfig, descriptor: dict[str, Any]) -> tuple[StoreConfig, dict[str, Any]]:
    """``config`` with the recorded keep policy when it names none, and the field to record (if any)."""
    raw = descriptor.get("keep")
    if raw is not None:
        try:
            recorded = policy_from_json(raw)
        except InvalidArgumentError as exc:
            raise ManifestError(f"{where}: field 'keep' is not a keep policy ({exc}); fix or remove it") from None
        return (config if config.keep is not None else attrs.evolve(config, keep=recorded)), {}
    wanted = policy_to_json(config.keep) if config.keep is not None else None
    return config, ({"keep": wanted} if wanted is not None else {})


def _prepare_local_root(root: Path, create: bool) -> bool:
    """Make sure a local root exists (creating it with ``create``); return whether it is writable."""
    if not root.exists():
        if not create:
            raise StoreNotFoundError(f"no store at {root} (pass create=True to make one)")
        try:
            LocalBackend.make_dirs(root)
        except PermissionError as exc:
            raise StoreNotWritableError(f"cannot create the store at {root}: {exc}") from None
        except FileExistsError:
            raise InvalidArgumentError(f"{root} exists and is not a directory") from None
    if not root.is_dir():
        raise InvalidArgumentError(f"{root} is not a directory")
    return os.access(root, os.W_OK | os.X_OK)
