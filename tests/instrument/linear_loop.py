"""The smallest real training loop under a Workbench, for tests of its scheduling."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import torch

from riswb.instrument.workbench import Workbench


def train_linear(steps: int, runs_dir: Path, name: str = "linear", **options: Any) -> Workbench:
    """`steps` SGD steps of a seeded nn.Linear(4, 1) on one fixed batch, under
    `Workbench(**options)`; returns the closed Workbench."""
    torch.manual_seed(0)
    model = torch.nn.Linear(4, 1)
    optimizer = torch.optim.SGD(model.parameters(), lr=0.01)
    wb = Workbench(model, optimizer, runs_dir=runs_dir, name=name, **options)
    x, y = torch.randn(8, 4), torch.randn(8, 1)
    for _ in range(steps):
        loss = wb.loss({"mse": ((model(x) - y) ** 2).mean()})
        optimizer.zero_grad()
        loss.backward()
        optimizer.step()
    wb.close()
    return wb
