"""The Trainer's own checkpointing tests, run against ``StoreCallback`` in the same training run.

Ported from huggingface/transformers ``tests/trainer/test_trainer_checkpointing.py`` at commit
abee4b14abf32637fe72990d0c409eaba189b31a (the classes ``TrainerCheckpointSaveTest``,
``TrainerResumeTrainingTest``, ``TrainerCheckpointRotationTest``, ``TrainerInterruptedTrainingTest``
and ``TrainerBestModelTest``), against the transformers 5 of this environment. Each scenario trains
upstream's regression model (``y = a * x + b``, a ``PreTrainedModel``) with the real ``Trainer``,
which writes and rotates its own ``output_dir/checkpoint-N`` folders while our callback commits the
same folders into a store: the test checks that the Trainer still does what upstream's test says
(which ``checkpoint-N`` it keeps, ``best_model_checkpoint``, where a resumed run continues) and that
the store does the same observable thing (``store.epochs()``, ``store.best()``, the files inside a
checkpoint, the resumed step). Upstream scripts evaluation scores by patching ``Trainer._evaluate``;
here a real ``compute_metrics`` returns the scripted scores instead (no mock of the framework).

Not ported: ``test_checkpoint_sorting`` (the order of ``sort_checkpoints``, a helper of the Trainer's
own rotation), the tokenizer/processor, auto batch size, PEFT, JIT-checkpoint and Hub tests (they do
not touch what a store keeps). Differences on purpose (see docs/frameworks/transformers.md): with
``save_total_limit=1`` the store keeps the last checkpoint besides the best, where the Trainer
deletes it at the end of training; a checkpoint a run resumed from is kept for the rest of that run;
an epoch-end evaluation after the final step save is ranked at once (the Trainer ranks it only at a
later save, and there is none).
"""

from __future__ import annotations

import math
import re
from pathlib import Path
from typing import Any

import pytest

torch = pytest.importorskip("torch")
transformers = pytest.importorskip("transformers")
pytest.importorskip("accelerate")
safetensors_torch = pytest.importorskip("safetensors.torch")

import ckptstore  # noqa: E402
from ckptstore.errors import CheckpointNotFoundError, InvalidArgumentError, InvalidArgumentTypeError  # noqa: E402
from ckptstore.integrations.transformers import (  # noqa: E402
    UNRANKED_KEY,
    SaveTotalLimit,
    StoreCallback,
    latest_checkpoint,
)
from ckptstore.policies import CheckpointInfo, KeepContext  # noqa: E402

pytestmark = [pytest.mark.frameworks, pytest.mark.filterwarnings("ignore")]

TRAIN_LEN = 64
BATCH = 8
STEPS_PER_EPOCH = TRAIN_LEN // BATCH  # 8, three epochs: 24 steps, as upstream


class RegressionConfig(transformers.PreTrainedConfig):  # type: ignore[misc]
    model_type = "ckptstore-regression"

    def __init__(self, a: float = 0.0, b: float = 0.0, **kwargs: Any) -> None:
        super().__init__(**kwargs)
        self.a = a
        self.b = b
        self.hidden_size = 1


class RegressionModel(transformers.PreTrainedModel):  # type: ignore[misc]
    """Upstream's ``RegressionPreTrainedModel``: ``y = a * x + b`` with an MSE loss."""

    config_class = RegressionConfig
    base_model_prefix = "regression"

    def __init__(self, config: RegressionConfig) -> None:
        super().__init__(config)
        self.a = torch.nn.Parameter(torch.tensor(float(config.a)))
        self.b = torch.nn.Parameter(torch.tensor(float(config.b)))
        self.post_init()

    def forward(self, input_x: Any, labels: Any = None, **kwargs: Any) -> Any:
        y = input_x * self.a + self.b
        if labels is None:
            return (y,)
        return (torch.nn.functional.mse_loss(y, labels), y)


class RegressionDataset(torch.utils.data.Dataset):  # type: ignore[misc]
    """Upstream's ``RegressionDataset``: ``y = 2x + 3`` plus noise."""

    def __init__(self, length: int = TRAIN_LEN, seed: int = 42) -> None:
        gen = torch.Generator().manual_seed(seed)
        self.x = torch.randn(length, generator=gen)
        self.y = 2 * self.x + 3 + 0.1 * torch.randn(length, generator=gen)

    def __len__(self) -> int:
        return len(self.x)

    def __getitem__(self, i: int) -> dict[str, Any]:
        return {"input_x": self.x[i], "labels": self.y[i]}


