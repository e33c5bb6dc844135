"""Attacks from outside: secrets in URLs and options, and backend errors raised while a store opens.

Secrets (a URL's password, a signed URL's query, a raw access token, a service account's key) must
never appear in a URL, a repr, an error message (its cause chain included), a log record, the store's
own log, a stored object or the CLI's output; errors raised while a backend is set up are typed.
None of these tests needs the network: "Google unreachable" is a proxy on a closed port.
"""

from __future__ import annotations

import base64
import http.server
import io
import json
import logging
import re
import socket
import subprocess
import sys
import threading
import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from click.testing import CliRunner

import ckptstore
from ckptstore._redact import exception_chain
from ckptstore.cli import cli
from tests.conftest import save_bytes, snapshot

FAST = ckptstore.RetryPolicy(max_attempts=2, initial_backoff=0.01, max_backoff=0.01)


def _closed_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def _chain_texts(exc: BaseException) -> list[str]:
    """str() and repr() of the error and of everything in its __cause__ / __context__ chain."""
    return [t for e in exception_chain(exc) for t in (str(e), repr(e), type(e).__name__)]


def _assert_hidden(secret: str, texts: list[str]) -> None:
    for text in texts:
        assert secret not in text, f"the secret shows in: {text[:300]}"


@pytest.fixture
def http_server(tmp_path: Path) -> Iterator[tuple[Path, int]]:
    """``python -m http.server`` (real, read-only: GET only) serving a fresh directory on 127.0.0.1."""
    served = tmp_path / "served"
    served.mkdir()
    process = subprocess.Popen(
        [sys.executable, "-u", "-m", "http.server", "0", "--bind", "127.0.0.1", "-d", str(served)],
        stdout=subprocess.PIPE,
        stderr=subprocess.DEVNULL,
        text=True,
    )
    try:
        assert process.stdout is not None
        line = process.stdout.readline()  # printed once the socket is bound
        found = re.search(r"port (\d+)", line)
        assert found, line
        yield served, int(found.group(1))
    finally:
        process.kill()
        process.wait()


# -- 12. secrets never leave the process ----------------------------------------------------------------
def test_a_url_password_never_shows_when_the_http_server_is_down(caplog: pytest.LogCaptureFixture) -> None:
    pytest.importorskip("aiohttp", reason="fsspec's HTTP filesystem needs aiohttp")
    password = f"pw-{uuid.uuid4().hex}"
    caplog.set_level(logging.DEBUG, logger="ckptstore")
    url = f"http://user:{password}@127.0.0.1:{_closed_port()}/store"
    with pytest.raises(ckptstore.StoreUnavailableError) as info:
        ckptstore.open(url, retry=FAST)
    assert "http://user:***@127.0.0.1" in str(info.value)
    _assert_hidden(password, [*_chain_texts(info.value), caplog.text])
    assert any("try 2" in r.getMessage() for r in caplog.records)  # the retry was logged, redacted


def test_a_raw_gcs_token_never_shows_when_google_is_unreachable(
    monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture
) -> None:
    token = f"ya29.{uuid.uuid4().hex}{uuid.uuid4().hex}"
    # gcsfs checks a raw token at https://oauth2.googleapis.com/tokeninfo?access_token=<token>; through a
    # proxy on a closed port Google is unreachable whether or not this machine has a network.
    proxy = f"http://127.0.0.1:{_closed_port()}"
    for name in ("HTTPS_PROXY", "https_proxy", "HTTP_PROXY", "http_proxy"):
        monkeypatch.setenv(name, proxy)
    for name in ("NO_PROXY", "no_proxy"):
        monkeypatch.delenv(name, raising=False)
    monkeypatch.setenv("GCSFS_EXPERIMENTAL_ZB_HNS_SUPPORT", "false")
    caplog.set_level(logging.DEBUG, logger="ckptstore")
    with pytest.raises(ckptstore.StoreUnavailableError) as info:
        ckptstore.open("gs://some-bucket/run", storage_options={"token": token})
    assert isinstance(info.value, ConnectionError) and "gs://some-bucket/run" in str(info.value)
    assert info.value.__context__ is None or info.value.__suppress_context__
    _assert_hidden(token, [*_chain_texts(info.value), caplog.text])


