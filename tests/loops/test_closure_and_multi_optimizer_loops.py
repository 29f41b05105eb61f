"""Real loops that evaluate one batch several times per step, or step several optimizers:
step-cadence, step-skipped and grads-not-cleared must read them as healthy, and still name
the bugs of the same shape (docs/failures.md: one optimizer step per epoch; zero_grad
never called for one of two optimizers).

Healthy loops assert no error or warning from these three rules (other rules' findings on
them are other rules' business); buggy loops assert the id and severity.
"""

from __future__ import annotations

from pathlib import Path

import pytest
import torch
import torch.nn.functional as F
from torch import nn

import riswb
from tests.loops.zoo import severities

OWN = ("step-cadence", "step-skipped", "grads-not-cleared")
LOG_EVERY = 10


def _data(n: int = 128, seed: int = 0):
    gen = torch.Generator().manual_seed(seed)
    x = torch.randn(n, 6, generator=gen)
    return x, (x @ torch.randn(6, 3, generator=gen)).argmax(1)


def _net(out: int = 3) -> nn.Module:
    torch.manual_seed(0)
    return nn.Sequential(nn.Linear(6, 16), nn.Tanh(), nn.Linear(16, out))


def lbfgs_closure(runs_dir: Path) -> Path:
    """Full-batch LBFGS: the line search calls the closure several times per step, and once
    converged the optimizer's own tolerance test returns without moving."""
    torch.manual_seed(0)
    x = torch.linspace(-2, 2, 64).unsqueeze(1)
    y = torch.sin(2 * x)
    model = nn.Sequential(nn.Linear(1, 8), nn.Tanh(), nn.Linear(8, 1))
    # converges (loss ~3e-6) after ~50 steps; the last ~40 change nothing
    opt = torch.optim.LBFGS(model.parameters(), lr=1.0, max_iter=5,
                            line_search_fn="strong_wolfe")
    with riswb.Workbench(model, opt, runs_dir=runs_dir, name="lbfgs",
                         log_every=LOG_EVERY) as wb:
        def closure():
            opt.zero_grad()
            loss = wb.loss({"mse": F.mse_loss(model(x), y)})
            loss.backward()
            return loss

        for _ in range(90):
            opt.step(closure)
    return wb.path


def sam_two_passes(runs_dir: Path) -> Path:
    """SAM: gradient at w, ascend to w+e, second forward/backward on the SAME batch, restore
    w exactly, then the base optimizer's step."""
    x, y = _data()
    model = _net()
    opt = torch.optim.SGD(model.parameters(), lr=0.1, momentum=0.9)
    with riswb.Workbench(model, opt, runs_dir=runs_dir, name="sam",
                         log_every=LOG_EVERY) as wb:
        for step in range(60):
            xb, yb = x[(step % 4) * 32:][:32], y[(step % 4) * 32:][:32]
            opt.zero_grad()
            wb.loss({"ce": F.cross_entropy(model(xb), yb)}).backward()
            with torch.no_grad():
                saved = [p.detach().clone() for p in model.parameters()]
                norm = torch.stack([p.grad.norm() for p in model.parameters()]).norm()
                for p in model.parameters():
                    p.add_(0.05 * p.grad / (norm + 1e-12))
            opt.zero_grad()
            wb.loss({"ce": F.cross_entropy(model(xb), yb)}).backward()
            with torch.no_grad():
                for p, s in zip(model.parameters(), saved, strict=True):
                    p.copy_(s)
            opt.step()
    return wb.path


class _TwoHeads(nn.Module):
    def __init__(self):
        super().__init__()
        torch.manual_seed(0)
        self.trunk = nn.Sequential(nn.Linear(6, 16), nn.ReLU())
        self.main, self.aux = nn.Linear(16, 3), nn.Linear(16, 3)

    def forward(self, x):
        h = self.trunk(x)
        return self.main(h), self.aux(h)


def two_backwards_per_step(runs_dir: Path) -> Path:
    """Deep supervision: one forward, a loss and a backward per head (retain_graph),
    zero_grad once per step."""
    x, y = _data()
    model = _TwoHeads()
    opt = torch.optim.SGD(model.parameters(), lr=0.05, momentum=0.9)
    with riswb.Workbench(model, opt, runs_dir=runs_dir, name="two-backward",
                         log_every=LOG_EVERY) as wb:
        for step in range(60):
            xb, yb = x[(step % 4) * 32:][:32], y[(step % 4) * 32:][:32]
            main, aux = model(xb)
            opt.zero_grad()
            wb.loss({"main": F.cross_entropy(main, yb)}).backward(retain_graph=True)
            wb.loss({"aux": F.cross_entropy(aux, yb)}, {"aux": 0.3}).backward()
            opt.step()
    return wb.path


class _MF(nn.Module):
    def __init__(self):
        super().__init__()
        torch.manual_seed(0)
        self.users, self.items = nn.Embedding(50, 4, sparse=True), nn.Embedding(40, 4, sparse=True)
        self.bias = nn.Parameter(torch.zeros(1))

    def forward(self, u, i):
        return (self.users(u) * self.items(i)).sum(1) + self.bias