class Scripted:
    """A real ``compute_metrics`` returning scripted scores, the last one repeated (upstream's
    ``evaluate_side_effect_factory``, without patching ``Trainer._evaluate``)."""

    def __init__(self, values: list[float], name: str = "accuracy") -> None:
        self.values = values
        self.name = name
        self.calls = 0

    def __call__(self, eval_pred: Any) -> dict[str, float]:
        value = self.values[min(self.calls, len(self.values) - 1)]
        self.calls += 1
        return {self.name: value}


class Folders(transformers.TrainerCallback):  # type: ignore[misc]
    """Records the Trainer's own ``checkpoint-N`` folders after each save (its rotation has run)."""

    def __init__(self) -> None:
        self.after_save: list[list[int]] = []

    def on_save(self, args: Any, state: Any, control: Any, **kwargs: Any) -> Any:
        self.after_save.append(steps_in(Path(args.output_dir)))
        return control


class Bests(transformers.TrainerCallback):  # type: ignore[misc]
    """After each save: the Trainer's ``best_model_checkpoint`` step and the store's best (None: none)."""

    def __init__(self, url: str) -> None:
        self.url = url
        self.seen: list[tuple[int, int | None, int | None]] = []

    def on_save(self, args: Any, state: Any, control: Any, **kwargs: Any) -> Any:
        best = state.best_model_checkpoint
        trainer_best = None if best is None else int(best.rsplit("-", 1)[1])
        self.seen.append((state.global_step, trainer_best, store_best(ckptstore.open(self.url))))
        return control


class StartStep(transformers.TrainerCallback):  # type: ignore[misc]
    """Records the global step a run starts from (where a resumed run continues)."""

    def __init__(self) -> None:
        self.step: int | None = None

    def on_train_begin(self, args: Any, state: Any, control: Any, **kwargs: Any) -> Any:
        self.step = state.global_step
        return control


class Crash(transformers.TrainerCallback):  # type: ignore[misc]
    """Ends the process's training at the start of a given step, as a kill would (nothing after it runs)."""

    def __init__(self, at_step: int) -> None:
        self.at_step = at_step

    def on_step_begin(self, args: Any, state: Any, control: Any, **kwargs: Any) -> Any:
        if state.global_step + 1 == self.at_step:
            raise KeyboardInterrupt(f"killed before step {self.at_step}")
        return control


def steps_in(output_dir: Path) -> list[int]:
    """The N of every ``checkpoint-N`` folder in ``output_dir``."""
    found = (re.fullmatch(r"checkpoint-(\d+)", p.name) for p in output_dir.iterdir() if p.is_dir())
    return sorted(int(m.group(1)) for m in found if m)


def trainer_for(
    tmp_path: Path,
    *callbacks: Any,
    a: float = 0.0,
    b: float = 0.0,
    scripted: Scripted | None = None,
    output: str = "out",
    train_len: int = TRAIN_LEN,
    **kwargs: Any,
) -> Any:
    """Upstream's ``get_regression_trainer`` on CPU: 64 samples, batches of 8, three epochs."""
    transformers.set_seed(42)
    options: dict[str, Any] = {
        "per_device_train_batch_size": BATCH,
        "per_device_eval_batch_size": 16,
        "num_train_epochs": 3,
        "report_to": "none",
        "use_cpu": True,
        "disable_tqdm": True,
        "dataloader_num_workers": 0,
        **kwargs,
    }
    args = transformers.TrainingArguments(output_dir=str(tmp_path / output), **options)
    return transformers.Trainer(
        model=RegressionModel(RegressionConfig(a=a, b=b)),
        args=args,
        train_dataset=RegressionDataset(train_len),
        eval_dataset=RegressionDataset(16, seed=7),
        compute_metrics=scripted,
        callbacks=list(callbacks),
    )


def best_step(trainer: Any) -> int | None:
    """The step of the Trainer's ``best_model_checkpoint``, or None."""
    best = trainer.state.best_model_checkpoint
    return None if best is None else int(best.rsplit("-", 1)[1])


