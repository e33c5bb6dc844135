"""Backend selection (registry, entry points) and claim expiry rules, on fast backends."""

from __future__ import annotations

import json
import sys
import time
import uuid
from pathlib import Path

import pytest

import ckptstore
from ckptstore.backends.local import LocalBackend
from ckptstore.backends.memory import MemoryBackend
from ckptstore.backends.registry import ENTRY_POINT_GROUP, open_backend


def test_urls_pick_backends_by_scheme(tmp_path: Path) -> None:
    assert isinstance(open_backend(tmp_path / "a"), LocalBackend)
    assert isinstance(open_backend((tmp_path / "b").as_uri()), LocalBackend)
    assert isinstance(open_backend("memory://x"), MemoryBackend)
    assert open_backend("s3://bucket/p").capabilities.compare_and_swap
    assert not open_backend("s3://bucket/p").capabilities.atomic_rename
    assert open_backend("gs://bucket/p", {"token": "anon"}).capabilities.create_only
    with pytest.raises(ckptstore.UnsupportedURLError, match="storage options"):
        open_backend(tmp_path / "c", {"key": "x"})


def test_a_generic_fsspec_url_runs_single_writer() -> None:
    backend = open_backend(f"reference://{uuid.uuid4().hex}", {"fo": {}})
    assert not backend.capabilities.create_only
    assert not backend.capabilities.compare_and_swap


def test_a_third_party_backend_registers_through_an_entry_point(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    dist = tmp_path / "ckptstore_thirdparty-1.0.dist-info"
    dist.mkdir()
    (dist / "METADATA").write_text("Metadata-Version: 2.1\nName: ckptstore-thirdparty\nVersion: 1.0\n")
    (dist / "entry_points.txt").write_text(f"[{ENTRY_POINT_GROUP}]\nthirdparty = ckptstore_thirdparty:open_backend\n")
    (tmp_path / "ckptstore_thirdparty.py").write_text(
        "from ckptstore.backends.registry import open_backend as _open\n"
        "def open_backend(url, options):\n"
        "    return _open(url.replace('thirdparty://', 'memory://'), options)\n"
    )
    monkeypatch.syspath_prepend(str(tmp_path))
    store = ckptstore.open(f"thirdparty://ep-{uuid.uuid4().hex}")
    store.save_state(1, {"a": 1}, serializer="json")
    assert store.latest().load() == {"a": 1}
    sys.modules.pop("ckptstore_thirdparty", None)


def _claim(store: ckptstore.CheckpointStore, epoch: int, *, host: str, age_s: float) -> None:
    record = {"writer": f"{host}.1.x", "host": host, "pid": 1, "claimed_at_ns": time.time_ns() - int(age_s * 1e9)}
    store.backend.write(f"epochs/{epoch:08d}/.claim", json.dumps(record).encode())
    store.backend.write(f"epochs/{epoch:08d}/model.bin", b"partial")


def test_another_hosts_claim_is_respected_until_the_grace_period_ends() -> None:
    store = ckptstore.open(f"memory://claims-{uuid.uuid4().hex}", work_grace_seconds=600)
    _claim(store, 3, host="elsewhere", age_s=10)
    assert store.gc(dry_run=True).leftovers == ()
    with pytest.raises(ckptstore.CommitConflictError, match="being written by elsewhere"):
        store.save_state(3, {"a": 1}, serializer="json")
    assert store.backend.read_bytes("epochs/00000003/model.bin") == b"partial"
    _claim(store, 4, host="elsewhere", age_s=3600)
    (leftover,) = store.gc(dry_run=True).leftovers
    assert leftover[0] == "epochs/00000004" and "grace" in leftover[1]
    store.save_state(4, {"a": 4}, serializer="json")  # takes the expired claim over
    assert store.get(4).load() == {"a": 4}
    assert sorted(store.get(4).files) == ["state.json"], "the dead writer's partial file was removed"
