"""The shipped conformance suite on every backend: memory, local disk, S3 (SeaweedFS), GCS (emulator)."""

from __future__ import annotations

import uuid
from pathlib import Path
from typing import Any

import pytest

from ckptstore.testing import StoreTests


class TestMemory(StoreTests):
    @pytest.fixture
    def store_url(self) -> str:
        return f"memory://conformance-{uuid.uuid4().hex}"


class TestLocal(StoreTests):
    @pytest.fixture
    def store_url(self, tmp_path: Path) -> str:
        return str(tmp_path / "store")


@pytest.mark.s3
class TestS3(StoreTests):
    @pytest.fixture
    def store_url(self, s3_server: Any) -> str:
        return str(s3_server.url(f"conformance-{uuid.uuid4().hex}"))

    @pytest.fixture
    def storage_options(self, s3_server: Any) -> dict[str, Any]:
        return dict(s3_server.storage_options)


@pytest.mark.gcs
@pytest.mark.filterwarnings("ignore::ckptstore.SingleWriterWarning")  # asserted by its own test
class TestGCS(StoreTests):
    enforces_create_only = False  # gcp-storage-emulator ignores ifGenerationMatch

    @pytest.fixture
    def store_url(self, gcs_server: Any) -> str:
        return str(gcs_server.url(f"conformance-{uuid.uuid4().hex}"))

    @pytest.fixture
    def storage_options(self, gcs_server: Any) -> dict[str, Any]:
        return dict(gcs_server.storage_options)
