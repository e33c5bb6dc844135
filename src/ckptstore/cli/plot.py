"""``plot``: a metric by epoch as a PNG, showing what the keep policy kept and deleted.

Kept apart because it is the only command that needs matplotlib (the ``plot`` extra, imported only
when a plot is drawn) and the only one that reads the index's history of deleted checkpoints.
"""

from __future__ import annotations

from pathlib import Path

import click

from ckptstore.errors import BackendUnavailableError, CheckpointNotFoundError, InvalidArgumentError
from ckptstore.index import history_entry  # one reading of index.json's history for the index and plot
from ckptstore.store import CheckpointStore

from ._app import State, cli, console, marks_of, pass_state

__all__ = ["plot_command", "plot_store"]


@cli.command("plot")
@click.argument("url")
@click.option("--metric", help="The metric to plot (default: the monitor).")
@click.option("-o", "--output", type=click.Path(dir_okay=False), help="The PNG to write (default: <metric>.png).")
@pass_state
def plot_command(state: State, url: str, metric: str | None, output: str | None) -> None:
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
        entry = history_entry(item)
        if entry is not None and metric in entry["metrics"] and entry["epoch"] not in kept:
            deleted[entry["epoch"]] = entry["metrics"][metric]
    if not kept and not deleted:
        raise CheckpointNotFoundError(f"no checkpoint in {store.url} has the metric {metric!r}")
    marks = marks_of(store)
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
