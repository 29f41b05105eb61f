"""Real loops from the sixth scout round: validation passes around the training step,
gradients copied by the loop's own code, and loss weights or learning rates that the loop
schedules by hand. The healthy ones drew false alarms (train-mode at a `wb.evaluate` logged
after `model.train()`, grads-altered on a value-preserving `p.grad = torch.nan_to_num(...)`);
the buggy ones went unnamed (Dropout layers left in eval mode after a mid-epoch validation).

Healthy loops assert no error or warning from these rules (other rules' findings on them
are other rules' business; tests/loops/test_findings.py checks them for every id); buggy
loops assert the id and severity.
"""

from __future__ import annotations

from pathlib import Path

import pytest
import torch
from torch import nn

import riswb
from tests.loops.zoo import severities

OWN = ("train-mode", "grads-altered", "dead-loss-term", "term-conflict", "loss-not-dropping",
       "step-skipped", "params-not-moving", "step-cadence", "lr-stalled")
LOG_EVERY = 10


def _classes(gen: torch.Generator, n: int = 32) -> tuple[torch.Tensor, torch.Tensor]:
    x = torch.randn(n, 8, generator=gen)
    return x, (x[:, 0] > 0).long() + 2 * (x[:, 1] > 0).long()


def _dropout_mlp() -> nn.Module:
    torch.manual_seed(0)
    return nn.Sequential(nn.Linear(8, 32), nn.ReLU(), nn.Dropout(0.2), nn.Linear(32, 32),
                         nn.ReLU(), nn.Dropout(0.2), nn.Linear(32, 4))


def _classify(runs_dir: Path, name: str, model: nn.Module, *, steps: int = 90,
              validate_every: int = 15, after_validation: str = "train",
              between: str | None = None) -> Path:
    """Cross-entropy with Adam; every `validate_every` steps a no-grad validation pass in
    eval mode, then `model.train()` (or nothing, `after_validation="stay"`) and
    `wb.evaluate`. `between="copy"` replaces each `.grad` by `torch.nan_to_num` of itself."""
    gen = torch.Generator().manual_seed(1)
    opt = torch.optim.Adam(model.parameters(), lr=3e-3)
    with riswb.Workbench(model, opt, runs_dir=runs_dir, name=name, log_every=LOG_EVERY) as wb:
        for step in range(steps):
            x, y = _classes(gen)
            loss = wb.loss({"ce": nn.functional.cross_entropy(model(x), y)})
            opt.zero_grad()
            loss.backward()
            if between == "copy":
                for p in model.parameters():
                    p.grad = torch.nan_to_num(p.grad)  # nothing to replace: the same values
            opt.step()
            if step % validate_every == validate_every - 1:
                model.eval()
                with torch.no_grad():
                    xv, yv = _classes(gen, 64)
                    accuracy = float((model(xv).argmax(1) == yv).float().mean())
                if after_validation == "train":
                    model.train()
                wb.evaluate({"accuracy": accuracy})
    return wb.path


def validation_then_train_then_log(runs_dir: Path) -> Path:
    """The metric is logged after model.train(): the validation itself ran in eval mode."""
    return _classify(runs_dir, "val-then-log", _dropout_mlp())


def grads_copied_without_change(runs_dir: Path) -> Path:
    """`p.grad = torch.nan_to_num(p.grad)` on finite gradients: new tensors, same values."""
    return _classify(runs_dir, "grad-copy", _dropout_mlp(), between="copy")


def dropout_left_in_eval_after_validation(runs_dir: Path) -> Path:
    """BUG: model.train() missing after the first validation: every later training forward
    runs without Dropout. The net's only mode-dependent modules are parameter-free."""
    return _classify(runs_dir, "dropout-eval", _dropout_mlp(), after_validation="stay")


HEALTHY = [validation_then_train_then_log, grads_copied_without_change]
BUGGY = {dropout_left_in_eval_after_validation: ("train-mode", "error")}


@pytest.mark.parametrize("loop", HEALTHY, ids=lambda f: f.__name__)
def test_healthy_loop_draws_no_finding_of_these_rules(loop, tmp_path):
    found = severities(loop, tmp_path, OWN)
    assert not {i: s for i, s in found.items() if s in ("error", "warning")}, found


@pytest.mark.parametrize("loop", list(BUGGY), ids=lambda f: f.__name__)
def test_buggy_loop_is_named(loop, tmp_path):
    rule, severity = BUGGY[loop]
    assert severities(loop, tmp_path, OWN).get(rule) == severity
