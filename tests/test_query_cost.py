"""``latest()`` and ``best()`` cost at most 3 backend requests, the same at 10 and at 1,500 checkpoints (issue 16).

The history is made fast: epoch 0 and the newest epoch are saved by the store (so its own code
moves the ``last`` and ``best`` pointers), and the epochs between are copies of epoch 0 (its file and
its manifest with the epoch changed) written straight through a raw fsspec filesystem. Every copy is a
valid checkpoint that verifies; only the index and the log do not know them, and ``latest``/``best``
read neither. 1,500 epochs on S3 cross a ListObjectsV2 page (1,000 keys), so a listing of ``epochs/``
would cost two requests there instead of one.

Requests are counted twice: every call into the store's backend (memory, local disk, S3: one call is
one request or, locally, one syscall stream), and on S3 every HTTP request botocore sends (retries
included), which shows that no backend call hides a paginated listing.
"""

from __future__ import annotations

import json
import uuid
from collections import Counter
from pathlib import Path
from typing import Any

import fsspec
import pytest

import ckptstore
from ckptstore.backends.base import Backend

from .conftest import save_bytes

SMALL, LARGE = 10, 1_500

_OPERATIONS = sorted(
    name
    for name, value in vars(Backend).items()
    if callable(value) and not name.startswith("_") and name not in {"lock", "describe", "local_path", "key_bytes"}
)


def _count_calls(store: ckptstore.CheckpointStore) -> Counter[str]:
    """Count every operation the store asks of its backend from now on (a batch read: one per object).

    Only the store's own calls count, not those an operation makes of its own backend (the default
    ``listdir_after`` filters ``listdir``).
    """
    counts: Counter[str] = Counter()
    backend = store.backend
    depth = [0]
    for name in _OPERATIONS:
        original = getattr(backend, name)

        def counted(*args: Any, _name: str = name, _original: Any = original, **kwargs: Any) -> Any:
            if _name == "read_many":
                args = (list(args[0]), *args[1:])
            if not depth[0]:
                counts[_name] += len(args[0]) if _name == "read_many" else 1
            depth[0] += 1
            try:
                return _original(*args, **kwargs)
            finally:
                depth[0] -= 1

        setattr(backend, name, counted)
    return counts


def _count_http(store: ckptstore.CheckpointStore) -> Counter[str]:
    """Count every HTTP request s3fs's botocore client sends from now on, by operation."""
    counts: Counter[str] = Counter()
    client = store.backend.fs.s3  # created by the requests already made

    def sent(event_name: str, **_: Any) -> None:
        counts[event_name.rsplit(".", 1)[-1]] += 1

    client.meta.events.register("before-send.s3", sent)
    return counts


def _fill(store: ckptstore.CheckpointStore, fs: Any, root: str, n: int) -> int:
    """Epochs 0 .. n-1: the first and the last saved by the store, the others copied straight to the backend."""
    save_bytes(store, 0, metrics={"val_loss": 1.0})
    (name,) = [p.rstrip("/").rsplit("/", 1)[-1] for p in fs.ls(f"{root}/epochs", detail=False)]
    manifest = json.loads(fs.cat_file(f"{root}/epochs/{name}/MANIFEST.json"))
    payload = fs.cat_file(f"{root}/epochs/{name}/model.bin")
    objects: dict[str, bytes] = {}
    for epoch in range(1, n - 1):
        folder = f"{root}/epochs/{epoch:0{len(name)}d}"
        objects[f"{folder}/model.bin"] = payload
        objects[f"{folder}/MANIFEST.json"] = json.dumps({**manifest, "epoch": epoch}).encode()
    fs.pipe(objects)
    save_bytes(store, n - 1, metrics={"val_loss": 0.5})
    return len(name)


