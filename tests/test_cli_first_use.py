"""The ``ckptstore`` command as a new user meets it (issue 14), on a local store and on S3 (SeaweedFS).

Pipes, timeouts and completion run the real entry point in a subprocess (``python -m ckptstore``);
the rest runs click's CliRunner on the same group. Each S3 store gets its own prefix.
"""

from __future__ import annotations

import ast
import csv
import io
import json
import os
import re
import shlex
import socket
import subprocess
import sys
import uuid
from pathlib import Path
from typing import Any

import attrs
import pytest
from click.testing import CliRunner

import ckptstore
from ckptstore.cli import cli, reference_markdown

ROOT = Path(__file__).resolve().parent.parent
METRICS = [(0.9, 0.5), (0.3, 0.8), (0.5, 0.7), (0.4, 0.9), (0.6, 0.6)]  # (val_loss, acc): best 2 by loss, 4 by acc


@attrs.frozen
class Target:
    """Where the stores of one test live, and how to reach them from the command and from Python."""

    base: str
    flags: list[str]  # -S options, given after the command name
    options: dict[str, Any] | None
    env: dict[str, str]

    def url(self, name: str) -> str:
        return f"{self.base}/{name}"

    def fill(self, name: str, *, steps: bool = False, n: int = len(METRICS)) -> str:
        """A store with ``n`` checkpoints (val_loss, acc); ``steps``: numbered by global step as HF stores are."""
        url = self.url(name)
        store = ckptstore.open(url, storage_options=self.options, monitor="val_loss")
        for i, (loss, acc) in enumerate(METRICS[:n], start=1):
            number = i * 10 if steps else i
            with store.save(number, metrics={"val_loss": loss, "acc": acc}, step=number if steps else None) as tx:
                with tx.open("model.bin") as f:
                    f.write(bytes([i]) * 100)
                with tx.open(f"weights.{i:02d}-0.{int(acc * 1000):04d}.hdf5") as f:
                    f.write(b"w")
        return url


@pytest.fixture(params=["local", pytest.param("s3", marks=pytest.mark.s3)])
def target(request: pytest.FixtureRequest, tmp_path: Path) -> Target:
    if request.param == "local":
        return Target(str(tmp_path), [], None, {})
    server = request.getfixturevalue("s3_server")
    options = server.storage_options
    flags = [
        *("-S", f"key={options['key']}"),
        *("-S", f"secret={options['secret']}"),
        *("-S", f"client_kwargs.endpoint_url={options['client_kwargs']['endpoint_url']}"),
        *("-S", "client_kwargs.region_name=us-east-1"),
    ]
    env = {"CKPTSTORE_STORAGE_OPTIONS": json.dumps(options)}
    return Target(server.url(f"first-use-{uuid.uuid4().hex}"), flags, options, env)


def invoke(args: list[str], code: int = 0) -> Any:
    result = CliRunner().invoke(cli, args, catch_exceptions=False)
    assert result.exit_code == code, (args, result.stdout, result.stderr)
    return result


def as_json(args: list[str]) -> Any:
    return json.loads(invoke([*args, "--json"]).stdout)


def command(args: list[str], env: dict[str, str], **kwargs: Any) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "ckptstore", *args],
        capture_output=True,
        text=True,
        timeout=120,
        env={**os.environ, **env},
        check=False,
        **kwargs,
    )


# -- pipes ------------------------------------------------------------------------------------------------
def test_output_into_a_closed_pipe_or_head_exits_quietly(target: Target) -> None:
    url = target.fill("run")
    for args in (["log", url], ["ls", url]):
        read, write = os.pipe()
        os.close(read)  # the reader is gone before the command writes a byte: every write fails with EPIPE
        try:
            proc = subprocess.run(
                [sys.executable, "-m", "ckptstore", *args, *target.flags],
                stdout=write,
                stderr=subprocess.PIPE,
                text=True,
                timeout=120,
                check=False,
            )
        finally:
            os.close(write)
        assert (proc.returncode, proc.stderr) == (0, ""), args
    for command, lines in (("log", 1), ("ls", 2)):
        python = shlex.quote(sys.executable)
        shell = f"set -o pipefail; {python} -m ckptstore {command} {shlex.quote(url)} | head -{lines}"
        piped = subprocess.run(
            ["bash", "-c", shell],
            capture_output=True,
            text=True,
            timeout=120,
            env={**os.environ, **target.env},
            check=False,
        )
        assert (piped.returncode, piped.stderr, piped.stdout.count("\n")) == (0, "", lines), command
        if command == "log":
            assert "COMMIT" in piped.stdout


