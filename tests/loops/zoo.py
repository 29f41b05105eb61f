"""Foreign training loops: small, realistic, written the way users write them, each run
under a `riswb.Workbench` with the default probes. `healthy_loops()` and `buggy_loops()`
map a name to a callable `loop(runs_dir) -> run path`; every loop is seeded, tiny
(≤ 100 optimizer steps) and finishes in about a second on a CPU.

Healthy: the standard recipes, which must draw no error finding. Buggy: one real mistake
each, named after it; the docstring says what the records must show.
"""

from __future__ import annotations

import math
import warnings
from collections.abc import Callable
from pathlib import Path

import torch
from torch import nn
from torch.utils.checkpoint import checkpoint

import riswb
from riswb.diagnose.rules import Diagnosis, diagnose

Loop = Callable[[Path], Path]
LOG_EVERY = 10
# what the `_plain_steps` loops run with; tests/loops/test_long_host_bound_loops.py runs the
# same loops long, under the Workbench's own defaults (measured observation stride, log
# interval) or a fixed stride, by replacing these
RUN = {"steps": None, "workbench": {"log_every": LOG_EVERY}}


def _mlp(seed: int = 0, width: int = 16, dropout: float = 0.0) -> nn.Module:
    torch.manual_seed(seed)
    layers: list[nn.Module] = [nn.Linear(8, width), nn.ReLU()]
    if dropout:
        layers.append(nn.Dropout(dropout))
    return nn.Sequential(*layers, nn.Linear(width, 1))


def _data(seed: int = 1, n: int = 64) -> tuple[torch.Tensor, torch.Tensor]:
    gen = torch.Generator().manual_seed(seed)
    x = torch.randn(n, 8, generator=gen)
    return x, x[:, :1] * 0.5 + 0.1 * torch.randn(n, 1, generator=gen)


def _batches(x: torch.Tensor, y: torch.Tensor, size: int = 16):
    while True:
        for start in range(0, len(x), size):
            yield x[start:start + size], y[start:start + size]


def _plain_steps(runs_dir: Path, name: str, model: nn.Module, opt, sched=None, *,
                 steps: int = 40, clip: float | None = None, clear: str = "before",
                 terms: Callable | None = None, weights: dict | None = None,
                 at_step: Callable | None = None, before_step: Callable | None = None,
                 evaluate: Callable | None = None) -> Path:
    """The common loop: forward, wb.loss, zero_grad / backward / (clip) / step / sched; with
    `at_step(step)` first, `before_step(step)` between backward and step, and
    `wb.evaluate({"val": evaluate()})` every 20 steps."""
    x, y = _data()
    batches = _batches(x, y)
    steps = RUN["steps"] or steps
    with riswb.Workbench(model, opt, sched, runs_dir=runs_dir, name=name,
                         **RUN["workbench"]) as wb:
        for step in range(steps):
            if at_step is not None:
                at_step(step)
            xb, yb = next(batches)
            out = model(xb)
            named = terms(out, yb) if terms else {"mse": (out - yb).square().mean()}
            loss = wb.loss(named, weights)
            if clear == "before":
                opt.zero_grad()
            loss.backward()
            if clear == "between":
                opt.zero_grad()
            if clip is not None:
                torch.nn.utils.clip_grad_norm_(model.parameters(), clip)
            if before_step is not None:
                before_step(step)
            opt.step()
            if sched is not None:
                sched.step()
            if evaluate is not None and step % 20 == 19:
                wb.evaluate({"val": evaluate()})
    return wb.path


def diagnose_loop(loop: Loop, runs_dir: Path) -> Diagnosis:
    """Run `loop` and diagnose its run (strict: a rule error raises), PyTorch's own warnings
    (scheduler order under AMP, ...) silenced."""
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        return diagnose(riswb.read_run(loop(runs_dir)), strict=True)


def severities(loop: Loop, runs_dir: Path, ids: tuple[str, ...]) -> dict[str, str]:
    """{finding id: severity} of `loop`'s run, for the ids a suite is about."""
    return {f.id: f.severity for f in diagnose_loop(loop, runs_dir).findings if f.id in ids}


# -- healthy ------------------------------------------------------------------------------


class SmallCNN(nn.Module):
    def __init__(self):
        super().__init__()
        self.features = nn.Sequential(nn.Conv2d(1, 4, 3, padding=1), nn.BatchNorm2d(4),
                                      nn.ReLU(), nn.AdaptiveAvgPool2d(2))
        self.head = nn.Sequential(nn.Flatten(), nn.Dropout(0.2), nn.Linear(16, 3))

    def forward(self, x):
        return self.head(self.features(x))


