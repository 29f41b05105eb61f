"""The bug zoo: named fault injections that reproduce real failures (docs/failures.md) in the
reference trainer, each with the findings (or litmus checks) that must name it.

A fault is a `Trainer` subclass that overrides one method, the way the bug sat in the
original code, plus optional config overrides. `build_trainer(config)` builds the clean
trainer, or the faulty one when `config.inject` names a fault (`riswb overfit --inject`,
`riswb litmus --inject`), so the zoo exercises the real pipeline. Two kinds of faults:

* training faults (`expects` non-empty): a run with all probes on (the 48-step zoo recipe
  and `riswb overfit --samples 256`) must fail the gate (unless `gate_fails=False`: the
  finding is a warning by design) and `diagnose` must name every id in `expects`;
* crash signatures (`litmus` non-empty, `expects` empty): the bug raises or turns NaN at the
  first backward (on a small batch); the litmus checks in `litmus` must fail on the bare
  pipeline (`build_trainer(config)` without `run()`). They are not trained in the zoo.

`zoo_config()` / `zoo_probes()` / `run_fault()`: the reduced recipe of the tests and
`benchmarks/fault_matrix.py` (128 scenes, batch 32, 48 steps, every probe on, per-term
gradients sampled every 6th step).
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any

import torch

from riswb.errors import RiswbError
from riswb.instrument.hooks import Event
from riswb.probes.params import top_module
from riswb.reference import checkpoints
from riswb.reference.config import TrainConfig
from riswb.reference.data import batch_indices
from riswb.reference.losses import DEFAULT_WEIGHTS, loss_terms, nmse, truth_basis
from riswb.reference.losses import _as_geometry as _loss_geometry
from riswb.reference.model import ModelOutput
from riswb.reference.physics.scenes import SceneBatch
from riswb.reference.trainer import Trainer


@dataclass(frozen=True)
class Fault:
    name: str
    description: str
    failure: str  # where it happened: a docs/failures.md item
    trainer: type[Trainer] = Trainer
    config: dict[str, Any] = field(default_factory=dict)
    expects: tuple[str, ...] = ()  # finding ids that must name it (error or warning)
    litmus: tuple[str, ...] = ()  # litmus checks that must fail with it
    also: tuple[str, ...] = ()  # findings that legitimately come with it (not required)
    gate_fails: bool = True  # False: the gate may pass (the finding is a warning by design)

    @property
    def overrides(self) -> str:
        """The Trainer method the fault overrides ("" for a config-only fault)."""
        if self.trainer is Trainer:
            return ""
        own = [name for name, value in vars(self.trainer).items()
               if callable(value) and not name.startswith("__")]
        return ", ".join(own)

    @property
    def trains(self) -> bool:
        """A training fault (diagnosed from a run), not a crash signature for litmus."""
        return bool(self.expects)

    def to_dict(self) -> dict[str, Any]:
        return {"name": self.name, "description": self.description, "failure": self.failure,
                "expects": list(self.expects), "litmus": list(self.litmus),
                "also": list(self.also), "overrides": self.overrides,
                "config": dict(self.config), "gate_fails": self.gate_fails}


FAULTS: dict[str, Fault] = {}


def register(fault: Fault) -> Fault:
    if fault.name in FAULTS:
        raise ValueError(f"fault {fault.name!r} is registered twice")
    FAULTS[fault.name] = fault
    return fault


def get_fault(name: str) -> Fault:
    try:
        return FAULTS[name]
    except KeyError:
        raise RiswbError(f"unknown fault {name!r}; `riswb faults` lists them") from None


def build_trainer(config: TrainConfig, **kwargs: Any) -> Trainer:
    """The trainer for `config`, with `config.inject`'s fault applied when set."""
    if config.inject is None:
        return Trainer(config, **kwargs)
    fault = get_fault(config.inject)
    return fault.trainer(config.replace(**fault.config), **kwargs)


# =========================================================================== the faults
# Each class reproduces one bug in one overridden method; the comment `# BUG:` marks the
# line that differs from the clean Trainer.


