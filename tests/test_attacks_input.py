"""Attacks from outside, input validation (issue 11, items 6, 8, 10, 13 and the typed errors).

Each test is named after the attack it proves impossible. Bad input gets a typed error (a
``CkptStoreError`` that is also the builtin raised before) and changes nothing on disk or in the
bucket.
"""

from __future__ import annotations

import json
import logging
import re
import uuid
import warnings
from fractions import Fraction
from pathlib import Path
from typing import Any

import numpy as np
import pytest
from click.testing import CliRunner

import ckptstore
from ckptstore.cli import cli
from ckptstore.manifest import Manifest

from .conftest import save_bytes, snapshot

STAMP = re.compile(r"^\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d\.\d{6}Z \S+:\d+ ")


def _keys(store: ckptstore.CheckpointStore) -> dict[str, bytes]:
    """Every object of a store on any backend except its log and probes: key -> content."""
    files = store.backend.stat_files("")
    skip = ("log/", "probe/", "ckpt.log")
    return {k: store.backend.read_bytes(k) for k in files if not k.startswith(skip)}


def _filled(root: Path, epochs: tuple[int, ...] = (1, 2, 3)) -> ckptstore.CheckpointStore:
    store = ckptstore.open(root, monitor="val_loss")
    for epoch in epochs:
        save_bytes(store, epoch, metrics={"val_loss": 1.0 / epoch})
    return store


# -- item 6: options are checked at open, before anything is written ------------------------------------
BAD_OPTIONS: list[tuple[str, object, type[Exception]]] = [
    ("keep", "linear", ckptstore.InvalidArgumentTypeError),
    ("keep", 5, ckptstore.InvalidArgumentTypeError),
    ("keep", ckptstore.keep.linear, ckptstore.InvalidArgumentTypeError),
    ("monitor", 5, ckptstore.InvalidArgumentTypeError),
    ("monitor", "", ckptstore.InvalidArgumentError),
    ("mode", 5, ckptstore.InvalidArgumentTypeError),
    ("skip_epochs", True, ckptstore.InvalidArgumentTypeError),
    ("skip_epochs", "1", ckptstore.InvalidArgumentTypeError),
    ("skip_epochs", 1.5, ckptstore.InvalidArgumentTypeError),
    ("save_interval", True, ckptstore.InvalidArgumentTypeError),
    ("save_interval", "2", ckptstore.InvalidArgumentTypeError),
    ("save_best_only", "yes", ckptstore.InvalidArgumentTypeError),
    ("save_best_only", 1, ckptstore.InvalidArgumentTypeError),
    ("initial_value_threshold", "0.5", ckptstore.InvalidArgumentTypeError),
    ("initial_value_threshold", True, ckptstore.InvalidArgumentTypeError),
    ("initial_value_threshold", 10**400, ckptstore.InvalidArgumentError),
    ("run_id", 5, ckptstore.InvalidArgumentTypeError),
    ("run_id", "", ckptstore.InvalidArgumentError),
    ("run_id", "a\nb", ckptstore.InvalidArgumentError),
    ("run_id", "a\udcffb", ckptstore.InvalidArgumentError),
    ("verify_on_load", "no", ckptstore.InvalidArgumentTypeError),
    ("verify_on_load", 0, ckptstore.InvalidArgumentTypeError),
    ("gc_on_save", "no", ckptstore.InvalidArgumentTypeError),
    ("work_grace_seconds", "5", ckptstore.InvalidArgumentTypeError),
    ("work_grace_seconds", True, ckptstore.InvalidArgumentTypeError),
    ("work_grace_seconds", float("inf"), ckptstore.InvalidArgumentError),
    ("width", True, ckptstore.InvalidArgumentTypeError),
    ("width", "8", ckptstore.InvalidArgumentTypeError),
    ("width", 8.0, ckptstore.InvalidArgumentTypeError),
    ("log_file", "no", ckptstore.InvalidArgumentTypeError),
    ("progress", "yes", ckptstore.InvalidArgumentTypeError),
    ("progress", 5, ckptstore.InvalidArgumentTypeError),
    ("retry", "fast", ckptstore.InvalidArgumentTypeError),
]


