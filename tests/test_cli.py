"""The ``ckptstore`` command, end to end on a local store and on S3 (SeaweedFS)."""

from __future__ import annotations

import json
import subprocess
import sys
import uuid
from pathlib import Path
from typing import Any

import pytest
from click.testing import CliRunner

import ckptstore
from ckptstore.cli import cli, reference_markdown

GUILD = ["weights.01-0.9647.hdf5", "weights.02-0.9738.hdf5", "weights.04-0.9813.hdf5", "weights.05-0.9805.hdf5"]


@pytest.fixture(params=["local", pytest.param("s3", marks=pytest.mark.s3)])
def target(request: pytest.FixtureRequest, tmp_path: Path) -> tuple[str, list[str], dict[str, Any] | None]:
    """(url, the -o options for the command, storage_options for the API) of a filled store."""
    if request.param == "local":
        url, args, options = str(tmp_path / "store"), [], None
    else:
        server = request.getfixturevalue("s3_server")
        url = server.url(f"cli-{uuid.uuid4().hex}")
        options = server.storage_options
        args = [
            "-o",
            f"key={options['key']}",
            "-o",
            f"secret={options['secret']}",
            "-o",
            f"client_kwargs.endpoint_url={options['client_kwargs']['endpoint_url']}",
            "-o",
            "client_kwargs.region_name=us-east-1",
        ]
    store = ckptstore.open(url, storage_options=options, monitor="val_loss", mode="min")
    for epoch, (loss, acc) in enumerate([(0.9, 0.5), (0.3, 0.8), (0.5, 0.7), (0.4, 0.9), (0.6, 0.6)], start=1):
        with store.save(epoch, metrics={"val_loss": loss, "acc": acc}) as tx:
            with tx.open("model.bin") as f:
                f.write(bytes([epoch]) * 1000)
            with tx.open(GUILD[epoch - 1] if epoch <= len(GUILD) else "other.txt") as f:
                f.write(b"w")
    return url, args, options


def run(args: list[str], code: int = 0) -> Any:
    result = CliRunner().invoke(cli, args, catch_exceptions=False)
    assert result.exit_code == code, (args, result.output, getattr(result, "stderr", ""))
    return result


def run_json(args: list[str]) -> Any:
    return json.loads(run([*args, "--json"]).stdout)


def test_ls_sorts_like_determined(target: tuple[str, list[str], Any]) -> None:
    url, o, _ = target
    rows = run_json([*o, "ls", url])
    assert [r["epoch"] for r in rows] == [2, 4, 3, 5, 1]  # the recorded monitor, best first
    assert rows[0]["marks"] == ["best"] and "last" in rows[3]["marks"]
    assert [r["epoch"] for r in run_json([*o, "ls", url, "--sort-by", "acc", "--top-n", "2"])] == [4, 2]
    assert [r["epoch"] for r in run_json([*o, "ls", url, "--sort-by", "epoch", "--order", "desc"])] == [5, 4, 3, 2, 1]
    table = run([*o, "ls", url]).stdout
    assert "val_loss" in table and "best" in table and "ckptstore plot" in table


def test_ls_top_n_asks_the_store_for_n_and_shows_the_first_n_of_the_full_listing(
    target: tuple[str, list[str], Any], monkeypatch: pytest.MonkeyPatch
) -> None:
    url, o, _ = target
    limits: list[int | None] = []
    listed = ckptstore.CheckpointStore.list

    def spy(self: ckptstore.CheckpointStore, *args: Any, **kwargs: Any) -> Any:
        limits.append(kwargs.get("limit"))
        return listed(self, *args, **kwargs)

    monkeypatch.setattr(ckptstore.CheckpointStore, "list", spy)
    for sort in (
        [],
        ["--sort-by", "acc"],
        ["--sort-by", "epoch", "--order", "desc"],
        ["--monitor", "acc", "--mode", "min"],
    ):
        full_rows = run_json([*o, "ls", url, *sort])
        full_csv = run([*o, "ls", url, *sort, "--csv"]).stdout.splitlines()
        for n in (1, 2, 5, 9):
            limits.clear()
            assert run_json([*o, "ls", url, *sort, "--top-n", str(n)]) == full_rows[:n]
            assert run([*o, "ls", url, *sort, "--top-n", str(n), "--csv"]).stdout.splitlines() == full_csv[: n + 1]
            assert limits == [n, n], limits  # the store was asked for n, never for everything
    assert run_json([*o, "ls", url, "--top-n", "0"]) == []
    # A metric that is in none of the rows shown: the whole store decides whether it exists.
    assert "its metrics: acc, val_loss" in run([*o, "ls", url, "--sort-by", "nope", "--top-n", "1"], code=2).output


def test_show_download_and_verify(target: tuple[str, list[str], Any], tmp_path: Path) -> None:
    url, o, options = target
    shown = run_json([*o, "show", url, "best"])
    assert shown["epoch"] == 2 and "model.bin" in shown["files"] and shown["marks"] == ["best"]
    assert run_json([*o, "show", url, "3"])["metrics"]["acc"] == 0.7
    out = tmp_path / "dl"
    assert run_json([*o, "download", url, "--best", "--output-dir", str(out)]) == [str(out / "00000002")]
    assert (out / "00000002" / "model.bin").read_bytes() == bytes([2]) * 1000
    run([*o, "download", url, "--latest", "--output-dir", str(out), "--no-progress"])
    run([*o, "download", url, "--epoch", "3", "--output-dir", str(out)])
    got = run_json([*o, "download", url, "--top-n", "2", "--metric", "acc", "--output-dir", str(tmp_path / "top")])
    assert [Path(p).name for p in got] == ["00000004", "00000002"]
    assert sorted(p.name for p in out.iterdir()) == ["00000002", "00000003", "00000005"]
    assert run_json([*o, "verify", url]) == {"ok": True, "verified": [1, 2, 3, 4, 5], "failed": []}
    store = ckptstore.open(url, storage_options=options)
    store.backend.write("epochs/00000003/model.bin", b"tampered")
    result = CliRunner().invoke(cli, [*o, "verify", url])
    assert result.exit_code == 1
    assert "epochs/00000003/model.bin" in result.stderr and "Traceback" not in result.stderr
    assert CliRunner().invoke(cli, [*o, "verify", url, "4"]).exit_code == 0


