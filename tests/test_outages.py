"""Outages: the S3 server dies mid-save and comes back; transient errors are retried under a deadline.

Each test runs its own SeaweedFS (``backends/s3``), stopped with SIGKILL and restarted on the same
data directory, so the session's shared server is not disturbed. The retry policy itself is tested
with an injected clock and sleep (no waiting), and the lost-reply check of create-only writes with a
backend that fails after it wrote.
"""

from __future__ import annotations

import errno
import logging
import random
from typing import Any

import numpy as np
import pytest

import ckptstore
from ckptstore.backends.memory import MemoryBackend
from ckptstore.backends.registry import open_backend
from ckptstore.backends.retrying import RetryingBackend
from ckptstore.retry import RetryPolicy, backoff_delays, call, is_transient

QUICK = RetryPolicy(max_attempts=4, initial_backoff=0.05, max_backoff=0.2, deadline=5.0)


# -- the policy, pure -------------------------------------------------------------------------------------
def test_backoff_grows_caps_and_jitters_within_bounds() -> None:
    policy = RetryPolicy(max_attempts=8, initial_backoff=0.5, max_backoff=4.0, multiplier=2.0, jitter=False)
    assert list(backoff_delays(policy)) == [0.5, 1.0, 2.0, 4.0, 4.0, 4.0, 4.0]
    jittered = list(backoff_delays(RetryPolicy(max_attempts=8, initial_backoff=0.5, max_backoff=4.0), random.Random(1)))
    assert len(jittered) == 7
    assert all(cap / 2 <= d <= cap for d, cap in zip(jittered, [0.5, 1.0, 2.0, 4.0, 4.0, 4.0, 4.0], strict=True))
    assert list(backoff_delays(RetryPolicy.never())) == []


def test_which_errors_are_transient() -> None:
    botocore = pytest.importorskip("botocore.exceptions")
    assert is_transient(ConnectionRefusedError(errno.ECONNREFUSED, "refused"))
    assert is_transient(TimeoutError("timed out"))
    assert is_transient(OSError(errno.ECONNRESET, "reset"))
    assert is_transient(botocore.EndpointConnectionError(endpoint_url="http://127.0.0.1:1"))
    slow = botocore.ClientError(
        {"Error": {"Code": "SlowDown"}, "ResponseMetadata": {"HTTPStatusCode": 503}}, "PutObject"
    )
    assert is_transient(slow)
    wrapped = OSError("upload failed")
    wrapped.__cause__ = botocore.ReadTimeoutError(endpoint_url="http://127.0.0.1:1")
    assert is_transient(wrapped)
    precondition = botocore.ClientError(
        {"Error": {"Code": "PreconditionFailed"}, "ResponseMetadata": {"HTTPStatusCode": 412}}, "PutObject"
    )
    assert not is_transient(precondition)
    assert not is_transient(FileNotFoundError("gone"))
    assert not is_transient(PermissionError("denied"))
    assert not is_transient(ckptstore.StoreUnavailableError("gave up already"))
    assert not is_transient(ValueError("bad"))


def test_call_retries_then_succeeds_and_gives_up_at_the_deadline_with_a_typed_error() -> None:
    now = [0.0]
    slept: list[float] = []

    def sleep(seconds: float) -> None:
        slept.append(seconds)
        now[0] += seconds

    outcomes: list[BaseException | str] = [ConnectionResetError(), ConnectionResetError(), "done"]

    def flaky() -> str:
        outcome = outcomes.pop(0)
        if isinstance(outcome, BaseException):
            raise outcome
        return outcome

    policy = RetryPolicy(max_attempts=10, initial_backoff=1.0, max_backoff=8.0, deadline=30.0, jitter=False)
    assert call(flaky, policy, "read x", sleep=sleep, clock=lambda: now[0]) == "done"
    assert slept == [1.0, 2.0]

    def down() -> str:
        raise ConnectionRefusedError(errno.ECONNREFUSED, "refused")

    slept.clear()
    now[0] = 0.0
    with pytest.raises(ckptstore.StoreUnavailableError, match="could not read x") as info:
        call(down, policy, "read x", sleep=sleep, clock=lambda: now[0])
    assert isinstance(info.value.__cause__, ConnectionRefusedError)
    assert sum(slept) <= 30.0 and slept == [1.0, 2.0, 4.0, 8.0, 8.0]  # the next 8 s would pass 30 s

    calls = []

    def missing() -> str:
        calls.append(1)
        raise FileNotFoundError("no such key")

    with pytest.raises(FileNotFoundError):
        call(missing, policy, "read y", sleep=sleep, clock=lambda: now[0])
    assert calls == [1]  # not transient: not retried