@pytest.mark.parametrize(("option", "value", "error"), BAD_OPTIONS, ids=[f"{o}={v!r}" for o, v, _ in BAD_OPTIONS])
def test_an_option_of_the_wrong_type_or_range_is_refused_at_open_before_anything_is_written(
    tmp_path: Path, option: str, value: object, error: type[Exception]
) -> None:
    fresh = tmp_path / "fresh"
    with pytest.raises(error, match=option) as info:
        ckptstore.open(fresh, **{option: value})
    assert isinstance(info.value, ckptstore.InvalidArgumentError)
    if error is ckptstore.InvalidArgumentTypeError:
        assert isinstance(info.value, TypeError)  # ``except TypeError`` keeps working
    assert not fresh.exists()
    existing = _filled(tmp_path / "existing", (1,))
    before = snapshot(existing.root)
    with pytest.raises(error):
        ckptstore.open(existing.root, **{option: value})
    assert snapshot(existing.root) == before


def test_a_run_id_that_is_not_a_string_can_no_longer_make_saves_vanish_from_listings(tmp_path: Path) -> None:
    with pytest.raises(ckptstore.InvalidArgumentTypeError, match="run_id"):
        ckptstore.open(tmp_path / "s", run_id=5)
    assert not (tmp_path / "s").exists()


@pytest.mark.parametrize("keep", ["linear", 5, ckptstore.keep.linear])
def test_a_keep_that_is_not_a_policy_is_refused_at_open_with_a_hint(tmp_path: Path, keep: object) -> None:
    with pytest.raises(ckptstore.InvalidArgumentTypeError, match=re.escape("keep=ckptstore.keep.linear(5)")):
        ckptstore.open(tmp_path / "s", keep=keep)
    assert not (tmp_path / "s").exists()


def test_integrations_check_their_options_at_open_too(tmp_path: Path) -> None:
    with pytest.raises(ckptstore.InvalidArgumentTypeError, match="keep"):
        ckptstore.Checkpointer(tmp_path / "s", keep="linear")  # type: ignore[arg-type]
    with pytest.raises(ckptstore.InvalidArgumentTypeError, match="save_interval"):
        ckptstore.Checkpointer(tmp_path / "s", every="2")  # type: ignore[arg-type]
    assert not (tmp_path / "s").exists()


# -- item 8: names that cannot be restored are refused on every backend ----------------------------------
@pytest.fixture(
    params=["local", "memory", pytest.param("s3", marks=pytest.mark.s3), pytest.param("gcs", marks=pytest.mark.gcs)]
)
def any_store(request: pytest.FixtureRequest, tmp_path: Path) -> ckptstore.CheckpointStore:
    """An empty store with one committed epoch on each backend."""
    if request.param == "local":
        store = ckptstore.open(tmp_path / "store")
    elif request.param == "memory":
        store = ckptstore.open(f"memory://attacks-{uuid.uuid4().hex}")
    else:
        server = request.getfixturevalue("s3_server" if request.param == "s3" else "gcs_server")
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", ckptstore.SingleWriterWarning)  # the GCS emulator ignores preconditions
            store = ckptstore.open(server.url(f"attacks-{uuid.uuid4().hex}"), storage_options=server.storage_options)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", ckptstore.SingleWriterWarning)
        save_bytes(store, 1)
    return store


@pytest.mark.parametrize("order", [("a", "a/b"), ("a/b", "a"), ("x/a", "x/a/b/c")])
def test_a_file_and_a_folder_of_the_same_name_are_refused_at_tx_open_on_every_backend(
    any_store: ckptstore.CheckpointStore, order: tuple[str, str]
) -> None:
    before = _keys(any_store)
    with pytest.raises(ckptstore.UnsafePathError, match="folder"), any_store.save(2) as tx:
        with tx.open(order[0]) as f:
            f.write(b"1")
        tx.open(order[1])
    assert _keys(any_store) == before
    assert any_store.epochs() == [1]


def test_a_streamed_file_below_a_staged_file_is_refused_on_every_backend(
    any_store: ckptstore.CheckpointStore,
) -> None:
    before = _keys(any_store)
    with pytest.raises(ckptstore.UnsafePathError, match="folder"), any_store.save(2) as tx:
        (tx.path / "a").write_bytes(b"staged")  # locally: tx.open below would meet a file; refused there
        with tx.open("a/b") as f:
            f.write(b"streamed")
    assert _keys(any_store) == before
    assert any_store.epochs() == [1]


