"""The README's Workbench example runs as written, on a loop it fills in."""

from __future__ import annotations

import re
from pathlib import Path

import torch

README = Path(__file__).resolve().parents[1] / "README.md"


def _example(heading: str) -> str:
    text = README.read_text(encoding="utf-8")
    section = text[text.index(heading):]
    return re.search(r"```python\n(.*?)```", section, re.S).group(1)


def test_the_workbench_example_runs_and_reads_back(tmp_path, monkeypatch):
    monkeypatch.setenv("RISWB_RUNS_DIR", str(tmp_path))
    torch.manual_seed(0)
    model = torch.nn.Sequential(torch.nn.Linear(4, 8), torch.nn.ReLU(), torch.nn.Linear(8, 1))
    opt = torch.optim.Adam(model.parameters(), lr=1e-2)
    names = {
        "model": model,
        "opt": opt,
        "sched": torch.optim.lr_scheduler.StepLR(opt, step_size=10),
        "cfg": {"lr": 1e-2},
        "loader": [(torch.randn(16, 4), torch.randn(16, 1)) for _ in range(30)],
        "mse": torch.nn.functional.mse_loss,
        "val_loss": 0.5,
    }
    exec(_example("### Use riswb on your own training loop"), names)
    run = names["run"]
    assert run.manifest["status"] == "completed"
    assert set(run.manifest["loss_terms"]) == {"mse", "l1"}
    assert (run.scalars["kind"] == "loss").any() and (run.scalars["kind"] == "eval").any()
