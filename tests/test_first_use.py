"""What a new user hit (issue "First use"), from the Python side: each item as they met it.

The README's Quick start has its own test (``test_readme.py``); the CLI's items are in ``test_cli*.py``.
"""

from __future__ import annotations

import json
import subprocess
import sys
import uuid
from pathlib import Path
from typing import Any

import pytest

import ckptstore
from ckptstore import keep

from .conftest import save_bytes


# -- evaluate() remembers its mode ------------------------------------------------------------------------
def _evaluated(root: Path) -> ckptstore.CheckpointStore:
    store = ckptstore.open(root, monitor="val_loss")
    for epoch, score in [(1, 0.2), (2, 0.9), (3, 0.5)]:
        store.save_state(epoch, {"score": score}, serializer="json", metrics={"val_loss": 1 - score})
    ranked = store.evaluate(lambda state: state["score"], metric="test_score", mode="max")
    assert [(c.epoch, v) for c, v in ranked] == [(2, 0.9), (3, 0.5), (1, 0.2)]
    return store


def test_evaluate_records_its_mode_and_every_ranking_uses_it(tmp_path: Path) -> None:
    """``test_score`` has no max-hint in its name: before, best() by it picked the worst checkpoint."""
    _evaluated(tmp_path / "s")
    store = ckptstore.open(tmp_path / "s")  # a later process: only the store remembers
    assert store.best(metric="test_score").epoch == 2
    assert [c.epoch for c in store.list(sort_by="test_score")] == [2, 3, 1]
    assert [c.epoch for c in store.top(2, metric="test_score")] == [2, 3]
    assert store.download(tmp_path / "dl", "best", metric="test_score") == [tmp_path / "dl" / store.get(2).name]
    assert store.get(2).metadata["evaluation_modes"] == {"test_score": "max"}
    assert store.best(metric="test_score", mode="min").epoch == 1  # an explicit mode still wins


def test_evaluate_a_minimised_metric_named_like_a_maximised_one(tmp_path: Path) -> None:
    store = ckptstore.open(tmp_path / "s")
    for epoch in (1, 2, 3):
        store.save_state(epoch, {"e": epoch}, serializer="json")
    store.evaluate(lambda state: float(state["e"]), metric="test_acc_error", mode="min")
    assert store.best(metric="test_acc_error").epoch == 1  # the name says "acc"; the recorded mode says min


def test_evaluate_on_plain_files_passes_a_verified_local_folder(tmp_path: Path) -> None:
    store = ckptstore.open(tmp_path / "s")
    for epoch in (1, 2):
        save_bytes(store, epoch, str(epoch * 10).encode())  # written through tx.path: no serializer
    seen: list[Path] = []

    def fn(path: Any) -> float:
        seen.append(Path(path))
        return float((Path(path) / "model.bin").read_text())

    ranked = store.evaluate(fn, metric="test_loss", mode="min")
    assert [(c.epoch, v) for c, v in ranked] == [(1, 10.0), (2, 20.0)]
    assert all(p.is_dir() for p in seen)


def test_evaluate_skips_a_damaged_plain_checkpoint_and_never_calls_fn_on_it(tmp_path: Path) -> None:
    store = ckptstore.open(tmp_path / "s")
    save_bytes(store, 1, b"1")
    damaged = save_bytes(store, 2, b"2")
    (damaged.path / "model.bin").write_bytes(b"X")
    calls: list[str] = []
    with pytest.warns(UserWarning, match="epoch 2 skipped"):
        ranked = store.evaluate(lambda p: calls.append(str(p)) or 1.0, metric="m", mode="min")
    assert [c.epoch for c, _ in ranked] == [1] and len(calls) == 1


