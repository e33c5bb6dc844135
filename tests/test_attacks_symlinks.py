"""Attacks from outside, "no-follow": symlinks and special files planted inside a store or its staging.

Each test is named after the attack it proves impossible. The store's root is a boundary: an internal
file or folder that is a symlink is refused with ``UnsafeEntryError`` naming it, nothing outside the
root is read, written or deleted, a FIFO, socket or device in ``tx.path`` is refused from its ``lstat``
(``UnsafePathError``) before anything opens it, and a committed checkpoint holding a symlink or special
file fails verification (``UnexpectedFileError``), so ``restart()`` falls back to an older one.

Tests that would hang on the code before the fix (a FIFO opened for reading) run in a child process
with a timeout: the timeout only guards against the hang, the assertions are on the typed error.
"""

from __future__ import annotations

import json
import os
import shutil
import socket
import stat
import subprocess
import sys
import textwrap
import time
import uuid
import warnings
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest
from click.testing import CliRunner

import ckptstore
from ckptstore.cli import cli

from .conftest import save_bytes, snapshot

OLD = time.time() - 3 * 86400  # older than any grace period


def _outside_tree(path: Path) -> Path:
    """A folder outside the store that looks like leftovers gc would remove: abandoned staging, trash."""
    for name in ("elsewhere.4242.deadbeef.0", "00000001.retired.abcd1234", "00000003.0badf00d"):
        folder = path / name
        (folder / "sub").mkdir(parents=True)
        (folder / "model.bin").write_bytes(b"precious " + name.encode())
        (folder / "sub" / "deep.bin").write_bytes(b"deeper")
        os.utime(folder, (OLD, OLD))
    (path / "notes.txt").write_text("do not delete")
    return path


def _replace_with_link(entry: Path, target: Path) -> None:
    if entry.is_dir() and not entry.is_symlink():
        shutil.rmtree(entry)
    else:
        entry.unlink(missing_ok=True)
    entry.symlink_to(target, target_is_directory=target.is_dir())


def _guarded(code: str, **env: str) -> subprocess.CompletedProcess[str]:
    """Run ``code`` in a child interpreter; the timeout only stops a hang (which fails the test)."""
    return subprocess.run(
        [sys.executable, "-c", textwrap.dedent(code)],
        env={**os.environ, **env},
        capture_output=True,
        text=True,
        timeout=90,
        check=False,
    )


def _refusal(action: Callable[[], object]) -> str:
    """The message of the typed error ``action`` raised, or of its ``PostCommitWarning``s.

    A refusal after the commit point (a pointer or index update) does not undo the commit: the store
    either raises a typed error or warns and returns the checkpoint. Either way it must name the entry.
    """
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        try:
            action()
        except ckptstore.CkptStoreError as exc:
            return f"{exc} {exc.__cause__}"
    return " ".join(str(w.message) for w in caught if issubclass(w.category, ckptstore.PostCommitWarning))


# -- item 1: internal paths are never followed through symlinks ---------------------------------------------
@pytest.mark.parametrize("folder", ["trash", "retired", "work"])
def test_gc_never_deletes_through_a_symlinked_internal_folder(tmp_path: Path, folder: str) -> None:
    root = tmp_path / "store"
    store = ckptstore.open(root)
    save_bytes(store, 1)
    outside = _outside_tree(tmp_path / "outside")
    _replace_with_link(root / folder, outside)
    before_outside, before_store = snapshot(outside), snapshot(root)
    with pytest.raises(ckptstore.UnsafeEntryError, match=rf"{folder} is a symlink"):
        store.gc()
    with pytest.raises(ckptstore.UnsafeEntryError, match=rf"{folder} is a symlink"):
        store.gc(dry_run=True)
    assert snapshot(outside) == before_outside
    assert snapshot(root) == before_store


@pytest.mark.parametrize("folder", ["trash", "retired", "work"])
def test_the_gc_command_never_deletes_through_a_symlinked_internal_folder(tmp_path: Path, folder: str) -> None:
    root = tmp_path / "store"
    save_bytes(ckptstore.open(root), 1)
    outside = _outside_tree(tmp_path / "outside")
    _replace_with_link(root / folder, outside)
    before_outside, before_store = snapshot(outside), snapshot(root)
    result = CliRunner().invoke(cli, ["gc", str(root)])
    assert result.exit_code not in (0, None), result.output
    assert f"{folder} is a symlink" in result.output.replace("\n", "")
    assert snapshot(outside) == before_outside
    assert snapshot(root) == before_store


