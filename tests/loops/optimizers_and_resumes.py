"""Real loops from the seventh scout round: optimizers that normalize their own update, runs
resumed from a checkpoint, surrogate losses, frozen normalization statistics, and models or
optimizers that change under the loop. The healthy ones drew false alarms (train-mode on
BatchNorm held in eval mode on purpose, loss-not-dropping on a REINFORCE surrogate and on a
resumed run at its floor, clip-saturated claiming a Lion update shrank, stale-checkpoint on
early stopping's min_delta); the buggy ones went unnamed or named a symptom (an optimizer
never stepped, a head replaced after the optimizer was built, backward on a loss rebuilt
from `.item()`, a weight whose gradient a hook zeroes, a penalty weighted −λ by a sign typo
whose term the optimizer then maximizes).

tests/loops/test_findings.py runs them (`HEALTHY`, and `BUGGY` with the id and severity
that must name each): no error or warning on a healthy one, for any id.
"""

from __future__ import annotations

from pathlib import Path

import torch
from torch import nn

import riswb
from tests.instrument.lion import Lion
from tests.loops.validation_and_schedule import _classes

LOG_EVERY = 10


def _mlp(*layers: nn.Module) -> nn.Module:
    torch.manual_seed(0)
    return nn.Sequential(nn.Linear(8, 32), *layers, nn.ReLU(), nn.Linear(32, 4))


def _train(runs_dir: Path, name: str, model: nn.Module, opt, *, steps: int = 150,
           backward=lambda loss: loss.backward(), after=None, validate_every: int = 0,
           **workbench) -> Path:
    """Cross-entropy on four classes; `after(step, model, opt)` runs after each step;
    every `validate_every` steps an accuracy under torch.no_grad goes to wb.evaluate."""
    gen = torch.Generator().manual_seed(1)
    with riswb.Workbench(model, opt, runs_dir=runs_dir, name=name, log_every=LOG_EVERY,
                         **workbench) as wb:
        for step in range(steps):
            x, y = _classes(gen)
            loss = wb.loss({"ce": nn.functional.cross_entropy(model(x), y)})
            opt.zero_grad()
            backward(loss)
            opt.step()
            if after is not None:
                after(step, model, opt)
            if validate_every and step % validate_every == validate_every - 1:
                with torch.no_grad():
                    xv, yv = _classes(gen, 128)
                    accuracy = float((model(xv).argmax(1) == yv).float().mean())
                wb.evaluate({"accuracy": accuracy})
    return wb.path


def batchnorm_frozen_statistics(runs_dir: Path) -> Path:
    """norm_eval: BatchNorm kept in eval mode (pre-trained statistics, small batches) while
    its affine weights and every Linear layer train."""
    model = _mlp(nn.BatchNorm1d(32))

    def freeze_statistics(module: nn.Module) -> None:
        module.train()
        module[1].eval()

    freeze_statistics(model)
    opt = torch.optim.Adam(model.parameters(), lr=3e-3)
    return _train(runs_dir, "norm-eval", model, opt,
                  after=lambda step, m, o: freeze_statistics(m))


def lion_clipped_by_torch(runs_dir: Path) -> Path:
    """Lion with torch's clip at a max_norm the gradients exceed throughout: the sign
    update does not shrink with the gradient."""
    model = _mlp()
    opt = Lion(model.parameters(), lr=3e-4)

    def clipped(loss: torch.Tensor) -> None:
        (loss * 50).backward()
        torch.nn.utils.clip_grad_norm_(model.parameters(), 1.0)

    return _train(runs_dir, "lion-clip", model, opt, backward=clipped)


