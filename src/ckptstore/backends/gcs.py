"""Google Cloud Storage through gcsfs.

GCS makes writes conditional on an object's generation: ``ifGenerationMatch=0`` creates only if the
object does not exist (claims and commit records), ``ifGenerationMatch=<generation>`` replaces only
the version that was read (pointers, index). gcsfs sends the first itself (``mode="create"``); this
module sends the second with gcsfs's own request machinery. The fake-gcs emulators do not all
enforce preconditions: the store's create-only probe notices and runs in single-writer mode.

Set ``GCSFS_EXPERIMENTAL_ZB_HNS_SUPPORT=false`` when talking to an emulator, or gcsfs waits on a
60-second gRPC probe for every bucket.
"""

from __future__ import annotations

import json
from urllib.parse import quote

from .base import Capabilities
from .fsspec import FsspecBackend

__all__ = ["GCSBackend"]


class GCSBackend(FsspecBackend):
    """A store under ``gs://bucket/prefix`` (see :class:`~.fsspec.FsspecBackend` for the arguments).

    Downloads fetch ``part_size`` ranges ahead, ``transfer_concurrency`` at once, like S3. Uploads are
    gcsfs's resumable uploads in chunks of ``part_size`` bytes (a multiple of 256 KiB): a resumable
    upload takes its chunks in order only, so one object's chunks cannot be sent in parallel; several
    files still upload at once.
    """

    transfer_service = "gs"

    @property
    def capabilities(self) -> Capabilities:
        """Create-only and compare-and-swap by generation preconditions; resumable uploads."""
        return Capabilities(
            atomic_rename=False,
            create_only=True,
            compare_and_swap=True,
            symlinks=False,
            fsync=False,
            mtime_resolution_ns=1_000,
            max_key_bytes=1024,
        )

    def listdir_after(self, prefix: str, after: str) -> list[str]:
        """objects.list from ``startOffset``: its pages hold only what sorts at or after ``after``.

        ``startOffset`` includes ``after`` itself, and some emulators ignore it, so the names are
        filtered here too.
        """
        bucket, _, name = self._p(prefix).partition("/")
        base = f"{name}/" if name else ""
        query: dict[str, str] = {"prefix": base, "delimiter": "/"}
        if after:
            query["startOffset"] = base + after
        found: set[str] = set()
        while True:
            try:
                page = self.fs.call("GET", "b/{}/o", bucket, json_out=True, **query)
            except FileNotFoundError:
                return []
            found.update(p[len(base) :].rstrip("/") for p in page.get("prefixes") or [])
            found.update(item["name"][len(base) :] for item in page.get("items") or [])
            token = page.get("nextPageToken")
            if not token:
                return sorted(n for n in found if n > after)
            query["pageToken"] = token

    def read_versioned(self, key: str) -> tuple[bytes, str] | None:
        """The generation first, then the content (a newer content makes the later CAS fail)."""
        path = self._p(key)
        try:
            info = self.fs.info(path)
            data = self.fs.cat_file(path)
        except FileNotFoundError:
            return None
        return bytes(data), str(info.get("generation"))

    def write_if(self, key: str, data: bytes, version: str | None) -> bool:
        """Upload with ``ifGenerationMatch`` (0 = create-only); HTTP 412 means someone wrote first."""
        bucket, _, name = self._p(key).partition("/")
        generation = "0" if version is None else version
        metadata = json.dumps({"name": name})
        body = (
            (
                "--==0==\nContent-Type: application/json; charset=UTF-8\n\n"
                + metadata
                + "\n--==0==\nContent-Type: application/octet-stream\n\n"
            ).encode()
            + data
            + b"\n--==0==--"
        )
        try:
            self.fs.call(
                "POST",
                f"{self.fs._location}/upload/storage/v1/b/{quote(bucket)}/o",
                uploadType="multipart",
                headers={"Content-Type": 'multipart/related; boundary="==0=="'},
                data=body,
                json_out=True,
                ifGenerationMatch=generation,
            )
        except FileExistsError:
            return False
        finally:
            self._invalidate(key)
        return True

    def write(self, key: str, data: bytes) -> None:
        """One upload."""
        super().write(key, data)
        self._invalidate(key)