@pytest.mark.parametrize(
    "query",
    [
        "token={secret}",
        "access_token={secret}",
        "X-Amz-Algorithm=AWS4-HMAC-SHA256&X-Amz-Signature={secret}",
        "sv=2022-11-02&sig={secret}",
    ],
)
@pytest.mark.parametrize("base", ["memory://signed-{id}/store", "http://127.0.0.1:{port}/store"])
def test_a_signed_url_is_refused_without_showing_its_secret(base: str, query: str) -> None:
    secret = f"s3cr3t{uuid.uuid4().hex}"
    url = base.format(id=uuid.uuid4().hex, port=_closed_port()) + "?" + query.format(secret=secret)
    with pytest.raises(ckptstore.UnsupportedURLError, match="query string") as info:
        ckptstore.open(url, retry=FAST)
    assert "***" in str(info.value)
    _assert_hidden(secret, _chain_texts(info.value))


@pytest.mark.parametrize("url", ["s3://AKIAEXAMPLE:{secret}@bucket/run", "gs://oauth2:{secret}@bucket/run"])
def test_credentials_in_an_object_store_url_are_refused_without_showing_them(url: str) -> None:
    secret = f"secret-{uuid.uuid4().hex}"
    with pytest.raises(ckptstore.UnsupportedURLError, match="storage_options") as info:
        ckptstore.open(url.format(secret=secret), storage_options={"token": "anon"} if url.startswith("gs") else None)
    _assert_hidden(secret, _chain_texts(info.value))


def test_basic_auth_from_the_url_reaches_the_server_and_nothing_else(tmp_path: Path) -> None:
    pytest.importorskip("aiohttp", reason="fsspec's HTTP filesystem needs aiohttp")
    source = ckptstore.open(tmp_path / "served" / "store", monitor="m")
    save_bytes(source, 1, metrics={"m": 0.5})
    seen: list[str] = []

    class Handler(http.server.SimpleHTTPRequestHandler):
        def __init__(self, *args: Any, **kwargs: Any) -> None:
            super().__init__(*args, directory=str(tmp_path / "served"), **kwargs)

        def do_GET(self) -> None:
            seen.append(self.headers.get("Authorization", ""))
            super().do_GET()

        def log_message(self, *args: Any) -> None:
            del args

    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), Handler)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    password = f"p@ss:{uuid.uuid4().hex}"
    quoted = password.replace("@", "%40").replace(":", "%3A")
    try:
        store = ckptstore.open(f"http://alice:{quoted}@127.0.0.1:{server.server_address[1]}/store", create=False)
        checkpoint = store.latest()
        assert checkpoint.epoch == 1
        checkpoint.verify()  # reads every file through the authenticated session
        texts = [store.url, repr(store), checkpoint.url, repr(checkpoint), json.dumps(store.backend.describe())]
    finally:
        server.shutdown()
        server.server_close()
    expected = "Basic " + base64.b64encode(f"alice:{password}".encode()).decode()
    assert seen and all(header == expected for header in seen)  # the credentials still work
    assert store.url == f"http://alice:***@127.0.0.1:{server.server_address[1]}/store"
    _assert_hidden(password, texts)
    _assert_hidden(quoted, texts)