def store_best(store: Any) -> int | None:
    """The epoch of ``store.best()``, or None when no checkpoint carries the monitor."""
    try:
        return int(store.best().epoch)
    except CheckpointNotFoundError:
        return None


@pytest.fixture
def url(tmp_path: Path) -> str:
    return str(tmp_path / "store")


# --- TrainerCheckpointSaveTest ---------------------------------------------------------------------


def test_save_checkpoints_every_folder_with_the_trainers_file_names(tmp_path: Path, url: str) -> None:
    """``test_save_checkpoints``: a checkpoint every 5 steps, each with the Trainer's files."""
    callback = StoreCallback(url)
    trainer = trainer_for(tmp_path, callback, save_steps=5)
    trainer.train()
    total = 3 * STEPS_PER_EPOCH
    expected = [*range(5, total + 1, 5), total]  # transformers 5 also saves at the last step
    assert steps_in(tmp_path / "out") == expected
    store = ckptstore.open(url)
    assert store.epochs() == expected == callback.committed
    for step in expected:
        folder = tmp_path / "out" / f"checkpoint-{step}"
        trainer_files = sorted(p.relative_to(folder).as_posix() for p in folder.rglob("*") if p.is_file())
        assert sorted(store.get(step).files) == trainer_files
        assert {"model.safetensors", "config.json", "trainer_state.json", "optimizer.pt"} <= set(trainer_files)


# --- TrainerResumeTrainingTest ---------------------------------------------------------------------


def test_can_resume_training_from_a_store_checkpoint(tmp_path: Path, url: str) -> None:
    """``test_can_resume_training``: resuming from checkpoint 5 (and 15) ends with the same weights."""
    kwargs: dict[str, Any] = {"train_len": 128, "save_steps": 5, "learning_rate": 0.1, "logging_steps": 5}
    trainer = trainer_for(tmp_path, StoreCallback(url), **kwargs)
    trainer.train()
    a, b = trainer.model.a.item(), trainer.model.b.item()
    store = ckptstore.open(url)
    for step in (5, 15):
        upstream = trainer_for(tmp_path, output=f"upstream{step}", **kwargs)
        upstream.train(resume_from_checkpoint=str(tmp_path / "out" / f"checkpoint-{step}"))
        start = StartStep()
        ours = trainer_for(tmp_path, start, output=f"ours{step}", **kwargs)
        with store.get(step).local_path() as path:
            ours.train(resume_from_checkpoint=str(path))
        assert (upstream.model.a.item(), upstream.model.b.item()) == (a, b)
        assert (ours.model.a.item(), ours.model.b.item()) == (a, b)
        assert start.step == step and ours.state.global_step == trainer.state.global_step


def test_resume_with_other_arguments_logs_what_changed(tmp_path: Path, url: str) -> None:
    """``test_compare_trainer_and_checkpoint_args_logging``: the store's copy carries the same state."""
    base: dict[str, Any] = {"train_len": 128, "eval_strategy": "steps", "learning_rate": 0.1}
    trainer = trainer_for(tmp_path, StoreCallback(url), eval_steps=5, save_steps=5, max_steps=10, **base)
    trainer.train()
    logger = transformers.utils.logging.get_logger("transformers.trainer_utils")
    messages: list[str] = []

    class Capture:
        level = 0

        def handle(self, record: Any) -> None:
            messages.append(record.getMessage())

    handler = Capture()
    logger.addHandler(handler)  # type: ignore[arg-type]
    try:
        resumed = trainer_for(tmp_path, output="resumed", eval_steps=10, save_steps=10, max_steps=12, **base)
        with ckptstore.open(url).get(5).local_path() as path:
            resumed.train(resume_from_checkpoint=str(path))
    finally:
        logger.removeHandler(handler)  # type: ignore[arg-type]
    joined = "\n".join(messages)
    assert "save_steps: 10 (from args) != 5 (from trainer_state.json)" in joined
    assert "eval_steps: 10 (from args) != 5 (from trainer_state.json)" in joined


# --- TrainerInterruptedTrainingTest ----------------------------------------------------------------


