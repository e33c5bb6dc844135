"""The thread pools of the write and read paths, and running work on them even while the interpreter exits.

The fsyncs of finished files run on :data:`sync_pool` (hashing runs inline, in the thread that moves
the bytes: see :mod:`ckptstore.checksum`), and the seal and uploads of staged files fan out with
:func:`parallel_map`. A non-blocking save that is still pending at exit is finished by an ``atexit``
hook, after ``concurrent.futures`` stopped taking work: everything submitted here then runs inline
instead of failing the save.
"""

from __future__ import annotations

import os
import shutil
from collections.abc import Callable, Iterable
from concurrent.futures import Future, ThreadPoolExecutor
from pathlib import Path
from typing import Any, TypeVar

__all__ = ["parallel_map", "remove_later", "submit", "sync_and_close", "sync_pool"]

T = TypeVar("T")
R = TypeVar("R")

sync_pool = ThreadPoolExecutor(max_workers=2, thread_name_prefix="ckptstore-fsync")
"""Fsyncs off the write path: a file flushes to disk while the next one is written (the seal waits for
them all), and a staged file while it is read and hashed."""


cleanup_pool = ThreadPoolExecutor(max_workers=1, thread_name_prefix="ckptstore-cleanup")
"""Removal of scratch folders after a commit (an interpreter exit waits for what is queued)."""


def remove_later(path: Path) -> Future[Any]:
    """Remove the folder ``path`` in the background; the caller goes on at once.

    Unlinking a large file whose pages are cached costs the kernel about 0.3 s per GiB here (it frees
    every page), which a save to an object store used to spend after its commit, before returning.
    ``concurrent.futures`` finishes queued work before the interpreter exits, so nothing is left
    behind by a normal exit (a ``kill -9`` leaves a scratch folder in the temporary directory, as it
    always could).
    """
    return submit(cleanup_pool, lambda: shutil.rmtree(path, ignore_errors=True))


def submit(pool: ThreadPoolExecutor, fn: Callable[..., Any], *args: Any) -> Future[Any]:
    """Run ``fn`` in ``pool``, or right here once the interpreter is shutting down.

    A non-blocking save finished at exit runs after ``concurrent.futures`` stopped taking work.
    """
    try:
        return pool.submit(fn, *args)
    except RuntimeError:
        done: Future[Any] = Future()
        try:
            done.set_result(fn(*args))
        except BaseException as exc:
            done.set_exception(exc)
        return done


def parallel_map(fn: Callable[[T], R], items: Iterable[T], workers: int, name: str) -> list[R]:
    """``[fn(x) for x in items]`` on ``workers`` threads (inline once the interpreter is shutting down).

    Results come back in order; the first exception is raised after every call finished.
    """
    wanted = list(items)
    try:
        pool = ThreadPoolExecutor(max_workers=workers, thread_name_prefix=name)
        futures = [pool.submit(fn, item) for item in wanted]
    except RuntimeError:  # a non-blocking save finished at exit: the pools take no more work
        return [fn(item) for item in wanted]
    try:
        return [f.result() for f in futures]
    finally:
        pool.shutdown(wait=True)


def sync_and_close(fd: int) -> None:
    try:
        os.fsync(fd)
    finally:
        os.close(fd)
