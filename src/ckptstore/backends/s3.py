"""S3 and S3-compatible services (AWS, SeaweedFS, MinIO, R2, ...) through s3fs.

S3 gives the two atomic operations a store needs: a PUT with ``If-None-Match: *`` creates an object
only if it does not exist (the claim on an epoch and the commit record), and a PUT with
``If-Match: <etag>`` replaces it only if nobody changed it since it was read (pointers, index).
Servers report a failed precondition differently (AWS names the condition, SeaweedFS does not, so
s3fs raises ``FileExistsError`` for one and ``OSError(EINVAL)`` for the other); this module
recognizes the HTTP 412 / ``PreconditionFailed`` code itself. A writer killed mid-upload leaves
an unfinished multipart upload; :meth:`S3Backend.pending_uploads` lets gc find and abort it.

Large objects move in parts, several at once (:mod:`._parts`): ``open_write`` returns a
:class:`~._parts.MultipartWriter` whose parts go out concurrently on s3fs's event loop, and
``open_read`` fetches ranges ahead for sequential reads. ``storage_options['part_size']`` (bytes,
5 MiB to 5 GiB; default 8 MiB) and ``storage_options['transfer_concurrency']`` (1 to 64; default 8)
set the part size and the number of parts in flight for the whole store.
"""

from __future__ import annotations

import asyncio
import contextlib
import datetime as _dt
from collections.abc import Iterable
from typing import IO, Any

from fsspec.asyn import sync

from ._parts import MultipartWriter, PartBody, PartUploader
from .base import Capabilities, PendingUpload
from .fsspec import FsspecBackend

__all__ = ["S3Backend", "is_precondition_failure"]

READ_CONCURRENCY = 32
"""GetObject requests a batch read (manifests, index segments) keeps in flight at once."""
_PRECONDITION_CODES = {"PreconditionFailed", "412", "ConditionalRequestConflict", "409"}


def is_precondition_failure(exc: BaseException) -> bool:
    """True if ``exc`` (or its cause chain) is an HTTP 412 / PreconditionFailed from any S3 server."""
    seen: BaseException | None = exc
    while seen is not None:
        if isinstance(seen, FileExistsError):
            return True
        response = getattr(seen, "response", None)
        if isinstance(response, dict):
            error = response.get("Error") or {}
            status = (response.get("ResponseMetadata") or {}).get("HTTPStatusCode")
            if str(error.get("Code")) in _PRECONDITION_CODES or status in (412, 409):
                return True
        seen = seen.__cause__ or seen.__context__
    return False


class S3Uploader(PartUploader):
    """One object's multipart upload through s3fs's client (its retries on transient errors included).

    Args:
        fs: The s3fs filesystem.
        bucket: The bucket.
        key: The object key.
    """

    def __init__(self, fs: Any, bucket: str, key: str) -> None:
        self.fs = fs
        self.bucket = bucket
        self.key = key
        self.upload_id: str | None = None

    async def put_whole(self, data: bytes | bytearray | memoryview) -> None:
        """One PutObject."""
        body = PartBody(data) if len(data) else b""
        await self.fs._call_s3("put_object", Bucket=self.bucket, Key=self.key, Body=body)

    async def start(self) -> None:
        """CreateMultipartUpload."""
        response = await self.fs._call_s3("create_multipart_upload", Bucket=self.bucket, Key=self.key)
        self.upload_id = str(response["UploadId"])

    async def put_part(self, number: int, data: bytearray | memoryview) -> dict[str, Any]:
        """UploadPart; returns the part's number and ETag."""
        response = await self.fs._call_s3(
            "upload_part",
            Bucket=self.bucket,
            Key=self.key,
            UploadId=self.upload_id,
            PartNumber=number,
            Body=PartBody(data),  # sent in place, 256 KiB at a time: no copy of the part in the socket buffer
        )
        return {"PartNumber": number, "ETag": response["ETag"]}

    async def complete(self, parts: list[Any]) -> None:
        """CompleteMultipartUpload with the parts in order."""
        await self.fs._call_s3(
            "complete_multipart_upload",
            Bucket=self.bucket,
            Key=self.key,
            UploadId=self.upload_id,
            MultipartUpload={"Parts": parts},
        )

    async def abort(self) -> None:
        """AbortMultipartUpload (an upload already gone is fine)."""
        with contextlib.suppress(FileNotFoundError):
            await self.fs._call_s3("abort_multipart_upload", Bucket=self.bucket, Key=self.key, UploadId=self.upload_id)