def test_a_run_killed_before_its_first_evaluation_resumes_from_its_newest_checkpoint(tmp_path: Path, url: str) -> None:
    """``test_resume_from_interrupted_training`` with ``metric_for_best_model`` set (issue 13).

    Saving every 2 steps and evaluating every 6, the run dies before step 5: the Trainer resumes
    from ``checkpoint-4`` (``resume_from_checkpoint=True``); so must the store, which committed
    checkpoints 2 and 4 without the metric (they cannot be best).
    """
    kwargs: dict[str, Any] = {
        "eval_strategy": "steps",
        "eval_steps": 6,
        "save_steps": 2,
        "max_steps": 8,
        "metric_for_best_model": "loss",
    }
    with pytest.raises(KeyboardInterrupt):
        trainer_for(tmp_path, StoreCallback(url), Crash(at_step=5), **kwargs).train()
    assert steps_in(tmp_path / "out") == [2, 4]
    store = ckptstore.open(url, monitor="eval_loss", mode="min")
    assert store.epochs() == [2, 4]
    assert all("eval_loss" not in store.get(e).metrics for e in (2, 4))
    with pytest.raises(CheckpointNotFoundError):
        store.best()

    upstream_start = StartStep()
    upstream = trainer_for(tmp_path, upstream_start, **kwargs)  # the same output_dir
    upstream.train(resume_from_checkpoint=True)
    ours_start = StartStep()
    ours = trainer_for(tmp_path, StoreCallback(url), ours_start, output="ours", **kwargs)
    with latest_checkpoint(url) as path:
        assert path is not None
        ours.train(resume_from_checkpoint=path)
    assert upstream_start.step == ours_start.step == 4
    assert upstream.state.global_step == ours.state.global_step == 8
    final = ckptstore.open(url, monitor="eval_loss", mode="min")
    assert final.epochs() == [2, 4, 6, 8]
    assert final.best().epoch == best_step(upstream) == best_step(ours)
    assert "model.safetensors" in final.get(8).files


# --- TrainerCheckpointRotationTest ------------------------------------------------------------------


@pytest.mark.parametrize(
    ("limit", "scores", "upstream_during", "upstream_end", "ours"),
    [
        pytest.param(2, None, [20, 25], [20, 25], [20, 25], id="limit2-no-best"),
        pytest.param(2, [0.9, 0.5], [5, 25], [5, 25], [5, 25], id="limit2-best-at-5"),
        pytest.param(1, [0.1, 0.2, 0.3, 0.4, 0.5], [25], [25], [25], id="limit1-best-is-newest"),
        pytest.param(1, [0.9, 0.5], [5, 25], [5], [5, 25], id="limit1-best-at-5-we-keep-the-last"),
    ],
)
def test_checkpoint_rotation(
    tmp_path: Path,
    url: str,
    limit: int,
    scores: list[float] | None,
    upstream_during: list[int],
    upstream_end: list[int],
    ours: list[int],
) -> None:
    """``test_checkpoint_rotation``: ``save_total_limit`` rotates the store as the Trainer rotates.

    Saves at 5, 10, ..., 25. Without a best the two newest stay; with ``load_best_model_at_end``
    the best counts within the limit. With ``save_total_limit=1`` and the best at 5 the Trainer
    keeps 5 and 25 while training and deletes 25 at the end; the store keeps its last checkpoint.
    """
    folders = Folders()
    best_args: dict[str, Any] = {}
    if scores is not None:
        best_args = {
            "eval_strategy": "steps",
            "eval_steps": 5,
            "load_best_model_at_end": True,
            "metric_for_best_model": "accuracy",
        }
    callback = StoreCallback(url)
    trainer = trainer_for(
        tmp_path,
        callback,
        folders,
        scripted=Scripted(scores) if scores else None,
        save_steps=5,
        max_steps=25,
        save_total_limit=limit,
        **best_args,
    )
    trainer.train()
    assert folders.after_save[-1] == upstream_during
    assert steps_in(tmp_path / "out") == upstream_end
    assert callback.committed == [5, 10, 15, 20, 25]
    store = ckptstore.open(url)
    assert store.epochs() == ours
    if scores is not None:
        ranked = ckptstore.open(url, monitor="eval_accuracy", mode="max")
        assert ranked.best().epoch == best_step(trainer) == upstream_end[0]


