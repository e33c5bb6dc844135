"""Parallel part transfers on object stores, against the real SeaweedFS server and the GCS emulator.

Uploads go in parts of ``part_size`` bytes, ``transfer_concurrency`` at once; these tests check the
object that results (bytes, the manifest's xxh3-128 digest, that it really was a multipart upload
with parts in flight together), that a failed part aborts the upload and leaves nothing (no object, no
pending upload, no checkpoint), that downloads by parallel ranges give the same bytes for every read
pattern, and that bad options are refused with typed errors before anything is written.
"""

from __future__ import annotations

import asyncio
import errno
import os
import threading
import uuid
from pathlib import Path
from typing import Any

import pytest
import xxhash

import ckptstore
from ckptstore.backends import s3 as s3_backend

MiB = 1024 * 1024
PART = 5 * MiB  # S3's smallest part, so a few parts make a multipart upload


def _open(server: Any, **options: Any) -> tuple[ckptstore.CheckpointStore, str]:
    prefix = f"par-{uuid.uuid4().hex[:10]}"
    url = server.url(prefix)
    return ckptstore.open(url, storage_options={**server.storage_options, **options}, progress=False), url


class _Tracking:
    """Counts the parts of S3 multipart uploads in flight at once (wraps the real upload_part call)."""

    def __init__(self, monkeypatch: pytest.MonkeyPatch, fail_part: int | None = None) -> None:
        self.in_flight = 0
        self.most = 0
        self.parts = 0
        self.aborted = 0
        self._lock = threading.Lock()
        real_put, real_abort = s3_backend.S3Uploader.put_part, s3_backend.S3Uploader.abort
        tracker = self

        async def put_part(uploader: Any, number: int, data: Any) -> Any:
            with tracker._lock:
                tracker.in_flight += 1
                tracker.parts += 1
                tracker.most = max(tracker.most, tracker.in_flight)
            try:
                if fail_part is not None and number == fail_part:
                    await asyncio.sleep(0.05)
                    raise OSError(errno.EIO, f"injected failure of part {number}")
                await asyncio.sleep(0.02)  # keep parts in flight long enough to overlap on a busy machine
                return await real_put(uploader, number, data)
            finally:
                with tracker._lock:
                    tracker.in_flight -= 1

        async def abort(uploader: Any) -> None:
            tracker.aborted += 1
            await real_abort(uploader)

        monkeypatch.setattr(s3_backend.S3Uploader, "put_part", put_part)
        monkeypatch.setattr(s3_backend.S3Uploader, "abort", abort)


def _pending(server: Any, url: str) -> list[Any]:
    fs = server.filesystem()
    bucket, _, prefix = url.replace("s3://", "").partition("/")
    response = fs.call_s3("list_multipart_uploads", Bucket=bucket, Prefix=prefix + "/")
    return list(response.get("Uploads") or [])


@pytest.mark.s3
def test_streamed_and_staged_files_upload_in_parallel_parts_with_the_right_bytes_and_digest(
    s3_server: Any, monkeypatch: pytest.MonkeyPatch
) -> None:
    tracking = _Tracking(monkeypatch)
    store, url = _open(s3_server, part_size=PART, transfer_concurrency=3)
    streamed = os.urandom(4 * PART + 12345)
    staged = os.urandom(3 * PART)  # an exact number of parts
    with store.save(1) as tx:
        with tx.open("model/streamed.bin") as f:
            for i in range(0, len(streamed), 3_000_001):  # writes that straddle part boundaries
                f.write(streamed[i : i + 3_000_001])
        (tx.path / "staged.bin").write_bytes(staged)
        (tx.path / "small.json").write_bytes(b'{"step": 1}')
        with tx.open("empty.bin"):
            pass
    assert tracking.parts == 5 + 3
    assert 2 <= tracking.most <= 3, "parts went one at a time, or more than transfer_concurrency at once"

    fs = s3_server.filesystem()
    root = url.replace("s3://", "")
    expected = {"model/streamed.bin": streamed, "staged.bin": staged, "small.json": b'{"step": 1}', "empty.bin": b""}
    checkpoint = store.get(1)
    for name, data in expected.items():
        assert fs.cat_file(f"{root}/epochs/00000001/{name}") == data
        entry = checkpoint.files[name]
        assert (entry.size, entry.xxh3_128) == (len(data), xxhash.xxh3_128_hexdigest(data))
    etag = fs.info(f"{root}/epochs/00000001/model/streamed.bin")["ETag"].strip('"')
    assert etag.endswith("-5"), f"not a 5-part multipart upload: ETag {etag}"
    checkpoint.verify()
    assert _pending(s3_server, url) == []


@pytest.mark.s3
@pytest.mark.parametrize("how", ["stream", "staged"])
def test_a_failed_part_aborts_the_upload_and_the_save_commits_nothing(
    s3_server: Any, monkeypatch: pytest.MonkeyPatch, how: str
) -> None:
    store, url = _open(s3_server, part_size=PART, transfer_concurrency=2)
    store.save_state(1, {"ok": True}, serializer="json")  # an earlier checkpoint, to check it is untouched
    tracking = _Tracking(monkeypatch, fail_part=3)
    data = os.urandom(6 * PART)
    with pytest.raises(ckptstore.CommitFailedError, match="injected failure of part 3"):
        with store.save(2) as tx:
            if how == "stream":
                with tx.open("big.bin") as f:
                    for i in range(0, len(data), MiB):
                        f.write(data[i : i + MiB])
            else:
                (tx.path / "big.bin").write_bytes(data)
    assert tracking.aborted >= 1
    fs = s3_server.filesystem()
    root = url.replace("s3://", "")
    fs.invalidate_cache()
    assert not fs.exists(f"{root}/epochs/00000002/big.bin")
    assert not fs.exists(f"{root}/epochs/00000002/MANIFEST.json")
    assert _pending(s3_server, url) == [], "the multipart upload was left behind"
    assert store.epochs() == [1]
    with pytest.raises(ckptstore.CheckpointNotFoundError):
        store.get(2)
    monkeypatch.undo()
    store.save_state(2, {"again": True}, serializer="json")  # the epoch can be written again
    assert store.get(2).load() == {"again": True}