# -- usage errors, storage options, timeouts ----------------------------------------------------------------
def test_unknown_metrics_and_conflicting_choices_are_usage_errors(target: Target, tmp_path: Path) -> None:
    url, s = target.fill("run"), target.flags
    typo = CliRunner().invoke(cli, ["ls", url, "--sort-by", "val_los", *s])
    assert typo.exit_code == 2 and "val_los" in typo.stderr and "acc, val_loss" in typo.stderr
    assert CliRunner().invoke(cli, ["ls", url, "--monitor", "accc", *s]).exit_code == 2
    assert CliRunner().invoke(cli, ["show", url, "best", "--metric", "nope", *s]).exit_code == 2
    out = str(tmp_path / "dl")
    both = CliRunner().invoke(cli, ["download", url, "--best", "--latest", "--output-dir", out, *s])
    assert both.exit_code == 2 and "best" in both.stderr and "latest" in both.stderr
    assert CliRunner().invoke(cli, ["download", url, "3", "--latest", "--output-dir", out, *s]).exit_code == 2
    assert CliRunner().invoke(cli, ["download", url, "--top-n", "2", "--epoch", "1", *s]).exit_code == 2
    assert not Path(out).exists()  # refused before anything was downloaded
    assert CliRunner().invoke(cli, ["ls", url, "--csv", "--json", *s]).exit_code == 2
    assert CliRunner().invoke(cli, ["show", url, "newest", *s]).exit_code == 2


@pytest.mark.s3
def test_storage_options_go_after_the_command_and_errors_speak_cli_flags(s3_server: Any) -> None:
    target = Target(s3_server.url(f"first-use-{uuid.uuid4().hex}"), [], s3_server.storage_options, {})
    url = target.fill("run", n=2)
    endpoint = s3_server.storage_options["client_kwargs"]["endpoint_url"]
    good = [f"key={s3_server.storage_options['key']}", f"secret={s3_server.storage_options['secret']}"]
    after = ["-S", good[0], "--storage-option", good[1], "-S", f"endpoint_url={endpoint}"]
    assert [r["epoch"] for r in as_json(["ls", url, *after])] == [2, 1]
    old = ["-o", good[0], "-o", good[1], "-o", f"endpoint_url={endpoint}"]  # the spelling before -S, before the command
    assert as_json([*old, "show", url, "latest"])["epoch"] == 2
    refused = CliRunner().invoke(
        cli, ["ls", url, "-S", "key=nobody", "-S", "secret=wrong", "-S", f"endpoint_url={endpoint}"]
    )
    assert refused.exit_code == 4 and refused.stderr.count("\n") == 1
    assert "-S key=... -S secret=..." in refused.stderr and "storage_options" not in refused.stderr
    assert "wrong" not in refused.stderr  # the secret stays out


def test_a_missing_local_store_gives_advice_in_cli_terms(tmp_path: Path) -> None:
    missing = CliRunner().invoke(cli, ["show", str(tmp_path / "nothing"), "best"])
    assert missing.exit_code == 3 and missing.stderr.count("\n") == 1
    assert "create=True" not in missing.stderr and "check the path" in missing.stderr


def _closed_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])  # closed when the block ends: connections are refused


def test_a_wrong_endpoint_fails_after_the_cli_timeout_in_one_line() -> None:
    pytest.importorskip("s3fs")
    endpoint = f"http://127.0.0.1:{_closed_port()}"
    args = ["ls", "s3://bucket/run", "-S", "key=a", "-S", "secret=b", "-S", f"endpoint_url={endpoint}"]
    proc = command([*args, "--timeout", "0.5"], {})
    assert proc.returncode == 4 and proc.stdout == ""
    assert proc.stderr.count("\n") == 1, proc.stderr  # no retry lines, one error
    assert "--timeout 0.5s" in proc.stderr and "127.0.0.1" in proc.stderr
    from_env = command(args, {"CKPTSTORE_TIMEOUT": "0.3"})
    assert from_env.returncode == 4 and "--timeout 0.3s" in from_env.stderr


