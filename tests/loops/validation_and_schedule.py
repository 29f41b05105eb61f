"""Real loops from the sixth scout round: validation passes around the training step,
gradients copied by the loop's own code, and loss weights or learning rates that the loop
schedules by hand. The healthy ones drew false alarms (train-mode at a `wb.evaluate` logged
after `model.train()`, grads-altered on a value-preserving `p.grad = torch.nan_to_num(...)`);
the buggy ones went unnamed (Dropout layers left in eval mode after a mid-epoch validation,
a declared accumulation that clears the gradients before every micro-batch, an lr decayed
by hand every batch instead of every epoch, an Adam lr 100× too high whose loss spiked and
then sat at chance level, backward() called on one term instead of wb.loss's total).

tests/loops/test_findings.py runs them (`HEALTHY`, and `BUGGY` with the id and severity
that must name each): no error or warning on a healthy one, for any id.
"""

from __future__ import annotations

from pathlib import Path

import torch
from torch import nn

import riswb

LOG_EVERY = 10


def _classes(gen: torch.Generator, n: int = 32) -> tuple[torch.Tensor, torch.Tensor]:
    x = torch.randn(n, 8, generator=gen)
    return x, (x[:, 0] > 0).long() + 2 * (x[:, 1] > 0).long()


def _dropout_mlp() -> nn.Module:
    torch.manual_seed(0)
    return nn.Sequential(nn.Linear(8, 32), nn.ReLU(), nn.Dropout(0.2), nn.Linear(32, 32),
                         nn.ReLU(), nn.Dropout(0.2), nn.Linear(32, 4))


def _classify(runs_dir: Path, name: str, model: nn.Module, opt=None, *, steps: int = 90,
              validate_every: int | None = 15, after_validation: str = "train",
              between: str | None = None, lr_at=None) -> Path:
    """Cross-entropy (Adam at 3e-3 unless `opt` is given); `lr_at(step)` sets every group's
    lr by hand first. Every `validate_every` steps a no-grad validation pass in eval mode,
    then `model.train()` (or nothing, `after_validation="stay"`) and `wb.evaluate`.
    `between="copy"` replaces each `.grad` by `torch.nan_to_num` of itself."""
    gen = torch.Generator().manual_seed(1)
    opt = opt or torch.optim.Adam(model.parameters(), lr=3e-3)
    with riswb.Workbench(model, opt, runs_dir=runs_dir, name=name, log_every=LOG_EVERY) as wb:
        for step in range(steps):
            if lr_at is not None:
                for group in opt.param_groups:
                    group["lr"] = lr_at(step)
            x, y = _classes(gen)
            loss = wb.loss({"ce": nn.functional.cross_entropy(model(x), y)})
            opt.zero_grad()
            loss.backward()
            if between == "copy":
                for p in model.parameters():
                    p.grad = torch.nan_to_num(p.grad)  # nothing to replace: the same values
            opt.step()
            if validate_every and step % validate_every == validate_every - 1:
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


class _VAE(nn.Module):
    def __init__(self):
        super().__init__()
        torch.manual_seed(0)
        self.encoder = nn.Sequential(nn.Linear(16, 32), nn.ReLU(), nn.Linear(32, 8))
        self.decoder = nn.Sequential(nn.Linear(4, 32), nn.ReLU(), nn.Linear(32, 16))

    def forward(self, x):
        mu, logvar = self.encoder(x).chunk(2, -1)
        z = mu + torch.randn_like(mu) * (0.5 * logvar).exp()
        kl = (-0.5 * (1 + logvar - mu.square() - logvar.exp()).sum(-1)).mean()
        return (self.decoder(z) - x).square().sum(-1).mean(), kl


