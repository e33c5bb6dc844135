"""``plot``: a metric by epoch as a PNG, showing what the keep policy kept and deleted.

Kept apart because it is the only command that needs matplotlib (the ``plot`` extra, imported only
when a plot is drawn) and the only one that reads the index's history of deleted checkpoints.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import click

from ckptstore.errors import BackendUnavailableError, CheckpointNotFoundError, InvalidArgumentError
from ckptstore.index import history_entry  # one reading of index.json's history for the index and plot
from ckptstore.store import CheckpointStore

from ._app import State, check_metric, cli, console, json_option, json_out, marks_of, pass_state, store_options, unit_of

__all__ = ["draw", "plot_command", "plot_store"]


@cli.command("plot")
@click.argument("url")
@click.option("--metric", help="The metric to plot; best is marked by it (default: the store's monitor).")
@click.option("--output", type=click.Path(dir_okay=False), help="The PNG to write (default: <metric>.png).")
@json_option
@store_options
@pass_state
def plot_command(state: State, url: str, metric: str | None, output: str | None, as_json: bool) -> None:
    """Plot a metric by epoch, marking best (by that metric), last, pinned, kept and deleted checkpoints."""
    store = state.open(url)
    name = metric or store.config.monitor
    if name is None:
        raise click.UsageError("plot needs --metric NAME: the store records no monitor")
    if metric is not None and metric != store.config.monitor:
        check_metric(store, metric, "--metric")
    path = Path(output or f"{name}.png")
    written = plot_store(store, name, path)
    if as_json:
        json_out({"output": str(written), "metric": name})
        return
    console.print(f"wrote {written}", highlight=False)


def _points(store: CheckpointStore, metric: str) -> tuple[dict[int, float], dict[int, float], str]:
    """The metric of kept checkpoints, of those the keep policy deleted (from the index's history), and the unit."""
    listed = store.list(sort_by="epoch")
    kept = {c.epoch: c.all_metrics[metric] for c in listed if metric in c.all_metrics}
    history = store.index().get("history")
    deleted: dict[int, float] = {}
    for item in history.values() if isinstance(history, dict) else ():  # a cache: junk entries are skipped
        entry = history_entry(item)
        if entry is not None and metric in entry["metrics"] and entry["epoch"] not in kept:
            deleted[entry["epoch"]] = entry["metrics"][metric]
    if not kept and not deleted:
        raise CheckpointNotFoundError(f"no checkpoint in {store.url} has the metric {metric!r}")
    return kept, deleted, unit_of(listed)


def _best_epoch(store: CheckpointStore, metric: str, kept: dict[int, float]) -> int | None:
    """The best kept checkpoint by ``metric`` (the store's mode for its monitor, else by the metric's name)."""
    if not kept:
        return None
    try:
        return store.best(metric).epoch
    except (CheckpointNotFoundError, InvalidArgumentError):
        return None


def draw(store: CheckpointStore, metric: str) -> Any:
    """The figure of ``metric`` by epoch: kept, deleted, best (by ``metric``), last, pinned; legend beside the axes."""
    try:
        import matplotlib

        matplotlib.use("Agg")
        import matplotlib.pyplot as plt
    except ImportError:
        raise BackendUnavailableError("plot needs matplotlib: pip install 'ckptstore[plot]'") from None
    kept, deleted, unit = _points(store, metric)
    marks = marks_of(store)
    best = _best_epoch(store, metric, kept)
    points = sorted({**deleted, **kept}.items())
    fig, ax = plt.subplots(figsize=(9, 4.5))
    ax.plot([e for e, _ in points], [v for _, v in points], color="0.6", linewidth=1, zorder=1, label=metric)
    if deleted:
        ax.scatter(list(deleted), list(deleted.values()), marker="x", color="0.5", label="deleted by the keep policy")
    if kept:
        ax.scatter(list(kept), list(kept.values()), color="tab:blue", zorder=2, label="kept")
    chosen_by = {
        "best": [best] if best is not None else [],
        "last": [e for e in kept if "last" in marks(e)],
        "pinned": [e for e in kept if "pinned" in marks(e)],
    }
    for label, (marker, color, size) in (
        ("best", ("*", "tab:green", 220)),
        ("last", ("D", "tab:orange", 80)),
        ("pinned", ("s", "tab:red", 90)),
    ):
        chosen = chosen_by[label]
        if chosen:
            text = f"best by {metric}" if label == "best" else label
            ax.scatter(chosen, [kept[e] for e in chosen], marker=marker, color=color, s=size, zorder=3, label=text)
    ax.set_xlabel(unit)
    ax.set_ylabel(metric)
    ax.set_title(f"{store.url}", fontsize="medium")
    ax.grid(alpha=0.3)
    ax.legend(loc="upper left", bbox_to_anchor=(1.02, 1.0), borderaxespad=0.0, fontsize="small")  # never on the curve
    fig.tight_layout()
    return fig


def plot_store(store: CheckpointStore, metric: str, output: Path) -> Path:
    """Draw ``metric`` by epoch into ``output`` (PNG): kept checkpoints, deleted ones, best, last, pinned."""
    fig = draw(store, metric)
    import matplotlib.pyplot as plt

    output.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(output, dpi=100, bbox_inches="tight")
    plt.close(fig)
    return output