def reinforce_with_entropy_bonus(runs_dir: Path) -> Path:
    """A four-armed contextual bandit trained by REINFORCE with normalized advantages and an
    entropy bonus weighted −0.01: the surrogate averages 0 on every batch and rises as the
    policy sharpens, while the evaluated return climbs."""
    torch.manual_seed(0)
    policy = nn.Sequential(nn.Linear(8, 32), nn.Tanh(), nn.Linear(32, 4))
    opt = torch.optim.Adam(policy.parameters(), lr=1e-2)
    gen = torch.Generator().manual_seed(1)
    with riswb.Workbench(policy, opt, runs_dir=runs_dir, name="reinforce",
                         log_every=LOG_EVERY) as wb:
        for step in range(200):
            x, best = _classes(gen, 64)
            dist = torch.distributions.Categorical(logits=policy(x))
            action = dist.sample()
            reward = (action == best).float()
            advantage = (reward - reward.mean()) / (reward.std() + 1e-6)
            loss = wb.loss({"surrogate": -(dist.log_prob(action) * advantage).mean(),
                            "entropy": dist.entropy().mean()},
                           {"surrogate": 1.0, "entropy": -0.01})
            opt.zero_grad()
            loss.backward()
            opt.step()
            if step % 20 == 19:
                with torch.no_grad():
                    xv, bv = _classes(gen, 256)
                    avg_return = float((policy(xv).argmax(1) == bv).float().mean())
                wb.evaluate({"avg_return": avg_return})
    return wb.path


def resumed_at_its_floor(runs_dir: Path) -> Path:
    """Phase one trains to the floor; phase two resumes from its checkpoint as a new run
    (`first_step` continues the step axis) and stays there: it starts trained."""
    model = _mlp()
    opt = torch.optim.Adam(model.parameters(), lr=3e-3)
    _train(runs_dir / "phase1", "phase1", model, opt, steps=400)
    state = {"model": model.state_dict(), "opt": opt.state_dict()}
    resumed = _mlp()
    resumed.load_state_dict(state["model"])
    opt = torch.optim.Adam(resumed.parameters(), lr=3e-3)
    opt.load_state_dict(state["opt"])
    for group in opt.param_groups:
        group["lr"] = 3e-4  # the tail of the schedule
    return _train(runs_dir, "resumed", resumed, opt, steps=120, first_step=400)


def early_stopping_with_min_delta(runs_dir: Path) -> Path:
    """best.pt saved only on an improvement of at least min_delta = 0.02 in accuracy:
    smaller gains are not saves the loop forgot."""
    model = _mlp()
    opt = torch.optim.Adam(model.parameters(), lr=3e-3)
    gen = torch.Generator().manual_seed(2)
    best = 0.0
    with riswb.Workbench(model, opt, runs_dir=runs_dir, name="min-delta",
                         log_every=LOG_EVERY) as wb:
        for step in range(300):
            x, y = _classes(gen)
            loss = wb.loss({"ce": nn.functional.cross_entropy(model(x), y)})
            opt.zero_grad()
            loss.backward()
            opt.step()
            if step % 10 == 9:
                with torch.no_grad():
                    xv, yv = _classes(torch.Generator().manual_seed(3), 512)
                    accuracy = float((model(xv).argmax(1) == yv).float().mean())
                wb.evaluate({"accuracy": accuracy})
                if accuracy >= best + 0.02:
                    best = accuracy
                    wb.emit("checkpoint", kind="best", metric="accuracy", value=accuracy,
                            mode="max")
    return wb.path


class _EncoderDecoder(nn.Module):
    def __init__(self):
        super().__init__()
        torch.manual_seed(0)
        self.encoder = nn.Sequential(nn.Linear(8, 16), nn.Tanh())
        self.decoder = nn.Linear(16, 8)

    def forward(self, x):
        return self.decoder(self.encoder(x))