def vae_kl_warmup_from_zero(runs_dir: Path) -> Path:
    """β = 0 for the first half (an autoencoder: the KL term free to grow), then a ramp to
    1: the weighted total rises with the ramp, and the KL term sends no gradient at β = 0."""
    model = _VAE()
    gen = torch.Generator().manual_seed(1)
    data = torch.tanh(torch.randn(512, 3, generator=gen) @ torch.randn(3, 16, generator=gen))
    opt = torch.optim.Adam(model.parameters(), lr=3e-3)
    with riswb.Workbench(model, opt, runs_dir=runs_dir, name="vae-warmup",
                         log_every=LOG_EVERY) as wb:
        for step in range(240):
            recon, kl = model(data[torch.randint(0, 512, (32,), generator=gen)])
            beta = min(1.0, max(0.0, (step - 120) / 80))
            loss = wb.loss({"recon": recon, "kl": kl}, {"recon": 1.0, "kl": beta})
            opt.zero_grad()
            loss.backward()
            opt.step()
    return wb.path


class _MultiTask(nn.Module):
    def __init__(self):
        super().__init__()
        torch.manual_seed(0)
        self.body = nn.Sequential(nn.Linear(8, 32), nn.ReLU())
        self.regress, self.classify = nn.Linear(32, 1), nn.Linear(32, 4)
        self.log_vars = nn.Parameter(torch.zeros(2))

    def forward(self, x):
        hidden = self.body(x)
        return self.regress(hidden), self.classify(hidden)


def uncertainty_weighted_tasks(runs_dir: Path) -> Path:
    """Learnable task weights exp(-s) with their +s regularizers as terms of their own
    (homoscedastic uncertainty weighting): the weight's gradient and its regularizer's
    cancel by design, which is not a conflict between the terms."""
    model = _MultiTask()
    gen = torch.Generator().manual_seed(1)
    opt = torch.optim.Adam(model.parameters(), lr=3e-3)
    with riswb.Workbench(model, opt, runs_dir=runs_dir, name="uncertainty",
                         log_every=LOG_EVERY) as wb:
        for _ in range(120):
            x, label = _classes(gen)
            value, logits = model(x)
            s = model.log_vars
            loss = wb.loss(
                {"mse": (value.squeeze(1) - 3 * x[:, 2]).square().mean(),
                 "ce": nn.functional.cross_entropy(logits, label), "s_mse": s[0], "s_ce": s[1]},
                {"mse": 0.5 * torch.exp(-s[0]), "ce": torch.exp(-s[1]), "s_mse": 0.5,
                 "s_ce": 1.0})
            opt.zero_grad()
            loss.backward()
            opt.step()
    return wb.path


def _deep_supervision(runs_dir: Path, name: str, aux_weight, *,
                      main_only: bool = False) -> Path:
    """A body with a main and an auxiliary classifier head, 90 Adam steps; the auxiliary
    term weighted `aux_weight(step, steps)`; backward on the total wb.loss returns, or on
    the main term alone (`main_only`)."""
    torch.manual_seed(0)
    body, head, aux = nn.Sequential(nn.Linear(8, 32), nn.ReLU()), nn.Linear(32, 4), \
        nn.Linear(32, 4)
    model = nn.ModuleDict({"body": body, "head": head, "aux": aux})
    gen = torch.Generator().manual_seed(1)
    opt = torch.optim.Adam(model.parameters(), lr=3e-3)
    steps = 90
    with riswb.Workbench(model, opt, runs_dir=runs_dir, name=name,
                         log_every=LOG_EVERY) as wb:
        for step in range(steps):
            x, label = _classes(gen)
            hidden = body(x)
            terms = {"ce": nn.functional.cross_entropy(head(hidden), label),
                     "aux_ce": nn.functional.cross_entropy(aux(hidden), label)}
            total = wb.loss(terms, {"ce": 1.0, "aux_ce": aux_weight(step, steps)})
            opt.zero_grad()
            (terms["ce"] if main_only else total).backward()
            opt.step()
    return wb.path


