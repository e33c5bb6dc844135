"""The command reference page (``docs/cli.md``), generated from the commands' own help.

Generating it keeps the page from drifting away from the options; a test compares the two. The
prose around the help (storage options, selectors, output, completion) is here too, so the page is
one generated file. Help text is wrapped at :data:`WIDTH` columns so no code block of the docs site
scrolls sideways at 1280 px.
"""

from __future__ import annotations

from typing import Any

import click

from ._app import DEFAULT_TIMEOUT, EXIT_MEANINGS, cli

__all__ = ["WIDTH", "reference_markdown"]

WIDTH = 80
"""Columns of the help text on the page."""

_GUIDE = f"""\
Every command takes a store URL: a path, `s3://bucket/prefix`, `gs://bucket/prefix`, or any other
URL `ckptstore.open()` accepts. Install the command with `pip install 'ckptstore[cli]'` (`plot` also
needs `ckptstore[plot]`).

## Storage options and timeouts

Storage options (endpoint, credentials, ...) are `-S KEY=VALUE` (`--storage-option`), repeatable,
before or after the command name; dotted keys nest and values are JSON or text. They add to
`CKPTSTORE_STORAGE_OPTIONS` (a JSON object) and to each backend's usual environment variables
(`AWS_*`, `GOOGLE_APPLICATION_CREDENTIALS`). `-o KEY=VALUE` before the command name still works.

```bash
ckptstore ls s3://bucket/run1 -S endpoint_url=http://127.0.0.1:8333 \\
    -S key=$KEY -S secret=$SECRET
```

A backend that does not answer is retried for `--timeout` seconds (default {DEFAULT_TIMEOUT:g}, or
`CKPTSTORE_TIMEOUT`), then the command stops with one line: a wrong endpoint costs seconds, not
minutes. Raise it for a server that is restarting.

## Choosing a checkpoint

Every command that acts on one checkpoint names it the same way, with `WHICH`:

| WHICH | the checkpoint |
|---|---|
| `best` | best by the store's monitor, or by `--metric NAME` |
| `latest` (or `last`) | the most recent one |
| `7` | epoch (or step) 7 |

The defaults: `show` shows `latest`; `download` fetches `best` (`--best`, `--latest`, `--epoch N`
say the same; two different choices are a usage error); `verify` checks `all`; `pin`, `unpin`,
`rollback` and `metadata` need one. `--metric` must be a metric the store records: a typo is a
usage error that lists them (also for `ls --sort-by`).

## Listing runs

`ckptstore ls runs/` of a folder or bucket prefix that holds several stores lists the stores below
it: name, checkpoints, best with its value, last, size and last commit (`--json`, `--csv`). In
Python: `ckptstore.stores("runs/")`. Stores whose checkpoints are numbered by global step (the
Hugging Face Trainer's) show `step` where others show `epoch`.

## Output

Every command takes `--json`; `ls` also takes `--csv`, and `--columns A,B` or `--metrics A,B` to
choose columns. `log --json` prints records (time, host, pid, event, message). `verify --json`
prints what verified and what failed, also when it fails (exit status 1). Output piped into
`head` stops quietly (exit status 0). Errors are one line on stderr (`--debug` shows the traceback
and the log lines).

`select URL REGEX` matches the *whole* file name (or its whole path below URL), as Guild does:
`weights\\.(\\d+)` does not match `weights.12.hdf5`; write `weights\\.(\\d+)\\.hdf5`, or `.*?(\\d+).*`
to search anywhere in the name.

## Shell completion

Commands, options and `best`/`latest` complete in bash, zsh and fish (click's completion). Add one
line to your shell's startup file:

```bash
eval "$(_CKPTSTORE_COMPLETE=bash_source ckptstore)"   # in ~/.bashrc
eval "$(_CKPTSTORE_COMPLETE=zsh_source ckptstore)"    # in ~/.zshrc
_CKPTSTORE_COMPLETE=fish_source ckptstore | source    # in config.fish
```
"""


def reference_markdown() -> str:
    """The CLI reference page, generated from the commands' own help (docs/cli.md)."""
    lines = ["# Command reference", "", _GUIDE, "## ckptstore", ""]
    settings: dict[str, Any] = {
        "terminal_width": WIDTH,
        "max_content_width": WIDTH,
        "help_option_names": ["-h", "--help"],
    }
    ctx = click.Context(cli, info_name="ckptstore", **settings)
    lines += ["```text", cli.get_help(ctx), "```", ""]
    for name in sorted(cli.commands):
        command = cli.commands[name]
        sub = click.Context(command, info_name=name, parent=ctx, **settings)  # Usage: ckptstore NAME ...
        lines += [f"## ckptstore {name}", "", "```text", command.get_help(sub), "```", ""]
    lines += ["## Exit status", "", "| code | meaning |", "|---|---|"]
    lines += [f"| {code} | {text} |" for code, text in EXIT_MEANINGS.items()]
    return "\n".join(lines) + "\n"