# ---------------------------------------------------------------- optimizer and schedule
class HeadsNotInOptimizer(Trainer):
    """docs/failures.md #6: groups from a head-name list older than the factor and aux heads."""

    HEAD_NAMES = ("k_head",)  # BUG: written when k_head was the only head

    def param_groups(self) -> list[dict[str, Any]]:
        backbone = [p for n, p in self.model.named_parameters() if n.startswith("trunk.")]
        heads = [p for n, p in self.model.named_parameters()
                 if top_module(n) in self.HEAD_NAMES]
        return [{"name": "backbone", "params": backbone},
                {"name": "heads", "params": heads, "lr": self.cfg.head_lr or self.cfg.lr}]


class ZeroLrHeadGroup(Trainer):
    """docs/failures.md #6: the head group's lr read from an optional setting that defaults to 0."""

    def param_groups(self) -> list[dict[str, Any]]:
        groups = super().param_groups()
        for group in groups:
            if group["name"] == "heads":
                group["lr"] = float(self.cfg.head_lr or 0.0)  # BUG: `or self.cfg.lr` lost
        return groups


class WarmupFromZero(Trainer):
    """docs/failures.md #2: lr = base·step/warmup_steps from step 0, with `step` read from a counter
    that nothing increments: the lr starts at 0 and the warm-up never ends
    ("[LR] lr=[0.0, 0.0]", Δparam = 0)."""

    def make_scheduler(self) -> torch.optim.lr_scheduler.LRScheduler:
        self.global_step = 0  # BUG: the batch loop never increments it
        warmup = self.cfg.warmup_steps
        return torch.optim.lr_scheduler.LambdaLR(
            self.optimizer, lambda _: min(1.0, self.global_step / warmup))


class SchedulerBeforeOptimizer(Trainer):
    """docs/failures.md #3: scheduler.step() called before optimizer.step() in the batch loop."""

    def backward_and_step(self, loss: torch.Tensor) -> bool:
        self.optimizer.zero_grad(set_to_none=True)
        params = [p for p in self.model.parameters() if p.requires_grad]
        loss.backward()
        if self.cfg.sanitize:
            self.wb.sanitize_(params)
        if self.cfg.clip_norm:
            self.wb.clip_grad_norm_(params, self.cfg.clip_norm)
        self.scheduler.step()  # BUG: before the optimizer step
        stepped = self.optimizer_step()
        if stepped and self.ema is not None:
            self.ema.update()
        return stepped


# ---------------------------------------------------------------- step mechanics
class StepPerEpoch(Trainer):
    """docs/failures.md #1: backward and step one indentation level too low, after the batch loop:
    one update per epoch, on the last batch."""

    def train_epoch(self) -> None:
        self.model.train()
        loss = None
        for index in batch_indices(len(self.train_set), self.cfg.batch_size,
                                   seed=self.cfg.seed, epoch=self.epoch):
            loss = self.forward_loss(self.train_set[index])
            self.progress("step", {"epoch": self.epoch, "loss": loss})
        self.backward_and_step(loss)  # BUG: outside the batch loop


class StepGate(Trainer):
    """docs/failures.md #5: a step gate requiring the backbone's and the heads' gradient norms above
    an absolute floor skips more valid steps as gradients shrink (logged: wb.step_skipped)."""

    MIN_NORM = 0.5  # BUG: an absolute floor; healthy late-training norms fall below it

    def optimizer_step(self) -> bool:
        for group in self.optimizer.param_groups:
            grads = [p.grad.norm() for p in group["params"] if p.grad is not None]
            norm = float(torch.stack(grads).norm()) if grads else 0.0
            if not norm > self.MIN_NORM:  # BUG: the gate
                self.wb.step_skipped("gate")  # an attempt the loop skipped on purpose
                return False
        return super().optimizer_step()


class ZeroGradNever(Trainer):
    """zero_grad() lost from the step: each update re-applies every earlier gradient."""

    def clear_grads(self) -> None:
        pass  # BUG: optimizer.zero_grad() lost: backward adds onto every earlier gradient