def auxiliary_weight_annealed_to_zero(runs_dir: Path) -> Path:
    """Deep supervision: an auxiliary head's weight decays linearly to 0 at the last step."""
    return _deep_supervision(runs_dir, "aux-anneal",
                             lambda step, steps: 0.4 * (1 - step / (steps - 1)))


def hinge_loss_satisfied_on_some_batches(runs_dir: Path) -> Path:
    """A margin loss with plain SGD on separable data: once a whole batch clears the margin,
    its loss and gradient are exactly 0 and the step moves nothing — nothing to apply."""
    torch.manual_seed(0)
    model = nn.Linear(8, 1)
    gen = torch.Generator().manual_seed(1)
    opt = torch.optim.SGD(model.parameters(), lr=0.1)
    with riswb.Workbench(model, opt, runs_dir=runs_dir, name="hinge",
                         log_every=LOG_EVERY) as wb:
        for _ in range(400):
            x = torch.randn(8, 8, generator=gen)
            sign = torch.where(x[:, 0] > 0, 1.0, -1.0)
            x[:, 0] += 0.5 * sign  # a margin between the classes
            loss = wb.loss({"hinge": (1 - sign * model(x).squeeze(1)).clamp(min=0).mean()})
            opt.zero_grad()
            loss.backward()
            opt.step()
    return wb.path


def accumulation_declared_but_cleared_per_batch(runs_dir: Path) -> Path:
    """BUG: `accumulation=4` declared and one step per 4 batches, but zero_grad() sits inside
    the micro-batch loop: every backward starts from zero, each step uses its last batch."""
    model = _dropout_mlp()
    gen = torch.Generator().manual_seed(1)
    opt = torch.optim.Adam(model.parameters(), lr=3e-3)
    with riswb.Workbench(model, opt, runs_dir=runs_dir, name="accum-cleared",
                         log_every=LOG_EVERY, accumulation=4) as wb:
        for _ in range(30):
            for _ in range(4):
                x, y = _classes(gen)
                loss = wb.loss({"ce": nn.functional.cross_entropy(model(x), y) / 4})
                opt.zero_grad()
                loss.backward()
            opt.step()
    return wb.path


def lr_decayed_by_hand_per_batch(runs_dir: Path) -> Path:
    """BUG: lr = base·0.95^step set by hand every batch (meant per epoch), no scheduler:
    below 1% of the base lr after ~90 of 200 steps."""
    model = _dropout_mlp()
    return _classify(runs_dir, "lr-by-hand", model, torch.optim.SGD(model.parameters(), lr=0.1),
                     steps=200, validate_every=None, lr_at=lambda step: 0.1 * 0.95 ** step)


def adam_lr_far_too_high(runs_dir: Path) -> Path:
    """BUG: Adam at lr 0.3 (meant 3e-3): the first update is bigger than the weights, the
    loss spikes and then sits at the loss of a constant prediction. The first record, a
    mean over the spike, made it read as a drop."""
    model = _dropout_mlp()
    return _classify(runs_dir, "lr-too-high", model, torch.optim.Adam(model.parameters(), lr=0.3),
                     steps=150, validate_every=None)


def backward_on_one_term(runs_dir: Path) -> Path:
    """BUG: the total is built by wb.loss, but backward() is called on the main term alone:
    the auxiliary head never trains, though every term has a path to the parameters."""
    return _deep_supervision(runs_dir, "one-term", lambda step, steps: 0.3, main_only=True)


HEALTHY = [validation_then_train_then_log, grads_copied_without_change, vae_kl_warmup_from_zero,
           uncertainty_weighted_tasks, auxiliary_weight_annealed_to_zero,
           hinge_loss_satisfied_on_some_batches]
BUGGY = {dropout_left_in_eval_after_validation: ("train-mode", "error"),
         accumulation_declared_but_cleared_per_batch: ("step-cadence", "error"),
         lr_decayed_by_hand_per_batch: ("lr-stalled", "error"),
         adam_lr_far_too_high: ("loss-not-dropping", "error"),
         backward_on_one_term: ("dead-loss-term", "error")}