# -- the store remembers how it was opened -----------------------------------------------------------------
def test_the_keep_policy_is_recorded_and_a_later_open_and_gc_use_it(tmp_path: Path) -> None:
    root = tmp_path / "s"
    store = ckptstore.open(root, monitor="val_loss", keep=keep.linear(3), gc_on_save=False)
    for epoch in range(1, 7):
        save_bytes(store, epoch, metrics={"val_loss": 1.0 / epoch})
    recorded = json.loads((root / "ckptstore.json").read_text())
    assert recorded["keep"] == {"linear": {"n": 3}} and recorded["monitor"] == "val_loss"
    reopened = ckptstore.open(root)
    assert reopened.config.keep == keep.linear(3)
    assert reopened.best().epoch == 6  # the monitor, as recorded (a callback's store, reopened)
    assert reopened.gc(dry_run=True).deleted == [1, 2, 3]
    other = ckptstore.open(root, keep=keep.linear(5))  # told otherwise: its own policy, the record stays
    assert other.gc(dry_run=True).deleted == [1]
    assert json.loads((root / "ckptstore.json").read_text())["keep"] == {"linear": {"n": 3}}


def test_a_store_made_without_a_policy_records_the_first_one_it_is_opened_with(tmp_path: Path) -> None:
    root = tmp_path / "s"
    ckptstore.open(root)
    assert "keep" not in json.loads((root / "ckptstore.json").read_text())
    policy = keep.any_of(keep.linear(2), keep.every(10), keep.best(1, metric="acc", mode="max"))
    ckptstore.open(root, keep=policy)
    assert ckptstore.open(root).config.keep == policy
    assert any("KEEP" in line and "any_of(linear(2), every(10)" in line for line in ckptstore.open(root).log())


def test_a_custom_policy_is_used_but_not_recorded(tmp_path: Path) -> None:
    class Newest:
        def select(self, infos: Any, ctx: Any) -> dict[int, str]:
            return {max(i.epoch for i in infos): "newest"} if infos else {}

    root = tmp_path / "s"
    store = ckptstore.open(root, keep=Newest())
    for epoch in (1, 2):
        save_bytes(store, epoch)
    assert store.epochs() == [2]
    assert "keep" not in json.loads((root / "ckptstore.json").read_text())
    assert ckptstore.open(root).config.keep is None


@pytest.mark.parametrize(
    "bad", [{"linear": {"n": 0}}, {"linear": {"m": 3}}, {"nope": {}}, ["linear"], {"any_of": []}, {"a": 1, "b": 2}]
)
def test_a_malformed_recorded_policy_is_a_typed_error_naming_the_field(tmp_path: Path, bad: object) -> None:
    root = tmp_path / "s"
    ckptstore.open(root)
    descriptor = json.loads((root / "ckptstore.json").read_text())
    (root / "ckptstore.json").write_text(json.dumps({**descriptor, "keep": bad}))
    before = (root / "ckptstore.json").read_bytes()
    with pytest.raises(ckptstore.ManifestError, match="'keep'"):
        ckptstore.open(root)
    assert (root / "ckptstore.json").read_bytes() == before


# -- repr ----------------------------------------------------------------------------------------------------
def test_reprs_say_what_the_object_is(tmp_path: Path) -> None:
    store = ckptstore.open(tmp_path / "s", monitor="val_loss", keep=keep.linear(2))
    assert repr(store).startswith(f"<CheckpointStore {store.url} monitor=val_loss(min) keep=linear(n=2)")
    tx = store.save(1, metrics={"val_loss": 0.25})
    assert repr(tx) == f"<SaveTransaction epoch=1 val_loss=0.25 not started in {store.url}>"
    with tx:
        (tx.path / "w.bin").write_bytes(b"w")
        assert " open in " in repr(tx)
    assert " committed in " in repr(tx)
    assert "skipped" in repr(ckptstore.open(tmp_path / "t", save_interval=2).save(1))
    checkpointer = ckptstore.Checkpointer(store)
    assert repr(checkpointer).startswith("<Checkpointer serializer='auto' store=<CheckpointStore ")


# -- progress of streamed uploads ------------------------------------------------------------------------
def _s3_url(server: Any) -> str:
    return str(server.url(f"progress-{uuid.uuid4().hex}"))