def test_a_file_staged_below_a_streamed_file_cannot_be_committed_on_object_stores(
    any_store: ckptstore.CheckpointStore,
) -> None:
    """Streamed ``a`` plus ``a/b`` staged in ``tx.path``: only the commit sees both; it refuses them."""
    if any_store.backend.local_path() is not None:
        pytest.skip("a local staging directory cannot hold a file and a folder of one name")
    before = _keys(any_store)
    with pytest.raises(ckptstore.UnsafePathError, match="folder"), any_store.save(2) as tx:
        with tx.open("a") as f:
            f.write(b"streamed")
        (tx.path / "a").mkdir()
        (tx.path / "a" / "b").write_bytes(b"staged")
    assert _keys(any_store) == before
    assert any_store.epochs() == [1]
    assert any_store.verify() and any_store.latest().epoch == 1


@pytest.mark.parametrize("how", ["stream", "staged"])
def test_a_name_with_a_lone_surrogate_is_refused_on_every_backend(
    any_store: ckptstore.CheckpointStore, how: str
) -> None:
    before = _keys(any_store)
    with pytest.raises(ckptstore.UnsafePathError, match="UTF-8"), any_store.save(2) as tx:
        if how == "stream":
            tx.open("model-\udcff.bin")
        else:
            (tx.path / "model-\udcff.bin").write_bytes(b"x")
    assert _keys(any_store) == before
    assert any_store.epochs() == [1]


