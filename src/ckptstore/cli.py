"""The ``ckptstore`` command: find, compare, annotate, fetch and clean checkpoints from a shell.

Every command takes a store URL (a path, ``s3://bucket/prefix``, ``gs://...``, ...). Storage options
come from ``--option key=value`` (dotted keys nest: ``-o client_kwargs.endpoint_url=http://...``), from
``CKPTSTORE_STORAGE_OPTIONS`` (a JSON object), and from each backend's usual environment variables
(``AWS_*``, ``GOOGLE_APPLICATION_CREDENTIALS``). Read commands take ``--json``. Errors are one line on
stderr (``--debug`` shows the traceback) and the exit status says what went wrong:

====  ==========================================================================
code  meaning
====  ==========================================================================
0     success
1     a checkpoint failed verification (the message names the file)
2     bad usage or an invalid argument
3     not found: no store, no such checkpoint, no file matching the pattern
4     the backend refused: credentials, a missing package, an unreachable server
5     any other ckptstore error (a conflict, a failed write)
====  ==========================================================================

Needs the ``cli`` extra (click and rich); ``plot`` also needs the ``plot`` extra (matplotlib).
"""

from __future__ import annotations

import json
import os
import sys
from collections.abc import Callable, Iterator, Sequence
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import click
from rich.console import Console
from rich.markup import escape
from rich.progress import BarColumn, DownloadColumn, Progress, TextColumn, TransferSpeedColumn
from rich.table import Table

import ckptstore
from ckptstore import keep as keep_policies
from ckptstore._redact import redact, redact_url, scrub_exception
from ckptstore.checkpoint import Checkpoint
from ckptstore.errors import (
    BackendAuthError,
    BackendUnavailableError,
    CheckpointNotFoundError,
    CkptStoreError,
    InvalidArgumentError,
    StoreNotFoundError,
    VerificationError,
)
from ckptstore.store import (
    CheckpointStore,
    _history_entry,  # one reading of index.json's history for gc and plot
    _human,  # one size format for the table, the log and the CLI
)

__all__ = ["EXIT_CODES", "cli", "main", "reference_markdown"]

EXIT_CODES = {"ok": 0, "verification": 1, "usage": 2, "not_found": 3, "backend": 4, "other": 5}

console = Console()
err_console = Console(stderr=True)


def _exit_code(exc: BaseException) -> int:
    if isinstance(exc, VerificationError):
        return EXIT_CODES["verification"]
    if isinstance(exc, (CheckpointNotFoundError, StoreNotFoundError)):
        return EXIT_CODES["not_found"]
    if isinstance(exc, InvalidArgumentError):
        return EXIT_CODES["usage"]
    if isinstance(exc, (BackendAuthError, BackendUnavailableError, OSError)):
        return EXIT_CODES["backend"]
    return EXIT_CODES["other"]


# -- options -------------------------------------------------------------------------------------------
def _parse_value(text: str) -> Any:
    try:
        return json.loads(text)
    except ValueError:
        return text


def storage_options(pairs: Sequence[str]) -> dict[str, Any]:
    """``CKPTSTORE_STORAGE_OPTIONS`` (JSON) updated by ``key=value`` pairs (dotted keys nest, values JSON or text)."""
    options: dict[str, Any] = {}
    env = os.environ.get("CKPTSTORE_STORAGE_OPTIONS")
    if env:
        loaded = _parse_value(env)
        if not isinstance(loaded, dict):
            raise InvalidArgumentError("CKPTSTORE_STORAGE_OPTIONS must be a JSON object")
        options.update(loaded)
    for pair in pairs:
        key, sep, value = pair.partition("=")
        if not sep or not key:
            raise InvalidArgumentError(f"--option takes key=value, got {pair!r}")
        target = options
        *parents, leaf = key.split(".")
        for parent in parents:
            target = target.setdefault(parent, {})
            if not isinstance(target, dict):
                raise InvalidArgumentError(f"--option {key}: {parent!r} is not a mapping")
        target[leaf] = _parse_value(value)
    return options


class _State:
    def __init__(self, options: Sequence[str], debug: bool) -> None:
        self.option_pairs = list(options)
        self.debug = debug

    def options(self) -> dict[str, Any] | None:
        return storage_options(self.option_pairs) or None

    def open(self, url: str, **config: Any) -> CheckpointStore:
        """Open an existing store with the monitor and mode it recorded (``--monitor`` ranks, it does not rebind)."""
        return ckptstore.open(url, create=False, storage_options=self.options(), **config)


