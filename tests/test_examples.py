"""Every example in examples/ runs: killed part-way, resumed, and leaves the store it promises."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest

import ckptstore

pytestmark = pytest.mark.frameworks

EXAMPLES = Path(__file__).resolve().parent.parent / "examples"

CASES = {
    # script: (needed module, epochs, kill after, monitor, mode, last number, number of the killed run's last save)
    "keras_example.py": ("keras", 5, 2, "val_loss", "min", 5, 2),
    "lightning_example.py": ("pytorch_lightning", 5, 2, "val_loss", "min", 5, 2),
    "transformers_example.py": ("accelerate", 4, 2, "eval_loss", "min", 16, 8),
    "torch_loop.py": ("torch", 8, 3, "val_loss", "min", 8, 3),
    "jax_loop.py": ("flax", 8, 3, "val_loss", "min", 8, 3),
}


def _run(script: str, store: Path, *extra: str) -> subprocess.CompletedProcess[str]:
    env = {**os.environ, "KERAS_BACKEND": "torch", "PYTHONWARNINGS": "ignore"}
    return subprocess.run(
        [sys.executable, str(EXAMPLES / script), "--store", str(store), *extra],
        capture_output=True,
        text=True,
        timeout=240,
        cwd=store.parent,
        env=env,
    )


@pytest.mark.parametrize("script", sorted(CASES))
def test_example_is_killed_resumes_and_finishes(script: str, tmp_path: Path) -> None:
    module, epochs, kill_after, monitor, mode, last, killed_at = CASES[script]
    pytest.importorskip(module)
    store_dir = tmp_path / "store"
    first = _run(script, store_dir, "--epochs", str(epochs), "--kill-after", str(kill_after))
    assert first.returncode == -9, first.stderr[-3000:]
    assert "simulated crash" in first.stdout
    assert max(ckptstore.open(store_dir).epochs()) == killed_at
    second = _run(script, store_dir, "--epochs", str(epochs))
    assert second.returncode == 0, second.stderr[-3000:]
    store = ckptstore.open(store_dir, monitor=monitor, mode=mode)
    assert store.latest().epoch == last
    assert store.get(last).parent is not None and store.get(last).parent >= killed_at
    assert store.best().epoch in store.epochs()
    assert all(c.verify() for c in store.list())
    assert "best: " in second.stdout