def cnn_batchnorm_onecycle(runs_dir: Path) -> Path:
    """CNN + BatchNorm + Dropout, OneCycleLR stepped per batch, eval under model.eval()."""
    torch.manual_seed(0)
    model = SmallCNN()
    opt = torch.optim.SGD(model.parameters(), lr=0.05, momentum=0.9)
    sched = torch.optim.lr_scheduler.OneCycleLR(opt, max_lr=0.1, total_steps=40)
    gen = torch.Generator().manual_seed(2)
    x, y = torch.randn(64, 1, 8, 8, generator=gen), torch.randint(0, 3, (64,), generator=gen)
    with riswb.Workbench(model, opt, sched, runs_dir=runs_dir, name="cnn",
                         log_every=LOG_EVERY) as wb:
        for step in range(40):
            index = torch.arange(step % 4 * 16, step % 4 * 16 + 16)
            model.train()
            loss = wb.loss({"ce": nn.functional.cross_entropy(model(x[index]), y[index])})
            opt.zero_grad(set_to_none=True)
            loss.backward()
            opt.step()
            sched.step()
            if step % 10 == 9:
                model.eval()
                with torch.no_grad():
                    val = nn.functional.cross_entropy(model(x), y)
                wb.evaluate({"val_loss": val})
    return wb.path


class TinyTransformer(nn.Module):
    def __init__(self):
        super().__init__()
        self.embed = nn.Linear(4, 16)
        self.encoder = nn.TransformerEncoderLayer(16, 2, 32, dropout=0.1, batch_first=True)
        self.out = nn.Linear(16, 1)

    def forward(self, x):
        return self.out(self.encoder(self.embed(x))).mean(1)


def transformer_warmup_cosine_clip(runs_dir: Path) -> Path:
    """Tiny transformer, AdamW, warm-up + cosine LambdaLR, torch's clip_grad_norm_(1.0)."""
    torch.manual_seed(0)
    model = TinyTransformer()
    opt = torch.optim.AdamW(model.parameters(), lr=3e-3)
    warm, total = 5, 40
    sched = torch.optim.lr_scheduler.LambdaLR(opt, lambda s: (s + 1) / warm if s < warm else
                                              0.5 * (1 + math.cos(math.pi * (s - warm) / total)))
    gen = torch.Generator().manual_seed(3)
    x = torch.randn(64, 6, 4, generator=gen)
    y = x.sum((1, 2)).unsqueeze(1) * 0.1
    batches = _batches(x, y)
    with riswb.Workbench(model, opt, sched, runs_dir=runs_dir, name="transformer",
                         log_every=LOG_EVERY) as wb:
        for _ in range(total):
            xb, yb = next(batches)
            loss = wb.loss({"mse": (model(xb) - yb).square().mean()})
            opt.zero_grad()
            loss.backward()
            torch.nn.utils.clip_grad_norm_(model.parameters(), 1.0)
            opt.step()
            sched.step()
    return wb.path


def accumulation_4_no_hint(runs_dir: Path) -> Path:
    """Gradient accumulation over 4 micro-batches, no `accumulation=` hint: 40 wb.loss
    calls, 40 backwards, 10 optimizer steps, zero_grad after each step."""
    model = _mlp()
    opt = torch.optim.SGD(model.parameters(), lr=0.05)
    x, y = _data()
    batches = _batches(x, y)
    with riswb.Workbench(model, opt, runs_dir=runs_dir, name="accum",
                         log_every=LOG_EVERY) as wb:
        for micro in range(40):
            xb, yb = next(batches)
            loss = wb.loss({"mse": (model(xb) - yb).square().mean()})
            (loss / 4).backward()
            if micro % 4 == 3:
                opt.step()
                opt.zero_grad()
    return wb.path


def amp_grad_scaler(runs_dir: Path) -> Path:
    """fp16 autocast + GradScaler("cpu") (the standard recipe; fp16 autocast runs on CPU in
    torch 2.13). init_scale 2**20 overflows at first: the scaler skips a few calibration
    steps, and the scheduler is stepped after every scaler.step (PyTorch warns once)."""
    model = _mlp(width=32)
    opt = torch.optim.AdamW(model.parameters(), lr=1e-2)
    sched = torch.optim.lr_scheduler.StepLR(opt, 10, gamma=0.5)
    scaler = torch.amp.GradScaler("cpu", init_scale=2.0 ** 20)
    x, y = _data()
    batches = _batches(x, y)
    with riswb.Workbench(model, opt, sched, runs_dir=runs_dir, name="amp",
                         log_every=LOG_EVERY) as wb:
        for _ in range(40):
            xb, yb = next(batches)
            with torch.autocast("cpu", dtype=torch.float16):
                out = model(xb)
            loss = wb.loss({"mse": (out.float() - yb).square().mean()})
            opt.zero_grad()
            scaler.scale(loss).backward()
            scaler.unscale_(opt)
            torch.nn.utils.clip_grad_norm_(model.parameters(), 10.0)
            scaler.step(opt)
            scaler.update()
            sched.step()
    return wb.path


