"""A hand-written PyTorch loop with ckptstore.Checkpointer: model, optimizer, scheduler, RNG and epoch.

python examples/torch_loop.py --kill-after 3
python examples/torch_loop.py
"""

from __future__ import annotations

import os
import sys

sys.path.insert(0, os.path.dirname(__file__))

import torch
from _common import maybe_kill, parse, report

import ckptstore
from ckptstore.integrations.torch import capture_rng, restore_rng


def main() -> None:
    args = parse(__doc__ or "", epochs=8)
    torch.manual_seed(0)
    model = torch.nn.Sequential(torch.nn.Linear(8, 16), torch.nn.ReLU(), torch.nn.Linear(16, 1))
    optimizer = torch.optim.Adam(model.parameters(), lr=0.01)
    scheduler = torch.optim.lr_scheduler.StepLR(optimizer, step_size=3, gamma=0.5)
    ckpt = ckptstore.Checkpointer(args.store or "runs/torch-loop", monitor="val_loss", keep=ckptstore.keep.linear(2))

    start, state = ckpt.restore()  # (0, None) on a fresh store
    if state is not None:
        model.load_state_dict(state["model"])
        optimizer.load_state_dict(state["optimizer"])
        scheduler.load_state_dict(state["scheduler"])
        restore_rng(state["rng"])
        print(f"resumed from epoch {start}")

    gen = torch.Generator().manual_seed(1)
    x = torch.randn(512, 8, generator=gen)
    y = x @ torch.randn(8, 1, generator=gen)
    for epoch in range(start + 1, args.epochs + 1):
        for i in torch.randperm(448).split(64):  # uses the (restored) RNG
            optimizer.zero_grad()
            torch.nn.functional.mse_loss(model(x[i]), y[i]).backward()
            optimizer.step()
        scheduler.step()
        val_loss = torch.nn.functional.mse_loss(model(x[448:]), y[448:]).item()
        ckpt.save(
            epoch,
            {
                "model": model.state_dict(),
                "optimizer": optimizer.state_dict(),
                "scheduler": scheduler.state_dict(),
                "rng": capture_rng(),
            },
            metrics={"val_loss": val_loss},
        )
        print(f"epoch {epoch}: val_loss {val_loss:.4f}", flush=True)
        maybe_kill(epoch, args.kill_after)
    report(ckpt.store)


if __name__ == "__main__":
    main()
