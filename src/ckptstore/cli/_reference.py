"""The command reference page (``docs/cli.md``), generated from the commands' own help.

Generating it keeps the page from drifting away from the options; a test compares the two.
"""

from __future__ import annotations

from typing import Any

import click

from ._app import EXIT_MEANINGS, cli

__all__ = ["reference_markdown"]


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
    lines += [f"| {code} | {text} |" for code, text in EXIT_MEANINGS.items()]
    return "\n".join(lines) + "\n"