# -- one selector grammar, --json everywhere ------------------------------------------------------------------
def test_every_command_names_a_checkpoint_the_same_way(target: Target, tmp_path: Path) -> None:
    url, s = target.fill("run"), target.flags
    assert as_json(["show", url, *s])["epoch"] == 5  # default: latest
    assert as_json(["show", url, "best", *s])["epoch"] == 2
    assert as_json(["show", url, "best", "--metric", "acc", *s])["epoch"] == 4
    assert as_json(["show", url, "last", *s])["epoch"] == 5
    assert as_json(["metadata", url, "best", "--set", "stage=prod", *s]) == {"stage": "prod"}
    assert as_json(["metadata", url, "2", *s]) == {"stage": "prod"}
    assert as_json(["pin", url, "best", "--metric", "acc", *s]) == {"pinned": 4, "pins": [4]}
    assert as_json(["unpin", url, "4", *s]) == {"unpinned": 4, "pins": []}
    assert as_json(["verify", url, "best", *s]) == {"ok": True, "verified": [2], "failed": []}
    got = as_json(["download", url, "latest", "--output-dir", str(tmp_path / "a"), *s])
    assert [Path(p).name for p in got] == ["00000005"]
    got = as_json(["download", url, "--output-dir", str(tmp_path / "b"), *s])  # default: best
    assert [Path(p).name for p in got] == ["00000002"]
    for name, default in (
        ("show", "default: latest"),
        ("download", "best (the default)"),
        ("verify", "all (the default)"),
    ):
        assert default in " ".join(invoke([name, "--help"]).stdout.split())
    for name in ("pin", "unpin", "rollback", "metadata"):
        assert "best, latest or an EPOCH (required)" in " ".join(invoke([name, "--help"]).stdout.split())


def test_json_on_every_command(target: Target, tmp_path: Path) -> None:
    url, s = target.fill("run"), target.flags
    for name in sorted(cli.commands):
        assert "--json" in invoke([name, "--help"]).stdout, name
    assert as_json(["reindex", url, *s]) == {"checkpoints": 5, "epochs": [1, 2, 3, 4, 5]}
    records = as_json(["log", url, "--tail", "2", *s])
    assert len(records) == 2 and all(set(r) == {"time", "host", "pid", "event", "message"} for r in records)
    assert records[-1]["event"] == "REINDEX" and isinstance(records[-1]["pid"], int)
    png = tmp_path / "acc.png"
    assert as_json(["plot", url, "--metric", "acc", "--output", str(png), *s]) == {"output": str(png), "metric": "acc"}
    assert png.read_bytes()[:4] == b"\x89PNG"


def test_verify_json_reports_failures_too(target: Target) -> None:
    url, s = target.fill("run"), target.flags
    ckptstore.open(url, storage_options=target.options).backend.write("epochs/00000003/model.bin", b"tampered")
    result = CliRunner().invoke(cli, ["verify", url, "--json", *s])
    assert result.exit_code == 1
    report = json.loads(result.stdout)
    assert report["ok"] is False and report["verified"] == [1, 2, 4, 5]
    assert [f["epoch"] for f in report["failed"]] == [3] and "model.bin" in report["failed"][0]["error"]
    assert "epochs/00000003/model.bin" in result.stderr and result.stderr.count("\n") == 1


def test_rollback_dry_run_and_the_epochs_it_retires(target: Target) -> None:
    url, s = target.fill("run"), target.flags
    assert as_json(["rollback", url, "best", "--dry-run", *s]) == {"dry_run": True, "last": 2, "retired": [3, 4, 5]}
    assert (
        "(dry run) last -> epoch 3; would retire epoch(s) 4, 5"
        in invoke(["rollback", url, "3", "--dry-run", *s]).stdout
    )
    assert ckptstore.open(url, storage_options=target.options).epochs() == [1, 2, 3, 4, 5]  # untouched
    assert "last -> epoch 3; retired epoch(s) 4, 5" in invoke(["rollback", url, "3", *s]).stdout
    store = ckptstore.open(url, storage_options=target.options)
    assert store.epochs() == [1, 2, 3] and store.latest().epoch == 3
    assert "retired nothing" in invoke(["rollback", url, "latest", *s]).stdout


# -- what the views print ---------------------------------------------------------------------------------------
def test_show_prints_a_readable_layout(target: Target) -> None:
    url, s = target.fill("run"), target.flags
    store = ckptstore.open(url, storage_options=target.options)
    store.restart()
    store.save_state(6, {"w": [1.0]}, serializer="json", metrics={"val_loss": 0.2, "acc": 0.95})
    text = invoke(["show", url, "6", *s]).stdout
    assert text.startswith("epoch 6  best last")
    assert re.search(r"^ +val_loss +0\.2$", text, re.MULTILINE) and re.search(r"^ +acc +0\.95$", text, re.MULTILINE)
    assert re.search(r"^resumed from +epoch 5\b", text, re.MULTILINE)
    assert re.search(r"^serializer +json\b", text, re.MULTILINE)
    assert "{" not in text and "None" not in text
    assert "resumed from" not in invoke(["show", url, "1", *s]).stdout  # a first run has no parent