class ZeroGradBeforeStep(Trainer):
    """zero_grad() moved into the step helper, between backward and step: no update."""

    def optimizer_step(self) -> bool:
        self.optimizer.zero_grad(set_to_none=True)  # BUG: after backward, before step
        return super().optimizer_step()


class TorchClipTiny(Trainer):
    """The step helper clips with torch's own clip_grad_norm_ (not wb's) at 1e-4."""

    MAX_NORM = 1e-4  # BUG: a per-element bound used as a global norm

    def optimizer_step(self) -> bool:
        torch.nn.utils.clip_grad_norm_(self.model.parameters(), self.MAX_NORM)  # BUG
        return super().optimizer_step()


# ---------------------------------------------------------------- losses and gradients
class HeadWithoutLoss(Trainer):
    """docs/failures.md #7: a key mismatch overwrote the aux head's output with a soft-argmax read
    off the factor before the loss: the aux head holds parameters that no loss reaches."""

    def compute_terms(self, out: ModelOutput, batch: SceneBatch) -> dict[str, torch.Tensor]:
        model = self.model
        soft = torch.sigmoid(out.factor.abs()[:, :3, :].mT)  # (B, K_MAX, 3) in (0, 1)
        out = replace(out, aux=model.aux_lo + model.aux_span * soft)  # BUG: overwrites aux
        return loss_terms(out, batch, self.preset, beta=self.beta(self.epoch))


class DetachedRPred(Trainer):
    """R_pred detached before the loss (a monitoring leftover): its terms send no gradient."""

    def compute_terms(self, out: ModelOutput, batch: SceneBatch) -> dict[str, torch.Tensor]:
        out = replace(out, R_pred=out.R_pred.detach())  # BUG
        return loss_terms(out, batch, self.preset, beta=self.beta(self.epoch))


class DetachedTerm(Trainer):
    """docs/failures.md #16-like: peak_contrast computed on a detached copy of the outputs (moved
    into a no-grad "metrics" helper): its value moves, its gradient is 0."""

    def compute_terms(self, out: ModelOutput, batch: SceneBatch) -> dict[str, torch.Tensor]:
        beta = self.beta(self.epoch)
        terms = loss_terms(out, batch, self.preset, beta=beta)
        detached = replace(out, R_pred=out.R_pred.detach(), factor=out.factor.detach())
        terms["peak_contrast"] = loss_terms(detached, batch, self.preset,
                                            beta=beta)["peak_contrast"]  # BUG
        return terms


class WeightsNeverPassed(Trainer):
    """docs/failures.md #8: the loss constructor reads `lam_<term>` keyword weights that default to
    0; the config names terms without the prefix, so no weight ever reaches the loss."""

    def _loss_weights(self) -> dict[str, float]:
        return {name: float(self.cfg.weights.get(f"lam_{name}", 0.0))  # BUG: default 0
                for name in DEFAULT_WEIGHTS}


class NanTermSanitized(Trainer):
    """docs/failures.md #10/12: the aux range error computed as sqrt(Σ err²) per slot: finite value,
    but a NaN gradient wherever an (empty, masked) slot's error is exactly 0, i.e. on every
    batch with a scene below K_MAX sources; sanitize_ silently zeroes the NaNs."""

    def compute_terms(self, out: ModelOutput, batch: SceneBatch) -> dict[str, torch.Tensor]:
        terms = loss_terms(out, batch, self.preset, beta=self.beta(self.epoch))
        geo = _loss_geometry(self.preset, out.aux.device)
        lo, span = geo.lo.to(out.aux), geo.span.to(out.aux)
        target = torch.stack([batch.phi, batch.theta, batch.r], -1)
        err = ((out.aux - lo) / span - (target - lo) / span) * batch.mask[..., None]
        terms["aux"] = err.square().sum(-1).sqrt().mean()  # BUG: sqrt at 0 → NaN gradient
        return terms