def test_saves_never_append_to_a_symlinked_log(tmp_path: Path) -> None:
    root = tmp_path / "store"
    store = ckptstore.open(root, monitor="val_loss")
    outside = tmp_path / "precious.txt"
    outside.write_bytes(b"precious\n")
    _replace_with_link(root / "ckpt.log", outside)
    for epoch in (1, 2):  # the log is best effort: a refused log line never fails a save
        save_bytes(store, epoch, metrics={"val_loss": 1.0 / epoch})
    store.gc()
    assert store.epochs() == [1, 2]
    assert outside.read_bytes() == b"precious\n"
    with pytest.raises(ckptstore.UnsafeEntryError, match=r"ckpt\.log is a symlink"):
        store.log()


def test_a_symlinked_epochs_folder_is_refused(tmp_path: Path) -> None:
    root = tmp_path / "store"
    store = ckptstore.open(root)
    save_bytes(store, 1)
    outside = tmp_path / "outside-epochs"
    shutil.move(root / "epochs", outside)
    (root / "epochs").symlink_to(outside, target_is_directory=True)
    before = snapshot(outside)
    with pytest.raises(ckptstore.UnsafeEntryError, match="epochs is a symlink"):
        store.list()
    with pytest.raises(ckptstore.UnsafeEntryError, match="epochs is a symlink"):
        save_bytes(store, 2)
    with pytest.raises(ckptstore.UnsafeEntryError, match="epochs is a symlink"):
        ckptstore.open(root)
    assert snapshot(outside) == before
    assert os.listdir(root / "work") == []


def test_saves_never_stage_through_a_symlinked_work_folder(tmp_path: Path) -> None:
    root = tmp_path / "store"
    store = ckptstore.open(root)
    outside = tmp_path / "outside"
    outside.mkdir()
    _replace_with_link(root / "work", outside)
    with pytest.raises(ckptstore.UnsafeEntryError, match="work is a symlink"):
        save_bytes(store, 1)
    assert list(outside.iterdir()) == []
    assert os.listdir(root / "epochs") == []


@pytest.mark.parametrize("folder", ["pins", "pointers"])
def test_no_record_is_written_through_a_symlinked_internal_folder(tmp_path: Path, folder: str) -> None:
    root = tmp_path / "store"
    store = ckptstore.open(root, monitor="val_loss")
    save_bytes(store, 1, metrics={"val_loss": 0.5})
    outside = tmp_path / "outside"
    outside.mkdir()
    _replace_with_link(root / folder, outside)
    if folder == "pins":
        with pytest.raises(ckptstore.UnsafeEntryError, match="pins is a symlink"):
            store.pin(1)
    else:  # committed; its pointer update is refused
        assert "pointers is a symlink" in _refusal(lambda: save_bytes(store, 2, metrics={"val_loss": 0.4}))
    assert list(outside.iterdir()) == []


def test_the_pointer_lock_never_creates_a_file_outside(tmp_path: Path) -> None:
    root = tmp_path / "store"
    store = ckptstore.open(root)
    target = tmp_path / "outside-lock"
    _replace_with_link(root / "pointers" / ".lock", target)
    assert ".lock is a symlink" in _refusal(lambda: save_bytes(store, 1))
    assert not target.exists()


@pytest.mark.parametrize("name", ["best", "last"])
def test_a_symlinked_pointer_record_is_never_read_or_written_through(tmp_path: Path, name: str) -> None:
    root = tmp_path / "store"
    store = ckptstore.open(root, monitor="val_loss")
    save_bytes(store, 1, metrics={"val_loss": 0.5})
    save_bytes(store, 2, metrics={"val_loss": 0.2})
    record = root / "pointers" / f"{name}.json"
    forged = json.loads(record.read_bytes())
    forged["epoch"], forged["target"] = 1, "epochs/00000001"
    outside = tmp_path / f"forged-{name}.json"
    outside.write_text(json.dumps(forged))
    forged_bytes = outside.read_bytes()
    _replace_with_link(record, outside)
    assert store.report()[name] == 2  # the forged record is not read as the pointer
    if name == "best":
        assert store.best().epoch == 2
    else:
        assert store.latest().epoch == 2
    assert f"{name}.json is a symlink" in _refusal(lambda: save_bytes(store, 3, metrics={"val_loss": 0.1}))
    assert outside.read_bytes() == forged_bytes
    assert store.epochs() == [1, 2, 3]