pass_state = click.make_pass_decorator(_State)


class _Group(click.Group):
    """Turns ckptstore errors into one line and a documented exit status."""

    def invoke(self, ctx: click.Context) -> Any:
        try:
            return super().invoke(ctx)
        except (click.exceptions.Exit, click.exceptions.Abort, click.ClickException):
            raise
        except CkptStoreError as exc:
            state = ctx.find_object(_State)
            scrub_exception(exc)  # also what --debug prints: no secret in the message or its causes
            if state is not None and state.debug:
                raise
            err_console.print(f"[bold red]ckptstore: error:[/] {_shown(exc)}", highlight=False, soft_wrap=True)
            ctx.exit(_exit_code(exc))
        except OSError as exc:
            state = ctx.find_object(_State)
            scrub_exception(exc)
            if state is not None and state.debug:
                raise
            err_console.print(f"[bold red]ckptstore: backend error:[/] {_shown(exc)}", highlight=False, soft_wrap=True)
            ctx.exit(EXIT_CODES["backend"])


def _shown(exc: BaseException) -> str:
    """The error's message fit for the terminal: secrets redacted, rich markup (``[/path]``) escaped."""
    return escape(redact(str(exc)))


@click.group(cls=_Group, context_settings={"help_option_names": ["-h", "--help"]})
@click.option(
    "-o",
    "--option",
    "options",
    multiple=True,
    metavar="KEY=VALUE",
    help="A storage option (repeatable; dotted keys nest; values are JSON or text).",
)
@click.option("--debug", is_flag=True, help="Show tracebacks instead of one-line errors.")
@click.version_option(ckptstore.__version__, prog_name="ckptstore")
@click.pass_context
def cli(ctx: click.Context, options: tuple[str, ...], debug: bool) -> None:
    """Find, compare, annotate, fetch and clean checkpoints in a ckptstore store."""
    ctx.obj = _State(options, debug)


def _json_out(data: Any) -> None:
    click.echo(json.dumps(data, indent=2, default=str))


def _which(store: CheckpointStore, which: str, metric: str | None = None) -> Checkpoint:
    if which == "best":
        return store.best(metric)
    if which in ("latest", "last"):
        return store.latest()
    try:
        epoch = int(which)
    except ValueError:
        raise InvalidArgumentError(f"expected best, latest or an epoch number, got {which!r}") from None
    return store.get(epoch)


def _marks(store: CheckpointStore) -> Callable[[int], list[str]]:
    last, best, pins = store._read_pointer("last"), store._read_pointer("best"), set(store.pinned())

    def marks(epoch: int) -> list[str]:
        return [m for m, on in (("best", epoch == best), ("last", epoch == last), ("pinned", epoch in pins)) if on]

    return marks


def _row(c: Checkpoint, marks: list[str]) -> dict[str, Any]:
    return {
        "epoch": c.epoch,
        "committed_at": c.committed_at.isoformat(),
        "size": c.size,
        "metrics": c.all_metrics,
        "marks": marks,
        "run_id": c.run_id,
        "url": c.url,
    }


# -- ls, show --------------------------------------------------------------------------------------------
@cli.command("ls")
@click.argument("url")
@click.option("--sort-by", help="epoch, time, or a metric (default: the monitor, best first).")
@click.option("--order", type=click.Choice(["asc", "desc"]), help="Default: best first for a metric.")
@click.option("--top-n", type=click.IntRange(min=0), help="Show only the first N.")
@click.option("--monitor", help="The metric that defines best (default: the one the store recorded).")
@click.option("--mode", type=click.Choice(["min", "max", "auto"]), help="Whether smaller or larger is better.")
@click.option("--json", "as_json", is_flag=True, help="Print JSON.")
@pass_state
def ls_command(
    state: _State,
    url: str,
    sort_by: str | None,
    order: str | None,
    top_n: int | None,
    monitor: str | None,
    mode: str | None,
    as_json: bool,
) -> None:
    """List checkpoints with time, size, metrics and best/last/pinned marks (like Determined)."""
    store = state.open(url)
    if sort_by is None and monitor is not None:  # rank by another metric than the store's monitor
        sort_by = monitor
        if order is None and mode in ("min", "max"):
            order = "asc" if mode == "min" else "desc"
    checkpoints = store.list(sort_by=sort_by, order=order, limit=top_n)  # type: ignore[arg-type]
    marks = _marks(store)
    if as_json:
        _json_out([_row(c, marks(c.epoch)) for c in checkpoints])
        return
    metric_names = sorted({m for c in checkpoints for m in c.all_metrics})
    table = Table(title=f"{store.url}: {len(checkpoints)} checkpoint(s)", title_justify="left")
    table.add_column("epoch", justify="right")
    table.add_column("committed (UTC)")
    table.add_column("size", justify="right")
    for name in metric_names:
        table.add_column(name, justify="right")
    table.add_column("marks")
    for c in checkpoints:
        table.add_row(
            str(c.epoch),
            c.committed_at.strftime("%Y-%m-%d %H:%M:%S"),
            _human(c.size),
            *(f"{c.all_metrics[m]:.4f}" if m in c.all_metrics else "-" for m in metric_names),
            ",".join(marks(c.epoch)),
        )
    console.print(table)
    console.print(f"[dim]see the curve: ckptstore plot {escape(redact_url(url))}[/]", highlight=False)