class PhaseDependentEigvecLoss(Trainer):
    """docs/failures.md #11: subspace_align compares eigh eigenvectors with the true basis entry by
    entry, so it depends on their arbitrary phase: backward raises once that part of the
    gradient exceeds eigh's tolerance, else trains on a wrong gradient (litmus names both)."""

    def compute_terms(self, out: ModelOutput, batch: SceneBatch) -> dict[str, torch.Tensor]:
        terms = loss_terms(out, batch, self.preset, beta=self.beta(self.epoch))
        geo = _loss_geometry(self.preset, out.R_pred.device)
        _, q_t = truth_basis(batch.phi, batch.theta, batch.r, batch.mask, geo)
        k_max = q_t.shape[-1]
        u = torch.linalg.eigh(out.R_pred).eigenvectors.flip(-1)[..., :k_max]
        mask = batch.mask[:, None, :].to(u.real.dtype)
        # BUG: ‖U_k − Q_t‖² instead of the projector distance ‖U_k U_kᴴ − Q_t Q_tᴴ‖²
        terms["subspace_align"] = ((u - q_t.to(u.dtype)).abs().square() * mask).sum((-2, -1)).mean()
        return terms


class RSampNotDetached(Trainer):
    """docs/failures.md #22: R_samp.detach() removed "to let gradients flow": the announced R_samp
    requires grad, R_blend carries it into the loss and backward walks into the data."""

    def forward_loss(self, batch: SceneBatch) -> torch.Tensor:
        r_samp = batch.R_samp.clone().requires_grad_()  # BUG: was batch.R_samp (detached)
        batch = replace(batch, R_samp=r_samp)
        self.wb.emit(Event.BATCH_START, inputs={"y": batch.y, "R_samp": batch.R_samp,
                                                "R_true": batch.R_true})
        out = self.forward(batch)
        terms = self.compute_terms(out, batch)
        beta = self.beta(self.epoch)
        terms["nmse"] = nmse((1 - beta) * out.R_pred + beta * r_samp, batch.R_true)
        return self.wb.loss(terms, self.weights)


# ---------------------------------------------------------------- weights and checkpoints
class EmaNotRestored(Trainer):
    """docs/failures.md #19: validation on EMA weights swapped in by hand and never swapped back:
    training continues from the averaged weights."""

    def evaluate(self) -> dict[str, float]:
        with torch.no_grad():
            torch._foreach_copy_([p.data for p in self.ema.params], self.ema.shadow)
        self.wb.emit(Event.WEIGHTS_SWAP_IN, kind="ema")
        metrics = self.validate()
        # BUG: the training weights are never copied back (no swap-out)
        r_pred, r_true, k = self._last_eval
        self.wb.evaluate(metrics, R_pred=r_pred, R_true=r_true, K=k)
        return metrics


class BestNeverUpdated(Trainer):
    """docs/failures.md #21: best_val initialized at the first evaluation (best.pt
    written) and never updated: later improvements never reach best.pt."""

    def save_checkpoints(self, metrics: dict[str, float]) -> None:
        folder = self.wb.path / "checkpoints"
        value = metrics["val_loss"]
        if self.best_value == math.inf:  # BUG: the only branch that saves best.pt
            self.best_value = value
            path = checkpoints.save_atomic(self.scored_weights(), folder / "best.pt")
            self.wb.emit(Event.CHECKPOINT, kind="best", path=str(path), metric="val_loss",
                         value=value)
        checkpoints.save_atomic(self.scored_weights(), folder / "last.pt")
        checkpoints.save_atomic(self.state_dict(), folder / "state.pt")


class RankOneCovariance(Trainer):
    """A covariance head collapsed to rank 1: R_pred built from the factor's first column
    only (F[..., :1], an indexing slip), whatever the number of sources."""

    def forward(self, batch: SceneBatch) -> ModelOutput:
        out = super().forward(batch)
        f = out.factor[..., :1]  # BUG: F[..., :1] instead of F
        n = f.shape[-2]
        ffh = f @ f.mH
        e = torch.diagonal(ffh, dim1=-2, dim2=-1).real.sum(-1)
        load = self.model.load
        eye = torch.eye(n, dtype=ffh.dtype, device=ffh.device)
        scale = n / (e * (1 + load) + 1e-12)
        r = (ffh + (load * e / n)[:, None, None] * eye) * scale[:, None, None]
        return replace(out, R_pred=0.5 * (r + r.mH), factor=f)