def test_a_name_longer_than_the_backends_key_limit_is_a_typed_error(any_store: ckptstore.CheckpointStore) -> None:
    limit = any_store.capabilities.max_key_bytes
    if limit is None:
        pytest.skip("the memory backend has no key length limit")
    name = "/".join(["d" * 200] * (limit // 200 + 1))
    before = _keys(any_store)
    with pytest.raises(ckptstore.UnsafePathError, match=str(limit)), any_store.save(2) as tx:
        tx.open(name)
    assert _keys(any_store) == before


@pytest.mark.s3
def test_a_staged_name_longer_than_the_s3_key_limit_is_a_typed_error(s3_server: Any) -> None:
    store = ckptstore.open(s3_server.url(f"attacks-{uuid.uuid4().hex}"), storage_options=s3_server.storage_options)
    save_bytes(store, 1)
    before = _keys(store)
    with pytest.raises(ckptstore.UnsafePathError, match="1024"), store.save(2) as tx:
        folder = tx.path.joinpath(*(["d" * 200] * 5))
        folder.mkdir(parents=True)
        (folder / "model.bin").write_bytes(b"x")
    assert _keys(store) == before
    assert store.epochs() == [1]


def test_a_manifest_listing_a_file_and_a_folder_of_the_same_name_is_invalid() -> None:
    entry = {"size": 1, "xxh3_128": "0" * 32}
    raw = {
        "format": "ckptstore.manifest",
        "version": 1,
        "epoch": 1,
        "run_id": "r",
        "commit_id": "c",
        "writer": {},
        "committed_at_ns": 1,
        "files": [{"path": "a", **entry}, {"path": "a/b", **entry}],
        "metrics": {},
        "metadata": {},
        "framework_versions": {},
    }
    with pytest.raises(ckptstore.ManifestError, match="folder"):
        Manifest.from_dict(raw)
    raw["files"] = [{"path": "a", **entry}, {"path": "a", **entry}]
    with pytest.raises(ckptstore.ManifestError, match="twice"):
        Manifest.from_dict(raw)


# -- item 10: one bad manifest never breaks the whole store -----------------------------------------------
def _set(data: dict[str, Any], path: str, value: object) -> None:
    *parents, leaf = path.split(".")
    target: Any = data
    for part in parents:
        target = target[int(part)] if part.isdigit() else target[part]
    target[int(leaf) if leaf.isdigit() else leaf] = value


OUT_OF_RANGE = [
    ("committed_at_ns", 10**30),
    ("committed_at_ns", -1),
    ("files.0.size", 2**63),
    ("step", 2**64),
    ("batch", -1),
    ("parent", -5),
    ("metrics", {"val_loss": "0.5"}),
    ("metrics", {"val_loss": 10**400}),
    ("framework_versions", {"python": 3}),
    ("serializer", {"name": 5, "version": "1"}),
    ("writer", {"id": ["x"]}),
    ("commit_id", ""),
]


@pytest.mark.parametrize(("field", "value"), OUT_OF_RANGE, ids=[f"{f}={v!r:.20}" for f, v in OUT_OF_RANGE])
def test_a_manifest_with_an_out_of_range_value_is_skipped_and_reported_and_the_rest_lists(
    tmp_path: Path, field: str, value: object
) -> None:
    store = _filled(tmp_path / "s")
    path = store.root / "epochs" / "00000002" / "MANIFEST.json"
    data = json.loads(path.read_text())
    _set(data, field, value)
    path.write_text(json.dumps(data))
    (store.root / "index.json").unlink()  # what a reader that never saw the good manifest finds
    reader = ckptstore.open(store.root, monitor="val_loss")
    assert [c.epoch for c in reader.list(sort_by="epoch")] == [1, 3]
    assert "00000002" not in reader.table() and "3" in reader.table()
    assert reader.report(file=None)["checkpoints"] == 2
    assert reader.latest().epoch == 3 and reader.best().epoch == 3
    with pytest.raises(ckptstore.ManifestError, match="00000002"):
        reader.verify()
    for command in (["ls", str(store.root)], ["show", str(store.root), "3"], ["ls", str(store.root), "--json"]):
        result = CliRunner().invoke(cli, command)
        assert result.exit_code == 0, (result.output, result.exception)
        assert "3" in result.output


def test_an_index_entry_with_an_out_of_range_time_is_dropped_and_re_read_from_the_manifest(tmp_path: Path) -> None:
    store = _filled(tmp_path / "s")
    index = json.loads((store.root / "index.json").read_text())
    index["checkpoints"]["00000002"]["manifest"]["committed_at_ns"] = 10**30
    (store.root / "index.json").write_text(json.dumps(index))
    listed = {c.epoch: c for c in store.list(sort_by="epoch")}
    assert sorted(listed) == [1, 2, 3]
    assert listed[2].manifest.committed_at_ns < 10**30  # the manifest's own value
    assert "2" in store.table()
    result = CliRunner().invoke(cli, ["ls", str(store.root)])
    assert result.exit_code == 0, (result.output, result.exception)


@pytest.mark.parametrize("width", [True, 10**6, 0, 19, -1])
def test_a_store_descriptor_with_a_bool_or_out_of_range_width_is_refused(tmp_path: Path, width: object) -> None:
    store = _filled(tmp_path / "s", (1,))
    path = store.root / "ckptstore.json"
    descriptor = json.loads(path.read_text())
    descriptor["width"] = width
    path.write_text(json.dumps(descriptor))
    before = snapshot(store.root)
    with pytest.raises(ckptstore.ManifestError, match=r"ckptstore\.json.*width"):
        ckptstore.open(store.root)
    assert snapshot(store.root) == before


def test_a_committed_time_at_the_end_of_the_range_still_reads_as_a_datetime(tmp_path: Path) -> None:
    store = _filled(tmp_path / "s", (1,))
    path = store.root / "epochs" / "00000001" / "MANIFEST.json"
    data = json.loads(path.read_text())
    data["committed_at_ns"] = 253402300799 * 10**9 + 999_999_999  # 9999-12-31T23:59:59.999999999Z
    path.write_text(json.dumps(data))
    (store.root / "index.json").unlink()
    (ck,) = ckptstore.open(store.root).list()
    assert ck.committed_at.year == 9999
    assert "9999-12-31" in ckptstore.open(store.root).table()


# -- item 13: one log event per line ---------------------------------------------------------------------
FORGED = "\n2099-01-01T00:00:00.000000Z evil:1 DELETE   epoch 1: forged"


@pytest.mark.parametrize("breaker", ["\n", "\r", "\r\n", "\x0b", "\x0c", "\x1c", "\x85", "\u2028", "\u2029"])
def test_a_metric_name_with_a_line_break_cannot_forge_a_log_line(
    tmp_path: Path, caplog: pytest.LogCaptureFixture, breaker: str
) -> None:
    store = ckptstore.open(tmp_path / "s")
    save_bytes(store, 1)
    lines_before = len(store.log())
    caplog.set_level(logging.INFO, logger="ckptstore")
    save_bytes(store, 2, metrics={"x" + FORGED.replace("\n", breaker): 0.5})
    lines = store.log()
    assert len(lines) == lines_before + 2  # COMMIT and POINTER
    assert all(STAMP.match(line) for line in lines), lines
    assert not any(line.startswith("2099") for line in lines)
    commit = next(line for line in lines if " COMMIT " in line and "epoch=2" in line)
    assert "forged" in commit  # escaped, not lost
    for record in caplog.records:
        assert len(record.getMessage().splitlines()) == 1


def test_a_monitor_name_with_a_newline_cannot_forge_a_log_line_through_a_skip_reason(tmp_path: Path) -> None:
    monitor = "m" + FORGED
    store = ckptstore.open(tmp_path / "s", monitor=monitor, mode="min", save_best_only=True)
    save_bytes(store, 1, metrics={monitor: 1.0})
    with store.save(2, metrics={monitor: 2.0}) as tx:  # no improvement: skipped, and the reason is logged
        assert tx.skipped
    lines = store.log()
    assert any(" SKIP " in line and "forged" in line for line in lines)
    assert all(STAMP.match(line) for line in lines), lines


# -- typed errors ----------------------------------------------------------------------------------------
def test_numeric_strings_bytes_and_other_non_numbers_are_refused_as_metrics_and_real_numbers_pass(
    tmp_path: Path,
) -> None:
    torch = pytest.importorskip("torch")
    store = _filled(tmp_path / "s", (1,))
    before = snapshot(store.root)
    for value in ("0.5", b"1.5", bytearray(b"2"), np.array([0.5, 0.6]), 1 + 2j, np.bool_(True), torch.tensor([0.5])):
        with pytest.raises(ckptstore.InvalidMetricError, match="val_loss"):
            store.save(2, metrics={"val_loss": value})
        with pytest.raises(ckptstore.InvalidMetricError):
            store.should_save(2, {"val_loss": value})
    assert snapshot(store.root) == before
    values = {
        "val_loss": 0.5,
        "int": 3,
        "np_float32": np.float32(0.25),
        "np_int": np.int64(7),
        "np_0d": np.array(1.5),
        "torch_0d": torch.tensor(2.5),
        "fraction": Fraction(1, 4),
    }
    ck = save_bytes(store, 2, metrics=values)
    assert ck.metrics == {k: float(v) for k, v in values.items()}
    assert all(type(v) is float for v in ck.metrics.values())


def test_a_metric_too_large_for_a_float_is_a_typed_error(tmp_path: Path) -> None:
    store = _filled(tmp_path / "s", (1,))
    before = snapshot(store.root)
    with pytest.raises(ckptstore.InvalidMetricError, match="val_loss"):
        store.save(2, metrics={"val_loss": 10**400})
    assert snapshot(store.root) == before


@pytest.mark.parametrize(
    "metadata", [{1: "a"}, {"a": {2: "b"}}, {"a": [{None: 1}]}, {"a": {(1, 2): 3}}, {"a": {1.5: 1}}]
)
def test_metadata_with_non_string_keys_is_refused_at_any_depth(tmp_path: Path, metadata: dict[Any, Any]) -> None:
    store = _filled(tmp_path / "s", (1,))
    before = snapshot(store.root)
    with pytest.raises(ckptstore.InvalidArgumentTypeError, match="key"):
        store.save(2, metrics={"val_loss": 0.1}, metadata=metadata)
    with pytest.raises(ckptstore.InvalidArgumentTypeError):
        store.get(1).add_metadata(metadata)
    assert snapshot(store.root) == before


def _nested(depth: int) -> dict[str, Any]:
    value: dict[str, Any] = {}
    for _ in range(depth - 1):
        value = {"a": value}
    return value


def test_deeply_nested_metadata_is_a_typed_error_not_a_recursion_error(tmp_path: Path) -> None:
    store = _filled(tmp_path / "s", (1,))
    before = snapshot(store.root)
    for deep in (_nested(100_000), _list_nest(5_000)):
        with pytest.raises(ckptstore.InvalidArgumentError, match="64"):
            store.save(2, metrics={"val_loss": 0.1}, metadata={"x": deep})
    circular: dict[str, Any] = {}
    circular["self"] = circular
    with pytest.raises(ckptstore.InvalidArgumentError):
        store.save(2, metrics={"val_loss": 0.1}, metadata=circular)
    assert snapshot(store.root) == before
    ck = save_bytes(store, 2, metrics={"val_loss": 0.1}, metadata=_nested(64))  # the limit itself is fine
    assert ck.metadata == _nested(64)


def _list_nest(depth: int) -> list[Any]:
    value: list[Any] = []
    for _ in range(depth - 1):
        value = [value]
    return value


def test_download_into_a_path_that_is_a_file_is_a_typed_error(tmp_path: Path) -> None:
    store = _filled(tmp_path / "s", (1,))
    dest = tmp_path / "dest"
    dest.write_bytes(b"mine")
    with pytest.raises(ckptstore.DestinationExistsError, match="dest") as info:
        store.get(1).download(dest)
    assert isinstance(info.value, FileExistsError) and isinstance(info.value, ckptstore.InvalidArgumentError)
    assert dest.read_bytes() == b"mine"


def test_download_onto_a_folder_where_a_file_goes_is_a_typed_error_and_writes_nothing(tmp_path: Path) -> None:
    store = ckptstore.open(tmp_path / "s")
    with store.save(1) as tx:
        for name in ("a.bin", "sub/b.bin", "z.bin"):
            with tx.open(name) as f:
                f.write(b"x")
    for blocker in ("folder", "file"):
        dest = tmp_path / f"dest-{blocker}"
        if blocker == "folder":
            (dest / "z.bin").mkdir(parents=True)  # a folder where the file z.bin goes
        else:
            dest.mkdir()
            (dest / "sub").write_bytes(b"mine")  # a file where the folder sub/ goes
        before = snapshot(dest)
        with pytest.raises(ckptstore.DestinationExistsError, match="z.bin" if blocker == "folder" else "sub"):
            store.get(1).download(dest)
        assert snapshot(dest) == before


def test_top_with_a_negative_or_non_int_count_is_refused(tmp_path: Path) -> None:
    store = _filled(tmp_path / "s")
    with pytest.raises(ckptstore.InvalidArgumentError, match="-1"):
        store.top(-1)
    for bad in ("3", 2.0, True, None):
        with pytest.raises(ckptstore.InvalidArgumentTypeError):
            store.top(bad)  # type: ignore[arg-type]
    with pytest.raises(ckptstore.InvalidArgumentTypeError):
        store.list(limit="2")  # type: ignore[arg-type]
    with pytest.raises(ckptstore.InvalidArgumentTypeError):
        store.list(sort_by=3)  # type: ignore[arg-type]
    with pytest.raises(ckptstore.InvalidArgumentTypeError):
        store.top(2, metric=5)  # type: ignore[arg-type]
    assert [c.epoch for c in store.top(2)] == [3, 2]
    assert store.top(0) == []


JUNK_HISTORY: list[object] = [
    [1, 2],
    "junk",
    {"a": 5, "b": {"epoch": "x", "metrics": {"val_loss": 0.1}}, "c": {"epoch": None}, "d": {"epoch": 1, "metrics": 3}},
    {"e": {"epoch": 7, "metrics": {"val_loss": "0.1"}}, "f": {"epoch": -3, "metrics": {"val_loss": 0.2}}},
]


@pytest.mark.parametrize("history", JUNK_HISTORY)
def test_junk_history_in_the_index_never_breaks_plot_or_gc(tmp_path: Path, history: object) -> None:
    pytest.importorskip("matplotlib")
    store = _filled(tmp_path / "s")
    index = json.loads((store.root / "index.json").read_text())
    index["history"] = history
    index["checkpoints"]["00000001"]["commit_id"] = 5  # a junk field in an entry gc moves to the history
    (store.root / "index.json").write_text(json.dumps(index))
    result = CliRunner().invoke(cli, ["plot", str(store.root), "--output", str(tmp_path / "p.png")])
    assert result.exit_code == 0, (result.output, result.exception)
    assert (tmp_path / "p.png").stat().st_size > 0
    report = ckptstore.open(store.root, monitor="val_loss", keep=ckptstore.keep.linear(2)).gc()
    assert report.deleted == [1]
    history_after = json.loads((store.root / "index.json").read_text())["history"]
    assert isinstance(history_after, dict)
    assert all(isinstance(h, dict) and isinstance(h.get("epoch"), int) for h in history_after.values())
    result = CliRunner().invoke(cli, ["plot", str(store.root), "--output", str(tmp_path / "q.png")])
    assert result.exit_code == 0, (result.output, result.exception)


def test_an_index_nested_too_deeply_to_parse_is_ignored_and_rebuilt(tmp_path: Path) -> None:
    store = _filled(tmp_path / "s")
    (store.root / "index.json").write_text("[" * 200_000 + "]" * 200_000)
    assert store.epochs() == [1, 2, 3]
    assert [c.epoch for c in store.list(sort_by="epoch")] == [1, 2, 3]
    save_bytes(store, 4, metrics={"val_loss": 0.1})
    assert sorted(json.loads((store.root / "index.json").read_text())["checkpoints"]) == [
        "00000001",
        "00000002",
        "00000003",
        "00000004",
    ]