@cli.command("show")
@click.argument("url")
@click.argument("which", default="latest")
@click.option("--monitor", help="The metric that defines best.")
@click.option("--json", "as_json", is_flag=True, help="Print JSON.")
@pass_state
def show_command(state: _State, url: str, which: str, monitor: str | None, as_json: bool) -> None:
    """Show one checkpoint (best, latest or an EPOCH): manifest, files, metadata."""
    store = state.open(url)
    c = _which(store, which, monitor)
    info = dict(c.info())
    info["marks"] = _marks(store)(c.epoch)
    info["manifest"] = c.manifest.to_dict()
    if as_json:
        _json_out(info)
        return
    console.print(f"[bold]epoch {c.epoch}[/] {' '.join(info['marks'])}  {c.url}", highlight=False)
    console.print(f"committed {c.committed_at.isoformat()}  run {c.run_id}  parent {c.parent}  size {_human(c.size)}")
    if c.manifest.serializer:
        console.print(f"serializer {c.manifest.serializer}")
    console.print(f"metrics {json.dumps(c.all_metrics)}")
    console.print(f"metadata {json.dumps(c.metadata)}")
    files = Table("file", "size", "xxh3-128")
    for path, entry in sorted(c.files.items()):
        files.add_row(path, _human(entry.size), entry.xxh3_128)
    console.print(files)
    console.print(f"[dim]see where it sits: ckptstore plot {escape(redact_url(url))}[/]", highlight=False)


# -- download --------------------------------------------------------------------------------------------
@contextmanager
def _progress_bar(enabled: bool) -> Iterator[Callable[[int, int, str], None] | bool]:
    if not enabled:
        yield False
        return
    with Progress(
        TextColumn("{task.description}"), BarColumn(), DownloadColumn(), TransferSpeedColumn(), console=err_console
    ) as progress:
        tasks: dict[str, Any] = {}

        def update(done: int, total: int, description: str) -> None:
            if description not in tasks:
                tasks[description] = progress.add_task(description, total=total)
            progress.update(tasks[description], completed=done)

        yield update


@cli.command("download")
@click.argument("url")
@click.option("--best", "pick", flag_value="best", help="The best checkpoint (the default).")
@click.option("--latest", "pick", flag_value="latest", help="The latest checkpoint.")
@click.option("--epoch", type=click.IntRange(min=0), help="This epoch.")
@click.option("--top-n", type=click.IntRange(min=1), help="The best N checkpoints.")
@click.option("--metric", help="The metric for --best and --top-n (default: the monitor).")
@click.option("--output-dir", type=click.Path(file_okay=False), default="checkpoints", show_default=True)
@click.option("--progress/--no-progress", default=None, help="Progress bar (default: on a terminal).")
@click.option("--json", "as_json", is_flag=True, help="Print JSON.")
@pass_state
def download_command(
    state: _State,
    url: str,
    pick: str | None,
    epoch: int | None,
    top_n: int | None,
    metric: str | None,
    output_dir: str,
    progress: bool | None,
    as_json: bool,
) -> None:
    """Download checkpoints into OUTPUT_DIR/<epoch>/, verified while reading."""
    store = state.open(url)
    which: Any = epoch if epoch is not None else (pick or "best")
    show = sys.stderr.isatty() if progress is None else progress
    with _progress_bar(show) as bar:
        paths = store.download(output_dir, which, top_n=top_n, metric=metric, progress=bar)
    if as_json:
        _json_out([str(p) for p in paths])
        return
    for path in paths:
        console.print(f"Local checkpoint path: {path}", highlight=False)