# =========================================================================== the registry
_F = "docs/failures.md"

for _fault in (
    Fault("heads-not-in-optimizer",
          "param groups built from a hard-coded head-name list: factor_head and aux_head "
          "are in no group and never update",
          f"{_F} 6", HeadsNotInOptimizer, expects=("optimizer-coverage",),
          also=("params-not-moving",)),
    Fault("head-without-loss",
          "a key mismatch overwrites the aux head's output before the loss: the aux head "
          "never receives a gradient",
          f"{_F} 7", HeadWithoutLoss, expects=("dead-params",),
          also=("params-not-moving",)),
    Fault("detached-r-pred",
          "R_pred detached before the loss: the covariance and spectral terms send no "
          "gradient",
          f"{_F} 7, 16", DetachedRPred, expects=("dead-loss-term",),
          also=("params-not-moving", "dead-params", "loss-not-dropping",
                "spectrum-mismatch")),
    Fault("step-per-epoch",
          "backward and optimizer.step after the batch loop: one update per epoch",
          f"{_F} 1", StepPerEpoch, expects=("step-cadence",),
          also=("scheduler-order", "loss-not-dropping", "spectrum-mismatch", "lr-stalled",
                "term-conflict")),
    Fault("ema-not-restored",
          "EMA weights swapped in for validation and never swapped back",
          f"{_F} 19", EmaNotRestored, config={"ema_decay": 0.9},
          expects=("weights-swapped",), also=("loss-not-dropping",)),
    Fault("warmup-from-zero",
          "warm-up lr·step/warmup from step 0 on a step counter that never advances: lr "
          "starts at 0 and the warm-up outlasts the run",
          f"{_F} 2", WarmupFromZero, expects=("lr-stalled",),
          also=("loss-not-dropping", "params-not-moving", "spectrum-mismatch", "term-conflict")),
    Fault("scheduler-before-optimizer",
          "scheduler.step() called before optimizer.step() (the schedule is one step "
          "ahead; the gate may pass: scheduler-order is a warning)",
          f"{_F} 3", SchedulerBeforeOptimizer, expects=("scheduler-order",),
          gate_fails=False),
    Fault("nan-term-sanitized",
          "a loss term with a NaN gradient on batches with empty source slots, masked by "
          "gradient sanitization",
          f"{_F} 10, 12", NanTermSanitized, expects=("nonfinite-grads",),
          also=("loss-not-dropping", "params-not-moving", "spectrum-mismatch",
                "dead-params", "dead-loss-term", "term-conflict")),
    Fault("zero-lr-head-group",
          "the heads param group gets lr 0 (an optional head lr that defaults to 0)",
          f"{_F} 6", ZeroLrHeadGroup, expects=("optimizer-coverage", "params-not-moving"),
          also=("lr-stalled",)),
    Fault("clip-near-zero",
          "gradient clipping at max_norm 1e-4: every update shrunk ~10⁴×",
          "docs/design.md §5 clip-saturated", Trainer, config={"clip_norm": 1e-4},
          expects=("clip-saturated",), also=("loss-not-dropping", "spectrum-mismatch")),
    Fault("detached-term",
          "peak_contrast computed from detached outputs: its value moves, its gradient is 0",
          f"{_F} 16", DetachedTerm, expects=("dead-loss-term",)),
    Fault("r-samp-not-detached",
          "R_samp.detach() removed: the batch's R_samp requires grad and R_blend carries it "
          "into the loss",
          f"{_F} 22", RSampNotDetached, config={"beta_start": 0.3, "beta_end": 0.3},
          expects=("grad-into-inputs",)),
    Fault("best-never-updated",
          "best_val set at the first evaluation and never updated: best.pt stays at epoch 0",
          f"{_F} 21", BestNeverUpdated, expects=("stale-checkpoint",)),
    Fault("rank1-covariance",
          "R_pred built from the factor's first column only: a rank-1 covariance head",
          "docs/design.md §5 spectrum-mismatch", RankOneCovariance, expects=("spectrum-mismatch",),
          also=("loss-not-dropping", "dead-params")),
    Fault("weights-never-passed",
          "loss weights read as lam_<term> keywords that default to 0: every weight is 0 "
          "and the loss prints 0.000000",
          f"{_F} 8", WeightsNeverPassed, expects=("dead-loss-term",),
          also=("loss-not-dropping", "params-not-moving", "spectrum-mismatch",
                "dead-params", "step-skipped")),
    Fault("zero-grad-never",
          "optimizer.zero_grad() never called: every step re-applies all earlier gradients",
          f"{_F} 1, 9", ZeroGradNever, expects=("grads-not-cleared",),
          also=("loss-not-dropping", "spectrum-mismatch", "clip-saturated", "term-conflict")),
    Fault("zero-grad-before-step",
          "optimizer.zero_grad() between backward and optimizer.step: every update is zero",
          f"{_F} 12", ZeroGradBeforeStep, expects=("grads-altered",),
          also=("params-not-moving", "step-skipped", "loss-not-dropping",
                "spectrum-mismatch", "term-conflict")),
    Fault("torch-clip-tiny",
          "torch.nn.utils.clip_grad_norm_ at max_norm 1e-4 inside the step helper (no "
          "wb.clip_grad_norm_): clip-saturated from the step-time observation",
          "docs/design.md §5 clip-saturated", TorchClipTiny, config={"clip_norm": 0.0},
          expects=("clip-saturated",), also=("loss-not-dropping", "spectrum-mismatch")),
    Fault("step-gate",
          "a step gate requiring backbone and head gradient norms above a floor skips "
          "valid steps as gradients shrink",
          f"{_F} 5", StepGate, expects=("step-skipped",),
          also=("step-cadence", "scheduler-order", "params-not-moving")),
    Fault("phase-dependent-eigvec-loss",
          "subspace_align compares eigh eigenvectors entry by entry: the loss depends on "
          "eigenvector phase; backward raises on small batches, else the gradient is wrong",
          f"{_F} 11", PhaseDependentEigvecLoss, litmus=("phase-invariance",)),
):
    register(_fault)
