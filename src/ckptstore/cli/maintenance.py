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
from ckptstore.errors import CheckpointNotFoundError, InvalidArgumentError, VerificationError

from ._app import (
    State,
    cli,
    console,
    json_option,
    json_out,
    parse_value,
    pass_state,
    pick,
    selector_argument,
    split_pair,
    store_options,
)

__all__ = [
    "gc_command",
    "metadata_command",
    "pin_command",
    "reindex_command",
    "rollback_command",
    "unpin_command",
    "verify_command",
]


_metric_option = click.option("--metric", help="The metric that ranks best (default: the store's monitor).")


@cli.command("verify")
@click.argument("url")
@selector_argument(default="all", extra=("all",))
@_metric_option
@json_option
@store_options
@pass_state
def verify_command(state: State, url: str, which: str | int, metric: str | None, as_json: bool) -> None:
    """Re-hash checkpoints; exit status 1 on a mismatch, naming the file.

    WHICH is all (the default), best, latest or an EPOCH. --json prints what verified and what
    failed, also on a mismatch.
    """
    store = state.open(url)
    try:
        if which == "all":
            verified = store.verify()
        else:
            epoch = pick(store, which, metric).epoch
            verified = store.verify(epoch)
    except VerificationError as exc:
        if as_json:
            json_out({"ok": False, "error": str(exc), **_each(store, which, metric)})
        raise
    if as_json:
        json_out({"ok": True, "verified": [c.epoch for c in verified], "failed": []})
        return
    console.print(f"OK: {len(verified)} checkpoint(s) verified: {', '.join(str(c.epoch) for c in verified)}")


def _each(store: Any, which: str | int, metric: str | None) -> dict[str, Any]:
    """Verify one checkpoint at a time (after a failure): which verified, which failed and why."""
    verified: list[int] = []
    failed: list[dict[str, Any]] = []
    if which == "all":
        epochs = store.epochs()
    else:
        try:
            epochs = [pick(store, which, metric).epoch]
        except VerificationError as exc:
            return {"verified": [], "failed": [{"epoch": which, "error": str(exc)}]}
    for epoch in epochs:
        try:
            store.get(epoch, verify=True)
            verified.append(epoch)
        except CheckpointNotFoundError:
            continue
        except VerificationError as exc:
            failed.append({"epoch": epoch, "error": str(exc)})
    return {"verified": verified, "failed": failed}


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
@store_options
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
@selector_argument(default=None)
@_metric_option
@json_option
@store_options
@pass_state
def pin_command(state: State, url: str, which: str | int, metric: str | None, as_json: bool) -> None:
    """Protect a checkpoint from every keep policy.

    WHICH is best, latest or an EPOCH (required).
    """
    store = state.open(url)
    epoch = pick(store, which, metric).epoch
    store.pin(epoch)
    if as_json:
        json_out({"pinned": epoch, "pins": store.pinned()})
        return
    console.print(f"pinned epoch {epoch}")


@cli.command("unpin")
@click.argument("url")
@selector_argument(default=None)
@_metric_option
@json_option
@store_options
@pass_state
def unpin_command(state: State, url: str, which: str | int, metric: str | None, as_json: bool) -> None:
    """Remove the protection of pin.

    WHICH is best, latest or an EPOCH (required).
    """
    store = state.open(url)
    epoch = which if isinstance(which, int) else pick(store, which, metric).epoch
    store.unpin(epoch)
    if as_json:
        json_out({"unpinned": epoch, "pins": store.pinned()})
        return
    console.print(f"unpinned epoch {epoch}")


@cli.command("rollback")
@click.argument("url")
@selector_argument(default=None)
@_metric_option
@click.option("--dry-run", is_flag=True, help="Only say which epochs would be retired (the target is verified).")
@json_option
@store_options
@pass_state
def rollback_command(
    state: State, url: str, which: str | int, metric: str | None, dry_run: bool, as_json: bool
) -> None:
    """Point last at a checkpoint and retire every later epoch.

    WHICH is best, latest or an EPOCH (required). Retired epochs leave the store (local stores
    keep them in retired/ until the next gc), so a resumed run can write those epochs again. The
    target is verified first.
    """
    store = state.open(url)
    target = pick(store, which, metric)
    later = [e for e in store.epochs() if e > target.epoch]
    if dry_run:
        store.get(target.epoch, verify=True)
    else:
        store.rollback(target.epoch)
    if as_json:
        json_out({"dry_run": dry_run, "last": target.epoch, "retired": later})
        return
    verb = "would retire" if dry_run else "retired"
    retired = f"{verb} epoch(s) {', '.join(map(str, later))}" if later else f"{verb} nothing (no later epoch)"
    console.print(f"{'(dry run) ' if dry_run else ''}last -> epoch {target.epoch}; {retired}", highlight=False)


@cli.command("reindex")
@click.argument("url")
@json_option
@store_options
@pass_state
def reindex_command(state: State, url: str, as_json: bool) -> None:
    """Rebuild index.json from the manifests."""
    record = state.open(url).reindex()
    epochs = sorted(int(name) for name in record.get("checkpoints", {}) if str(name).isdigit())
    if as_json:
        json_out({"checkpoints": len(record.get("checkpoints", {})), "epochs": epochs})
        return
    console.print(f"index rebuilt: {len(record['checkpoints'])} checkpoint(s)")


@cli.command("metadata")
@click.argument("url")
@selector_argument(default=None)
@_metric_option
@click.option("--set", "sets", multiple=True, metavar="KEY=VALUE", help="Set a top-level key (value: JSON or text).")
@click.option("--remove", "removes", multiple=True, metavar="KEY", help="Remove a top-level key.")
@json_option
@store_options
@pass_state
def metadata_command(
    state: State,
    url: str,
    which: str | int,
    metric: str | None,
    sets: tuple[str, ...],
    removes: tuple[str, ...],
    as_json: bool,
) -> None:
    """Show, add to, or remove from a checkpoint's metadata.

    WHICH is best, latest or an EPOCH (required). Prints the metadata after the change as JSON
    (with or without --json).
    """
    del as_json  # the metadata is JSON either way
    checkpoint = pick(state.open(url), which, metric)
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
