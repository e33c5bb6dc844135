"""Object-store guarantees with real processes against the SeaweedFS server (and the GCS emulator).

Concurrency: several writer processes on one S3 store never lose a commit, never produce two commits
of one epoch, and never move ``last`` backwards, while a reader process never sees a partial
checkpoint. Crashes: a writer SIGKILLed mid-upload leaves no manifest; gc aborts its multipart
upload and removes its claim; the epoch can be written again.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import textwrap
import uuid
from pathlib import Path
from typing import Any

import pytest

import ckptstore
from ckptstore.backends.registry import register_backend

pytestmark = pytest.mark.s3

WRITER = textwrap.dedent(
    """
    import json, sys
    import ckptstore
    opts, url, epochs = json.loads(sys.argv[1]) or None, sys.argv[2], json.loads(sys.argv[3])
    store = ckptstore.open(url, storage_options=opts, monitor="val_loss")
    store.pinned()  # connect before the start signal
    print("ready", flush=True)
    sys.stdin.readline()
    results = {}
    for epoch in epochs:
        try:
            store.save_state(epoch, {"epoch": epoch, "pad": "x" * 5000}, serializer="json",
                             metrics={"val_loss": 1.0 / (epoch + 1)})
            results[epoch] = "ok"
        except ckptstore.CommitConflictError:
            results[epoch] = "conflict"
    print(json.dumps(results), flush=True)
    """
)

READER = textwrap.dedent(
    """
    import json, select, sys
    import ckptstore
    opts, url = json.loads(sys.argv[1]) or None, sys.argv[2]
    store = ckptstore.open(url, storage_options=opts, monitor="val_loss")
    print("ready", flush=True)
    sys.stdin.readline()
    seen, reads = [], 0
    while not select.select([sys.stdin], [], [], 0)[0]:
        try:
            ck = store.latest()
        except ckptstore.CheckpointNotFoundError:
            continue
        ck.verify()  # raises if a partial checkpoint were visible
        seen.append(ck.epoch)
        reads += 1
    print(json.dumps({"seen": seen, "reads": reads}), flush=True)
    """
)


def _spawn(script: str, *args: str) -> subprocess.Popen[str]:
    proc = subprocess.Popen(
        [sys.executable, "-c", script, *args],
        stdin=subprocess.PIPE,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )
    assert proc.stdout is not None
    line = proc.stdout.readline()
    assert line.strip() == "ready", proc.stderr.read() if proc.stderr else line
    return proc


def _go(procs: list[subprocess.Popen[str]]) -> None:
    for proc in procs:
        assert proc.stdin is not None
        proc.stdin.write("go\n")
        proc.stdin.flush()


def _result(proc: subprocess.Popen[str]) -> Any:
    out, err = proc.communicate(timeout=240)
    assert proc.returncode == 0, err
    return json.loads(out.strip().splitlines()[-1])


def _url(server: Any) -> str:
    return str(server.url(f"proc-{uuid.uuid4().hex}"))


def test_four_writers_on_different_epochs_lose_nothing_and_last_is_the_highest(s3_server: Any) -> None:
    url, opts = _url(s3_server), json.dumps(s3_server.storage_options)
    writers = [_spawn(WRITER, opts, url, json.dumps(list(range(i, 24, 4)))) for i in range(4)]
    reader = _spawn(READER, opts, url)
    _go([*writers, reader])
    results = [_result(w) for w in writers]
    assert reader.stdin is not None
    reader.stdin.write("stop\n")
    reader.stdin.flush()
    seen = _result(reader)
    assert all(v == "ok" for r in results for v in r.values())
    store = ckptstore.open(url, storage_options=s3_server.storage_options, monitor="val_loss")
    assert store.epochs() == list(range(24))
    assert json.loads(store.backend.read_bytes("pointers/last.json"))["epoch"] == 23
    assert store.latest().epoch == 23 and store.best().epoch == 23
    assert len(store.verify()) == 24
    index = json.loads(store.backend.read_bytes("index.json"))
    assert sorted(index["checkpoints"]) == [f"{e:08d}" for e in range(24)], "a CAS update of the index was lost"
    assert seen["reads"] > 0 and seen["seen"] == sorted(seen["seen"]), "a reader saw last move backwards"


def test_four_writers_racing_for_one_epoch_yield_exactly_one_commit(s3_server: Any) -> None:
    url, opts = _url(s3_server), json.dumps(s3_server.storage_options)
    rounds = [100, 101, 102, 103, 104]
    writers = [_spawn(WRITER, opts, url, json.dumps(rounds)) for _ in range(4)]
    _go(writers)
    results = [_result(w) for w in writers]
    for epoch in rounds:
        outcomes = sorted(r[str(epoch)] for r in results)
        assert outcomes == ["conflict", "conflict", "conflict", "ok"], (epoch, outcomes)
    store = ckptstore.open(url, storage_options=s3_server.storage_options)
    assert store.epochs() == rounds
    assert all(c.load()["epoch"] == c.epoch for c in store.verify())
    assert store.latest().epoch == 104
    assert store.gc(dry_run=True).leftovers == ()


KILLED_MID_UPLOAD = textwrap.dedent(
    """
    import json, os, signal, sys
    import ckptstore
    opts, url = json.loads(sys.argv[1]) or None, sys.argv[2]
    store = ckptstore.open(url, storage_options=opts)
    with store.save(1) as tx:
        with tx.open("small.bin") as f:
            f.write(b"ok")
    with store.save(2) as tx:
        with tx.open("big.bin") as f:
            f.write(os.urandom(20 * 1024 * 1024))  # two parts uploaded, the upload still open
            os.kill(os.getpid(), signal.SIGKILL)
    """
)


def test_writer_killed_mid_upload_leaves_no_visible_epoch_and_gc_cleans_up(s3_server: Any) -> None:
    url = _url(s3_server)
    proc = subprocess.run(
        [sys.executable, "-c", KILLED_MID_UPLOAD, json.dumps(s3_server.storage_options), url],
        capture_output=True,
        text=True,
        timeout=240,
    )
    assert proc.returncode == -9, proc.stderr
    store = ckptstore.open(url, storage_options=s3_server.storage_options)
    assert store.epochs() == [1]
    assert 2 not in store and store.latest().epoch == 1
    assert store.backend.exists("epochs/00000002/.claim"), "the dead writer's claim is still there"
    assert store.backend.pending_uploads("epochs"), "the dead writer's multipart upload is still open"
    report = store.gc()
    assert {rel.split(":")[0] for rel, _ in report.leftovers} >= {"epochs/00000002", "upload"}
    assert store.backend.pending_uploads("epochs") == []
    assert not store.backend.walk("epochs/00000002")
    with store.save(2) as tx:  # the epoch is free again
        with tx.open("big.bin") as f:
            f.write(b"second try")
    assert store.get(2, verify=True).read_bytes("big.bin") == b"second try"


def test_a_claim_of_a_dead_writer_is_taken_over_at_once_on_the_same_host(s3_server: Any) -> None:
    url = _url(s3_server)
    env = {**os.environ, "CKPTSTORE_CRASHPOINT": "after_files"}
    code = (
        "import json, sys, ckptstore\n"
        "s = ckptstore.open(sys.argv[2], storage_options=json.loads(sys.argv[1]))\n"
        "s.save_state(5, {'a': 1}, serializer='json')\n"
    )
    proc = subprocess.run(
        [sys.executable, "-c", code, json.dumps(s3_server.storage_options), url],
        env=env,
        capture_output=True,
        text=True,
        timeout=240,
    )
    assert proc.returncode == -9, proc.stderr
    store = ckptstore.open(url, storage_options=s3_server.storage_options)
    assert 5 not in store and store.backend.exists("epochs/00000005/state.json")
    store.save_state(5, {"a": 2}, serializer="json")
    assert store.get(5).load() == {"a": 2}
    assert any("TAKEOVER" in line for line in store.log())


def test_a_live_writers_claim_is_respected(s3_server: Any) -> None:
    store = ckptstore.open(_url(s3_server), storage_options=s3_server.storage_options)
    rival = ckptstore.open(store.url, storage_options=s3_server.storage_options)
    with store.save(3) as tx:
        with tx.open("a.bin") as f:
            f.write(b"mine")
        with pytest.raises(ckptstore.CommitConflictError, match="being written by"):
            rival.save(3).__enter__()
    assert store.get(3).read_bytes("a.bin") == b"mine"


def test_log_objects_read_back_in_order(s3_server: Any) -> None:
    store = ckptstore.open(_url(s3_server), storage_options=s3_server.storage_options)
    for epoch in range(3):
        store.save_state(epoch, {"e": epoch}, serializer="json")
    commits = [line for line in store.log() if " COMMIT " in line]
    assert [line.split("epoch=")[1].split()[0] for line in commits] == ["0", "1", "2"]
    assert store.backend.listdir("log"), "object stores keep the log as log/ objects"
    assert not store.backend.exists("ckpt.log")


def test_progress_reports_every_byte_of_uploads_and_downloads(s3_server: Any, tmp_path: Path) -> None:
    calls: list[tuple[int, int, str]] = []
    store = ckptstore.open(
        _url(s3_server), storage_options=s3_server.storage_options, progress=lambda *a: calls.append(a)
    )
    payload = os.urandom(3 * 1024 * 1024)
    with store.save(1) as tx:
        (tx.path / "a.bin").write_bytes(payload)
        (tx.path / "b.bin").write_bytes(payload[:1000])
    assert calls[-1][0] == calls[-1][1] == len(payload) + 1000 and "upload" in calls[-1][2]
    got: list[tuple[int, int, str]] = []
    store.get(1).download(tmp_path / "d", progress=lambda *a: got.append(a))
    assert got[-1][0] == got[-1][1] == len(payload) + 1000 and "download" in got[-1][2]


def test_wrong_credentials_give_a_typed_error_that_names_the_fix(s3_server: Any) -> None:
    options = {**s3_server.storage_options, "secret": "wrong"}
    with pytest.raises(ckptstore.BackendAuthError, match="AWS_ACCESS_KEY_ID") as info:
        ckptstore.open(_url(s3_server), storage_options=options)
    assert "wrong" not in str(info.value)


def test_missing_bucket_is_a_typed_error(s3_server: Any) -> None:
    with pytest.raises(ckptstore.StoreNotFoundError, match="bucket"):
        ckptstore.open("s3://no-such-bucket-here/x", storage_options=s3_server.storage_options)


def test_usual_aws_variables_are_enough(s3_server: Any) -> None:
    code = (
        "import sys, ckptstore\n"
        "s = ckptstore.open(sys.argv[1])\n"
        "s.save_state(1, {'a': 1}, serializer='json')\n"
        "print(s.latest().load()['a'])\n"
    )
    env = {k: v for k, v in os.environ.items() if not k.startswith("AWS_")}
    env.update(s3_server.env())
    proc = subprocess.run(
        [sys.executable, "-c", code, _url(s3_server)], env=env, capture_output=True, text=True, timeout=120
    )
    assert proc.returncode == 0, proc.stderr
    assert proc.stdout.strip() == "1"


@pytest.mark.gcs
def test_gcs_emulator_without_preconditions_warns_once_and_runs_single_writer(gcs_server: Any) -> None:
    store = ckptstore.open(gcs_server.url(f"w-{uuid.uuid4().hex}"), storage_options=gcs_server.storage_options)
    with pytest.warns(ckptstore.SingleWriterWarning, match="single-writer") as caught:
        store.save_state(1, {"a": 1}, serializer="json")
        store.save_state(2, {"a": 2}, serializer="json")
    assert len([w for w in caught if issubclass(w.category, ckptstore.SingleWriterWarning)]) == 1
    assert store.single_writer and store.latest().load() == {"a": 2}


def test_unknown_scheme_missing_package_and_entry_points(monkeypatch: pytest.MonkeyPatch) -> None:
    from ckptstore.backends import registry

    with pytest.raises(ckptstore.UnsupportedURLError, match="nosuchscheme"):
        ckptstore.open("nosuchscheme://x/y")
    with pytest.raises(ckptstore.UnsupportedURLError, match="names no bucket"):
        ckptstore.open("s3:///prefix")
    monkeypatch.setitem(registry.KNOWN_BACKENDS, "fake", ("fake", "x:Y", "fake", "ckptstore_no_such_module"))
    with pytest.raises(ckptstore.BackendUnavailableError, match=r"ckptstore\[fake\]"):
        ckptstore.open("fake://bucket/x")

    def factory(url: str, options: Any) -> Any:
        return registry.open_backend(url.replace("mine://", "memory://"), options)

    register_backend("mine", factory)
    try:
        store = ckptstore.open(f"mine://third-party-{uuid.uuid4().hex}")
        store.save_state(1, [1, 2], serializer="json")
        assert store.latest().load() == [1, 2]
    finally:
        registry._registered.pop("mine")


def test_missing_credentials_give_a_typed_error_that_names_the_fix(s3_server: Any, tmp_path: Path) -> None:
    code = (
        "import sys, ckptstore\n"
        "try:\n"
        "    ckptstore.open(sys.argv[1])\n"
        "except ckptstore.BackendAuthError as exc:\n"
        "    print('AUTH', exc)\n"
    )
    env = {k: v for k, v in os.environ.items() if not k.startswith("AWS_")}
    env.update(
        {
            "AWS_ENDPOINT_URL": s3_server.endpoint,
            "AWS_EC2_METADATA_DISABLED": "true",
            "AWS_CONFIG_FILE": str(tmp_path / "none"),
            "AWS_SHARED_CREDENTIALS_FILE": str(tmp_path / "none"),
        }
    )
    proc = subprocess.run(
        [sys.executable, "-c", code, _url(s3_server)], env=env, capture_output=True, text=True, timeout=120
    )
    assert proc.stdout.startswith("AUTH"), (proc.stdout, proc.stderr[-2000:])
    assert "AWS_ACCESS_KEY_ID" in proc.stdout


def test_the_scratch_folder_of_a_staged_upload_is_removed_after_the_commit(
    s3_server: Any, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Files written into ``tx.path`` live in a local scratch folder until uploaded.

    The folder is removed in the background once the commit stands (freeing a large file's cached
    pages is not the caller's wait); the cleanup worker is FIFO, so a marker task queued after the
    save finishing means the removal ran. A failed save removes its folder at once, before raising.
    """
    import tempfile

    from ckptstore._threads import cleanup_pool

    scratch = tmp_path / "scratch"
    scratch.mkdir()
    monkeypatch.setattr(tempfile, "tempdir", str(scratch))
    store = ckptstore.open(_url(s3_server), storage_options=s3_server.storage_options)
    payload = os.urandom(3 * 1024 * 1024)
    with store.save(1) as tx:
        (tx.path / "big.bin").write_bytes(payload)
        assert tx.path.parent == scratch
    cleanup_pool.submit(lambda: None).result()
    assert list(scratch.iterdir()) == []
    assert store.get(1).read_bytes("big.bin") == payload
    with pytest.raises(RuntimeError, match="boom"), store.save(2) as tx:
        (tx.path / "big.bin").write_bytes(b"x")
        raise RuntimeError("boom")
    assert list(scratch.iterdir()) == []
    assert store.epochs() == [1]
