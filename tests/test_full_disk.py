"""A real full disk: a small tmpfs fills in the middle of a save."""

from __future__ import annotations

import os
import subprocess
from collections.abc import Iterator
from pathlib import Path

import numpy as np
import pytest

import ckptstore

from .conftest import snapshot


@pytest.fixture
def small_disk(tmp_path: Path) -> Iterator[Path]:
    mount = tmp_path / "small"
    mount.mkdir()
    done = subprocess.run(
        ["mount", "-t", "tmpfs", "-o", "size=4m", "tmpfs", str(mount)], capture_output=True, text=True
    )
    if done.returncode != 0:
        pytest.skip(f"cannot mount a 4 MiB tmpfs here (needs root): {done.stderr.strip()}")
    try:
        yield mount
    finally:
        subprocess.run(["umount", "-l", str(mount)], check=False)


def test_a_disk_that_fills_mid_save_commits_nothing_and_leaves_no_staging(small_disk: Path) -> None:
    store = ckptstore.open(small_disk / "store", monitor="loss")
    store.save_state(1, np.zeros(100_000), serializer="numpy", metrics={"loss": 1.0})  # 800 KB: fits
    before = snapshot(store.root / "epochs")
    with pytest.raises(ckptstore.CommitFailedError) as info:
        store.save_state(2, np.ones(1_000_000), serializer="numpy", metrics={"loss": 0.5})  # 8 MB: does not
    assert isinstance(info.value, OSError)
    assert store.epochs() == [1]
    assert snapshot(store.root / "epochs") == before
    assert os.listdir(store.root / "work") == [], "the staging directory of the failed save is gone"
    assert store.latest().epoch == 1 and store.best().epoch == 1
    assert store.get(1, verify=True).load().shape == (100_000,)
    store.save_state(2, np.ones(1_000), serializer="numpy", metrics={"loss": 0.5})  # space again: it works
    assert store.epochs() == [1, 2]
