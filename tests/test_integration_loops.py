"""Plain loops: Checkpointer with a hand-written PyTorch loop and a JAX loop (pytrees, no pickle)."""

from __future__ import annotations

import random
import subprocess
import sys
import textwrap
from pathlib import Path

import numpy as np
import pytest

import ckptstore

pytestmark = pytest.mark.frameworks

TORCH_LOOP = textwrap.dedent(
    """
    import sys, torch, ckptstore
    from ckptstore.integrations.torch import capture_rng, restore_rng
    url, epochs, kill_after = sys.argv[1], int(sys.argv[2]), int(sys.argv[3])
    torch.manual_seed(0)
    model = torch.nn.Linear(4, 1)
    opt = torch.optim.SGD(model.parameters(), lr=0.1, momentum=0.9)
    sched = torch.optim.lr_scheduler.StepLR(opt, step_size=2, gamma=0.5)
    ckpt = ckptstore.Checkpointer(url, monitor="loss", keep=ckptstore.keep.linear(2))
    start, state = ckpt.restore()
    if state is not None:
        model.load_state_dict(state["model"]); opt.load_state_dict(state["opt"])
        sched.load_state_dict(state["sched"]); restore_rng(state["rng"])
    x = torch.randn(64, 4, generator=torch.Generator().manual_seed(1)); y = x.sum(1, keepdim=True)
    for epoch in range(start + 1, epochs + 1):
        noise = torch.randn(1).item()  # consumes the RNG: a resumed run must see the same numbers
        loss = torch.nn.functional.mse_loss(model(x), y)
        opt.zero_grad(); loss.backward(); opt.step(); sched.step()
        ckpt.save(epoch, {"model": model.state_dict(), "opt": opt.state_dict(), "sched": sched.state_dict(),
                          "rng": capture_rng()}, metrics={"loss": loss.item()})
        print(epoch, f"{loss.item():.6f}", f"{noise:.6f}", flush=True)
        if epoch == kill_after:
            import os, signal; os.kill(os.getpid(), signal.SIGKILL)
    """
)


def _run(url: str, epochs: int, kill_after: int = 0) -> tuple[int, list[str]]:
    proc = subprocess.run(
        [sys.executable, "-c", TORCH_LOOP, url, str(epochs), str(kill_after)],
        capture_output=True,
        text=True,
        timeout=180,
    )
    return proc.returncode, proc.stdout.split("\n")[:-1]


def test_a_killed_torch_loop_resumes_exactly_where_it_stopped(tmp_path: Path) -> None:
    pytest.importorskip("torch")
    straight = _run(str(tmp_path / "straight"), 6)
    assert straight[0] == 0
    code, first = _run(str(tmp_path / "killed"), 6, kill_after=3)
    assert code == -9 and len(first) == 3
    code, rest = _run(str(tmp_path / "killed"), 6)
    assert code == 0
    # Same losses and the same random numbers as an uninterrupted run: model, optimizer, scheduler and
    # RNG states all came back.
    assert first + rest == straight[1]
    store = ckptstore.open(tmp_path / "killed", monitor="loss")
    assert store.epochs()[-1] == 6 and store.get(6).parent == 3
    assert len(store.epochs()) <= 5  # linear(2) plus best, last and the epoch it resumed from (DESIGN 5)
    assert 3 in store.epochs()  # a resumed run never deletes the checkpoint it resumed from


def test_a_jax_loop_saves_pytrees_without_pickle(tmp_path: Path) -> None:
    jax = pytest.importorskip("jax")
    jnp = jax.numpy
    params = {"dense": {"kernel": jnp.ones((3, 2)), "bias": jnp.zeros(2)}, "scale": (jnp.float32(2.0), 3), "tag": "v1"}
    ckpt = ckptstore.Checkpointer(tmp_path / "jax", monitor="loss")
    start, state = ckpt.restore(default=(0, params))
    assert start == 0 and state is params

    def loss_fn(dense: dict) -> jax.Array:
        return jnp.sum((dense["kernel"] - 0.5) ** 2)

    for epoch in range(1, 4):
        grads = jax.grad(loss_fn)(params["dense"])
        params = {**params, "dense": jax.tree_util.tree_map(lambda a, g: a - 0.1 * g, params["dense"], grads)}
        ck = ckpt.save(epoch, params, metrics={"loss": float(loss_fn(params["dense"]))})
        assert ck is not None and ck.manifest.serializer == {"name": "jax", "version": jax.__version__}
    again = ckptstore.Checkpointer(tmp_path / "jax", monitor="loss")
    epoch, restored = again.restore()
    assert epoch == 3 and isinstance(restored["dense"]["kernel"], jax.Array)
    assert np.allclose(restored["dense"]["kernel"], params["dense"]["kernel"])
    assert restored["scale"][1] == 3 and restored["tag"] == "v1" and isinstance(restored["scale"], tuple)
    assert not any(name.endswith((".pkl", ".pickle")) for name in again.store.get(3).files)


def test_flax_params_round_trip(tmp_path: Path) -> None:
    pytest.importorskip("flax")
    import jax
    from flax import linen as nn

    model = nn.Dense(3)
    variables = model.init(jax.random.PRNGKey(0), jax.numpy.ones((1, 4)))
    store = ckptstore.open(tmp_path / "flax")
    store.save_state(1, variables, serializer="jax")
    restored = store.latest().load()
    out_a = model.apply(variables, jax.numpy.ones((2, 4)))
    out_b = model.apply(restored, jax.numpy.ones((2, 4)))
    assert np.allclose(out_a, out_b)


def test_rng_helpers_restore_every_generator() -> None:
    torch = pytest.importorskip("torch")
    from ckptstore.integrations.torch import capture_rng, restore_rng

    state = capture_rng()
    first = (random.random(), float(np.random.rand()), torch.rand(1).item())
    restore_rng(state)
    assert (random.random(), float(np.random.rand()), torch.rand(1).item()) == first