def test_no_secret_shows_anywhere_in_a_store_used_end_to_end(caplog: pytest.LogCaptureFixture) -> None:
    password, token = f"pw{uuid.uuid4().hex}", f"tok{uuid.uuid4().hex}"
    url = f"memory://user:{password}@sweep-{uuid.uuid4().hex}/store"
    caplog.set_level(logging.DEBUG, logger="ckptstore")
    store = ckptstore.open(url, storage_options={"token": token}, monitor="loss", keep=ckptstore.keep.linear(1))
    for epoch, loss in ((1, 0.5), (2, 0.4), (3, 0.3)):
        save_bytes(store, epoch, metrics={"loss": loss})
    store.pin(3)
    texts: list[str] = [store.url, repr(store), store.table(), *store.log(), json.dumps(store.backend.describe())]
    for checkpoint in store.list():
        texts += [checkpoint.url, repr(checkpoint), json.dumps(checkpoint.info(), default=str)]
    report = io.StringIO()
    store.report(file=report)
    texts.append(report.getvalue())
    with pytest.raises(ckptstore.CheckpointNotFoundError) as info:
        store.get(99)
    texts += _chain_texts(info.value)
    texts.append(repr(store.gc()))
    options = ["-o", f"token={token}"]
    for command in (["ls", url], ["show", url, "3"], ["show", url, "--json", "best"], ["show", url, "99"]):
        result = CliRunner().invoke(cli, [*options, *command])
        texts.append(result.output)
        assert result.exit_code == (3 if "99" in command else 0), result.output
    texts.append(caplog.text)
    fs = store.backend
    texts += [fs.read_bytes(key).decode("utf-8", "replace") for key in fs.stat_files("")]
    assert "user:***@sweep" in store.url
    for secret in (password, token):
        _assert_hidden(secret, texts)


# -- typed errors at open -------------------------------------------------------------------------------
@pytest.mark.parametrize("url", [None, 3, b"runs/exp1", ["runs"]])
def test_open_with_a_url_of_the_wrong_type_is_a_typed_error(url: Any, tmp_path: Path) -> None:
    before = snapshot(tmp_path)
    with pytest.raises(ckptstore.InvalidArgumentTypeError, match="store URL must be a str") as info:
        ckptstore.open(url)
    assert isinstance(info.value, TypeError) and isinstance(info.value, ValueError)
    assert isinstance(info.value, ckptstore.CkptStoreError)
    assert snapshot(tmp_path) == before


