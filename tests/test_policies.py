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
        (keep.linear(2), range(1, 6), {5}, {3, 4}),  # pinned/best (not last) do not count against n
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


@pytest.mark.parametrize(
    ("best_epoch", "pinned", "kept"),
    [
        (3, set(), {8, 9, 10}),  # the example: plan_gc keeps 3 besides -> {3, 8, 9, 10}
        (10, set(), {8, 9, 10}),  # the last is the best: still one of the n newest
        (9, set(), {7, 8, 10}),  # best inside the window: kept besides, so the window reaches one further
        (3, {5}, {8, 9, 10}),
    ],
)
def test_linear_counts_the_last_checkpoint_among_the_n_newest_and_best_and_pinned_besides(
    best_epoch: int, pinned: set[int], kept: set[int]
) -> None:
    ctx = KeepContext(protected=frozenset({best_epoch, 10, *pinned}), last=10, best=best_epoch)
    assert set(keep.linear(3).select(infos(*range(1, 11)), ctx)) == kept


def test_linear_after_ten_saves_with_the_best_at_3_keeps_3_8_9_10_like_candle_keep_limit() -> None:
    data = infos(*range(1, 11))
    decisions = plan_gc(data, keep.linear(3), run_id="r", protected={3: "best", 10: "last"}, last=10, best=3)
    assert [d.epoch for d in decisions if d.action == "keep"] == [3, 8, 9, 10]


def test_linear_keeps_a_rolled_back_last_in_place_of_the_oldest_of_the_n() -> None:
    ctx = KeepContext(protected=frozenset({5}), last=5)
    assert set(keep.linear(2).select(infos(1, 2, 5, 6, 7), ctx)) == {5, 7}


def test_exponential_cap_counts_the_last_checkpoint() -> None:
    ctx = KeepContext(protected=frozenset({16}), last=16)
    assert set(keep.exponential(3).select(infos(*range(1, 17)), ctx)) == {16, 15, 13}


def test_best_n_keeps_exactly_the_n_best_even_when_the_best_is_protected() -> None:
    data = infos(1, 2, 3, 4, metric={1: 0.5, 2: 0.1, 3: 0.3, 4: 0.9})
    ctx = KeepContext(protected=frozenset({2, 4}), monitor="loss", last=4, best=2)
    assert set(keep.best(1).select(data, ctx)) == {2}
    assert set(keep.best(2).select(data, ctx)) == {2, 3}
    decisions = plan_gc(
        data, keep.best(1), run_id="r", protected={2: "best", 4: "last"}, monitor="loss", last=4, best=2
    )
    assert [d.epoch for d in decisions if d.action == "keep"] == [2, 4]  # the best, and last besides


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
    assert reasons[3] == ("delete", "not kept by the keep policy")  # linear(1): the last is the one newest
    assert reasons[4] == ("keep", "last")
    assert store.epochs() == [1, 2, 3, 4]
    store2 = ckptstore.open(tmp_path / "s", keep=keep.linear(1), gc_on_save=False, monitor="loss")
    store2.unpin(2)
    assert store2.gc(dry_run=True).deleted == [2, 3]
    assert store2.epochs() == [1, 2, 3, 4]
    assert store2.gc().deleted == [2, 3]
    assert store2.epochs() == [1, 4]


def test_keep_policy_never_deletes_another_runs_checkpoints(tmp_path: Path) -> None:
    other = ckptstore.open(tmp_path / "s", run_id="other")
    for epoch in (1, 2, 3):
        save_bytes(other, epoch)
    mine = ckptstore.open(tmp_path / "s", run_id="mine", keep=keep.linear(1))
    for epoch in (10, 11, 12, 13):
        save_bytes(mine, epoch)
    assert mine.epochs() == [1, 2, 3, 13]  # linear(1): its last; the other run untouched


def test_restarted_job_is_the_same_run_and_its_limits_cover_earlier_saves(tmp_path: Path) -> None:
    first = ckptstore.open(tmp_path / "s", keep=keep.linear(1))
    for epoch in (1, 2, 3):
        save_bytes(first, epoch)
    again = ckptstore.open(tmp_path / "s", keep=keep.linear(1))
    save_bytes(again, 4)
    assert again.epochs() == [4]


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


def test_a_forced_save_without_the_monitor_commits_and_is_never_best(tmp_path: Path) -> None:
    store = ckptstore.open(tmp_path / "s", monitor="val_loss", save_best_only=True, keep=keep.linear(1))
    save_bytes(store, 1, metrics={"val_loss": 0.5})
    with store.save(2, metrics={"loss": 0.1}, force=True) as tx:  # a Keras epoch without validation data
        (tx.path / "w.bin").write_bytes(b"2")
    assert tx.checkpoint is not None and tx.checkpoint.metrics == {"loss": 0.1}
    assert store.epochs() == [1, 2]  # 1 is best (kept besides), 2 is last
    assert store.best().epoch == 1 and store.latest().epoch == 2
    with pytest.raises(ckptstore.MissingMetricError):  # not forced: still a typed error
        store.save(3, metrics={"loss": 0.1})