del _fault


# =========================================================================== the zoo recipe
ZOO_TERM_GRAD_EVERY = 6


def zoo_config(inject: str | None = None, **overrides: Any) -> TrainConfig:
    """The reduced overfit recipe of the zoo: 128 scenes (train = validation), batch 32,
    12 epochs = 48 steps, a probe flush every 4 steps, an evaluation every 2 epochs."""
    base = dict(
        name="zoo" if inject is None else f"zoo-{inject}", preset="small",
        train_scenes=128, val_scenes=0, seed=0, epochs=12, batch_size=32, lr=3e-3,
        warmup_steps=4, ema_decay=0.0, log_every=4, eval_every=2, device="cpu",
        inject=inject,
    )
    base.update(overrides)
    return TrainConfig(**base)


def zoo_probes(term_grad_every: int = ZOO_TERM_GRAD_EVERY) -> list[Any]:
    """Every built-in probe, with per-term gradients sampled every `term_grad_every` steps
    (the default budget-driven interval samples a 48-step run only once or twice)."""
    from riswb.probes import BUILTIN
    from riswb.probes.term_gradients import TermGradientsProbe

    return [TermGradientsProbe(every=term_grad_every) if module == "term_gradients" else module
            for module, _ in BUILTIN]


def run_fault(name: str | None, runs_dir: str | Path, **overrides: Any):
    """Train the zoo recipe with fault `name` (None: clean); returns the TrainResult."""
    trainer = build_trainer(zoo_config(name, **overrides), runs_dir=runs_dir,
                            probes=zoo_probes())
    return trainer.run()