def frozen_backbone_finetune(runs_dir: Path) -> Path:
    """Backbone frozen (requires_grad False, BatchNorm kept in eval), head fine-tuned."""
    torch.manual_seed(0)
    model = nn.Sequential(nn.Linear(8, 16), nn.BatchNorm1d(16), nn.ReLU(), nn.Linear(16, 1))
    backbone = model[:3]
    for p in backbone.parameters():
        p.requires_grad_(False)
    opt = torch.optim.Adam(model[3].parameters(), lr=1e-2)
    backbone.eval()
    return _plain_steps(runs_dir, "finetune", model, opt)


def zero_grad_keep_tensors(runs_dir: Path) -> Path:
    """`zero_grad(set_to_none=False)`: gradients zeroed in place each step."""
    model = _mlp()
    opt = torch.optim.SGD(model.parameters(), lr=0.05)
    x, y = _data()
    batches = _batches(x, y)
    with riswb.Workbench(model, opt, runs_dir=runs_dir, name="zero-keep",
                         log_every=LOG_EVERY) as wb:
        for _ in range(30):
            xb, yb = next(batches)
            loss = wb.loss({"mse": (model(xb) - yb).square().mean()})
            opt.zero_grad(set_to_none=False)
            loss.backward()
            opt.step()
    return wb.path


def sgd_momentum_steplr_epochs(runs_dir: Path) -> Path:
    """SGD + momentum, StepLR stepped once per epoch (4 batches per epoch, 10 epochs)."""
    model = _mlp()
    opt = torch.optim.SGD(model.parameters(), lr=0.05, momentum=0.9)
    sched = torch.optim.lr_scheduler.StepLR(opt, step_size=3, gamma=0.5)
    x, y = _data()
    with riswb.Workbench(model, opt, sched, runs_dir=runs_dir, name="steplr",
                         log_every=LOG_EVERY) as wb:
        for _epoch in range(10):
            for xb, yb in zip(x.split(16), y.split(16), strict=True):
                loss = wb.loss({"mse": (model(xb) - yb).square().mean()})
                opt.zero_grad()
                loss.backward()
                opt.step()
            sched.step()
    return wb.path


def gan_two_optimizers(runs_dir: Path) -> Path:
    """A GAN: generator and discriminator, one optimizer each, `Workbench(model, [d, g])`."""
    torch.manual_seed(0)
    gen_net = nn.Sequential(nn.Linear(4, 16), nn.ReLU(), nn.Linear(16, 2))
    disc = nn.Sequential(nn.Linear(2, 16), nn.LeakyReLU(0.2), nn.Linear(16, 1))
    model = nn.ModuleDict({"generator": gen_net, "discriminator": disc})
    opt_d = torch.optim.Adam(disc.parameters(), lr=1e-3, betas=(0.5, 0.999))
    opt_g = torch.optim.Adam(gen_net.parameters(), lr=1e-3, betas=(0.5, 0.999))
    bce = nn.functional.binary_cross_entropy_with_logits
    real = torch.randn(256, 2, generator=torch.Generator().manual_seed(4)) * 0.5 + 1.0
    with riswb.Workbench(model, [opt_d, opt_g], runs_dir=runs_dir, name="gan",
                         log_every=LOG_EVERY) as wb:
        for step in range(30):
            batch = real[step % 8 * 32:(step % 8 + 1) * 32]
            fake = gen_net(torch.randn(32, 4))
            d_loss = wb.loss({"d_real": bce(disc(batch), torch.ones(32, 1)),
                              "d_fake": bce(disc(fake.detach()), torch.zeros(32, 1))})
            opt_d.zero_grad()
            d_loss.backward()
            opt_d.step()
            g_loss = wb.loss({"g": bce(disc(fake), torch.ones(32, 1))})
            opt_g.zero_grad()
            g_loss.backward()
            opt_g.step()
    return wb.path


class CheckpointedMLP(nn.Module):
    def __init__(self):
        super().__init__()
        torch.manual_seed(0)
        self.embed = nn.Linear(8, 8)  # so the checkpointed blocks' input requires grad
        self.blocks = nn.ModuleList([nn.Sequential(nn.Linear(8, 8), nn.Tanh())
                                     for _ in range(3)])
        self.head = nn.Linear(8, 1)

    def forward(self, x):
        x = self.embed(x)
        for block in self.blocks:
            x = checkpoint(block, x, use_reentrant=True)
        return self.head(x)