# -- verify, gc, pin, unpin, rollback, reindex -------------------------------------------------------------
@cli.command("verify")
@click.argument("url")
@click.argument("epoch", required=False, type=click.IntRange(min=0))
@click.option("--json", "as_json", is_flag=True, help="Print JSON.")
@pass_state
def verify_command(state: _State, url: str, epoch: int | None, as_json: bool) -> None:
    """Re-hash one checkpoint or all; exit status 1 on a mismatch, naming the file."""
    store = state.open(url)
    verified = store.verify(epoch)
    if as_json:
        _json_out({"verified": [c.epoch for c in verified]})
        return
    console.print(f"OK: {len(verified)} checkpoint(s) verified: {', '.join(str(c.epoch) for c in verified)}")


def _keep_policy(specs: Sequence[str]) -> Any:
    policies = []
    for spec in specs:
        name, _, arg = spec.partition(":")
        factory = {
            "linear": keep_policies.linear,
            "exponential": keep_policies.exponential,
            "every": keep_policies.every,
            "best": keep_policies.best,
        }.get(name)
        if factory is None or not arg.isdigit():
            raise InvalidArgumentError(f"--keep takes linear:N, exponential:N, every:K or best:N, got {spec!r}")
        policies.append(factory(int(arg)))
    if not policies:
        return None
    return policies[0] if len(policies) == 1 else keep_policies.any_of(*policies)


@cli.command("gc")
@click.argument("url")
@click.option("--keep", "keep", multiple=True, metavar="POLICY", help="linear:N, exponential:N, every:K, best:N.")
@click.option("--run-id", help="Whose checkpoints the policy applies to (default: the store's own run).")
@click.option("--dry-run", is_flag=True, help="Only show what would be deleted.")
@click.option("--json", "as_json", is_flag=True, help="Print JSON.")
@pass_state
def gc_command(
    state: _State, url: str, keep: tuple[str, ...], run_id: str | None, dry_run: bool, as_json: bool
) -> None:
    """Apply a keep policy and remove leftovers; never deletes best, last, pinned or other runs'."""
    config: dict[str, Any] = {"keep": _keep_policy(keep)}
    if run_id:
        config["run_id"] = run_id
    store = state.open(url, **config)
    report = store.gc(dry_run=dry_run)
    if as_json:
        _json_out(
            {
                "dry_run": report.dry_run,
                "decisions": [{"epoch": d.epoch, "action": d.action, "reason": d.reason} for d in report],
                "leftovers": [{"path": p, "reason": r} for p, r in report.leftovers],
            }
        )
        return
    table = Table("epoch", "action", "reason", title="gc (dry run)" if dry_run else "gc", title_justify="left")
    for d in report:
        table.add_row(str(d.epoch), "[red]delete[/]" if d.action == "delete" else "keep", d.reason)
    for path, reason in report.leftovers:
        table.add_row(path, "[red]remove[/]", reason)
    console.print(table)


@cli.command("pin")
@click.argument("url")
@click.argument("epoch", type=click.IntRange(min=0))
@pass_state
def pin_command(state: _State, url: str, epoch: int) -> None:
    """Protect EPOCH from every keep policy."""
    state.open(url).pin(epoch)
    console.print(f"pinned epoch {epoch}")


@cli.command("unpin")
@click.argument("url")
@click.argument("epoch", type=click.IntRange(min=0))
@pass_state
def unpin_command(state: _State, url: str, epoch: int) -> None:
    """Remove the protection of pin."""
    state.open(url).unpin(epoch)
    console.print(f"unpinned epoch {epoch}")


@cli.command("rollback")
@click.argument("url")
@click.argument("epoch", type=click.IntRange(min=0))
@pass_state
def rollback_command(state: _State, url: str, epoch: int) -> None:
    """Point last at EPOCH and retire every later epoch (so they can be written again)."""
    target = state.open(url).rollback(epoch)
    console.print(f"last -> epoch {target.epoch}")


@cli.command("reindex")
@click.argument("url")
@pass_state
def reindex_command(state: _State, url: str) -> None:
    """Rebuild index.json from the manifests."""
    record = state.open(url).reindex()
    console.print(f"index rebuilt: {len(record['checkpoints'])} checkpoint(s)")


# -- select, latest, log, metadata -------------------------------------------------------------------------
def _store_or_none(state: _State, url: str) -> CheckpointStore | None:
    try:
        return ckptstore.open(url, create=False, storage_options=state.options())
    except StoreNotFoundError:
        return None