def test_open_with_an_empty_url_or_options_of_the_wrong_type_is_refused(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.chdir(tmp_path)
    with pytest.raises(ckptstore.InvalidArgumentError, match="empty"):
        ckptstore.open("")  # would have made a store in the current directory
    with pytest.raises(ckptstore.InvalidArgumentTypeError, match="storage_options must be a dict"):
        ckptstore.open("memory://typed/store", storage_options="endpoint_url=http://x")  # type: ignore[arg-type]
    assert list(tmp_path.iterdir()) == []


@pytest.fixture
def read_only_mount(tmp_path: Path) -> Iterator[Path]:
    """A real read-only file system (tmpfs mounted ``ro``); needs root, as in the project's CI image."""
    mount = tmp_path / "ro"
    mount.mkdir()
    done = subprocess.run(["mount", "-t", "tmpfs", "-o", "ro", "tmpfs", str(mount)], capture_output=True, text=True)
    if done.returncode != 0:
        pytest.skip(f"cannot mount a read-only tmpfs here: {done.stderr.strip()}")
    try:
        yield mount
    finally:
        subprocess.run(["umount", str(mount)], check=True)


def test_a_new_store_on_a_read_only_mount_is_store_not_writable(read_only_mount: Path) -> None:
    with pytest.raises(ckptstore.StoreNotWritableError, match="read-only file system") as info:
        ckptstore.open(read_only_mount / "store")  # was a bare OSError (EROFS)
    assert isinstance(info.value, PermissionError) and str(read_only_mount / "store") in str(info.value)
    with pytest.raises(ckptstore.StoreNotWritableError):
        ckptstore.open(read_only_mount)  # the mount point itself: exists, cannot be written
    assert list(read_only_mount.iterdir()) == []


@pytest.mark.s3
def test_an_invalid_s3_bucket_name_is_a_typed_error_naming_the_rule(s3_server: Any) -> None:
    fs = s3_server.filesystem()
    before = sorted(fs.ls(""))
    with pytest.raises(ckptstore.UnsupportedURLError, match="bucket name") as info:
        ckptstore.open("s3://Bad_Bucket!/x", storage_options=s3_server.storage_options)
    assert isinstance(info.value, ckptstore.InvalidArgumentError) and isinstance(info.value, ValueError)
    assert "lowercase letters, digits" in str(info.value)
    fs.invalidate_cache()
    assert sorted(fs.ls("")) == before


@pytest.mark.parametrize("content", [{"type": "service_account", "private_key": "PRIVATE"}, {"client_id": "x"}])
def test_a_malformed_gcs_service_account_file_is_an_auth_error_naming_the_file(
    tmp_path: Path, content: dict[str, str], caplog: pytest.LogCaptureFixture
) -> None:
    secret = f"-----BEGIN PRIVATE KEY-----{uuid.uuid4().hex}"
    path = tmp_path / "bad.json"
    path.write_text(json.dumps({k: v.replace("PRIVATE", secret) for k, v in content.items()}))
    caplog.set_level(logging.DEBUG, logger="ckptstore")
    with pytest.raises(ckptstore.BackendAuthError) as info:
        ckptstore.open("gs://some-bucket/run", storage_options={"token": str(path)})
    assert str(path) in str(info.value)
    _assert_hidden(secret, [*_chain_texts(info.value), caplog.text])


def test_a_missing_gcs_credentials_file_is_an_auth_error_not_a_token_sent_to_google(tmp_path: Path) -> None:
    missing = tmp_path / "no-such-key.json"
    with pytest.raises(ckptstore.BackendAuthError, match="does not exist") as info:
        ckptstore.open("gs://some-bucket/run", storage_options={"token": str(missing)})
    assert str(missing) in str(info.value)


def test_a_failed_write_to_an_http_store_is_store_not_writable(http_server: tuple[Path, int], tmp_path: Path) -> None:
    pytest.importorskip("aiohttp", reason="fsspec's HTTP filesystem needs aiohttp")
    served, port = http_server
    password = f"pw{uuid.uuid4().hex}"
    with pytest.raises(ckptstore.StoreNotWritableError, match="does not accept writes") as info:
        ckptstore.open(f"http://user:{password}@127.0.0.1:{port}/new", retry=FAST)
    _assert_hidden(password, _chain_texts(info.value))
    assert list(served.iterdir()) == []

    existing = ckptstore.open(served / "store", monitor="m")
    save_bytes(existing, 1, metrics={"m": 0.5})
    before = snapshot(served)
    store = ckptstore.open(f"http://user:{password}@127.0.0.1:{port}/store", create=False, retry=FAST)
    assert store.latest().epoch == 1  # reading works
    with pytest.raises(ckptstore.StoreNotWritableError, match="does not accept writes") as raised:
        save_bytes(store, 2, metrics={"m": 0.4})
    _assert_hidden(password, _chain_texts(raised.value))
    assert snapshot(served) == before


def test_the_cli_prints_errors_redacted_and_escaped() -> None:
    secret = f"tok{uuid.uuid4().hex}"
    url = f"memory://cli-{uuid.uuid4().hex}/store[/x]?token={secret}"
    result = CliRunner().invoke(cli, ["ls", url])
    assert result.exit_code == 2, result.output  # an invalid argument, printed as one line
    assert "ckptstore: error:" in result.output and "[/x]" in result.output and "token=***" in result.output
    assert secret not in result.output and "Traceback" not in result.output


def test_the_redaction_rules() -> None:
    from ckptstore._redact import redact, redact_url, remember

    assert redact_url("http://user:pw@host:1/s") == "http://user:***@host:1/s"
    assert redact_url("https://ghp_tokenvalue@github.com/o/r") == "https://***@github.com/o/r"
    assert redact_url("https://h/o?X-Amz-Credential=AK&X-Amz-Signature=abc&x=1") == (
        "https://h/o?X-Amz-Credential=***&X-Amz-Signature=***&x=1"
    )
    assert redact("failed: /tokeninfo?access_token=ya29.x (Caused by ...)") == (
        "failed: /tokeninfo?access_token=*** (Caused by ...)"
    )
    secret = f"k{uuid.uuid4().hex}"
    remember([secret, "anon", "abc"])
    assert redact(f"got {secret!r} and 'anon' and abc") == "got '***' and 'anon' and abc"
    assert redact("s3://bucket/prefix is fine") == "s3://bucket/prefix is fine"
