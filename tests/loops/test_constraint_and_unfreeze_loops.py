"""Real loops that edit parameters outside optimizer.step on purpose (WGAN weight clipping,
row normalization, SAM's perturb-and-restore) or change which tensors are trainable mid-run
(gradual unfreezing, progressive freezing): weights-swapped, params-not-moving,
optimizer-coverage and dead-params must read them as healthy, and still name the bugs of
the same shape (docs/failures.md #19: EMA weights swapped in and never swapped back; a
backbone unfrozen later that was never given to the optimizer).

Healthy loops assert no error or warning from these rules (other rules' findings on them
are other rules' business); buggy loops assert the id and severity.
"""

from __future__ import annotations

from pathlib import Path

import pytest
import torch
import torch.nn.functional as F
from torch import nn

import riswb
from tests.loops.zoo import severities

OWN = ("weights-swapped", "params-not-moving", "optimizer-coverage", "dead-params")
LOG_EVERY = 10


def _batch(gen: torch.Generator, n: int = 32):
    x = torch.randn(n, 6, generator=gen)
    return x, (x @ torch.linspace(-1, 1, 18).reshape(6, 3)).argmax(1)


class Net(nn.Module):
    def __init__(self):
        super().__init__()
        torch.manual_seed(0)
        self.backbone = nn.Sequential(nn.Linear(6, 32), nn.ReLU(), nn.Linear(32, 16), nn.ReLU())
        self.head = nn.Linear(16, 3)

    def forward(self, x):
        return self.head(self.backbone(x))


def _classify(runs_dir: Path, name: str, model: nn.Module, opt, *, steps: int = 80,
              after_step=None, before_step=None, evaluate_every: int = 0) -> Path:
    """A plain classification loop; `after_step(step)` edits the weights after each step,
    `before_step(step)` runs before the forward."""
    gen = torch.Generator().manual_seed(0)
    with riswb.Workbench(model, opt, runs_dir=runs_dir, name=name, log_every=LOG_EVERY) as wb:
        for step in range(steps):
            if before_step is not None:
                before_step(step)
            x, y = _batch(gen)
            loss = wb.loss({"ce": F.cross_entropy(model(x), y)})
            opt.zero_grad()
            loss.backward()
            opt.step()
            if after_step is not None:
                after_step(step)
            if evaluate_every and (step + 1) % evaluate_every == 0:
                with torch.no_grad():
                    x, y = _batch(gen, 128)
                    acc = (model(x).argmax(1) == y).float().mean().item()
                wb.evaluate({"val_acc": acc})
    return wb.path


def wgan_weight_clipping(runs_dir: Path) -> Path:
    """Original WGAN: the critic's weights clamped to [-c, c] after every critic step (the
    first clamp is big: the init exceeds c), n_critic = 5, two RMSprop optimizers."""
    torch.manual_seed(0)
    gen = nn.Sequential(nn.Linear(4, 32), nn.ReLU(), nn.Linear(32, 2))
    critic = nn.Sequential(nn.Linear(2, 32), nn.LeakyReLU(0.2), nn.Linear(32, 1))
    model = nn.ModuleDict({"G": gen, "D": critic})
    og = torch.optim.RMSprop(gen.parameters(), 5e-4)
    od = torch.optim.RMSprop(critic.parameters(), 5e-4)
    with riswb.Workbench(model, optimizers=[og, od], runs_dir=runs_dir, name="wgan_clip",
                         log_every=LOG_EVERY) as wb:
        for it in range(25):
            for _ in range(5):
                real = torch.randn(32, 2) * 0.5 + 2
                fake = gen(torch.randn(32, 4)).detach()
                ld = wb.loss({"d_fake": critic(fake).mean(), "d_real": -critic(real).mean()})
                od.zero_grad()
                ld.backward()
                od.step()
                for p in critic.parameters():
                    p.data.clamp_(-0.05, 0.05)
            lg = wb.loss({"g_adv": -critic(gen(torch.randn(32, 4))).mean()})
            og.zero_grad()
            lg.backward()
            og.step()
            if it % 5 == 4:
                wb.evaluate({"w_estimate": -float(ld)})
    return wb.path


def row_normalization(runs_dir: Path) -> Path:
    """Cosine classifier: the class-weight rows projected back to unit norm after every
    step, evaluated every 20 steps (right after a projection)."""
    model = Net()
    opt = torch.optim.SGD(model.parameters(), 0.1, momentum=0.9)
    w = model.head.weight

    def project(step):
        with torch.no_grad():
            w.div_(w.norm(dim=1, keepdim=True))

    project(-1)
    return _classify(runs_dir, "rownorm", model, opt, after_step=project, evaluate_every=20)


def sam_add_sub_restore(runs_dir: Path) -> Path:
    """SAM: ascend to w + e, second forward/backward, restore by p.sub_(e) — not bit for
    bit: the restore leaves float rounding behind."""
    model = Net()
    opt = torch.optim.SGD(model.parameters(), 0.05, momentum=0.9)
    gen = torch.Generator().manual_seed(0)
    with riswb.Workbench(model, opt, runs_dir=runs_dir, name="sam",
                         log_every=LOG_EVERY) as wb:
        for step in range(60):
            x, y = _batch(gen)
            opt.zero_grad()
            wb.loss({"ce": F.cross_entropy(model(x), y)}).backward()
            with torch.no_grad():
                norm = torch.stack([p.grad.norm() for p in model.parameters()]).norm()
                eps = [0.05 * p.grad / (norm + 1e-12) for p in model.parameters()]
                for p, e in zip(model.parameters(), eps, strict=True):
                    p.add_(e)
            opt.zero_grad()
            wb.loss({"ce": F.cross_entropy(model(x), y)}).backward()
            with torch.no_grad():
                for p, e in zip(model.parameters(), eps, strict=True):
                    p.sub_(e)
            opt.step()
            if step % 20 == 19:
                wb.evaluate({"val": 0.0})
    return wb.path


