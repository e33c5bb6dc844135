"""The README's Quick start runs as written, twice in a row: the second run resumes (a new user's report).

The code blocks are read from README.md itself, so the README cannot drift from the code again. The
only thing supplied is what the README calls "your model and training step": a tiny linear model, a
training step that returns its validation loss, ``lr`` and a ``test_loss`` for ``evaluate``.
"""

from __future__ import annotations

import re
from pathlib import Path
from typing import Any

import pytest

torch = pytest.importorskip("torch")

README = Path(__file__).resolve().parents[1] / "README.md"


def quick_start_blocks() -> list[str]:
    """The Python blocks of the README's Quick start section, before its object-store part."""
    text = README.read_text(encoding="utf-8")
    section = text.split("## Quick start", 1)[1].split("\n## ", 1)[0]
    section = section.split("On object stores", 1)[0]
    return re.findall(r"```python\n(.*?)```", section, flags=re.DOTALL)


def stand_ins() -> dict[str, Any]:
    torch.manual_seed(0)
    x, y = torch.randn(64, 4), torch.randn(64, 1)
    model = torch.nn.Linear(4, 1)
    optimizer = torch.optim.SGD(model.parameters(), lr=0.05)

    def train_one_epoch(m: Any) -> float:
        optimizer.zero_grad()
        loss = torch.nn.functional.mse_loss(m(x), y)
        loss.backward()
        optimizer.step()
        with torch.no_grad():
            return float(torch.nn.functional.mse_loss(m(x), y))

    def test_loss(state: Any) -> float:
        probe = torch.nn.Linear(4, 1)
        probe.load_state_dict(state)
        with torch.no_grad():
            return float(torch.nn.functional.mse_loss(probe(x), y))

    return {"model": model, "train_one_epoch": train_one_epoch, "lr": 0.05, "test_loss": test_loss}


def run_quick_start() -> dict[str, Any]:
    namespace = stand_ins()
    for block in quick_start_blocks():
        exec(compile(block, str(README), "exec"), namespace)  # the README's own code
    return namespace


def test_the_readme_has_the_three_quick_start_blocks() -> None:
    blocks = quick_start_blocks()
    assert len(blocks) == 3
    assert "store.restart(" in blocks[0] and "ck.load()" in blocks[0]
    assert "tx.path" in blocks[1] and "local_path()" in blocks[1]
    assert "store.table()" in blocks[2]


def test_the_quick_start_runs_twice_and_the_second_run_resumes(tmp_path: Path, monkeypatch: Any) -> None:
    monkeypatch.chdir(tmp_path)
    first = run_quick_start()
    assert first["start"] == 1 and first["ck"] is None  # a fresh start (the second block's files.restart())
    trained = {k: v.clone() for k, v in first["model"].state_dict().items()}
    store = first["store"]
    assert store.epochs() == [6, 7, 8, 9, 10]  # keep.linear(5), as recorded and applied
    assert store.best().epoch == 10 and store.best().metadata["lr"] == 0.05
    assert store.pinned() == [10]
    evaluated = store.best(metric="test_loss")
    assert evaluated.metadata["evaluation_modes"] == {"test_loss": "min"}
    assert evaluated.all_metrics["test_loss"] == min(c.all_metrics["test_loss"] for c in store.list())

    second = run_quick_start()  # a new process would do the same: nothing is carried over but the disk
    assert second["start"] == 11 and second["ck"].epoch == 10  # both loops resumed after epoch 10
    resumed = second["model"].state_dict()
    assert all(torch.equal(resumed[k], trained[k]) for k in trained)  # restored weights, not fresh ones
    assert second["store"].epochs() == [6, 7, 8, 9, 10]
    files = second["files"]
    assert files.epochs() == list(range(1, 11))
    assert (Path("runs/exp2/epochs") / files.get(10).name / "notes.txt").read_text() == "epoch 10"


def test_the_docs_home_page_shows_the_same_loop() -> None:
    index = (README.parent / "docs" / "index.md").read_text(encoding="utf-8")
    assert quick_start_blocks()[0] in re.findall(r"```python\n(.*?)```", index, flags=re.DOTALL)
