"""Shared bits of the examples: arguments, the simulated crash, the final report."""

from __future__ import annotations

import argparse
import os
import signal
from typing import Any


def parse(description: str, epochs: int = 5) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=description)
    parser.add_argument("--store", default=None, help="store URL (default: runs/<example>)")
    parser.add_argument("--epochs", type=int, default=epochs)
    parser.add_argument("--kill-after", type=int, default=0, help="SIGKILL this process after that many epochs")
    return parser.parse_args()


def maybe_kill(epoch: int, kill_after: int) -> None:
    if kill_after and epoch >= kill_after:
        print(f"-- simulated crash after epoch {epoch} (SIGKILL) --", flush=True)
        os.kill(os.getpid(), signal.SIGKILL)


def report(store: Any) -> None:
    """Print the store's table and which epoch is best."""
    print(store.table())
    print(f"best: epoch {store.best().epoch}")