def gradual_unfreezing(runs_dir: Path) -> Path:
    """Backbone frozen before the Workbench is built and unfrozen at step 30; the optimizer
    holds every tensor from the start, the backbone in its own lower-lr group."""
    model = Net()
    opt = torch.optim.Adam([{"params": model.backbone.parameters(), "lr": 3e-4},
                            {"params": model.head.parameters(), "lr": 3e-3}])
    model.backbone.requires_grad_(False)

    def unfreeze(step):
        if step == 30:
            model.backbone.requires_grad_(True)

    return _classify(runs_dir, "unfreeze", model, opt, before_step=unfreeze)


def progressive_freezing(runs_dir: Path) -> Path:
    """The opposite recipe: the backbone trains first and is frozen at step 10 (its group
    then stops moving on purpose)."""
    model = Net()
    opt = torch.optim.Adam([{"params": model.backbone.parameters(), "lr": 3e-4},
                            {"params": model.head.parameters(), "lr": 3e-3}])

    def freeze(step):
        if step == 10:
            model.backbone.requires_grad_(False)

    return _classify(runs_dir, "freeze", model, opt, before_step=freeze)


def unfrozen_but_not_in_optimizer(runs_dir: Path) -> Path:
    """BUG: the optimizer was built from the trainable tensors only (the frozen backbone
    left out), so the backbone unfrozen at step 30 never trains."""
    model = Net()
    model.backbone.requires_grad_(False)
    opt = torch.optim.Adam([p for p in model.parameters() if p.requires_grad], 3e-3)

    def unfreeze(step):
        if step == 30:
            model.backbone.requires_grad_(True)

    return _classify(runs_dir, "unfreeze_missing", model, opt, before_step=unfreeze)


def ema_never_restored(runs_dir: Path) -> Path:
    """BUG (docs/failures.md #19): EMA weights loaded for evaluation every 20 steps and the
    training weights never loaded back."""
    model = Net()
    opt = torch.optim.SGD(model.parameters(), 0.05, momentum=0.9)
    ema = {k: v.detach().clone() for k, v in model.state_dict().items()}
    gen = torch.Generator().manual_seed(0)
    with riswb.Workbench(model, opt, runs_dir=runs_dir, name="ema_norestore",
                         log_every=LOG_EVERY) as wb:
        for step in range(80):
            x, y = _batch(gen)
            loss = wb.loss({"ce": F.cross_entropy(model(x), y)})
            opt.zero_grad()
            loss.backward()
            opt.step()
            with torch.no_grad():
                for k, v in model.state_dict().items():
                    ema[k].mul_(0.95).add_(v, alpha=0.05)
            if step % 20 == 19:
                model.load_state_dict(ema)  # BUG: no backup, no restore
                wb.evaluate({"val": 0.0})
    return wb.path


def ema_loaded_between_steps(runs_dir: Path) -> Path:
    """BUG: the same swap without any `wb.evaluate` call: seen between optimizer steps."""
    model = Net()
    opt = torch.optim.SGD(model.parameters(), 0.05, momentum=0.9)
    ema = {k: v.detach().clone() for k, v in model.state_dict().items()}

    def average_and_swap(step):
        with torch.no_grad():
            for k, v in model.state_dict().items():
                ema[k].mul_(0.95).add_(v, alpha=0.05)
        if step == 39:
            model.load_state_dict(ema)  # BUG: training goes on from the average

    return _classify(runs_dir, "ema_between", model, opt, after_step=average_and_swap)


HEALTHY = [wgan_weight_clipping, row_normalization, sam_add_sub_restore, gradual_unfreezing,
           progressive_freezing]
BUGGY = {ema_never_restored: ("weights-swapped", "error"),
         ema_loaded_between_steps: ("weights-swapped", "error"),
         unfrozen_but_not_in_optimizer: ("optimizer-coverage", "error")}


@pytest.mark.parametrize("loop", HEALTHY, ids=lambda f: f.__name__)
def test_healthy_loop_draws_no_swap_or_idle_finding(loop, tmp_path):
    found = severities(loop, tmp_path, OWN)
    assert not {i: s for i, s in found.items() if s in ("error", "warning")}, found


@pytest.mark.parametrize("loop", list(BUGGY), ids=lambda f: f.__name__)
def test_buggy_loop_is_named(loop, tmp_path):
    rule, severity = BUGGY[loop]
    assert severities(loop, tmp_path, OWN).get(rule) == severity


def test_unfrozen_backbone_is_measured_from_then_on(tmp_path):
    """The backbone's group reads NaN (unmeasured) while frozen and moves once unfrozen."""
    frame = riswb.read_run(gradual_unfreezing(tmp_path)).kind("param_update")
    ratio = frame.set_index("opt_step")["group/0/ratio"]
    assert ratio[ratio.index <= 30].isna().all()
    assert (ratio[ratio.index > 31] > 0).all() and len(ratio[ratio.index > 31]) >= 2
    assert (frame["frac_moving"] == 1).all()
