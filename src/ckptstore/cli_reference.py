"""``python -m ckptstore.cli_reference > docs/cli.md`` regenerates the command reference page."""

from .cli import reference_markdown

if __name__ == "__main__":
    print(reference_markdown(), end="")