def test_a_symlinked_index_is_never_read_or_written_through(tmp_path: Path) -> None:
    root = tmp_path / "store"
    store = ckptstore.open(root, monitor="val_loss")
    save_bytes(store, 1, metrics={"val_loss": 0.5})
    index = json.loads((root / "index.json").read_bytes())
    entry = index["checkpoints"]["00000001"]
    entry["metrics"] = entry["manifest"]["metrics"] = {"val_loss": 9.0}
    outside = tmp_path / "forged-index.json"
    outside.write_text(json.dumps(index))
    forged_bytes = outside.read_bytes()
    _replace_with_link(root / "index.json", outside)
    outcome: object
    try:  # refused, or read from the manifests: never the forged metrics
        outcome = [c.metrics for c in store.list()]
    except ckptstore.UnsafeEntryError as exc:
        outcome = str(exc)
    assert outcome == [{"val_loss": 0.5}] or "index.json is a symlink" in str(outcome)
    assert "index.json is a symlink" in _refusal(lambda: save_bytes(store, 2, metrics={"val_loss": 0.4}))
    assert outside.read_bytes() == forged_bytes


def test_a_symlinked_store_descriptor_is_refused(tmp_path: Path) -> None:
    root = tmp_path / "store"
    ckptstore.open(root)
    outside = tmp_path / "descriptor.json"
    outside.write_bytes((root / "ckptstore.json").read_bytes())
    _replace_with_link(root / "ckptstore.json", outside)
    with pytest.raises(ckptstore.UnsafeEntryError, match=r"ckptstore\.json is a symlink"):
        ckptstore.open(root)


@pytest.mark.parametrize("name", ["best", "last"])
def test_a_foreign_file_named_like_a_pointer_link_is_never_replaced(tmp_path: Path, name: str) -> None:
    root = tmp_path / "store"
    store = ckptstore.open(root, monitor="val_loss")
    (root / name).write_bytes(b"someone's file")
    cp = save_bytes(store, 1, metrics={"val_loss": 0.5})  # the link cannot be placed: a warning, not a failure
    assert (root / name).read_bytes() == b"someone's file"
    assert store.latest() == cp and store.best() == cp


def test_the_store_root_itself_may_be_a_symlink(tmp_path: Path) -> None:
    real = tmp_path / "data" / "runs"
    real.mkdir(parents=True)
    link = tmp_path / "runs"
    link.symlink_to(real, target_is_directory=True)
    store = ckptstore.open(link, monitor="val_loss", keep=ckptstore.keep.linear(2))
    for epoch in (1, 2, 3):
        save_bytes(store, epoch, metrics={"val_loss": 1.0 / epoch})
    assert store.epochs() == [2, 3]  # gc deleted epoch 1 through the root's link; linear(2) keeps 2 and 3 (the last)
    assert store.restart() == store.get(3)
    assert sorted(os.listdir(real / "epochs")) == ["00000002", "00000003"]


# -- item 9: special files in tx.path are refused without being opened ---------------------------------------
FIFO_SAVE = """
    import os, sys, ckptstore
    from pathlib import Path
    root = Path(os.environ["STORE"])
    store = ckptstore.open(root)
    try:
        with store.save(1) as tx:
            (tx.path / "model.bin").write_bytes(b"weights")
            (tx.path / "sub").mkdir()
            os.mkfifo(tx.path / "sub" / "pipe")
    except ckptstore.UnsafePathError as exc:
        print("REFUSED", exc)
    print("WORK", os.listdir(root / "work"))
    print("EPOCHS", os.listdir(root / "epochs"))
"""


def test_a_fifo_in_tx_path_is_refused_without_being_opened(tmp_path: Path) -> None:
    result = _guarded(FIFO_SAVE, STORE=str(tmp_path / "store"))
    assert result.returncode == 0, result.stderr
    lines = result.stdout.splitlines()
    assert lines[0].startswith("REFUSED ") and "pipe is a named pipe" in lines[0], result.stdout
    assert lines[1:] == ["WORK []", "EPOCHS []"]