def _print_match(match: ckptstore.FileMatch, as_json: bool, dest: str | None, rename: str | None) -> None:
    local = match.download(dest, rename=rename) if dest else None
    if as_json:
        _json_out(
            {
                "url": match.url,
                "path": match.path,
                "size": match.size,
                "modified": match.modified.isoformat(),
                "value": match.value,
                "epoch": match.epoch,
                "downloaded": str(local) if local else None,
            }
        )
        return
    console.print(match.url, highlight=False)
    if local:
        console.print(f"downloaded to {local}", highlight=False)


@cli.command("select")
@click.argument("url")
@click.argument("regex")
@click.option("--min", "mode", flag_value="min", help="The smallest number in the first group.")
@click.option("--max", "mode", flag_value="max", default=True, help="The largest number (default).")
@click.option("--download", "dest", type=click.Path(file_okay=False), help="Copy the file into this directory.")
@click.option("--rename", help="The name of the copy (Guild's rename).")
@click.option("--json", "as_json", is_flag=True, help="Print JSON.")
@pass_state
def select_command(
    state: _State, url: str, regex: str, mode: str, dest: str | None, rename: str | None, as_json: bool
) -> None:
    """Guild's select-min/select-max over file names in a store or any directory."""
    store = _store_or_none(state, url)
    if store is not None:
        match = store.select_min(regex) if mode == "min" else store.select_max(regex)
    else:
        select = ckptstore.select_min if mode == "min" else ckptstore.select_max
        match = select(url, regex, storage_options=state.options())
    _print_match(match, as_json, dest, rename)


@cli.command("latest")
@click.argument("url")
@click.argument("pattern")
@click.option("--download", "dest", type=click.Path(file_okay=False), help="Copy the file into this directory.")
@click.option("--rename", help="The name of the copy.")
@click.option("--json", "as_json", is_flag=True, help="Print JSON.")
@pass_state
def latest_command(state: _State, url: str, pattern: str, dest: str | None, rename: str | None, as_json: bool) -> None:
    """The newest file matching PATTERN (Keras template, glob, or re:REGEX) in a store or directory."""
    store = _store_or_none(state, url)
    if store is not None:
        match = store.resolve_latest(pattern)
    else:
        match = ckptstore.resolve_latest(url, pattern, storage_options=state.options())
    _print_match(match, as_json, dest, rename)


@cli.command("log")
@click.argument("url")
@click.option("--tail", type=click.IntRange(min=1), help="Only the last N lines.")
@click.option("--json", "as_json", is_flag=True, help="Print JSON.")
@pass_state
def log_command(state: _State, url: str, tail: int | None, as_json: bool) -> None:
    """Print the store's log (ckpt.log, or the log/ objects of an object store)."""
    lines = state.open(url).log()
    if tail:
        lines = lines[-tail:]
    if as_json:
        _json_out(lines)
        return
    for line in lines:
        click.echo(line)


@cli.command("metadata")
@click.argument("url")
@click.argument("epoch", type=click.IntRange(min=0))
@click.option("--set", "sets", multiple=True, metavar="KEY=VALUE", help="Set a top-level key (value: JSON or text).")
@click.option("--remove", "removes", multiple=True, metavar="KEY", help="Remove a top-level key.")
@pass_state
def metadata_command(state: _State, url: str, epoch: int, sets: tuple[str, ...], removes: tuple[str, ...]) -> None:
    """Show, add to, or remove from a checkpoint's metadata (printed as JSON)."""
    checkpoint = state.open(url).get(epoch)
    values: dict[str, Any] = {}
    for pair in sets:
        key, sep, value = pair.partition("=")
        if not sep or not key:
            raise InvalidArgumentError(f"--set takes key=value, got {pair!r}")
        values[key] = _parse_value(value)
    result = checkpoint.metadata
    if values:
        result = checkpoint.add_metadata(values)
    if removes:
        result = checkpoint.remove_metadata(list(removes))
    _json_out(result)


# -- plot ------------------------------------------------------------------------------------------------
@cli.command("plot")
@click.argument("url")
@click.option("--metric", help="The metric to plot (default: the monitor).")
@click.option("-o", "--output", type=click.Path(dir_okay=False), help="The PNG to write (default: <metric>.png).")
@pass_state
def plot_command(state: _State, url: str, metric: str | None, output: str | None) -> None:
    """Plot a metric by epoch, marking best, last, pinned, kept and deleted checkpoints."""
    store = state.open(url)
    name = metric or store.config.monitor
    if name is None:
        raise InvalidArgumentError("plot needs --metric (the store recorded no monitor)")
    path = Path(output or f"{name}.png")
    written = plot_store(store, name, path)
    console.print(f"wrote {written}", highlight=False)


