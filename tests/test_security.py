"""Security: no path escapes the root, pickle never loads unless named, credentials never leak."""

from __future__ import annotations

import logging
import pickle
import uuid
from pathlib import Path
from typing import Any

import pytest

import ckptstore


@pytest.mark.s3
def test_credentials_never_appear_in_logs_errors_or_the_store(s3_server: Any, caplog: pytest.LogCaptureFixture) -> None:
    secret = s3_server.storage_options["secret"]
    key = s3_server.storage_options["key"]
    caplog.set_level(logging.DEBUG, logger="ckptstore")
    store = ckptstore.open(
        s3_server.url(f"sec-{uuid.uuid4().hex}"), storage_options=s3_server.storage_options, monitor="m"
    )
    store.save_state(1, {"a": 1}, serializer="json", metrics={"m": 1.0})
    store.gc()
    texts = [*store.log(), repr(store.backend.describe()), repr(store), store.url, caplog.text]
    texts += [store.backend.read_bytes(k).decode("utf-8", "replace") for k in store.backend.stat_files("")]
    wrong = {**s3_server.storage_options, "secret": "not-the-secret-" + uuid.uuid4().hex}
    with pytest.raises(ckptstore.BackendAuthError) as info:
        ckptstore.open(s3_server.url(f"sec-{uuid.uuid4().hex}"), storage_options=wrong)
    texts.append(str(info.value))
    for text in texts:
        assert secret not in text and wrong["secret"] not in text
    assert all(key not in line for line in store.log())


def test_pickle_is_never_loaded_unless_named(tmp_path: Path) -> None:
    store = ckptstore.open(tmp_path / "s")
    store.save_state(1, {"a": 1}, serializer="pickle")
    with pytest.raises(ckptstore.InvalidArgumentError, match="pickle"):
        store.latest().load()
    assert store.latest().load("pickle") == {"a": 1}

    class Boom:
        def __reduce__(self) -> Any:
            return (Path.touch, (tmp_path / "ran",))

    with store.save(2) as tx, tx.open("state.pt") as f:
        f.write(pickle.dumps(Boom()))
    pytest.importorskip("torch")
    with pytest.raises(ckptstore.SerializerError):
        store.get(2).load("torch")  # weights_only=True refuses the payload
    assert not (tmp_path / "ran").exists()


@pytest.mark.parametrize("name", ["../escape", "/etc/passwd", "a/../../b", "..\\x", "a\x00b"])
def test_no_name_escapes_the_root(tmp_path: Path, name: str) -> None:
    store = ckptstore.open(tmp_path / "s")
    with pytest.raises(ckptstore.UnsafePathError), store.save(1) as tx:
        tx.open(name)
    with pytest.raises(ckptstore.UnsafePathError), store.save(1) as tx:
        (tx.path / "link").symlink_to(tmp_path)
    store.save_state(1, {"a": 1}, serializer="json")
    with pytest.raises((ckptstore.UnsafePathError, ckptstore.CheckpointNotFoundError)):
        store.get(1).read_bytes(name)
    assert sorted(p.name for p in tmp_path.iterdir()) == ["s"]