def test_select_matches_the_whole_file_name(target: Target) -> None:
    url, s = target.fill("run"), target.flags
    partial = CliRunner().invoke(cli, ["select", url, r"0\.(\d+)", *s])
    assert partial.exit_code == 3 and "whole file name" in partial.stderr
    assert as_json(["select", url, r".*0\.(\d+)\.hdf5", *s])["epoch"] == 4
    assert "whole name" in " ".join(invoke(["select", "--help"]).stdout.split())


def test_plot_marks_the_best_by_its_metric_and_keeps_the_legend_off_the_curve(target: Target) -> None:
    pytest.importorskip("matplotlib")
    from ckptstore.cli.plot import draw

    url = target.fill("run")
    store = ckptstore.open(url, storage_options=target.options)
    for metric, best in (("acc", (4, 0.9)), ("val_loss", (2, 0.3))):
        fig = draw(store, metric)
        ax = fig.axes[0]
        marked = {c.get_label(): [tuple(map(float, p)) for p in c.get_offsets()] for c in ax.collections}
        assert marked[f"best by {metric}"] == [best]
        renderer = fig.canvas.get_renderer()
        assert not ax.get_legend().get_window_extent(renderer).overlaps(ax.get_window_extent(renderer))
        fig.clf()


def test_step_based_stores_label_their_numbers_steps(target: Target) -> None:
    url, s = target.fill("hf", steps=True, n=3), target.flags
    table = invoke(["ls", url, *s]).stdout
    assert re.search(r"\bstep\b", table) and not re.search(r"\bepoch\b", table)
    assert invoke(["show", url, "best", *s]).stdout.startswith("step 20  best")
    assert invoke(["ls", url, "--csv", *s]).stdout.splitlines()[0].startswith("step,")
    epochs = target.fill("plain", n=2)
    assert invoke(["ls", epochs, "--csv", *s]).stdout.splitlines()[0].startswith("epoch,")


def test_ls_chooses_columns_and_prints_csv(target: Target) -> None:
    url, s = target.fill("run"), target.flags
    rows = list(csv.reader(io.StringIO(invoke(["ls", url, "--csv", "--columns", "epoch,acc,marks", *s]).stdout)))
    assert rows[0] == ["epoch", "acc", "marks"]
    assert rows[1:] == [
        ["2", "0.8", "best"],
        ["4", "0.9", ""],
        ["3", "0.7", ""],
        ["5", "0.6", "last"],
        ["1", "0.5", ""],
    ]
    header = next(csv.reader(io.StringIO(invoke(["ls", url, "--csv", "--metrics", "acc", *s]).stdout)))
    assert header == ["epoch", "committed", "size", "acc", "marks"]
    table = invoke(["ls", url, "--metrics", "acc", *s]).stdout
    assert "acc" in table and "val_loss" not in table
    bad = CliRunner().invoke(cli, ["ls", url, "--columns", "epoch,nope", *s])
    assert bad.exit_code == 2 and "nope" in bad.stderr and "val_loss" in bad.stderr


# -- listing across runs ------------------------------------------------------------------------------------
def test_ls_of_a_folder_of_stores_lists_the_stores(target: Target) -> None:
    s = target.flags
    target.fill("sweep/lr1", n=3)
    target.fill("sweep/group/lr2", steps=True, n=2)
    if target.options is None:
        (Path(target.base) / "sweep" / "notes").mkdir()
    sweep = target.url("sweep")
    rows = as_json(["ls", sweep, *s])
    assert [(r["name"], r["checkpoints"], r["best"], r["best_value"], r["last"], r["unit"]) for r in rows] == [
        ("group/lr2", 2, 20, 0.3, 20, "step"),
        ("lr1", 3, 2, 0.3, 3, "epoch"),
    ]
    assert all(r["size"] > 0 and r["last_commit"] and r["error"] is None for r in rows)
    table = invoke(["ls", sweep, *s]).stdout
    assert "2 store(s)" in table and "lr1" in table and "val_loss=0.3" in table
    assert next(csv.reader(io.StringIO(invoke(["ls", sweep, "--csv", *s]).stdout)))[:3] == [
        "name",
        "checkpoints",
        "unit",
    ]
    found = ckptstore.stores(sweep, target.options)
    assert [(r.name, r.best, r.last, r.monitor, r.mode) for r in found] == [
        ("group/lr2", 20, 20, "val_loss", "min"),
        ("lr1", 2, 3, "val_loss", "min"),
    ]
    with pytest.raises(attrs.exceptions.FrozenInstanceError):
        found[0].best = 1  # type: ignore[misc]
    assert [r.name for r in ckptstore.stores(target.url("sweep/lr1"), target.options)] == ["."]
    empty = CliRunner().invoke(cli, ["ls", target.url("nothing-here"), *s])
    assert empty.exit_code == 3 and "no store below it" in empty.stderr