def reentrant_checkpointing(runs_dir: Path) -> Path:
    """Activation checkpointing with use_reentrant=True: nested backward passes."""
    model = CheckpointedMLP()
    opt = torch.optim.Adam(model.parameters(), lr=1e-3)
    return _plain_steps(runs_dir, "checkpointed", model, opt, steps=20)


# -- buggy --------------------------------------------------------------------------------


def clip_tiny_max_norm(runs_dir: Path) -> Path:
    """torch.nn.utils.clip_grad_norm_ at max_norm=1e-4: every step clipped to nothing."""
    model = _mlp()
    return _plain_steps(runs_dir, "clip-tiny", model,
                        torch.optim.SGD(model.parameters(), lr=0.05), clip=1e-4)


def zero_grad_never(runs_dir: Path) -> Path:
    """zero_grad is never called: every step re-applies all earlier gradients."""
    model = _mlp()
    return _plain_steps(runs_dir, "no-zero-grad", model,
                        torch.optim.SGD(model.parameters(), lr=0.005), clear="never")


def eval_mode_training(runs_dir: Path) -> Path:
    """model.eval() before training: Dropout off, BatchNorm statistics frozen."""
    torch.manual_seed(0)
    model = nn.Sequential(nn.Linear(8, 16), nn.BatchNorm1d(16), nn.ReLU(), nn.Dropout(0.3),
                          nn.Linear(16, 1))
    model.eval()
    return _plain_steps(runs_dir, "eval-mode", model,
                        torch.optim.SGD(model.parameters(), lr=0.05))


def zero_grad_between_backward_and_step(runs_dir: Path) -> Path:
    """zero_grad between backward and step: every step applies zero gradients."""
    model = _mlp()
    return _plain_steps(runs_dir, "zero-before-step", model,
                        torch.optim.Adam(model.parameters(), lr=1e-2), clear="between")


class TwoHeads(nn.Module):
    def __init__(self):
        super().__init__()
        torch.manual_seed(0)
        self.body = nn.Sequential(nn.Linear(8, 16), nn.ReLU())
        self.main = nn.Linear(16, 1)
        self.aux = nn.Linear(16, 1)

    def forward(self, x):
        h = self.body(x)
        return self.main(h), self.aux(h)


def head_missing_from_optimizer(runs_dir: Path) -> Path:
    """The aux head trains through the loss but is in no optimizer."""
    model = TwoHeads()
    params = [*model.body.parameters(), *model.main.parameters()]
    return _plain_steps(
        runs_dir, "missing-head", model, torch.optim.SGD(params, lr=0.05),
        terms=lambda out, yb: {"main": (out[0] - yb).square().mean(),
                               "aux": (out[1] - yb).square().mean()})


def l2_penalty_dominates(runs_dir: Path) -> Path:
    """An L2 penalty weighted to be ~20× the fit term: the fit barely moves."""
    model = _mlp()
    weight = model[0].weight
    return _plain_steps(
        runs_dir, "l2-dominates", model, torch.optim.SGD(model.parameters(), lr=0.01),
        terms=lambda out, yb: {"fit": (out - yb).square().mean(), "l2": weight.square().sum()},
        weights={"fit": 1.0, "l2": 2.0})


def detached_term(runs_dir: Path) -> Path:
    """A term computed from a detached output: it contributes no gradient at all."""
    model = _mlp()
    return _plain_steps(
        runs_dir, "detached-term", model, torch.optim.SGD(model.parameters(), lr=0.05),
        terms=lambda out, yb: {"fit": (out - yb).square().mean(),
                               "smooth": out.detach().diff(dim=0).abs().mean()})


def healthy_loops() -> dict[str, Loop]:
    return {
        "cnn_batchnorm_onecycle": cnn_batchnorm_onecycle,
        "transformer_warmup_cosine_clip": transformer_warmup_cosine_clip,
        "accumulation_4_no_hint": accumulation_4_no_hint,
        "amp_grad_scaler": amp_grad_scaler,
        "frozen_backbone_finetune": frozen_backbone_finetune,
        "zero_grad_keep_tensors": zero_grad_keep_tensors,
        "sgd_momentum_steplr_epochs": sgd_momentum_steplr_epochs,
        "gan_two_optimizers": gan_two_optimizers,
        "reentrant_checkpointing": reentrant_checkpointing,
    }


def buggy_loops() -> dict[str, Loop]:
    return {
        "clip_tiny_max_norm": clip_tiny_max_norm,
        "zero_grad_never": zero_grad_never,
        "eval_mode_training": eval_mode_training,
        "zero_grad_between_backward_and_step": zero_grad_between_backward_and_step,
        "head_missing_from_optimizer": head_missing_from_optimizer,
        "l2_penalty_dominates": l2_penalty_dominates,
        "detached_term": detached_term,
    }