def test_rotation_after_each_save_matches_the_trainer(tmp_path: Path, url: str) -> None:
    """Rotation at every save, not just at the end: limit 3, the best at step 10."""
    folders = Folders()
    seen: list[list[int]] = []

    class Epochs(transformers.TrainerCallback):  # type: ignore[misc]
        def on_save(self, args: Any, state: Any, control: Any, **kwargs: Any) -> Any:
            seen.append(ckptstore.open(url).epochs())
            return control

    trainer = trainer_for(
        tmp_path,
        StoreCallback(url),
        folders,
        Epochs(),
        scripted=Scripted([0.5, 0.9, 0.6, 0.7, 0.8, 0.85]),
        save_steps=5,
        eval_strategy="steps",
        eval_steps=5,
        max_steps=30,
        save_total_limit=3,
        load_best_model_at_end=True,
        metric_for_best_model="accuracy",
    )
    trainer.train()
    assert seen == folders.after_save
    assert seen[-1] == [10, 25, 30] and best_step(trainer) == 10


def test_a_resumed_run_keeps_the_checkpoint_it_resumed_from(tmp_path: Path, url: str) -> None:
    """A difference on purpose: resumed from step 6 with ``save_total_limit=2``, the Trainer rotates
    ``checkpoint-6`` away; the store keeps it for the rest of the run that resumed from it."""
    kwargs: dict[str, Any] = {"save_steps": 2, "save_total_limit": 2}
    trainer_for(tmp_path, StoreCallback(url), max_steps=6, **kwargs).train()
    assert steps_in(tmp_path / "out") == ckptstore.open(url).epochs() == [4, 6]
    start = StartStep()
    resumed = trainer_for(tmp_path, StoreCallback(url), start, max_steps=12, **kwargs)  # same output_dir
    with latest_checkpoint(url) as path:
        resumed.train(resume_from_checkpoint=path)
    assert start.step == 6
    assert steps_in(tmp_path / "out") == [10, 12]
    assert ckptstore.open(url).epochs() == [6, 10, 12]


def test_an_explicit_keep_policy_replaces_save_total_limit(tmp_path: Path, url: str) -> None:
    """``keep=`` wins over ``save_total_limit`` (the Trainer still rotates its own folders)."""
    trainer = trainer_for(
        tmp_path, StoreCallback(url, keep=ckptstore.keep.linear(3)), save_steps=5, max_steps=25, save_total_limit=1
    )
    trainer.train()
    assert steps_in(tmp_path / "out") == [25]
    assert ckptstore.open(url).epochs() == [15, 20, 25]


def test_save_total_limit_policy_counts_like_rotate_checkpoints(tmp_path: Path) -> None:
    """Upstream's ``check_checkpoint_deletion`` table against ``rotate_checkpoints`` itself."""
    from transformers.trainer_utils import rotate_checkpoints

    cases = [(2, None, [20, 25]), (2, 5, [5, 25]), (1, 25, [25]), (1, 5, [5, 25]), (3, 10, [10, 20, 25]), (9, 5, None)]
    for limit, best, expected in cases:
        folder = tmp_path / f"rot{limit}-{best}"
        for n in (5, 10, 15, 20, 25):
            (folder / f"checkpoint-{n}").mkdir(parents=True)
        rotate_checkpoints(
            output_dir=str(folder),
            save_total_limit=limit,
            best_model_checkpoint=None if best is None else str(folder / f"checkpoint-{best}"),
        )
        infos = [CheckpointInfo(epoch=n) for n in (5, 10, 15, 20, 25)]
        kept = SaveTotalLimit(limit).select(infos, KeepContext(last=25, best=best))
        assert sorted(kept) == steps_in(folder) == (expected or [5, 10, 15, 20, 25])
    with pytest.raises(InvalidArgumentError):
        SaveTotalLimit(0)
    with pytest.raises(InvalidArgumentTypeError):
        SaveTotalLimit("2")  # type: ignore[arg-type]


# --- TrainerBestModelTest ---------------------------------------------------------------------------