@pytest.mark.parametrize("kind", ["socket", "device"])
def test_a_socket_or_device_in_tx_path_is_refused(tmp_path: Path, kind: str) -> None:
    if kind == "device" and os.geteuid() != 0:
        pytest.skip("making a device node needs root")
    root = tmp_path / "store"
    store = ckptstore.open(root)
    before = snapshot(root)
    sock = socket.socket(socket.AF_UNIX)
    try:
        with pytest.raises(ckptstore.UnsafePathError, match=rf"special is a {kind}"), store.save(1) as tx:
            (tx.path / "model.bin").write_bytes(b"weights")
            if kind == "socket":
                cwd = os.getcwd()
                os.chdir(tx.path)  # a socket path is limited to ~107 bytes: bind a relative name
                try:
                    sock.bind("special")
                finally:
                    os.chdir(cwd)
            else:
                os.mknod(tx.path / "special", stat.S_IFCHR | 0o600, os.makedev(1, 3))  # like /dev/null
    finally:
        sock.close()
    assert snapshot(root) == before
    assert store.epochs() == []


@pytest.mark.s3
def test_a_fifo_in_tx_path_is_refused_on_s3(s3_server: Any) -> None:
    code = """
        import json, os, ckptstore
        store = ckptstore.open(os.environ["URL"], storage_options=json.loads(os.environ["OPTIONS"]))
        staged = []
        try:
            with store.save(1) as tx:
                staged.append(tx.path)
                (tx.path / "model.bin").write_bytes(b"weights")
                os.mkfifo(tx.path / "pipe")
        except ckptstore.UnsafePathError as exc:
            print("REFUSED", exc)
        print("STAGING", staged[0].exists())
        print("OBJECTS", sorted(store.backend.walk("epochs")))
        print("EPOCHS", store.epochs())
    """
    url = s3_server.url(f"fifo-{uuid.uuid4().hex}")
    result = _guarded(code, URL=url, OPTIONS=json.dumps(s3_server.storage_options))
    assert result.returncode == 0, result.stderr
    lines = result.stdout.splitlines()
    assert lines[0].startswith("REFUSED ") and "pipe is a named pipe" in lines[0], result.stdout
    assert lines[1:] == ["STAGING False", "OBJECTS []", "EPOCHS []"]


# -- typed errors: verify() never follows a symlink in a committed checkpoint ---------------------------------
def test_verify_refuses_a_committed_file_that_is_a_symlink_to_a_file_outside(tmp_path: Path) -> None:
    root = tmp_path / "store"
    store = ckptstore.open(root)
    save_bytes(store, 1, b"one")
    save_bytes(store, 2, b"two")
    outside = tmp_path / "outside.bin"
    outside.write_bytes(b"two")  # identical bytes: only the symlink gives it away
    _replace_with_link(root / "epochs" / "00000002" / "model.bin", outside)
    with pytest.raises(ckptstore.UnexpectedFileError, match=r"model\.bin is a symlink"):
        store.get(2).verify()
    with pytest.raises(ckptstore.UnexpectedFileError):
        store.verify()
    with pytest.raises(ckptstore.UnexpectedFileError):
        store.get(2).load("raw")
    resumed = store.restart()
    assert resumed is not None and resumed.epoch == 1
    assert store.epochs() == [1]
    store.gc()  # removes the retired epoch, and with it the link, never the file it points at
    assert os.listdir(root / "retired") == [] and os.listdir(root / "trash") == []
    assert outside.read_bytes() == b"two"


def test_verify_refuses_a_fifo_in_a_committed_checkpoint_without_opening_it(tmp_path: Path) -> None:
    code = """
        import os, ckptstore
        from pathlib import Path
        root = Path(os.environ["STORE"])
        store = ckptstore.open(root)
        for epoch in (1, 2):
            with store.save(epoch) as tx, tx.open("model.bin") as f:
                f.write(b"weights")
        victim = root / "epochs" / "00000002" / "model.bin"
        victim.unlink()
        os.mkfifo(victim)
        try:
            store.get(2).verify()
        except ckptstore.UnexpectedFileError as exc:
            print("REFUSED", exc)
        print("RESUMED", store.restart().epoch)
    """
    result = _guarded(code, STORE=str(tmp_path / "store"))
    assert result.returncode == 0, result.stderr
    lines = result.stdout.splitlines()
    assert lines[0].startswith("REFUSED ") and "model.bin is a named pipe" in lines[0], result.stdout
    assert lines[1] == "RESUMED 1"
