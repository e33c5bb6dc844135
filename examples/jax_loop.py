"""A JAX/flax loop with ckptstore.Checkpointer: params and optimizer state as pytrees, no pickle.

python examples/jax_loop.py --kill-after 3
python examples/jax_loop.py
"""

from __future__ import annotations

import os
import sys

sys.path.insert(0, os.path.dirname(__file__))

import jax
import jax.numpy as jnp
from _common import maybe_kill, parse, report
from flax import linen as nn

import ckptstore


class MLP(nn.Module):
    @nn.compact
    def __call__(self, x: jax.Array) -> jax.Array:
        return nn.Dense(1)(nn.relu(nn.Dense(16)(x)))


def main() -> None:
    args = parse(__doc__ or "", epochs=8)
    model = MLP()
    key = jax.random.PRNGKey(0)
    x = jax.random.normal(key, (512, 8))
    y = x @ jax.random.normal(jax.random.PRNGKey(1), (8, 1))
    fresh = {"params": model.init(key, x[:1])["params"], "momentum": None}
    ckpt = ckptstore.Checkpointer(args.store or "runs/jax-loop", monitor="val_loss", keep=ckptstore.keep.linear(2))
    start, state = ckpt.restore(default=(0, fresh))
    params = state["params"]
    momentum = state["momentum"] or jax.tree_util.tree_map(jnp.zeros_like, params)
    if start:
        print(f"resumed from epoch {start}")

    def loss(p: dict, xb: jax.Array, yb: jax.Array) -> jax.Array:
        return jnp.mean((model.apply({"params": p}, xb) - yb) ** 2)

    @jax.jit
    def step(p: dict, m: dict) -> tuple[dict, dict]:
        grads = jax.grad(loss)(p, x[:448], y[:448])
        m = jax.tree_util.tree_map(lambda mm, g: 0.9 * mm + g, m, grads)
        return jax.tree_util.tree_map(lambda pp, mm: pp - 0.01 * mm, p, m), m

    for epoch in range(start + 1, args.epochs + 1):
        for _ in range(20):
            params, momentum = step(params, momentum)
        val_loss = float(loss(params, x[448:], y[448:]))
        ckpt.save(epoch, {"params": params, "momentum": momentum}, metrics={"val_loss": val_loss})
        print(f"epoch {epoch}: val_loss {val_loss:.4f}", flush=True)
        maybe_kill(epoch, args.kill_after)
    report(ckpt.store)


if __name__ == "__main__":
    main()