def test_load_best_model_with_save(tmp_path: Path, url: str) -> None:
    """``test_load_best_model_with_save``: the last step is saved; a limit of 2 keeps the best and the last."""
    trainer = trainer_for(tmp_path, StoreCallback(url), save_steps=5, eval_strategy="steps", eval_steps=5, max_steps=9)
    trainer.train()
    assert steps_in(tmp_path / "out") == [5, 9]
    assert ckptstore.open(url).epochs() == [5, 9]

    url2 = str(tmp_path / "store2")
    trainer = trainer_for(
        tmp_path,
        StoreCallback(url2),
        output="out2",
        save_steps=5,
        eval_strategy="steps",
        eval_steps=5,
        load_best_model_at_end=True,
        save_total_limit=2,
        max_steps=11,
    )
    trainer.train()
    kept = steps_in(tmp_path / "out2")
    best = best_step(trainer)
    assert 11 in kept and 5 not in kept and best in kept and len(kept) == 2
    store = ckptstore.open(url2)
    assert store.epochs() == kept
    assert store.best().epoch == best
    loaded = trainer.model.state_dict()
    with store.best().local_path() as path:
        weights = safetensors_torch.load_file(str(path / "model.safetensors"))
    assert all(torch.allclose(loaded[k], weights[k]) for k in loaded)


@pytest.mark.parametrize(
    ("metric", "greater", "scores", "saved_epochs", "best_epoch"),
    [
        pytest.param("accuracy", True, [0.60, 0.65, 0.64], [1, 2], 2, id="accuracy"),
        pytest.param("mse", False, [0.03, 0.02, 0.03], [1, 2], 2, id="a-minimised-metric"),
    ],
)
def test_save_best_checkpoint(
    tmp_path: Path,
    url: str,
    metric: str,
    greater: bool,
    scores: list[float],
    saved_epochs: list[int],
    best_epoch: int,
) -> None:
    """``test_save_best_checkpoint``: ``save_strategy="best"`` saves only new bests; so does the store."""
    trainer = trainer_for(
        tmp_path,
        StoreCallback(url),
        scripted=Scripted(scores, name=metric),
        a=1.5,
        b=2.5,
        learning_rate=0.1,
        eval_strategy="epoch",
        save_strategy="best",
        metric_for_best_model=metric,
        greater_is_better=greater,
    )
    trainer.train()
    expected = [e * STEPS_PER_EPOCH for e in saved_epochs]
    assert steps_in(tmp_path / "out") == expected
    store = ckptstore.open(url)
    assert store.epochs() == expected
    assert store.config.monitor == f"eval_{metric}" and store.config.mode == ("max" if greater else "min")
    assert store.best().epoch == best_step(trainer) == best_epoch * STEPS_PER_EPOCH
    assert store.get(expected[0]).metrics[f"eval_{metric}"] == scores[0]


def test_metric_for_best_model_behavior(tmp_path: Path, url: str) -> None:
    """``test_metric_for_best_model_behavior``: the Trainer refuses ``save_strategy="best"`` without a
    metric before anything is written; ``load_best_model_at_end`` defaults the monitor to ``eval_loss``."""
    with pytest.raises(ValueError, match="`args.metric_for_best_model` must be provided"):
        trainer_for(tmp_path, StoreCallback(url), eval_strategy="epoch", save_strategy="best")
    assert not Path(url).exists()

    callback = StoreCallback(url)
    trainer = trainer_for(
        tmp_path, callback, eval_strategy="steps", save_strategy="steps", load_best_model_at_end=True, max_steps=2
    )
    assert trainer.args.metric_for_best_model == "loss"
    trainer.train()
    store = callback.store_for(trainer.args)
    assert (store.config.monitor, store.config.mode) == ("eval_loss", "min")


def test_never_evaluated(tmp_path: Path, url: str) -> None:
    """``test_best_model_checkpoint_behavior`` cases 1 and 2: evaluation is delayed past the end, so
    there is no best; every save is committed (without the metric) and with a limit of 1 only the
    newest remains, in the Trainer's folder and in the store."""
    kwargs: dict[str, Any] = {
        "eval_strategy": "steps",
        "save_strategy": "steps",
        "save_steps": 1,
        "max_steps": 6,
        "eval_delay": 100,
        "metric_for_best_model": "accuracy",
        "greater_is_better": True,
    }
    callback = StoreCallback(url)
    trainer = trainer_for(tmp_path, callback, **kwargs)
    trainer.train()
    assert trainer.state.best_metric is None and trainer.state.best_model_checkpoint is None
    assert steps_in(tmp_path / "out") == [1, 2, 3, 4, 5, 6]
    store = ckptstore.open(url, monitor="eval_accuracy", mode="max")
    assert store.epochs() == [1, 2, 3, 4, 5, 6] and store_best(store) is None

    url2 = str(tmp_path / "store2")
    trainer = trainer_for(tmp_path, StoreCallback(url2), output="out2", save_total_limit=1, **kwargs)
    trainer.train()
    assert trainer.state.best_model_checkpoint is None
    assert steps_in(tmp_path / "out2") == [6]
    assert ckptstore.open(url2).epochs() == [6]


