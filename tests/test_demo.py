"""The README's demo: a real run killed with SIGKILL, resumed, finished, best chosen."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import ckptstore

DEMO = Path(__file__).resolve().parent.parent / "demo" / "train.py"


def test_demo_resumes_after_sigkill_and_picks_the_best(tmp_path: Path) -> None:
    root = tmp_path / "demo"
    result = subprocess.run(
        [sys.executable, str(DEMO), "--store", str(root), "--epochs", "12", "--kill-after", "4"],
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert result.returncode == 0, result.stderr
    assert "ended by signal 9" in result.stdout
    assert "resumed from epoch 4" in result.stdout
    store = ckptstore.open(root, monitor="val_loss")
    epochs = store.epochs()
    assert store.latest().epoch == 12
    best = store.best()
    assert best.metrics["val_loss"] == min(c.metrics["val_loss"] for c in store.list())
    assert set(epochs) >= {10, 11, 12, best.epoch}
    assert {c.parent for c in store.list() if c.epoch > 4} == {4}
    assert "best" in result.stdout
    assert "last" in result.stdout
