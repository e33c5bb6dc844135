"""gcp-storage-emulator for tests and benchmarks: ``with GcsEmulator() as gcs: gcs.storage_options``.

The emulator speaks the GCS JSON API on 127.0.0.1 (a free port, in memory, one bucket). It does not
enforce ``ifGenerationMatch`` preconditions, so a store on it runs in single-writer mode and warns:
the tests check that warning. gcsfs must be told ``GCSFS_EXPERIMENTAL_ZB_HNS_SUPPORT=false`` or it
waits on a 60-second gRPC probe for each bucket; :meth:`GcsEmulator.env` includes it.
"""

from __future__ import annotations

import os
from typing import Any

from .._server import ServerProcess, find_executable, free_ports

__all__ = ["GcsEmulator"]


class GcsEmulator(ServerProcess):
    """A throwaway gcp-storage-emulator.

    Args:
        bucket: The bucket to create.
    """

    name = "gcs-emulator"

    def __init__(self, bucket: str = "ckptstore-test") -> None:
        super().__init__()
        self.bucket = bucket
        self.port = free_ports(1)[0]
        self.endpoint = f"http://127.0.0.1:{self.port}"
        os.environ.setdefault("GCSFS_EXPERIMENTAL_ZB_HNS_SUPPORT", "false")

    def command(self) -> list[str]:
        """``gcp-storage-emulator start`` in memory with a default bucket."""
        return [
            find_executable("gcp-storage-emulator"),
            "start",
            "--host",
            "127.0.0.1",
            "--port",
            str(self.port),
            "--in-memory",
            "--default-bucket",
            self.bucket,
        ]

    def _child_env(self) -> dict[str, str]:
        return {"STORAGE_EMULATOR_HOST": self.endpoint}

    @property
    def storage_options(self) -> dict[str, Any]:
        """``storage_options`` for :func:`ckptstore.open` and gcsfs."""
        return {"endpoint_url": self.endpoint, "token": "anon", "project": "ckptstore-test"}

    def filesystem(self) -> Any:
        """A fresh gcsfs filesystem talking to this emulator."""
        import gcsfs

        return gcsfs.GCSFileSystem(skip_instance_cache=True, **self.storage_options)

    def ready(self) -> bool:
        """The bucket answers a round trip of an object."""
        fs = self.filesystem()
        fs.pipe_file(f"{self.bucket}/.ready", b"ok")
        return bool(fs.cat_file(f"{self.bucket}/.ready") == b"ok")

    def env(self) -> dict[str, str]:
        """Variables for gcsfs and Google's client libraries."""
        return {"STORAGE_EMULATOR_HOST": self.endpoint, "GCSFS_EXPERIMENTAL_ZB_HNS_SUPPORT": "false"}

    def url(self, prefix: str) -> str:
        """``gs://<bucket>/<prefix>``."""
        return f"gs://{self.bucket}/{prefix}"