def _sparse_mf(runs_dir: Path, name: str, *, clear_sparse: bool) -> Path:
    gen = torch.Generator().manual_seed(0)
    u0, i0 = torch.randn(50, 2, generator=gen), torch.randn(40, 2, generator=gen)
    model = _MF()
    sparse = torch.optim.SparseAdam(list(model.users.parameters())
                                    + list(model.items.parameters()), lr=0.02)
    dense = torch.optim.Adam([model.bias], lr=0.01)
    with riswb.Workbench(model, optimizers=[sparse, dense], runs_dir=runs_dir, name=name,
                         log_every=LOG_EVERY) as wb:
        for _ in range(60):
            u = torch.randint(0, 50, (64,), generator=gen)
            i = torch.randint(0, 40, (64,), generator=gen)
            loss = wb.loss({"mse": F.mse_loss(model(u, i), (u0[u] * i0[i]).sum(1))})
            if clear_sparse:
                sparse.zero_grad()
            dense.zero_grad()
            loss.backward()
            sparse.step()
            dense.step()
    return wb.path


def sparse_adam_plus_adam(runs_dir: Path) -> Path:
    """SparseAdam for the embeddings, Adam for the rest: two steps per batch, one backward."""
    return _sparse_mf(runs_dir, "sparse-mf", clear_sparse=True)


def gan_generator_never_cleared(runs_dir: Path) -> Path:
    """BUG: a GAN whose loop clears only the discriminator's gradients: the generator's
    carry over on every one of its own steps (half of all optimizer steps)."""
    torch.manual_seed(0)
    gen, disc = nn.Sequential(nn.Linear(2, 8), nn.Tanh(), nn.Linear(8, 2)), nn.Linear(2, 1)
    model = nn.ModuleDict({"g": gen, "d": disc})
    opt_g = torch.optim.Adam(gen.parameters(), lr=1e-3)
    opt_d = torch.optim.Adam(disc.parameters(), lr=1e-3)
    bce = F.binary_cross_entropy_with_logits
    with riswb.Workbench(model, optimizers=[opt_g, opt_d], runs_dir=runs_dir, name="gan",
                         log_every=LOG_EVERY) as wb:
        for _ in range(60):
            real, fake = torch.randn(32, 2) + 2, gen(torch.randn(32, 2))
            opt_d.zero_grad()
            d_real, d_fake = disc(real), disc(fake.detach())
            wb.loss({"d_real": bce(d_real, torch.ones_like(d_real)),
                     "d_fake": bce(d_fake, torch.zeros_like(d_fake))}).backward()
            opt_d.step()
            g_out = disc(fake)
            wb.loss({"g_adv": bce(g_out, torch.ones_like(g_out))}).backward()
            opt_g.step()  # no opt_g.zero_grad() anywhere
    return wb.path


def one_step_per_epoch_cleared(runs_dir: Path) -> Path:
    """BUG (the shape of the healthy loops above, but several BATCHES per step): zero_grad
    and backward per batch, step() after the batch loop."""
    x, y = _data()
    model = _net()
    opt = torch.optim.SGD(model.parameters(), lr=0.05)
    with riswb.Workbench(model, opt, runs_dir=runs_dir, name="per-epoch",
                         log_every=LOG_EVERY) as wb:
        for _ in range(8):
            for xb, yb in zip(x.split(16), y.split(16), strict=True):
                opt.zero_grad()
                wb.loss({"ce": F.cross_entropy(model(xb), yb)}).backward()
            opt.step()
    return wb.path


HEALTHY = [lbfgs_closure, sam_two_passes, two_backwards_per_step, sparse_adam_plus_adam]
BUGGY = {gan_generator_never_cleared: ("grads-not-cleared", "error"),
         one_step_per_epoch_cleared: ("step-cadence", "error")}


@pytest.mark.parametrize("loop", HEALTHY, ids=lambda f: f.__name__)
def test_healthy_loop_draws_no_cadence_skip_or_clearing_finding(loop, tmp_path):
    found = severities(loop, tmp_path, OWN)
    assert not {i: s for i, s in found.items() if s in ("error", "warning")}, found


@pytest.mark.parametrize("loop", list(BUGGY), ids=lambda f: f.__name__)
def test_buggy_loop_is_named(loop, tmp_path):
    rule, severity = BUGGY[loop]
    assert severities(loop, tmp_path, OWN).get(rule) == severity


def test_lbfgs_records_closure_steps_and_one_batch_per_step(tmp_path):
    frame = riswb.read_run(lbfgs_closure(tmp_path)).kind("cadence")
    last = frame.iloc[-1]
    assert last["closure_steps"] == last["optimizer_step"] == 90
    assert last["loss"] - last["same_batch_loss"] == 90 and last["same_batch_loss"] > 90
