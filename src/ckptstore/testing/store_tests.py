"""The :class:`StoreTests` conformance suite (see :mod:`ckptstore.testing`)."""

from __future__ import annotations

import contextlib
import json
import os
import socket
import time
from collections.abc import Iterator, Mapping
from pathlib import Path
from typing import Any

import pytest

import ckptstore
from ckptstore import CheckpointStore

__all__ = ["RawAccess", "StoreTests"]


class RawAccess:
    """Reads and writes that bypass the store (and its backend object) under test.

    Args:
        url: The store's URL.
        storage_options: The options the store was opened with.
    """

    def __init__(self, url: str, storage_options: Mapping[str, Any]) -> None:
        from fsspec.core import url_to_fs

        if "://" not in url:
            url = Path(url).absolute().as_posix()
        options = dict(storage_options)
        if "://" not in url or url.startswith("file://"):
            options["auto_mkdir"] = True
        if url.startswith("s3://"):
            options.setdefault("use_listings_cache", False)
        options.setdefault("skip_instance_cache", True)
        self.fs, root = url_to_fs(url, **options)
        self.root = str(root).rstrip("/")

    def path(self, key: str) -> str:
        """The filesystem path of a store-relative key."""
        return f"{self.root}/{key}"

    def read(self, key: str) -> bytes:
        """Content of ``key``."""
        self.fs.invalidate_cache()
        data: bytes = self.fs.cat_file(self.path(key))
        return data

    def write(self, key: str, data: bytes) -> None:
        """Overwrite (or create) ``key``."""
        self.fs.pipe_file(self.path(key), data)
        self.fs.invalidate_cache()

    def delete(self, key: str) -> None:
        """Remove ``key``."""
        self.fs.rm_file(self.path(key))
        self.fs.invalidate_cache()

    def exists(self, key: str) -> bool:
        """True if ``key`` is a file."""
        self.fs.invalidate_cache()
        return bool(self.fs.isfile(self.path(key)))

    def listing(self) -> dict[str, bytes]:
        """Every object under the root with its content, except the log (for before/after checks)."""
        self.fs.invalidate_cache()
        out: dict[str, bytes] = {}
        for path in self.fs.find(self.root):
            rel = self.fs._strip_protocol(path)[len(self.fs._strip_protocol(self.root)) + 1 :]
            if rel == "ckpt.log" or rel.startswith(("log/", "pointers/.lock")):
                continue
            with contextlib.suppress(IsADirectoryError):  # a local best/last symlink
                out[rel] = self.fs.cat_file(path)
        return out


def _save(store: CheckpointStore, epoch: int, payload: bytes = b"data", **kw: Any) -> ckptstore.Checkpoint:
    kw.setdefault("metrics", {"val_loss": 1.0 + epoch})
    with store.save(epoch, **kw) as tx:
        with tx.open("model.bin") as f:
            f.write(payload)
    assert tx.checkpoint is not None
    return tx.checkpoint


