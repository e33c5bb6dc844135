"""Keep policies and save decisions: pure functions, table-driven (DESIGN section 5)."""

from __future__ import annotations

from pathlib import Path

import pytest

import ckptstore
from ckptstore import keep
from ckptstore.policies import (
    CheckpointInfo,
    KeepContext,
    SaveRules,
    decide_save,
    plan_gc,
    resolve_mode,
)

from .conftest import save_bytes


def infos(*epochs: int, run: str = "r", metric: dict[int, float] | None = None) -> list[CheckpointInfo]:
    metric = metric or {}
    return [CheckpointInfo(epoch=e, run_id=run, metrics={"loss": metric[e]} if e in metric else {}) for e in epochs]


@pytest.mark.parametrize(
    ("policy", "epochs", "protected", "kept"),
    [
        (keep.linear(2), range(1, 6), set(), {4, 5}),
        (keep.linear(2), range(1, 6), {5}, {3, 4}),  # protected do not count against n
        (keep.every(3), range(1, 10), set(), {3, 6, 9}),
        (keep.exponential(), range(1, 17), set(), {16, 15, 13, 9, 1}),
        (keep.exponential(3), range(1, 17), set(), {16, 15, 13}),
        (keep.exponential(3), range(1, 17), {16}, {16, 15, 13, 9}),  # 16 is protected: not counted
        (keep.any_of(keep.linear(1), keep.every(4)), range(1, 10), set(), {9, 4, 8}),
        (keep.all_(), range(1, 4), set(), {1, 2, 3}),
    ],
)
def test_keep_policy_table(policy: keep.KeepPolicy, epochs: range, protected: set[int], kept: set[int]) -> None:
    selected = policy.select(infos(*epochs), KeepContext(protected=frozenset(protected)))
    assert set(selected) == kept
    assert all(isinstance(r, str) and r for r in selected.values())


def test_best_policy_keeps_n_best_by_metric_and_mode() -> None:
    data = infos(1, 2, 3, 4, metric={1: 0.5, 2: 0.1, 3: 0.3, 4: 0.9})
    assert set(keep.best(2, metric="loss").select(data, KeepContext())) == {2, 3}
    assert set(keep.best(2, metric="loss", mode="max").select(data, KeepContext())) == {4, 1}
    assert set(keep.best(1).select(data, KeepContext(monitor="loss", mode="min"))) == {2}
    with pytest.raises(ckptstore.InvalidArgumentError):
        keep.best(1).select(data, KeepContext())


@pytest.mark.parametrize("bad", [0, -1, 1.5, True])
def test_policy_arguments_are_validated(bad: object) -> None:
    with pytest.raises(ckptstore.InvalidArgumentError):
        keep.linear(bad)  # type: ignore[arg-type]
    with pytest.raises(ckptstore.InvalidArgumentError):
        keep.every(bad)  # type: ignore[arg-type]


def test_plan_gc_never_deletes_protected_or_other_runs() -> None:
    data = infos(1, 2, 3, run="mine") + infos(4, 5, run="theirs") + infos(6, run="mine")
    decisions = plan_gc(data, keep.linear(1), run_id="mine", protected={1: "pinned"})
    actions = {d.epoch: (d.action, d.reason) for d in decisions}
    assert actions[1] == ("keep", "pinned")
    assert actions[4][0] == actions[5][0] == "keep"
    assert "another run" in actions[4][1]
    assert actions[6][0] == "keep"
    assert actions[2][0] == actions[3][0] == "delete"


def test_exponential_store_keeps_log_spaced_epochs_when_saving_1_to_64(tmp_path: Path) -> None:
    store = ckptstore.open(tmp_path / "s", keep=keep.exponential())
    for epoch in range(1, 65):
        save_bytes(store, epoch, str(epoch).encode())
    assert store.epochs() == [1, 33, 49, 57, 61, 63, 64]
    assert sorted(int(p.name) for p in (tmp_path / "s" / "epochs").iterdir()) == [
        1,
        33,
        49,
        57,
        61,
        63,
        64,
    ]
    assert list((tmp_path / "s" / "trash").iterdir()) == []


def test_gc_dry_run_reports_reasons_and_changes_nothing(tmp_path: Path) -> None:
    store = ckptstore.open(tmp_path / "s", keep=keep.linear(1), gc_on_save=False, monitor="loss")
    for epoch, loss in [(1, 0.1), (2, 0.5), (3, 0.4), (4, 0.3)]:
        save_bytes(store, epoch, metrics={"loss": loss})
    store.pin(2)
    report = store.gc(dry_run=True)
    reasons = {d.epoch: (d.action, d.reason) for d in report}
    assert reasons[1] == ("keep", "best")
    assert reasons[2] == ("keep", "pinned")
    assert reasons[3] == ("keep", "linear(1): one of the 1 newest")
    assert reasons[4] == ("keep", "last")
    store2 = ckptstore.open(tmp_path / "s", keep=keep.linear(1), gc_on_save=False, monitor="loss")
    store2.unpin(2)
    assert store2.gc(dry_run=True).deleted == [2]
    assert store2.epochs() == [1, 2, 3, 4]
    assert store2.gc().deleted == [2]
    assert store2.epochs() == [1, 3, 4]