@pytest.mark.parametrize("save_strategy", ["epoch", "steps"])
def test_best_checkpoint_with_epoch_evaluation(tmp_path: Path, url: str, save_strategy: str) -> None:
    """``test_best_model_checkpoint_behavior`` cases 3 and 4: evaluating each epoch, saving each epoch
    or each step, the best is the first epoch's last step. Saving each step, the epoch's evaluation
    runs after that step's save; the store still attaches it to that step's checkpoint (and no other)."""
    callback = StoreCallback(url)
    trainer = trainer_for(
        tmp_path,
        callback,
        scripted=Scripted([0.59, 0.57, 0.55]),
        eval_strategy="epoch",
        save_strategy=save_strategy,
        save_steps=1,
        metric_for_best_model="accuracy",
        greater_is_better=True,
        load_best_model_at_end=False,
    )
    trainer.train()
    assert trainer.state.best_metric == 0.59 and trainer.state.best_global_step == STEPS_PER_EPOCH
    assert best_step(trainer) == STEPS_PER_EPOCH
    total = 3 * STEPS_PER_EPOCH
    expected = [8, 16, 24] if save_strategy == "epoch" else list(range(1, total + 1))
    assert steps_in(tmp_path / "out") == expected
    store = ckptstore.open(url)
    assert store.epochs() == expected == callback.committed
    assert store.best().epoch == STEPS_PER_EPOCH
    scored = {e: store.get(e).metrics.get("eval_accuracy") for e in store.epochs()}
    assert {e: v for e, v in scored.items() if v is not None} == {8: 0.59, 16: 0.57, 24: 0.55}


def test_the_last_epochs_evaluation_after_a_step_save_is_ranked_at_once(tmp_path: Path, url: str) -> None:
    """A difference on purpose. Saving every 4 steps and evaluating each epoch, the Trainer records
    each epoch's evaluation after that step's save and names it best only at its next save; after
    the last epoch there is none, so its ``best_model_checkpoint`` stays at step 16 although its
    ``best_global_step`` is 24 and ``checkpoint-24`` exists. The store names 24 (scores rising)."""
    bests = Bests(url)
    trainer = trainer_for(
        tmp_path,
        StoreCallback(url),
        bests,
        scripted=Scripted([0.5, 0.6, 0.7]),
        eval_strategy="epoch",
        save_strategy="steps",
        save_steps=4,
        metric_for_best_model="accuracy",
        greater_is_better=True,
    )
    trainer.train()
    assert trainer.state.best_global_step == 24 and best_step(trainer) == 16
    assert bests.seen[-1] == (24, 16, 16)  # the evaluation of step 24 follows its save
    store = ckptstore.open(url)
    assert store.epochs() == [4, 8, 12, 16, 20, 24]
    assert store.best().epoch == 24 and store.get(24).metrics["eval_accuracy"] == 0.7
    assert "eval_accuracy" not in store.get(20).metrics


def test_limit_one_keeps_the_best_and_the_last(tmp_path: Path, url: str) -> None:
    """``test_best_model_checkpoint_behavior`` case 5: evaluating and saving every step, limit 1, the
    best at step 1. The Trainer ends with ``checkpoint-1`` alone; the store keeps 1 and the last step
    (a difference on purpose: a run can always resume from its last checkpoint)."""
    trainer = trainer_for(
        tmp_path,
        StoreCallback(url),
        scripted=Scripted([0.90, 0.80, 0.70]),
        eval_strategy="steps",
        eval_steps=1,
        save_strategy="steps",
        save_steps=1,
        max_steps=6,
        metric_for_best_model="accuracy",
        greater_is_better=True,
        save_total_limit=1,
    )
    trainer.train()
    assert trainer.state.best_metric == 0.90 and trainer.state.best_global_step == 1
    assert best_step(trainer) == 1
    assert steps_in(tmp_path / "out") == [1]
    store = ckptstore.open(url)
    assert store.epochs() == [1, 6]
    assert store.best().epoch == 1


