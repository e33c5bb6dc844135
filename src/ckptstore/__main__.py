"""``python -m ckptstore``: the ``ckptstore`` command."""

import sys


def _run() -> int:
    try:
        from .cli import main
    except ImportError as exc:  # click or rich missing
        print(f"ckptstore: the command needs the 'cli' extra: pip install 'ckptstore[cli]' ({exc})", file=sys.stderr)
        return 4
    return main()


if __name__ == "__main__":
    sys.exit(_run())