def test_gc_pin_rollback_reindex_log_and_metadata(target: tuple[str, list[str], Any]) -> None:
    url, o, _ = target
    run([*o, "pin", url, "1"])
    report = run_json([*o, "gc", url, "--keep", "linear:1", "--dry-run"])
    actions = {d["epoch"]: (d["action"], d["reason"]) for d in report["decisions"]}
    assert actions[1] == ("keep", "pinned") and actions[2][1] == "best" and actions[3][0] == "delete"
    assert [r["epoch"] for r in run_json([*o, "ls", url, "--sort-by", "epoch"])] == [1, 2, 3, 4, 5]
    run([*o, "gc", url, "--keep", "linear:1"])  # linear(1) keeps last (5) only; pinned 1 and best 2 besides
    assert [r["epoch"] for r in run_json([*o, "ls", url, "--sort-by", "epoch"])] == [1, 2, 5]
    run([*o, "unpin", url, "1"])
    assert "retired epoch(s) 5" in run([*o, "rollback", url, "2"]).stdout
    assert [r["epoch"] for r in run_json([*o, "ls", url, "--sort-by", "epoch"])] == [1, 2]
    assert run_json([*o, "show", url, "latest"])["epoch"] == 2
    assert "index rebuilt: 2" in run([*o, "reindex", url]).stdout
    assert json.loads(run([*o, "metadata", url, "2", "--set", "stage=prod", "--set", "n=3"]).stdout) == {
        "stage": "prod",
        "n": 3,
    }
    assert json.loads(run([*o, "metadata", url, "2", "--remove", "n"]).stdout) == {"stage": "prod"}
    events = {record["event"] for record in run_json([*o, "log", url])}
    assert {"ROLLBACK", "PIN", "UNPIN"} <= events
    assert len(run_json([*o, "log", url, "--tail", "2"])) == 2


def test_select_latest_and_plot(target: tuple[str, list[str], Any], tmp_path: Path) -> None:
    url, o, _ = target
    best = run_json([*o, "select", url, "--max", r"weights\.\d+-0\.(\d+)\.hdf5"])
    assert best["epoch"] == 3 and best["path"].endswith("weights.04-0.9813.hdf5")
    low = run_json(
        [*o, "select", url, "--min", r"weights\.\d+-0\.(\d+)\.hdf5", "--download", str(tmp_path), "--rename", "w.hdf5"]
    )
    assert low["path"].endswith("weights.01-0.9647.hdf5") and (tmp_path / "w.hdf5").read_bytes() == b"w"
    assert run_json([*o, "latest", url, "weights.*.hdf5"])["epoch"] == 4
    png = tmp_path / "curve.png"
    run([*o, "plot", url, "--output", str(png)])
    assert png.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"


def test_select_and_latest_on_a_plain_directory(tmp_path: Path) -> None:
    for name in GUILD:
        (tmp_path / name).write_text(name)
    assert run_json(["select", str(tmp_path), r"weights\.\d+-0\.(\d+)\.hdf5"])["path"] == "weights.04-0.9813.hdf5"
    assert run_json(["latest", str(tmp_path), "weights.{epoch:02d}-{acc:.4f}.hdf5"])["path"].startswith("weights.")


def test_errors_are_one_line_with_documented_exit_codes(tmp_path: Path) -> None:
    missing = CliRunner().invoke(cli, ["ls", str(tmp_path / "nothing")])
    assert missing.exit_code == 3 and missing.stderr.count("\n") == 1 and "no store" in missing.stderr
    bad = CliRunner().invoke(cli, ["-o", "novalue", "ls", str(tmp_path)])
    assert bad.exit_code == 2 and "key=value" in bad.stderr
    scheme = CliRunner().invoke(cli, ["ls", "nosuch://x/y"])
    assert scheme.exit_code == 2 and "nosuch" in scheme.stderr
    with pytest.raises(ckptstore.StoreNotFoundError):
        CliRunner().invoke(cli, ["--debug", "ls", str(tmp_path / "nothing")], catch_exceptions=False)


def test_python_dash_m_runs_the_command(tmp_path: Path) -> None:
    store = ckptstore.open(tmp_path / "s")
    store.save_state(1, {"a": 1}, serializer="json")
    proc = subprocess.run(
        [sys.executable, "-m", "ckptstore", "ls", str(tmp_path / "s"), "--json"],
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert proc.returncode == 0, proc.stderr
    assert [r["epoch"] for r in json.loads(proc.stdout)] == [1]
    missing = subprocess.run(
        [sys.executable, "-m", "ckptstore", "show", str(tmp_path / "s"), "7"],
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert missing.returncode == 3 and "epoch 7" in missing.stderr


def test_the_cli_reference_page_is_generated_from_the_help() -> None:
    page = Path(__file__).resolve().parent.parent / "docs" / "cli.md"
    assert page.read_text() == reference_markdown(), "regenerate: python -m ckptstore.cli_reference > docs/cli.md"