class S3Backend(FsspecBackend):
    """A store under ``s3://bucket/prefix`` (see :class:`~.fsspec.FsspecBackend` for the arguments)."""

    transfer_service = "s3"

    @property
    def capabilities(self) -> Capabilities:
        """Create-only and compare-and-swap by conditional PUT; one-second LastModified."""
        return Capabilities(
            atomic_rename=False,
            create_only=True,
            compare_and_swap=True,
            symlinks=False,
            fsync=False,
            mtime_resolution_ns=1_000_000_000,
            multipart=True,
            max_key_bytes=1024,
        )

    def _split(self, key: str) -> tuple[str, str]:
        bucket, _, rest = self._p(key).partition("/")
        return bucket, rest

    def listdir_after(self, prefix: str, after: str) -> list[str]:
        """ListObjectsV2 from ``StartAfter``: its pages (1000 keys) hold only what sorts after ``after``.

        A name under ``after`` itself (``after/...``) rolls up into one common prefix and is dropped
        here, as is anything a server returns before ``StartAfter``.
        """
        bucket, name = self._split(prefix)
        base = f"{name}/" if name else ""
        start = {"StartAfter": base + after} if after else {}
        page: dict[str, Any] = {}
        found: set[str] = set()
        while True:
            try:
                response = self.fs.call_s3(
                    "list_objects_v2", Bucket=bucket, Prefix=base, Delimiter="/", **start, **page
                )
            except FileNotFoundError:
                return []
            found.update(entry["Prefix"][len(base) :].rstrip("/") for entry in response.get("CommonPrefixes") or [])
            found.update(entry["Key"][len(base) :] for entry in response.get("Contents") or [])
            token = response.get("NextContinuationToken")
            if not response.get("IsTruncated") or not token:
                return sorted(n for n in found if n > after)
            page = {"ContinuationToken": token}

    async def _aget(self, key: str) -> tuple[bytes, str]:
        """One GetObject: the content and its ETag (s3fs's ``cat_file`` sends a HeadObject first)."""
        bucket, name = self._split(key)
        response = await self.fs._call_s3("get_object", Bucket=bucket, Key=name)
        body = response["Body"]
        try:
            data = await body.read()
        finally:
            body.close()
        return bytes(data), str(response["ETag"])

    def _get(self, key: str) -> tuple[bytes, str]:
        return sync(self.fs.loop, self._aget, key)  # type: ignore[no-any-return]

    def read_many(self, keys: Iterable[str]) -> dict[str, bytes | None]:
        """One GetObject per key, at most ``READ_CONCURRENCY`` at a time; None for a missing one."""
        wanted = list(dict.fromkeys(keys))
        if not wanted:
            return {}
        gate = asyncio.Semaphore(READ_CONCURRENCY)

        async def one(key: str) -> bytes | None:
            async with gate:
                try:
                    return (await self._aget(key))[0]
                except FileNotFoundError:
                    return None

        async def every() -> list[bytes | None]:
            return list(await asyncio.gather(*(one(k) for k in wanted)))

        found: list[bytes | None] = sync(self.fs.loop, every)
        return dict(zip(wanted, found, strict=True))

    def read_bytes(self, key: str) -> bytes:
        """One GET."""
        return self._get(key)[0]

    def read_versioned(self, key: str) -> tuple[bytes, str] | None:
        """One GET returning the content and its ETag together."""
        try:
            return self._get(key)
        except FileNotFoundError:
            return None

    def write_if(self, key: str, data: bytes, version: str | None) -> bool:
        """PUT with If-None-Match (create-only) or If-Match (compare-and-swap)."""
        bucket, name = self._split(key)
        condition: dict[str, Any] = {"IfNoneMatch": "*"} if version is None else {"IfMatch": version}
        try:
            self.fs.call_s3("put_object", Bucket=bucket, Key=name, Body=data, **condition)
        except (OSError, ValueError) as exc:
            if is_precondition_failure(exc):
                return False
            if version is not None and isinstance(exc, FileNotFoundError):
                return False  # the object we meant to replace was deleted
            raise
        finally:
            self._invalidate(key)
        return True

    def write(self, key: str, data: bytes) -> None:
        """One unconditional PUT."""
        super().write(key, data)
        self._invalidate(key)

    def open_write(self, key: str) -> IO[bytes]:
        """A :class:`~._parts.MultipartWriter`: parts of ``part_size`` bytes, up to ``concurrency`` at once."""
        bucket, name = self._split(key)
        writer = MultipartWriter(S3Uploader(self.fs, bucket, name), self.fs.loop, self._parts, f"{self.url}/{key}")
        return writer  # type: ignore[return-value]

    def pending_uploads(self, prefix: str) -> list[PendingUpload]:
        """Unfinished multipart uploads under ``prefix`` (ListMultipartUploads, paginated)."""
        bucket, name = self._split(prefix)
        found: list[PendingUpload] = []
        marker: dict[str, str] = {}
        while True:
            response = self.fs.call_s3("list_multipart_uploads", Bucket=bucket, Prefix=name.rstrip("/") + "/", **marker)
            for upload in response.get("Uploads", []) or []:
                initiated = upload.get("Initiated")
                ns = int(initiated.timestamp() * 1e9) if isinstance(initiated, _dt.datetime) else 0
                found.append(
                    PendingUpload(
                        key=self._rel(f"{bucket}/{upload['Key']}"), upload_id=upload["UploadId"], initiated_ns=ns
                    )
                )
            if not response.get("IsTruncated"):
                return found
            marker = {
                "KeyMarker": response.get("NextKeyMarker", ""),
                "UploadIdMarker": response.get("NextUploadIdMarker", ""),
            }

    def abort_upload(self, upload: PendingUpload) -> None:
        """AbortMultipartUpload; an upload that is already gone is fine."""
        bucket, name = self._split(upload.key)
        with contextlib.suppress(FileNotFoundError):
            self.fs.call_s3("abort_multipart_upload", Bucket=bucket, Key=name, UploadId=upload.upload_id)