class StoreTests:
    """Every store guarantee, on one backend. Subclasses provide ``store_url`` and ``storage_options``."""

    @pytest.fixture
    def storage_options(self) -> dict[str, Any]:
        """Options for the backend's filesystem (override for servers)."""
        return {}

    @pytest.fixture
    def open_store(self, store_url: str, storage_options: dict[str, Any]) -> Iterator[Any]:
        """``open_store(**config)`` opens the store under test (again) with the test's options."""
        opened: list[CheckpointStore] = []

        def factory(**config: Any) -> CheckpointStore:
            store = ckptstore.open(store_url, storage_options=storage_options or None, **config)
            opened.append(store)
            return store

        yield factory
        for store in opened:
            store.close()

    @pytest.fixture
    def store(self, open_store: Any) -> CheckpointStore:
        """A store monitoring ``val_loss``."""
        store: CheckpointStore = open_store(monitor="val_loss")
        return store

    @pytest.fixture
    def raw(self, store_url: str, storage_options: dict[str, Any], store: CheckpointStore) -> RawAccess:
        """Raw access to the store's root, past the store."""
        return RawAccess(store_url, storage_options)

    # -- commit ---------------------------------------------------------------------------------------
    def test_saved_checkpoint_reads_back_byte_for_byte(self, store: CheckpointStore) -> None:
        payload = os.urandom(300_000)
        with store.save(3, metrics={"val_loss": 0.5}, metadata={"note": "x", "nested": {"a": [1, 2]}}) as tx:
            with tx.open("model.bin") as f:
                f.write(payload)
            (tx.path / "sub").mkdir()
            (tx.path / "sub" / "extra.txt").write_text("hello")
        ck = store.get(3)
        assert ck.read_bytes("model.bin") == payload
        assert ck.read_bytes("sub/extra.txt") == b"hello"
        assert sorted(ck.files) == ["model.bin", "sub/extra.txt"]
        assert ck.metadata == {"note": "x", "nested": {"a": [1, 2]}}
        assert ck.metrics == {"val_loss": 0.5}
        assert ck.verify() is ck

    def test_existing_epoch_is_a_conflict_and_stays_intact(self, store: CheckpointStore, raw: RawAccess) -> None:
        _save(store, 1, b"first", metrics={"val_loss": 1.0})
        before = raw.listing()
        with pytest.raises(ckptstore.CommitConflictError):
            _save(store, 1, b"second", metrics={"val_loss": 0.1})
        assert raw.listing() == before
        assert store.get(1).read_bytes("model.bin") == b"first"

    def test_a_failed_save_commits_nothing(self, store: CheckpointStore, raw: RawAccess) -> None:
        _save(store, 1, metrics={"val_loss": 1.0})
        before = raw.listing()
        with pytest.raises(RuntimeError, match="boom"), store.save(2, metrics={"val_loss": 0.5}) as tx:
            with tx.open("model.bin") as f:
                f.write(b"partial")
            raise RuntimeError("boom")
        assert 2 not in store
        assert raw.listing() == before
        _save(store, 2, b"again", metrics={"val_loss": 0.5})  # the epoch is free again
        assert store.get(2).read_bytes("model.bin") == b"again"

    def test_uncommitted_epoch_folder_is_invisible(self, store: CheckpointStore, raw: RawAccess) -> None:
        _save(store, 1, metrics={"val_loss": 1.0})
        raw.write("epochs/00000005/model.bin", b"half written")
        assert store.epochs() == [1]
        assert store.latest().epoch == 1
        assert 5 not in store
        # Object stores: not a checkpoint. Local disk, where the protocol never leaves such a folder
        # in epochs/: reported as damaged. Either way no reader gets half a checkpoint.
        with pytest.raises((ckptstore.CheckpointNotFoundError, ckptstore.ManifestError)):
            store.get(5)

    # -- pointers and resolution ----------------------------------------------------------------------
    def test_best_and_last_follow_the_metric_and_the_epoch(self, store: CheckpointStore, raw: RawAccess) -> None:
        for epoch, loss in [(1, 0.5), (2, 0.2), (3, 0.4)]:
            _save(store, epoch, metrics={"val_loss": loss})
        assert store.latest().epoch == 3
        assert store.best().epoch == 2
        assert json.loads(raw.read("pointers/last.json"))["epoch"] == 3
        assert json.loads(raw.read("pointers/best.json"))["epoch"] == 2
        assert store.best(metric="val_loss", mode="max").epoch == 1

    def test_last_never_moves_backwards(self, store: CheckpointStore, raw: RawAccess) -> None:
        _save(store, 5, metrics={"val_loss": 0.5})
        _save(store, 3, metrics={"val_loss": 0.4})
        assert json.loads(raw.read("pointers/last.json"))["epoch"] == 5
        assert store.latest().epoch == 5

    def test_missing_and_dangling_pointers_are_repaired(
        self, store: CheckpointStore, raw: RawAccess, open_store: Any
    ) -> None:
        _save(store, 1, metrics={"val_loss": 0.3})
        _save(store, 2, metrics={"val_loss": 0.6})
        raw.delete("pointers/last.json")
        if store.capabilities.symlinks:
            os.unlink(store.root / "last")
        raw.write("pointers/best.json", json.dumps({"epoch": 9, "target": "epochs/00000009"}).encode())
        reopened = open_store(monitor="val_loss")
        assert reopened.latest().epoch == 2
        assert reopened.best().epoch == 1
        assert json.loads(raw.read("pointers/last.json"))["epoch"] == 2
        assert json.loads(raw.read("pointers/best.json"))["epoch"] == 1

    def test_stale_last_pointer_is_advanced(self, store: CheckpointStore, raw: RawAccess) -> None:
        _save(store, 1, metrics={"val_loss": 0.3})
        stale = raw.read("pointers/last.json")
        _save(store, 2, metrics={"val_loss": 0.6})
        raw.write("pointers/last.json", stale)  # as if the writer died before its pointer update
        assert store.latest().epoch == 2

    def test_listdir_after_lists_what_listdir_lists_after_a_name(self, store: CheckpointStore, raw: RawAccess) -> None:
        for epoch in (1, 2, 9, 10, 11):
            _save(store, epoch)
        raw.write("epochs/00000010.note", b"")  # sorts between 00000010 and the keys under it ("." < "/")
        names = store.backend.listdir("epochs")
        assert names == ["00000001", "00000002", "00000009", "00000010", "00000010.note", "00000011"]
        for after in ("", "0", "00000001", "00000005", "00000010", "00000010.note", "00000011", "99999999"):
            assert store.backend.listdir_after("epochs", after) == [n for n in names if n > after], after
        assert store.backend.listdir_after("no-such-folder", "") == []
        raw.delete("epochs/00000010.note")

    def test_list_len_contains_and_reopen(self, store: CheckpointStore, open_store: Any) -> None:
        for epoch in (4, 1, 10, 2):
            _save(store, epoch, metrics={"val_loss": 1.0 / epoch})
        assert store.epochs() == [1, 2, 4, 10]
        assert len(store) == 4 and 10 in store and 3 not in store
        again = open_store(monitor="val_loss")
        assert again.store_id == store.store_id
        assert again.epochs() == [1, 2, 4, 10]
        assert again.latest().epoch == 10
        assert again.best().epoch == 10

    def test_latest_without_pointer_is_the_highest_committed_epoch_whatever_the_clocks(
        self, raw: RawAccess, open_store: Any
    ) -> None:
        store = open_store()
        for epoch in (9, 10, 2):
            _save(store, epoch)
        for epoch, ahead in ((2, 365), (9, 1), (10, 0)):  # writers' clocks disagree: 2 is a year ahead
            key = f"epochs/{epoch:08d}/MANIFEST.json"
            manifest = json.loads(raw.read(key))
            manifest["committed_at_ns"] = 1_700_000_000_000_000_000 + ahead * 86_400 * 10**9
            raw.delete(key)
            raw.write(key, json.dumps(manifest).encode())  # rewritten last: 10 has the newest mtime
        raw.delete("pointers/last.json")
        raw.delete("index.json")  # the edited manifests are the truth; the cache must not mask them
        reopened = open_store()
        if store.capabilities.symlinks:
            (reopened.root / "last").unlink()
        # The rule the last pointer follows (it only moves forward): neither commit time nor mtime.
        assert [reopened.latest().epoch for _ in range(2)] == [10, 10]
        raw.delete("pointers/last.json")
        restarted = open_store().restart(verify=False)
        assert restarted is not None and restarted.epoch == 10

    # -- keep policies and gc -------------------------------------------------------------------------
    def test_keep_policy_never_deletes_best_last_or_pinned(self, open_store: Any) -> None:
        store = open_store(monitor="val_loss", keep=ckptstore.keep.linear(1))
        _save(store, 1, metrics={"val_loss": 0.1})  # best forever
        _save(store, 2, metrics={"val_loss": 0.9})
        store.pin(2)
        for epoch in range(3, 7):
            _save(store, epoch, metrics={"val_loss": 0.5 + epoch / 100})
        assert store.epochs() == [1, 2, 6]  # linear(1): the last is the one newest; best and pinned besides
        report = store.gc(dry_run=True)
        reasons = {d.epoch: d.reason for d in report}
        assert "best" in reasons[1] and "pinned" in reasons[2] and "last" in reasons[6]
        store.unpin(2)
        assert store.pinned() == []
        store.gc()
        assert store.epochs() == [1, 6]

    def test_keep_policy_spares_other_runs(self, open_store: Any) -> None:
        other = open_store(run_id="other-run")
        _save(other, 1)
        mine = open_store(run_id="mine", keep=ckptstore.keep.linear(1))
        for epoch in (2, 3, 4):
            _save(mine, epoch)
        assert mine.epochs() == [1, 4]

    def test_gc_dry_run_changes_nothing(self, open_store: Any, raw: RawAccess) -> None:
        store = open_store(keep=ckptstore.keep.linear(1), gc_on_save=False)  # monitors val_loss, as recorded
        for epoch in (1, 2, 3):
            _save(store, epoch, metrics={"val_loss": 1.0 / epoch})  # the best is the last
        before = raw.listing()
        report = store.gc(dry_run=True)
        assert report.deleted == [1, 2] and raw.listing() == before
        store.gc()
        assert store.epochs() == [3]

    def test_gc_removes_abandoned_partial_epochs(self, store: CheckpointStore, raw: RawAccess) -> None:
        _save(store, 1)
        dead = {"writer": "gone", "host": socket.gethostname(), "pid": _dead_pid(), "claimed_at_ns": time.time_ns()}
        if store.capabilities.atomic_rename:  # a staging directory of a writer on another host
            partial = "work/elsewhere.1.abc.0/model.bin"
            raw.write(partial, b"half")
            old = time.time() - 10 * store.config.work_grace_seconds
            os.utime(store.root / "work" / "elsewhere.1.abc.0", (old, old))
        else:  # a claimed epoch folder whose writer died mid-upload
            partial = "epochs/00000007/model.bin"
            raw.write("epochs/00000007/.claim", json.dumps(dead).encode())
            raw.write(partial, b"half")
        report = store.gc(dry_run=True)
        assert report.leftovers, "an abandoned save must be reported"
        assert raw.exists(partial), "a dry run removes nothing"
        store.gc()
        assert not raw.exists(partial)
        assert store.epochs() == [1]
        assert store.gc(dry_run=True).leftovers == ()

    # -- rollback, restart, pins ----------------------------------------------------------------------
    def test_rollback_retires_later_epochs_and_frees_them(self, store: CheckpointStore) -> None:
        for epoch, loss in [(1, 0.5), (2, 0.1), (3, 0.3)]:
            _save(store, epoch, metrics={"val_loss": loss})
        store.rollback(1)
        assert store.epochs() == [1]
        assert store.latest().epoch == 1 and store.best().epoch == 1
        _save(store, 2, b"rewritten", metrics={"val_loss": 0.4})
        assert store.get(2).read_bytes("model.bin") == b"rewritten"
        assert store.latest().epoch == 2

    def test_restart_falls_back_to_the_newest_checkpoint_that_verifies(
        self, store: CheckpointStore, raw: RawAccess
    ) -> None:
        for epoch in (1, 2, 3):
            _save(store, epoch, bytes([epoch]) * 1000, metrics={"val_loss": 1.0 / epoch})
        data = bytearray(raw.read("epochs/00000003/model.bin"))
        data[10] ^= 0xFF
        raw.write("epochs/00000003/model.bin", bytes(data))
        chosen = store.restart("auto")
        assert chosen is not None and chosen.epoch == 2
        assert 3 not in store  # retired, so the resumed run can write epoch 3 again
        assert any("fails verification" in line for line in store.log())
        _save(store, 3, metrics={"val_loss": 0.2})
        assert store.get(3).parent == 2

    def test_restart_modes(self, store: CheckpointStore) -> None:
        assert store.restart("auto") is None
        assert store.restart("off") is None
        with pytest.raises(ckptstore.CheckpointNotFoundError):
            store.restart("required")

    def test_pins_survive_reopen(self, store: CheckpointStore, open_store: Any) -> None:
        _save(store, 1)
        _save(store, 2)
        store.pin(1)
        assert open_store().pinned() == [1]
        with pytest.raises(ckptstore.CheckpointNotFoundError):
            store.pin(9)

    # -- integrity ------------------------------------------------------------------------------------
    @pytest.mark.parametrize("damage", ["flip", "truncate", "delete", "extra", "manifest"])
    def test_verify_detects_damage(self, store: CheckpointStore, raw: RawAccess, damage: str) -> None:
        _save(store, 1, os.urandom(5000))
        base = "epochs/00000001"
        if damage == "flip":
            data = bytearray(raw.read(f"{base}/model.bin"))
            data[1234] ^= 0x01
            raw.write(f"{base}/model.bin", bytes(data))
            expected: type[Exception] = ckptstore.ChecksumMismatchError
        elif damage == "truncate":
            raw.write(f"{base}/model.bin", raw.read(f"{base}/model.bin")[:100])
            expected = ckptstore.ChecksumMismatchError
        elif damage == "delete":
            raw.delete(f"{base}/model.bin")
            expected = ckptstore.IncompleteCheckpointError
        elif damage == "extra":
            raw.write(f"{base}/planted.bin", b"x")
            expected = ckptstore.UnexpectedFileError
        else:
            raw.write(f"{base}/MANIFEST.json", b"{not json")
            expected = ckptstore.ManifestError
        with pytest.raises(expected):
            store.verify()

    def test_download_and_local_path_verify_what_they_read(
        self, store: CheckpointStore, raw: RawAccess, tmp_path: Path
    ) -> None:
        payload = os.urandom(200_000)
        with store.save(1, metrics={"val_loss": 0.5}) as tx:
            (tx.path / "a.bin").write_bytes(payload)
            with tx.open("dir/b.bin") as f:
                f.write(b"b" * 10)
        ck = store.get(1)
        out = ck.download(tmp_path / "dl", progress=False)
        assert (out / "a.bin").read_bytes() == payload and (out / "dir" / "b.bin").read_bytes() == b"b" * 10
        assert (out / "MANIFEST.json").exists()
        with ck.local_path() as local:
            assert (local / "a.bin").read_bytes() == payload
        data = bytearray(raw.read("epochs/00000001/a.bin"))
        data[0] ^= 0xFF
        raw.write("epochs/00000001/a.bin", bytes(data))
        with pytest.raises(ckptstore.ChecksumMismatchError):
            ck.download(tmp_path / "dl2", progress=False)
        assert not (tmp_path / "dl2" / "a.bin").exists()

    def test_state_round_trips_through_a_serializer(self, store: CheckpointStore) -> None:
        state = {"weights": [1.5, 2.5], "step": 7}
        store.save_state(4, state, serializer="json", metrics={"val_loss": 0.1})
        assert store.latest().load() == state

    # -- bad input, index, log ------------------------------------------------------------------------
    def test_bad_input_changes_nothing(self, store: CheckpointStore, raw: RawAccess) -> None:
        _save(store, 1, metrics={"val_loss": 0.5})
        before = raw.listing()
        with pytest.raises(ckptstore.InvalidEpochError):
            _save(store, -1, metrics={"val_loss": 0.5})
        with pytest.raises(ckptstore.InvalidMetricError):
            _save(store, 2, metrics={"val_loss": float("nan")})
        with pytest.raises(ckptstore.MissingMetricError):
            _save(store, 2, metrics={"acc": 0.5})
        with pytest.raises(ckptstore.UnsafePathError), store.save(2, metrics={"val_loss": 0.5}) as tx:
            tx.open("../escape.bin")
        assert raw.listing() == before

    def test_index_tracks_commits_and_deletions(self, open_store: Any, raw: RawAccess) -> None:
        store = open_store(keep=ckptstore.keep.linear(2))
        for epoch in (1, 2, 3, 4):
            _save(store, epoch, metrics={"val_loss": 1.0 / epoch, "loss": float(epoch)})
        index = json.loads(raw.read("index.json"))
        assert sorted(index["checkpoints"]) == [f"{e:08d}" for e in store.epochs()]
        assert index["checkpoints"]["00000004"]["metrics"] == {"val_loss": 0.25, "loss": 4.0}

    def test_log_records_every_operation_in_order(self, store: CheckpointStore) -> None:
        _save(store, 1, metrics={"val_loss": 0.5})
        _save(store, 2, metrics={"val_loss": 0.4})
        store.pin(1)
        events = [line.split()[2] for line in store.log()]
        assert events.index("COMMIT") < events.index("PIN")
        assert events.count("COMMIT") == 2

    # -- capabilities ---------------------------------------------------------------------------------
    def test_pointers_are_symlinks_only_where_declared(self, store: CheckpointStore, raw: RawAccess) -> None:
        _save(store, 1, metrics={"val_loss": 0.5})
        assert json.loads(raw.read("pointers/last.json"))["target"] == "epochs/00000001"
        if store.capabilities.symlinks:
            assert os.readlink(store.root / "last") == "epochs/00000001"
        else:  # object stores: the JSON records are the pointers; nothing named best/last at the root
            assert not raw.exists("last") and not raw.exists("best")

    #: False for a backend that claims create-only writes but does not enforce them (an emulator).
    enforces_create_only = True

    def test_create_only_is_enforced_or_single_writer_is_declared(self, store: CheckpointStore) -> None:
        import warnings

        with warnings.catch_warnings(record=True) as caught:
            warnings.simplefilter("always")
            _save(store, 1, metrics={"val_loss": 0.5})
        warned = [w for w in caught if issubclass(w.category, ckptstore.SingleWriterWarning)]
        if store.capabilities.create_only and self.enforces_create_only:
            assert not warned and not store.single_writer
            assert not store.backend.create_only("epochs/00000001/MANIFEST.json", b"{}")
            assert store.get(1).verify()
        elif store.capabilities.create_only:
            assert len(warned) == 1 and store.backend.scheme in str(warned[0].message)
            assert store.single_writer
        else:
            assert store.single_writer

    def test_orphaned_multipart_uploads_are_aborted(self, store: CheckpointStore) -> None:
        if not store.capabilities.multipart:  # nothing can be left half-uploaded: nothing to abort
            assert store.backend.pending_uploads("epochs") == []
            return
        dead = {"writer": "gone", "host": socket.gethostname(), "pid": _dead_pid(), "claimed_at_ns": time.time_ns()}
        store.backend.write("epochs/00000009/.claim", json.dumps(dead).encode())
        stream: Any = store.backend.open_write("epochs/00000009/big.bin")
        try:
            stream.write(b"x" * (9 * 1024 * 1024))
            stream.flush()  # one part sent: an unfinished multipart upload now exists
            assert store.backend.pending_uploads("epochs")
            report = store.gc()
        finally:
            with contextlib.suppress(Exception):
                stream.discard()
            stream.closed = True  # never let the file object complete the upload when collected
        assert any(rel.startswith("upload:") for rel, _ in report.leftovers)
        assert store.backend.pending_uploads("epochs") == []
        assert not store.backend.walk("epochs/00000009")


def _dead_pid() -> int:
    """A pid that is not running on this host."""
    pid = 4_000_000
    while True:
        try:
            os.kill(pid, 0)
        except ProcessLookupError:
            return pid
        except PermissionError:
            pass
        pid -= 1