class _LosesReplies(MemoryBackend):
    """A memory backend whose create-only writes land and then report a reset connection, once each."""

    def __init__(self, inner: MemoryBackend) -> None:
        super().__init__(inner.fs, inner.root, inner.url)
        self.lost = 0

    def write_if(self, key: str, data: bytes, version: str | None) -> bool:
        created = super().write_if(key, data, version)
        if version is None and created and self.lost == 0:
            self.lost += 1
            raise ConnectionResetError(errno.ECONNRESET, "connection reset after the write")
        return created


def test_a_create_only_write_whose_reply_was_lost_counts_as_ours() -> None:
    inner = open_backend(f"memory://lost-reply-{random.randrange(1 << 30)}")
    assert isinstance(inner, MemoryBackend)
    backend = RetryingBackend(_LosesReplies(inner), QUICK)
    assert backend.create_only("epochs/00000001/.claim", b'{"writer": "me"}') is True
    assert backend.retries == 1
    assert backend.create_only("epochs/00000001/.claim", b'{"writer": "me"}') is False  # now it exists
    other = RetryingBackend(_LosesReplies(inner), QUICK)
    other.inner.lost = 1  # type: ignore[attr-defined]
    assert other.create_only("epochs/00000001/.claim", b'{"writer": "someone else"}') is False


def test_bad_retry_policies_are_refused() -> None:
    with pytest.raises(ValueError):
        RetryPolicy(max_attempts=0)
    with pytest.raises(ValueError):
        RetryPolicy(deadline=0)
    with pytest.raises(TypeError):
        ckptstore.StoreConfig(retry=5)  # type: ignore[arg-type]


# -- a real server that dies ----------------------------------------------------------------------------
@pytest.fixture
def own_s3() -> Any:
    from backends.s3 import SeaweedFS

    with SeaweedFS() as server:
        yield server


def _save(store: ckptstore.CheckpointStore, epoch: int, loss: float) -> None:
    store.save_state(
        epoch, {"w": np.full(20_000, epoch, dtype=np.float64)}, serializer="numpy", metrics={"val_loss": loss}
    )


@pytest.mark.s3
def test_server_killed_mid_save_gives_a_typed_error_and_loses_nothing_committed(own_s3: Any) -> None:
    url = own_s3.url("outage")
    config = ckptstore.StoreConfig(monitor="val_loss", retry=QUICK)
    store = ckptstore.CheckpointStore(url, config, storage_options=own_s3.storage_options)
    _save(store, 1, 0.5)
    _save(store, 2, 0.4)
    with pytest.raises(ckptstore.StoreUnavailableError), store.save(3, metrics={"val_loss": 0.1}) as tx:
        with tx.open("model.bin") as f:
            f.write(b"\1" * (9 << 20))  # more than one part: a multipart upload is under way
            own_s3.halt()  # the server dies mid-save
            f.write(b"\2" * (9 << 20))
    with pytest.raises(ckptstore.StoreUnavailableError, match="did not answer"):
        store.latest()  # reads fail typed too, once the policy's tries are spent

    own_s3.start()  # back, on the same data
    after = ckptstore.CheckpointStore(url, config, storage_options=own_s3.storage_options)
    assert after.epochs() == [1, 2]
    assert [ck.verify().epoch for ck in after.list(sort_by="epoch")] == [1, 2]
    assert after.latest().epoch == 2 and after.best().epoch == 2
    assert after.get(1).load()["w"][0] == 1.0
    report = after.gc()
    assert report.leftovers, "the aborted save's claim or multipart upload was left for gc"
    assert after.gc(dry_run=True).leftovers == ()
    _save(after, 3, 0.3)  # the epoch is free again
    assert after.latest().verify().epoch == 3


class _RestartOnFirstRetry(logging.Handler):
    """Brings the server back when the store logs its first retry (the event, not a timer)."""

    def __init__(self, server: Any) -> None:
        super().__init__(logging.WARNING)
        self.server = server
        self.retries_seen = 0

    def emit(self, record: logging.LogRecord) -> None:
        if "; try " in record.getMessage():
            self.retries_seen += 1
            if self.server.process is None:
                self.server.start()


@pytest.mark.s3
def test_a_transient_outage_is_ridden_out_by_the_retry_policy(own_s3: Any) -> None:
    url = own_s3.url("transient")
    policy = RetryPolicy(max_attempts=20, initial_backoff=0.1, max_backoff=1.0, deadline=120.0)
    store = ckptstore.CheckpointStore(
        url, ckptstore.StoreConfig(monitor="val_loss", retry=policy), storage_options=own_s3.storage_options
    )
    _save(store, 1, 0.5)
    own_s3.halt()
    handler = _RestartOnFirstRetry(own_s3)
    logger = logging.getLogger("ckptstore")
    logger.addHandler(handler)
    try:
        _save(store, 2, 0.4)  # starts while the server is down; a retry brings it back
    finally:
        logger.removeHandler(handler)
    assert handler.retries_seen >= 1
    assert isinstance(store.backend, RetryingBackend) and store.backend.retries >= 1
    assert store.epochs() == [1, 2]
    assert store.latest().verify().epoch == 2