def test_keep_policy_never_deletes_another_runs_checkpoints(tmp_path: Path) -> None:
    other = ckptstore.open(tmp_path / "s", run_id="other")
    for epoch in (1, 2, 3):
        save_bytes(other, epoch)
    mine = ckptstore.open(tmp_path / "s", run_id="mine", keep=keep.linear(1))
    for epoch in (10, 11, 12, 13):
        save_bytes(mine, epoch)
    assert mine.epochs() == [1, 2, 3, 12, 13]


def test_restarted_job_is_the_same_run_and_its_limits_cover_earlier_saves(tmp_path: Path) -> None:
    first = ckptstore.open(tmp_path / "s", keep=keep.linear(1))
    for epoch in (1, 2, 3):
        save_bytes(first, epoch)
    again = ckptstore.open(tmp_path / "s", keep=keep.linear(1))
    save_bytes(again, 4)
    assert again.epochs() == [3, 4]


@pytest.mark.parametrize(
    ("monitor", "mode", "expected"),
    [
        ("val_loss", "auto", "min"),
        ("val_acc", "auto", "max"),
        ("AUC", "auto", "max"),
        ("f1_score", "auto", "max"),
        ("precision", "auto", "max"),
        ("recall@5", "auto", "max"),
        ("loss", "max", "max"),
        (None, "auto", "min"),
    ],
)
def test_mode_auto(monitor: str | None, mode: str, expected: str) -> None:
    assert resolve_mode(monitor, mode) == expected


@pytest.mark.parametrize(
    ("rules", "epoch", "value", "best", "save"),
    [
        (SaveRules(), 0, None, None, True),
        (SaveRules(save_interval=0), 4, None, None, False),
        (SaveRules(skip_epochs=3), 2, None, None, False),
        (SaveRules(skip_epochs=3), 3, None, None, True),
        (SaveRules(save_interval=2), 3, None, None, False),
        (SaveRules(save_interval=2), 4, None, None, True),
        (
            SaveRules(save_interval=5, monitor="loss"),
            3,
            0.1,
            0.2,
            True,
        ),  # improved (CANDLE save_best)
        (SaveRules(save_interval=5, monitor="loss"), 3, 0.3, 0.2, False),
        (SaveRules(save_best_only=True, monitor="loss"), 3, 0.3, 0.2, False),
        (SaveRules(save_best_only=True, monitor="loss"), 3, 0.2, 0.2, False),  # strict
        (SaveRules(save_best_only=True, monitor="loss"), 3, 0.1, 0.2, True),
        (SaveRules(save_best_only=True, monitor="acc", mode="max"), 3, 0.9, 0.8, True),
        (
            SaveRules(save_best_only=True, monitor="loss", initial_value_threshold=0.05),
            1,
            0.1,
            None,
            False,
        ),
        (
            SaveRules(save_best_only=True, monitor="loss", initial_value_threshold=0.05),
            1,
            0.01,
            None,
            True,
        ),
    ],
)
def test_save_decision_table(rules: SaveRules, epoch: int, value: float | None, best: float | None, save: bool) -> None:
    metrics = {rules.monitor: value} if rules.monitor and value is not None else {}
    decision = decide_save(rules, epoch, metrics, best)
    assert bool(decision) is save
    assert decision.reason


def test_save_best_only_survives_a_restart(tmp_path: Path) -> None:
    store = ckptstore.open(tmp_path / "s", monitor="val_loss", save_best_only=True)
    save_bytes(store, 1, metrics={"val_loss": 0.5})
    reopened = ckptstore.open(tmp_path / "s", monitor="val_loss", save_best_only=True)
    assert not reopened.should_save(2, {"val_loss": 0.6})
    assert reopened.should_save(2, {"val_loss": 0.4})
    with reopened.save(2, metrics={"val_loss": 0.7}) as tx:
        (tx.path / "x").write_bytes(b"x")
    assert tx.skipped
    assert tx.checkpoint is None
    assert 2 not in reopened
    assert reopened.save_state(3, b"x", serializer="raw", metrics={"val_loss": 0.9}) is None
    assert any("SKIP" in line for line in reopened.log())


def test_monitored_metric_missing_is_a_typed_error_and_writes_nothing(tmp_path: Path) -> None:
    store = ckptstore.open(tmp_path / "s", monitor="val_loss")
    with pytest.raises(ckptstore.MissingMetricError, match="val_loss"):
        store.save(1, metrics={"loss": 0.3})
    assert list((tmp_path / "s" / "work").iterdir()) == []
    assert list((tmp_path / "s" / "epochs").iterdir()) == []