def _costs(open_store: Any, n: int) -> dict[str, Any]:
    """What ``latest()`` and ``best()`` ask of the backend in a store of ``n`` checkpoints."""
    store, fs, root = open_store()
    width = _fill(store, fs, root, n)
    assert len(store.epochs()) == n
    calls = _count_calls(store)
    http = _count_http(store) if store.backend.scheme == "s3" else Counter()
    out: dict[str, Any] = {}
    for query in ("latest", "best"):
        calls.clear()
        http.clear()
        checkpoint = getattr(store, query)()
        assert checkpoint.epoch == n - 1
        out[query] = (dict(calls), dict(http))
    checkpoint.verify()
    # A writer killed between its commit and its pointer update: latest() finds the commit anyway.
    last, new = f"{root}/epochs/{n - 1:0{width}d}", f"{root}/epochs/{n:0{width}d}"
    manifest = json.loads(fs.cat_file(f"{last}/MANIFEST.json"))
    fs.pipe(
        {
            f"{new}/model.bin": fs.cat_file(f"{last}/model.bin"),
            f"{new}/MANIFEST.json": json.dumps({**manifest, "epoch": n}).encode(),
        }
    )
    calls.clear()
    http.clear()
    assert store.latest().epoch == n
    out["latest past a stale pointer"] = (dict(calls), dict(http))
    assert store.latest().epoch == n  # repaired: the pointer names it now
    return out


def _assert_flat(open_store: Any) -> None:
    small, large = _costs(open_store, SMALL), _costs(open_store, LARGE)
    assert small == large, (small, large)
    for query in ("latest", "best"):
        calls, http = large[query]
        assert sum(calls.values()) <= 3, (query, calls)
        assert sum(http.values()) <= 3, (query, http)
    print(json.dumps(large, sort_keys=True))


def test_latest_and_best_cost_the_same_few_requests_at_any_size_in_memory() -> None:
    def open_store() -> tuple[ckptstore.CheckpointStore, Any, str]:
        root = f"/cost-{uuid.uuid4().hex}"
        return ckptstore.open(f"memory://{root}", monitor="val_loss"), fsspec.filesystem("memory"), root

    _assert_flat(open_store)


def test_latest_and_best_cost_the_same_few_requests_at_any_size_on_local_disk(tmp_path: Path) -> None:
    def open_store() -> tuple[ckptstore.CheckpointStore, Any, str]:
        root = tmp_path / uuid.uuid4().hex
        fs = fsspec.filesystem("file", auto_mkdir=True)
        return ckptstore.open(root, monitor="val_loss"), fs, root.as_posix()

    _assert_flat(open_store)


@pytest.mark.s3
def test_latest_and_best_cost_the_same_few_requests_at_any_size_on_s3(s3_server: Any) -> None:
    def open_store() -> tuple[ckptstore.CheckpointStore, Any, str]:
        prefix = f"cost-{uuid.uuid4().hex}"
        store = ckptstore.open(s3_server.url(prefix), monitor="val_loss", storage_options=s3_server.storage_options)
        return store, s3_server.filesystem(), f"{s3_server.bucket}/{prefix}"

    _assert_flat(open_store)


@pytest.mark.s3
def test_a_batch_read_on_s3_is_one_get_per_object_and_none_for_a_missing_one(s3_server: Any) -> None:
    store = ckptstore.open(s3_server.url(f"batch-{uuid.uuid4().hex}"), storage_options=s3_server.storage_options)
    for epoch in range(5):
        save_bytes(store, epoch)
    keys = [f"epochs/{e:08d}/MANIFEST.json" for e in range(5)] + ["epochs/00000009/MANIFEST.json"]
    http = _count_http(store)
    found = store.backend.read_many(keys)
    assert dict(http) == {"GetObject": 6}, http  # no HeadObject before each GET (s3fs's cat sends one)
    assert found["epochs/00000009/MANIFEST.json"] is None
    assert [json.loads(found[k] or b"{}")["epoch"] for k in keys[:5]] == list(range(5))