def plot_store(store: CheckpointStore, metric: str, output: Path) -> Path:
    """Draw ``metric`` by epoch into ``output`` (PNG): kept checkpoints, deleted ones, best, last, pinned."""
    try:
        import matplotlib

        matplotlib.use("Agg")
        import matplotlib.pyplot as plt
    except ImportError:
        raise BackendUnavailableError("plot needs matplotlib: pip install 'ckptstore[plot]'") from None
    index = store.index()
    kept = {c.epoch: c.all_metrics[metric] for c in store.list(sort_by="epoch") if metric in c.all_metrics}
    history = index.get("history")
    deleted: dict[int, float] = {}
    for item in history.values() if isinstance(history, dict) else ():  # a cache: junk entries are skipped
        entry = _history_entry(item)
        if entry is not None and metric in entry["metrics"] and entry["epoch"] not in kept:
            deleted[entry["epoch"]] = entry["metrics"][metric]
    if not kept and not deleted:
        raise CheckpointNotFoundError(f"no checkpoint in {store.url} has the metric {metric!r}")
    marks = _marks(store)
    points = sorted({**deleted, **kept}.items())
    fig, ax = plt.subplots(figsize=(8, 4.5))
    ax.plot([e for e, _ in points], [v for _, v in points], color="0.6", linewidth=1, zorder=1, label=metric)
    if deleted:
        ax.scatter(list(deleted), list(deleted.values()), marker="x", color="0.5", label="deleted by the keep policy")
    if kept:
        ax.scatter(list(kept), list(kept.values()), color="tab:blue", zorder=2, label="kept")
    for label, style in (
        ("best", ("*", "tab:green", 220)),
        ("last", ("D", "tab:orange", 80)),
        ("pinned", ("s", "tab:red", 90)),
    ):
        chosen = [e for e in kept if label in marks(e)]
        if chosen:
            ax.scatter(
                chosen, [kept[e] for e in chosen], marker=style[0], color=style[1], s=style[2], zorder=3, label=label
            )
    ax.set_xlabel("epoch")
    ax.set_ylabel(metric)
    ax.set_title(f"{store.url}")
    ax.grid(alpha=0.3)
    ax.legend()
    fig.tight_layout()
    output.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(output, dpi=100)
    plt.close(fig)
    return output


# -- reference -------------------------------------------------------------------------------------------
def reference_markdown() -> str:
    """The CLI reference page, generated from the commands' own help (docs/cli.md)."""
    lines = ["# Command reference", "", "Generated from `ckptstore --help` and each command's help.", ""]
    settings: dict[str, Any] = {"terminal_width": 100, "max_content_width": 100, "help_option_names": ["-h", "--help"]}
    ctx = click.Context(cli, info_name="ckptstore", **settings)
    lines += ["## ckptstore", "", "```text", cli.get_help(ctx), "```", ""]
    for name in sorted(cli.commands):
        command = cli.commands[name]
        sub = click.Context(command, info_name=f"ckptstore {name}", parent=ctx, **settings)
        lines += [f"## ckptstore {name}", "", "```text", command.get_help(sub), "```", ""]
    lines += ["## Exit status", "", "| code | meaning |", "|---|---|"]
    meanings = {
        0: "success",
        1: "a checkpoint failed verification (the message names the file)",
        2: "bad usage or an invalid argument",
        3: "not found: no store, no such checkpoint, no file matching the pattern",
        4: "the backend refused: credentials, a missing package, an unreachable server",
        5: "any other ckptstore error (a conflict, a failed write)",
    }
    lines += [f"| {code} | {text} |" for code, text in meanings.items()]
    return "\n".join(lines) + "\n"


def main(argv: Sequence[str] | None = None) -> int:
    """Run the command; returns the exit status."""
    try:
        result = cli.main(args=list(argv) if argv is not None else None, prog_name="ckptstore", standalone_mode=False)
    except click.exceptions.Exit as exc:
        return int(exc.exit_code)
    except click.ClickException as exc:
        exc.show()
        return EXIT_CODES["usage"]
    except click.exceptions.Abort:
        err_console.print("aborted")
        return 130
    return int(result) if isinstance(result, int) else 0


if __name__ == "__main__":  # pragma: no cover
    sys.exit(main())