def test_evaluation_and_save_steps_that_do_not_meet(tmp_path: Path, url: str) -> None:
    """``test_best_model_checkpoint_behavior`` case 6 (issue 13): evaluating every 3 steps, saving every
    2. The best evaluation (step 3) has no checkpoint, so the Trainer names no best, and neither does
    the store: no checkpoint carries another step's score, and a later score that the Trainer does not
    rank (below the step-3 one) is not ranked by the store either."""
    callback = StoreCallback(url)
    trainer = trainer_for(
        tmp_path,
        callback,
        scripted=Scripted([0.90, 0.80, 0.70]),
        eval_strategy="steps",
        eval_steps=3,
        save_strategy="steps",
        save_steps=2,
        metric_for_best_model="accuracy",
        greater_is_better=True,
    )
    trainer.train()
    assert trainer.state.best_metric == 0.90 and trainer.state.best_global_step == 3
    assert trainer.state.best_model_checkpoint is None
    total = trainer.state.global_step
    assert steps_in(tmp_path / "out") == list(range(2, total + 1, 2))
    store = ckptstore.open(url)
    assert store.epochs() == list(range(2, total + 1, 2)) == callback.committed
    assert store_best(store) is None
    assert "eval_accuracy" not in store.get(4).metrics  # step 3's score is not step 4's
    assert store.get(6).metadata[UNRANKED_KEY] == {"eval_accuracy": 0.80}  # evaluated at 6, not ranked


def test_an_unsaved_best_blocks_later_checkpoints_until_beaten(tmp_path: Path, url: str) -> None:
    """The Trainer keeps naming its earlier best while its best evaluation has no checkpoint, and
    moves on once a saved step beats that evaluation; the store names the same checkpoint."""
    bests = Bests(url)
    trainer = trainer_for(
        tmp_path,
        StoreCallback(url),
        bests,
        scripted=Scripted([0.5, 0.6, 0.9, 0.7, 0.8, 0.95]),
        eval_strategy="steps",
        eval_steps=1,
        save_strategy="steps",
        save_steps=2,
        max_steps=8,
        metric_for_best_model="accuracy",
        greater_is_better=True,
    )
    # every step is evaluated: 1:0.5 2:0.6 3:0.9 4:0.7 5:0.8 6:0.95 7:0.95 8:0.95 ; saves at 2, 4, 6, 8
    trainer.train()
    assert bests.seen == [(2, 2, 2), (4, 2, 2), (6, 6, 6), (8, 6, 6)]
    assert trainer.state.best_global_step == 6 and best_step(trainer) == 6
    store = ckptstore.open(url)
    assert store.best().epoch == 6
    assert store.get(4).metadata[UNRANKED_KEY] == {"eval_accuracy": 0.7}  # below step 3, saved at 4
    assert store.get(2).metrics["eval_accuracy"] == 0.6


def test_load_best_model_at_end(tmp_path: Path, url: str) -> None:
    """``test_load_best_model_at_end``: the store's best is the Trainer's best and holds the weights
    the Trainer loaded at the end (by loss, and by accuracy with ``greater_is_better``)."""
    for name, extra in (("loss", {}), ("accuracy", {"metric_for_best_model": "accuracy"})):
        store_url = f"{url}-{name}"
        trainer = trainer_for(
            tmp_path,
            StoreCallback(store_url),
            output=f"out-{name}",
            scripted=Scripted([0.2, 0.7, 0.4, 0.3, 0.1]) if name == "accuracy" else None,
            a=1.5,
            b=2.5,
            learning_rate=0.1,
            eval_steps=5,
            eval_strategy="steps",
            save_steps=5,
            load_best_model_at_end=True,
            **extra,
        )
        trainer.train()
        assert trainer.args.greater_is_better is (name == "accuracy")
        store = ckptstore.open(store_url)
        assert store.best().epoch == best_step(trainer)
        if name == "accuracy":
            assert best_step(trainer) == 10
        with store.best().local_path() as path:
            weights = safetensors_torch.load_file(str(path / "model.safetensors"))
        loaded = trainer.model.state_dict()
        assert all(torch.allclose(loaded[k], weights[k]) for k in loaded)
        assert math.isclose(store.best().metrics[f"eval_{name}"], trainer.state.best_metric)
