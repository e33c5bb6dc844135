"""Hugging Face Trainer: every checkpoint-N committed, the best never rotated away, resume verified."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest

torch = pytest.importorskip("torch")
transformers = pytest.importorskip("transformers")
pytest.importorskip("accelerate")

import ckptstore  # noqa: E402
from ckptstore.integrations.transformers import StoreCallback, latest_checkpoint  # noqa: E402

pytestmark = [pytest.mark.frameworks, pytest.mark.filterwarnings("ignore")]


class Tokens(torch.utils.data.Dataset):  # type: ignore[misc]
    def __init__(self, n: int = 32) -> None:
        gen = torch.Generator().manual_seed(0)
        self.ids = torch.randint(5, 60, (n, 8), generator=gen)
        self.labels = (self.ids[:, 0] > 30).long()

    def __len__(self) -> int:
        return len(self.ids)

    def __getitem__(self, i: int) -> dict[str, Any]:
        return {"input_ids": self.ids[i], "attention_mask": torch.ones(8, dtype=torch.long), "labels": self.labels[i]}


def _trainer(out: Path, callback: Any, max_steps: int) -> Any:
    transformers.set_seed(0)
    config = transformers.BertConfig(
        vocab_size=64, hidden_size=16, num_hidden_layers=1, num_attention_heads=2, intermediate_size=32, num_labels=2
    )
    model = transformers.BertForSequenceClassification(config)
    args = transformers.TrainingArguments(
        output_dir=str(out),
        max_steps=max_steps,
        per_device_train_batch_size=8,
        per_device_eval_batch_size=16,
        learning_rate=5e-3,
        eval_strategy="steps",
        eval_steps=2,
        save_strategy="steps",
        save_steps=2,
        save_total_limit=None,
        metric_for_best_model="loss",
        greater_is_better=False,
        report_to=[],
        use_cpu=True,
        logging_steps=1,
        disable_tqdm=True,
    )
    return transformers.Trainer(
        model=model, args=args, train_dataset=Tokens(), eval_dataset=Tokens(16), callbacks=[callback]
    )


def test_every_save_is_committed_the_best_survives_and_training_resumes(tmp_path: Path) -> None:
    url = str(tmp_path / "store")
    # linear(2): the two newest (the last among them) and the best besides
    callback = StoreCallback(url, keep=ckptstore.keep.linear(2))
    trainer = _trainer(tmp_path / "out", callback, max_steps=8)
    trainer.train()
    assert callback.committed == [2, 4, 6, 8]
    store = ckptstore.open(url, monitor="eval_loss", mode="min")
    evals = {e["step"]: e["eval_loss"] for e in trainer.state.log_history if "eval_loss" in e}
    best_step = min(evals, key=evals.get)
    assert store.best().epoch == best_step, "the keep policy deleted the best checkpoint"
    assert best_step in store.epochs() and 8 in store.epochs() and len(store.epochs()) <= 3
    ck = store.get(8, verify=True)
    assert "trainer_state.json" in ck.files and ck.metrics["eval_loss"] == evals[8]

    # Damage the newest checkpoint: resuming must fall back to the newest one that verifies.
    store.backend.write("epochs/00000008/trainer_state.json", b"{}")
    resumed = StoreCallback(url, keep=ckptstore.keep.linear(2))
    trainer2 = _trainer(tmp_path / "out2", resumed, max_steps=10)
    with latest_checkpoint(url) as path:
        assert path is not None and path.endswith(f"{max(e for e in store.epochs() if e != 8):08d}")
        trainer2.train(resume_from_checkpoint=path)
    assert trainer2.state.global_step == 10
    assert 10 in ckptstore.open(url).epochs()


def test_latest_checkpoint_of_an_empty_store_is_none(tmp_path: Path) -> None:
    with latest_checkpoint(tmp_path / "empty") as path:
        assert path is None
