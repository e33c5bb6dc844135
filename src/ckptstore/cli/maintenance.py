"""The commands that check or change a store, each a thin call to one store method.

They are ``verify``, ``gc``, ``pin``, ``unpin``, ``rollback``, ``reindex`` and ``metadata``. The store
method keeps the guarantees (gc never deletes best, last, pinned or other runs' checkpoints); what is
here only reads the arguments (keep policies, ``--set key=value``) and prints what happened.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import click
from rich.table import Table

from ckptstore import keep as keep_policies
from ckptstore.errors import InvalidArgumentError

from ._app import State, cli, console, epoch_argument, json_option, json_out, parse_value, pass_state, split_pair

__all__ = [
    "gc_command",
    "metadata_command",
    "pin_command",
    "reindex_command",
    "rollback_command",
    "unpin_command",
    "verify_command",
]


@cli.command("verify")
@click.argument("url")
@click.argument("epoch", required=False, type=click.IntRange(min=0))
@json_option
@pass_state
def verify_command(state: State, url: str, epoch: int | None, as_json: bool) -> None:
    """Re-hash one checkpoint or all; exit status 1 on a mismatch, naming the file."""
    store = state.open(url)
    verified = store.verify(epoch)
    if as_json:
        json_out({"verified": [c.epoch for c in verified]})
        return
    console.print(f"OK: {len(verified)} checkpoint(s) verified: {', '.join(str(c.epoch) for c in verified)}")


_KEEP_FACTORIES = {
    "linear": keep_policies.linear,
    "exponential": keep_policies.exponential,
    "every": keep_policies.every,
    "best": keep_policies.best,
}


def _keep_policy(specs: Sequence[str]) -> Any:
    policies = []
    for spec in specs:
        name, _, arg = spec.partition(":")
        factory = _KEEP_FACTORIES.get(name)
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
@json_option
@pass_state
def gc_command(state: State, url: str, keep: tuple[str, ...], run_id: str | None, dry_run: bool, as_json: bool) -> None:
    """Apply a keep policy and remove leftovers; never deletes best, last, pinned or other runs'."""
    config: dict[str, Any] = {"keep": _keep_policy(keep)}
    if run_id:
        config["run_id"] = run_id
    store = state.open(url, **config)
    report = store.gc(dry_run=dry_run)
    if as_json:
        json_out(
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
@epoch_argument
@pass_state
def pin_command(state: State, url: str, epoch: int) -> None:
    """Protect EPOCH from every keep policy."""
    state.open(url).pin(epoch)
    console.print(f"pinned epoch {epoch}")


@cli.command("unpin")
@click.argument("url")
@epoch_argument
@pass_state
def unpin_command(state: State, url: str, epoch: int) -> None:
    """Remove the protection of pin."""
    state.open(url).unpin(epoch)
    console.print(f"unpinned epoch {epoch}")


@cli.command("rollback")
@click.argument("url")
@epoch_argument
@pass_state
def rollback_command(state: State, url: str, epoch: int) -> None:
    """Point last at EPOCH and retire every later epoch (so they can be written again)."""
    target = state.open(url).rollback(epoch)
    console.print(f"last -> epoch {target.epoch}")


@cli.command("reindex")
@click.argument("url")
@pass_state
def reindex_command(state: State, url: str) -> None:
    """Rebuild index.json from the manifests."""
    record = state.open(url).reindex()
    console.print(f"index rebuilt: {len(record['checkpoints'])} checkpoint(s)")


@cli.command("metadata")
@click.argument("url")
@epoch_argument
@click.option("--set", "sets", multiple=True, metavar="KEY=VALUE", help="Set a top-level key (value: JSON or text).")
@click.option("--remove", "removes", multiple=True, metavar="KEY", help="Remove a top-level key.")
@pass_state
def metadata_command(state: State, url: str, epoch: int, sets: tuple[str, ...], removes: tuple[str, ...]) -> None:
    """Show, add to, or remove from a checkpoint's metadata (printed as JSON)."""
    checkpoint = state.open(url).get(epoch)
    values: dict[str, Any] = {}
    for pair in sets:
        key, value = split_pair(pair, "--set")
        values[key] = parse_value(value)
    result = checkpoint.metadata
    if values:
        result = checkpoint.add_metadata(values)
    if removes:
        result = checkpoint.remove_metadata(list(removes))
    json_out(result)
