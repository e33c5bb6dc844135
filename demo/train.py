"""ckptstore demo: train, get killed, resume, pick the best.

A small numpy MLP learns a synthetic two-moons-like task. A child process trains and checkpoints
every epoch into a local store; the parent SIGKILLs it partway (a real ``kill -9``, mid-run), then
resumes with ``store.restart("auto")`` in a new process, finishes, and prints the checkpoint table
with best and last marked. Runs in a few seconds on 2 CPU cores.

    python demo/train.py [--store runs/demo] [--epochs 30] [--kill-after 10]

The defaults are shown; the parent flushes its own lines before each child writes, so the
output reads in order also when piped (``| tee``, tox).
"""

from __future__ import annotations

import argparse
import shutil
import signal
import subprocess
import sys

import numpy as np

import ckptstore


def make_data(seed: int = 0) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
    rng = np.random.default_rng(seed)
    n = 4000
    t = rng.uniform(0, np.pi, n)
    label = rng.integers(0, 2, n)
    x = np.stack([np.cos(t) + label, np.sin(t) * (1 - 2 * label) + 0.5 * label], axis=1)
    x += rng.normal(0, 0.35, x.shape)
    split = 120  # a small training set, so the model overfits and the best epoch is not the last
    return x[:split], label[:split], x[split:], label[split:]


def init_params(seed: int = 1) -> dict[str, np.ndarray]:
    rng = np.random.default_rng(seed)
    return {
        "w1": rng.normal(0, 2.0, (2, 256)),
        "b1": np.zeros(256),
        "w2": rng.normal(0, 0.3, (256, 1)),
        "b2": np.zeros(1),
    }


def forward(p: dict[str, np.ndarray], x: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    h = np.tanh(x @ p["w1"] + p["b1"])
    out = 1 / (1 + np.exp(-(h @ p["w2"] + p["b2"])))
    return h, out[:, 0]


def loss_and_acc(p: dict[str, np.ndarray], x: np.ndarray, y: np.ndarray) -> tuple[float, float]:
    _, out = forward(p, x)
    eps = 1e-9
    loss = -np.mean(y * np.log(out + eps) + (1 - y) * np.log(1 - out + eps))
    return float(loss), float(np.mean((out > 0.5) == y))


def train_epoch(p: dict[str, np.ndarray], x: np.ndarray, y: np.ndarray, rng: np.random.Generator, lr: float) -> None:
    order = rng.permutation(len(x))
    for i in range(0, len(x), 8):
        idx = order[i : i + 8]
        xb, yb = x[idx], y[idx]
        h, out = forward(p, xb)
        d_out = (out - yb)[:, None] / len(xb)
        d_h = (d_out @ p["w2"].T) * (1 - h**2)
        p["w2"] -= lr * h.T @ d_out
        p["b2"] -= lr * d_out.sum(0)
        p["w1"] -= lr * xb.T @ d_h
        p["b1"] -= lr * d_h.sum(0)


def train(store_path: str, epochs: int) -> None:
    """The training loop: resume if possible, checkpoint every epoch."""
    store = ckptstore.open(store_path, monitor="val_loss", keep=ckptstore.keep.linear(3))
    x, y, xv, yv = make_data()
    params, start = init_params(), 1
    ck = store.restart("auto")
    if ck is not None:
        state = ck.load()  # verified: every file re-hashed against the manifest
        params = {k: v.copy() for k, v in state.items() if k != "rng"}
        start = ck.epoch + 1
        print(f"[train] resumed from epoch {ck.epoch} (val_loss={ck.metrics['val_loss']:.4f})", flush=True)
    rng = np.random.default_rng(1000 + start)
    for epoch in range(start, epochs + 1):
        train_epoch(params, x, y, rng, lr=0.05)
        val_loss, val_acc = loss_and_acc(params, xv, yv)
        store.save_state(epoch, params, serializer="numpy", metrics={"val_loss": val_loss, "val_acc": val_acc})
        print(f"[train] epoch {epoch:2d} val_loss={val_loss:.4f} val_acc={val_acc:.3f} committed", flush=True)
    store.close()


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--store", default="runs/demo")
    parser.add_argument("--epochs", type=int, default=30)
    parser.add_argument("--kill-after", type=int, default=10, help="SIGKILL the trainer after this many epochs")
    parser.add_argument("--child", action="store_true", help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.child:
        train(args.store, args.epochs)
        return 0

    shutil.rmtree(args.store, ignore_errors=True)
    cmd = [sys.executable, __file__, "--child", "--store", args.store, "--epochs", str(args.epochs)]
    print(
        f"== run 1: training {args.epochs} epochs into {args.store}; will kill -9 after epoch {args.kill_after}",
        flush=True,
    )
    child = subprocess.Popen(cmd, stdout=subprocess.PIPE, text=True)
    assert child.stdout is not None
    for line in child.stdout:
        print(line, end="", flush=True)
        if f"epoch {args.kill_after:2d} " in line:
            child.send_signal(signal.SIGKILL)
            break
    child.wait()
    print(f"== run 1 ended by signal {-child.returncode} (SIGKILL)")
    print("== run 2: same command; restart('auto') resumes from the newest checkpoint that verifies", flush=True)
    finished = subprocess.run(cmd, check=False)
    if finished.returncode != 0:
        return finished.returncode
    store = ckptstore.open(args.store, monitor="val_loss")
    print(
        "\n== checkpoints (keep policy linear(3): the 3 newest, last among them; also best and the resumed-from epoch)"
    )
    print(store.table())
    best, last = store.best(), store.latest()
    print(f"\nbest: epoch {best.epoch} val_loss={best.metrics['val_loss']:.4f}  last: epoch {last.epoch}")
    resumed_from = [c.parent for c in store.list() if c.parent is not None]
    print(f"resumed run's checkpoints record parent epoch {sorted(set(resumed_from))}")
    store.verify()
    print("all checkpoints verify; ckpt.log has", len(store.log()), "lines")
    return 0


if __name__ == "__main__":
    sys.exit(main())