@pytest.mark.s3
def test_parallel_ranged_downloads_give_the_same_bytes_for_every_read_pattern(s3_server: Any, tmp_path: Path) -> None:
    store, _ = _open(s3_server, part_size=PART, transfer_concurrency=3)
    data = os.urandom(5 * PART + 777)
    with store.save(1) as tx:
        (tx.path / "big.bin").write_bytes(data)
        (tx.path / "b.bin").write_bytes(data[: 2 * PART + 1])
    checkpoint = store.get(1)
    out = checkpoint.download(tmp_path / "copy")
    assert (out / "big.bin").read_bytes() == data and (out / "b.bin").read_bytes() == data[: 2 * PART + 1]
    assert checkpoint.read_bytes("big.bin") == data
    with checkpoint.open("big.bin") as f:
        assert f.read(10) == data[:10]  # small reads: the filesystem's own buffered file
        assert f.read(3 * MiB) == data[10 : 10 + 3 * MiB]  # a large read starts the read-ahead
        assert f.read(PART) == data[10 + 3 * MiB : 10 + 3 * MiB + PART]  # across a range boundary
        f.seek(PART * 4 + 5)
        assert f.read(2 * MiB) == data[PART * 4 + 5 : PART * 4 + 5 + 2 * MiB]
        f.seek(-100, os.SEEK_END)
        assert f.read() == data[-100:]
        assert f.read(5) == b""
        f.seek(0)
        chunks = []
        while chunk := f.read(4 * MiB + 3):
            chunks.append(chunk)
        assert b"".join(chunks) == data
    checkpoint.verify()


@pytest.mark.s3
@pytest.mark.parametrize(
    ("options", "error", "match"),
    [
        ({"part_size": "8MiB"}, ckptstore.InvalidArgumentTypeError, "part_size.*must be an int"),
        ({"part_size": 8.0 * MiB}, ckptstore.InvalidArgumentTypeError, "part_size.*must be an int"),
        ({"part_size": 1 * MiB}, ckptstore.InvalidArgumentError, "part_size.*between 5242880"),
        ({"part_size": 6 * 1024 * 1024 * MiB}, ckptstore.InvalidArgumentError, "part_size"),
        ({"transfer_concurrency": 0}, ckptstore.InvalidArgumentError, "transfer_concurrency.*between 1 and 64"),
        ({"transfer_concurrency": 1000}, ckptstore.InvalidArgumentError, "transfer_concurrency"),
        ({"transfer_concurrency": True}, ckptstore.InvalidArgumentTypeError, "transfer_concurrency.*int"),
        ({"transfer_concurrency": "4"}, ckptstore.InvalidArgumentTypeError, "transfer_concurrency.*int"),
    ],
)
def test_bad_transfer_options_are_refused_with_typed_errors_and_write_nothing(
    s3_server: Any, options: dict[str, Any], error: type[Exception], match: str
) -> None:
    prefix = f"bad-{uuid.uuid4().hex[:10]}"
    with pytest.raises(error, match=match):
        ckptstore.open(s3_server.url(prefix), storage_options={**s3_server.storage_options, **options})
    fs = s3_server.filesystem()
    assert not fs.exists(f"{s3_server.bucket}/{prefix}")


@pytest.mark.s3
def test_transfer_options_reach_the_backend_and_not_botocore(s3_server: Any) -> None:
    store, _ = _open(s3_server, part_size=6 * MiB, transfer_concurrency=5)
    store.save_state(1, {"a": 1}, serializer="json")  # s3fs would fail on an unknown botocore option
    backend = store.backend
    inner = getattr(backend, "inner", backend)
    assert (inner.transfer.part_size, inner.transfer.concurrency) == (6 * MiB, 5)


@pytest.mark.gcs
@pytest.mark.filterwarnings("ignore::ckptstore.SingleWriterWarning")
def test_gcs_uploads_in_part_size_chunks_and_downloads_by_parallel_ranges(gcs_server: Any, tmp_path: Path) -> None:
    url = gcs_server.url(f"par-{uuid.uuid4().hex[:10]}")
    options = {**gcs_server.storage_options, "part_size": 1 * MiB, "transfer_concurrency": 3}
    store = ckptstore.open(url, storage_options=options, progress=False)
    data = os.urandom(4 * MiB + 999)
    with store.save(1) as tx:
        with tx.open("streamed.bin") as f:
            f.write(data)
        (tx.path / "staged.bin").write_bytes(data[: 3 * MiB])
    checkpoint = store.get(1)
    assert checkpoint.files["streamed.bin"].xxh3_128 == xxhash.xxh3_128_hexdigest(data)
    out = checkpoint.download(tmp_path / "copy")
    assert (out / "streamed.bin").read_bytes() == data
    assert (out / "staged.bin").read_bytes() == data[: 3 * MiB]
    with checkpoint.open("streamed.bin") as f:
        f.seek(5)
        assert f.read(2 * MiB) == data[5 : 5 + 2 * MiB]
        assert f.read() == data[5 + 2 * MiB :]
    with pytest.raises(ckptstore.InvalidArgumentError, match="multiple of 262144"):
        ckptstore.open(url, storage_options={**gcs_server.storage_options, "part_size": 5 * MiB + 1})