def test_save_state_to_s3_reports_progress_against_the_serializers_size(s3_server: Any) -> None:
    """Before: ``0/0 MB`` for a streamed save; now the serializer's arrays give the total up front."""
    np = pytest.importorskip("numpy")
    seen: list[tuple[int, int, str]] = []
    store = ckptstore.open(
        _s3_url(s3_server),
        storage_options=s3_server.storage_options,
        progress=lambda d, t, what: seen.append((d, t, what)),
    )
    state = {"w": np.arange(3_000_000, dtype=np.float32), "b": np.zeros(1000, dtype=np.float64)}
    checkpoint = store.save_state(1, state, serializer="numpy")
    assert checkpoint is not None
    expected = state["w"].nbytes + state["b"].nbytes
    assert seen and {t for _, t, _ in seen} == {expected}
    assert {what for _, _, what in seen} == {"upload epoch 1"}
    dones = [d for d, _, _ in seen]
    assert dones == sorted(dones) and dones[-1] == checkpoint.size  # counted as the bytes went out
    assert abs(checkpoint.size - expected) < 4096  # the file is the arrays plus a small header


def test_a_streamed_write_of_unknown_size_counts_bytes_on_the_terminal_line(
    s3_server: Any, capsys: pytest.CaptureFixture[str]
) -> None:
    store = ckptstore.open(_s3_url(s3_server), storage_options=s3_server.storage_options, progress=True)
    with store.save(1) as tx, tx.open("blob.bin") as f:
        for _ in range(4):
            f.write(b"x" * 1_000_000)
    err = capsys.readouterr().err
    assert "upload epoch 1: 4 MB" in err  # no total to show a percentage of: bytes and rate
    assert "%" not in err.split("upload epoch 1: 4 MB")[-1].splitlines()[0]


def test_estimate_bytes_counts_arrays_tensors_and_buffers_in_nested_state() -> None:
    np = pytest.importorskip("numpy")
    from ckptstore._progress import estimate_bytes

    assert estimate_bytes({"a": np.zeros(10, dtype=np.int64), "b": [b"abc", (bytearray(5),)], "c": 1}) == 80 + 3 + 5
    assert estimate_bytes({"lr": 0.1, "name": "x"}) is None
    torch = pytest.importorskip("torch")
    assert estimate_bytes({"layer": {"weight": torch.zeros(4, 4)}}) == 64


# -- the CLI sees what the store recorded ----------------------------------------------------------------------
def _cli(*args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "ckptstore", *args], capture_output=True, text=True, timeout=120, check=False
    )


def test_the_cli_uses_the_recorded_keep_policy_monitor_and_evaluation_mode(tmp_path: Path) -> None:
    store = _evaluated(tmp_path / "s")  # monitor val_loss; test_score evaluated with mode="max"
    ckptstore.open(tmp_path / "s", keep=keep.linear(1), gc_on_save=False)  # records linear(1)
    dry = _cli("gc", str(tmp_path / "s"), "--dry-run", "--json")
    assert dry.returncode == 0, dry.stderr
    assert "no keep policy" not in dry.stdout
    decisions = {d["epoch"]: d["action"] for d in json.loads(dry.stdout)["decisions"]}
    assert decisions == {1: "delete", 2: "keep", 3: "keep"}  # 2 is best by val_loss (recorded), 3 is last
    ranked = _cli("ls", str(tmp_path / "s"), "--sort-by", "test_score", "--json")
    assert ranked.returncode == 0, ranked.stderr
    assert [row["epoch"] for row in json.loads(ranked.stdout)][:3] == [2, 3, 1]
    fetched = _cli(
        "download", str(tmp_path / "s"), "best", "--metric", "test_score", "--output-dir", str(tmp_path / "d")
    )
    assert fetched.returncode == 0, fetched.stderr
    assert (tmp_path / "d" / store.get(2).name / "MANIFEST.json").exists()
