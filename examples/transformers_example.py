"""Hugging Face Trainer: StoreCallback commits every checkpoint-N; the store's keep policy never drops the best.

    python examples/transformers_example.py --kill-after 2
    python examples/transformers_example.py
(--epochs counts evaluation/save rounds of 4 steps each.)
"""

from __future__ import annotations

import os
import sys
import warnings

sys.path.insert(0, os.path.dirname(__file__))

import torch
import transformers
from _common import maybe_kill, parse

import ckptstore
from ckptstore.integrations.transformers import StoreCallback, latest_checkpoint


class Tokens(torch.utils.data.Dataset):
    def __init__(self, n: int, seed: int) -> None:
        gen = torch.Generator().manual_seed(seed)
        self.ids = torch.randint(5, 60, (n, 8), generator=gen)
        self.labels = (self.ids[:, 0] > 30).long()

    def __len__(self) -> int:
        return len(self.ids)

    def __getitem__(self, i: int) -> dict[str, torch.Tensor]:
        return {"input_ids": self.ids[i], "attention_mask": torch.ones(8, dtype=torch.long), "labels": self.labels[i]}


class Crash(transformers.TrainerCallback):
    def __init__(self, kill_after: int) -> None:
        self.kill_after = kill_after

    def on_save(self, args, state, control, **kwargs):  # type: ignore[no-untyped-def]
        maybe_kill(state.global_step // 4, self.kill_after)
        return control


def main() -> None:
    args = parse(__doc__ or "", epochs=4)
    url = args.store or "runs/transformers-example"
    warnings.filterwarnings("ignore")
    transformers.set_seed(0)
    config = transformers.BertConfig(
        vocab_size=64, hidden_size=32, num_hidden_layers=1, num_attention_heads=2, intermediate_size=64, num_labels=2
    )
    training = transformers.TrainingArguments(
        output_dir=os.path.join(os.path.dirname(os.path.abspath(url)) if "://" not in url else "runs", "hf-output"),
        max_steps=4 * args.epochs,
        per_device_train_batch_size=16,
        learning_rate=5e-3,
        eval_strategy="steps",
        eval_steps=4,
        save_strategy="steps",
        save_steps=4,
        save_total_limit=None,
        metric_for_best_model="loss",
        greater_is_better=False,
        report_to=[],
        use_cpu=True,
        disable_tqdm=True,
        logging_steps=4,
    )
    store_callback = StoreCallback(url, keep=ckptstore.keep.linear(1), remove_local=True)
    trainer = transformers.Trainer(
        model=transformers.BertForSequenceClassification(config),
        args=training,
        train_dataset=Tokens(128, 0),
        eval_dataset=Tokens(32, 1),
        callbacks=[store_callback, Crash(args.kill_after)],
    )
    with latest_checkpoint(url) as path:
        print(f"resuming from {path}" if path else "starting from scratch")
        trainer.train(resume_from_checkpoint=path)
    store = ckptstore.open(url, monitor="eval_loss", mode="min")
    print(store.table())
    print(f"best: step {store.best().epoch}")


if __name__ == "__main__":
    main()
