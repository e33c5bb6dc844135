from __future__ import annotations

import os
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest

os.environ.setdefault("KERAS_BACKEND", "torch")  # before anything imports keras (tox sets it too)

import ckptstore


def snapshot(root: Path) -> dict[str, object]:
    """Every entry under root: file bytes, symlink targets, and directories."""
    out: dict[str, object] = {}
    for dirpath, dirnames, filenames in os.walk(root):
        for name in dirnames + filenames:
            full = Path(dirpath, name)
            rel = full.relative_to(root).as_posix()
            if full.is_symlink():
                out[rel] = ("link", os.readlink(full))
            elif full.is_dir():
                out[rel] = "dir"
            elif rel != "ckpt.log":
                out[rel] = full.read_bytes()
    return out


def run_child(code: str, *, env: dict[str, str] | None = None, check: bool = False) -> subprocess.CompletedProcess[str]:
    """Run Python code in a fresh interpreter (a real process)."""
    full_env = dict(os.environ)
    full_env.update(env or {})
    return subprocess.run(
        [sys.executable, "-c", textwrap.dedent(code)],
        env=full_env,
        capture_output=True,
        text=True,
        check=check,
        timeout=120,
    )


@pytest.fixture
def root(tmp_path: Path) -> Path:
    return tmp_path / "store"


@pytest.fixture
def store(root: Path) -> ckptstore.CheckpointStore:
    with ckptstore.open(root, monitor="val_loss") as s:
        yield s


def save_bytes(
    store: ckptstore.CheckpointStore, epoch: int, payload: bytes = b"data", **kw: object
) -> ckptstore.Checkpoint:
    with store.save(epoch, **kw) as tx:  # type: ignore[arg-type]
        with tx.open("model.bin") as f:
            f.write(payload)
    assert tx.checkpoint is not None
    return tx.checkpoint


@pytest.fixture(scope="session")
def s3_server() -> object:
    """A real SeaweedFS S3 server for the whole run (a failure to start fails the tests, never skips)."""
    from backends.s3 import SeaweedFS

    with SeaweedFS() as server:
        yield server


@pytest.fixture(scope="session")
def gcs_server() -> object:
    """A real gcp-storage-emulator for the whole run."""
    from backends.gcs import GcsEmulator

    with GcsEmulator() as server:
        yield server


def _fuse_or_skip() -> None:
    from backends._fuse import fuse_available

    reason = fuse_available()
    if reason is not None:
        pytest.skip(reason)


@pytest.fixture(params=["journal", "strict"])
def lazy_mount(request: pytest.FixtureRequest) -> object:
    """A fresh LazyFS FUSE mount (unsynced writes dropped on ``power_cut()``) for one test.

    Twice: with an ordered journal (ext4-like) and with strict per-directory fsyncs (POSIX's minimum).
    """
    from backends.lazyfs import LazyMount

    _fuse_or_skip()
    with LazyMount(strict=request.param == "strict") as mount:
        yield mount


@pytest.hookimpl(hookwrapper=True)
def pytest_runtest_makereport(item: pytest.Item, call: pytest.CallInfo[None]) -> object:
    """With CKPTSTORE_REQUIRE_SERVERS=1 (set by tox), a skipped S3, GCS or FUSE test fails the run."""
    outcome = yield
    report = outcome.get_result()  # type: ignore[attr-defined]
    if (
        report.skipped
        and os.environ.get("CKPTSTORE_REQUIRE_SERVERS") == "1"
        and any(True for name in ("s3", "gcs", "fuse") for _ in item.iter_markers(name))
    ):
        report.outcome = "failed"
        report.longrepr = f"{item.nodeid}: S3/GCS/FUSE tests must run in CI, not skip ({report.longrepr})"


@pytest.fixture(scope="session")
def nfs_server() -> object:
    """A shared directory with five NFS-like client mounts (``backends/nfs``), for the whole run."""
    from backends.nfs import NfsServer

    _fuse_or_skip()
    with NfsServer(ttl=float(os.environ.get("CKPTSTORE_NFS_TTL", "1.0"))) as server:
        for _ in range(5):
            server.client()
        yield server