def decoder_optimizer_never_stepped(runs_dir: Path) -> Path:
    """BUG: an optimizer each for the encoder and the decoder; only the encoder's steps."""
    model = _EncoderDecoder()
    encoder_opt = torch.optim.Adam(model.encoder.parameters(), lr=3e-3)
    decoder_opt = torch.optim.Adam(model.decoder.parameters(), lr=3e-3)
    gen = torch.Generator().manual_seed(1)
    with riswb.Workbench(model, [encoder_opt, decoder_opt], runs_dir=runs_dir,
                         name="idle-optimizer", log_every=LOG_EVERY) as wb:
        for _ in range(150):
            x = torch.randn(32, 8, generator=gen)
            loss = wb.loss({"mse": (model(x) - x).square().mean()})
            encoder_opt.zero_grad()
            decoder_opt.zero_grad()
            loss.backward()
            encoder_opt.step()
    return wb.path


def head_replaced_after_the_optimizer(runs_dir: Path) -> Path:
    """BUG: a third of the way in the head is replaced by a new nn.Linear (a class added);
    the optimizer keeps stepping the old one."""
    model = _mlp()
    opt = torch.optim.Adam(model.parameters(), lr=3e-3)

    def replace_head(step: int, m: nn.Module, o) -> None:
        if step == 50:
            m[-1] = nn.Linear(32, 4)

    return _train(runs_dir, "head-replaced", model, opt, after=replace_head)


def backward_on_a_rebuilt_loss(runs_dir: Path) -> Path:
    """BUG: backward() on torch.tensor(loss.item(), requires_grad=True): nothing reaches
    the model, every step applies nothing."""
    model = _mlp()
    opt = torch.optim.SGD(model.parameters(), lr=0.1)
    return _train(runs_dir, "item-loss", model, opt, validate_every=25,
                  backward=lambda loss: torch.tensor(loss.item(), requires_grad=True)
                  .backward())


def classifier_gradient_masked_by_a_hook(runs_dir: Path) -> Path:
    """BUG: a pruning mask registered as a gradient hook is all zero for the classifier
    weight (a global threshold above all its magnitudes): its bias still learns."""
    model = _mlp()
    model[-1].weight.register_hook(lambda grad: grad * torch.zeros_like(grad))
    opt = torch.optim.Adam(model.parameters(), lr=3e-3)
    return _train(runs_dir, "masked-weight", model, opt)


def sparsity_penalty_with_a_sign_typo(runs_dir: Path) -> Path:
    """BUG: a sparse autoencoder's L1 code penalty weighted −0.01 instead of 0.01: the code
    grows without bound, the total falls below zero while the reconstruction gets worse."""
    torch.manual_seed(0)
    gen = torch.Generator().manual_seed(0)
    data = torch.tanh(torch.randn(2048, 4, generator=gen) @ torch.randn(4, 32, generator=gen))
    encoder = nn.Sequential(nn.Linear(32, 64), nn.ReLU(), nn.Linear(64, 16), nn.ReLU())
    model = nn.Sequential(encoder, nn.Sequential(nn.Linear(16, 64), nn.ReLU(),
                                                 nn.Linear(64, 32)))
    opt = torch.optim.Adam(model.parameters(), lr=2e-3)
    with riswb.Workbench(model, opt, runs_dir=runs_dir, name="sign-typo",
                         log_every=LOG_EVERY) as wb:
        for _ in range(1200):
            batch = data[torch.randint(0, len(data), (64,), generator=gen)]
            code = encoder(batch)
            loss = wb.loss({"recon": (model[1](code) - batch).square().mean(),
                            "l1": code.abs().mean()}, {"recon": 1.0, "l1": -0.01})
            opt.zero_grad()
            loss.backward()
            opt.step()
    return wb.path


HEALTHY = [batchnorm_frozen_statistics, lion_clipped_by_torch, reinforce_with_entropy_bonus,
           resumed_at_its_floor, early_stopping_with_min_delta]
BUGGY = {decoder_optimizer_never_stepped: ("optimizer-coverage", "error"),
         head_replaced_after_the_optimizer: ("optimizer-coverage", "error"),
         backward_on_a_rebuilt_loss: ("params-not-moving", "error"),
         classifier_gradient_masked_by_a_hook: ("dead-params", "error"),
         sparsity_penalty_with_a_sign_typo: ("loss-not-dropping", "warning")}