# -- completion, reference page, demo ------------------------------------------------------------------------
def test_shell_completion_works_as_documented(tmp_path: Path) -> None:
    script = command([], {"_CKPTSTORE_COMPLETE": "bash_source"})
    assert script.returncode == 0 and "_ckptstore_completion" in script.stdout
    words = {"_CKPTSTORE_COMPLETE": "bash_complete", "COMP_WORDS": f"ckptstore show {tmp_path} b", "COMP_CWORD": "3"}
    assert "plain,best" in command([], words).stdout.split()
    assert "_CKPTSTORE_COMPLETE=bash_source ckptstore" in (ROOT / "docs" / "cli.md").read_text()


def test_the_reference_page_names_commands_once_and_fits_the_page() -> None:
    page = reference_markdown()
    assert "Usage: ckptstore ckptstore" not in page and "Usage: ckptstore ls [OPTIONS] URL" in page
    blocks = re.findall(r"```[a-z]*\n(.*?)```", page, re.DOTALL)
    assert blocks and max(len(line) for block in blocks for line in block.splitlines()) <= 80
    mkdocs = (ROOT / "mkdocs.yml").read_text()
    assert "pymdownx.highlight" in mkdocs and "stylesheets/extra.css" in mkdocs
    assert "pre-wrap" in (ROOT / "docs" / "stylesheets" / "extra.css").read_text()


def test_the_demo_prints_in_order_when_piped_and_documents_its_defaults(tmp_path: Path) -> None:
    demo = ROOT / "demo" / "train.py"
    proc = subprocess.run(
        [sys.executable, str(demo), "--store", str(tmp_path / "demo"), "--epochs", "4", "--kill-after", "2"],
        capture_output=True,  # a pipe, as under tox
        text=True,
        timeout=300,
        check=False,
    )
    assert proc.returncode == 0, proc.stderr
    lines = proc.stdout.splitlines()
    order = [
        next(i for i, line in enumerate(lines) if text in line)
        for text in ("== run 1", "epoch  1 ", "ended by signal", "== run 2", "resumed from epoch 2", "epoch  3 ")
    ]
    assert order == sorted(order), proc.stdout
    tree = ast.parse(demo.read_text())
    defaults = {
        node.args[0].value: kw.value.value  # type: ignore[attr-defined]
        for node in ast.walk(tree)
        if isinstance(node, ast.Call) and getattr(node.func, "attr", "") == "add_argument"
        for kw in node.keywords
        if kw.arg == "default" and isinstance(kw.value, ast.Constant)
    }
    doc = ast.get_docstring(tree) or ""
    assert f"[--epochs {defaults['--epochs']}]" in doc and f"[--kill-after {defaults['--kill-after']}]" in doc


@pytest.mark.parametrize(
    ("core", "cli_text"),
    [
        ("pass storage_options={'key': ..., 'secret': ...} or set X", "pass -S key=... -S secret=... or set X"),
        ("or pass storage_options={'token': <a file, or 'anon'>} ", "or pass -S token=... "),
        ("(e.g. storage_options={'endpoint_url': 'http://h:9000'})", "(e.g. -S endpoint_url=http://h:9000)"),
        (
            "no store at /x (pass create=True to make one)",
            "no store at /x (the command reads existing stores; check the path)",
        ),
        ("best() needs a metric: pass metric= or open the store with monitor=", "pass --metric NAME"),
    ],
)
def test_core_advice_is_given_in_cli_flags(core: str, cli_text: str) -> None:
    from ckptstore.cli._terms import cli_terms

    assert cli_text in cli_terms(core)
