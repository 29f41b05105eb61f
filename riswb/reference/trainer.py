"""The reference trainer: an explicit, readable loop instrumented through the Workbench.

One training step, in order (docs/design.md §2, §9):
    forward → twelve loss terms → wb.loss (records terms, per-term gradients on sampled
    steps) → backward (raw gradients observed by probes) → sanitize (counted) → clip
    (recorded) → optimizer.step → scheduler.step, only after a real step → EMA update.
Each epoch: evaluation on the averaged weights inside a swap that always restores, best.pt
when validation improves (saving exactly the weights that were scored), last.pt and
state.pt (everything needed to resume on the same trajectory), all checksummed and written
durably (riswb/reference/checkpoints.py). A save that fails (a full disk) is a manifest
warning, not the end of the run: the previous checkpoints stay whole.

Resume (riswb/reference/resume.py) is checked before anything is built: a corrupt
checkpoint or a config whose trajectory fields differ from the run's is refused before any
scene is generated or run directory created (`force_resume` lets the config differ).

Divergence (riswb/reference/divergence.py): non-finite model outputs (checked before the
decomposition of R_pred, which would raise on them) or a non-finite total loss stop
training with `Diverged`, a one-line RiswbError. The step's loss is recorded first (NaN
terms for non-finite outputs, whose terms cannot be computed), with a `diverged` event and
the manifest's `crash_reason`; the run is finalized as `crashed`, and `riswb report` names
it with nonfinite-loss. A fault that overrides `forward_loss` replaces these checks too.

The loop is split into small methods so that `riswb.reference.faults` can reproduce real bugs by
overriding one of them; the clean path stays free of fault flags.
"""

from __future__ import annotations

import math
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch

from riswb.errors import RiswbError
from riswb.instrument.hooks import Event
from riswb.instrument.workbench import Workbench
from riswb.reference import checkpoints
from riswb.reference.averaging import WeightAverage
from riswb.reference.checkpoints import BEST_FILE, STATE_FILE
from riswb.reference.config import TrainConfig
from riswb.reference.data import batch_indices, epoch_seed, scene_dataset
from riswb.reference.divergence import diverged, nonfinite
from riswb.reference.losses import DEFAULT_WEIGHTS, loss_terms, weighted_total
from riswb.reference.model import CovarianceNet, ModelOutput, backbone_and_heads
from riswb.reference.physics.covariance import nmse as covariance_nmse
from riswb.reference.physics.presets import get_preset
from riswb.reference.physics.scenes import SceneBatch
from riswb.reference.resume import load_resume_state
from riswb.reference.schedule import warmup_cosine


def resolve_device(name: str) -> torch.device:
    if name == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    if name == "cuda" and not torch.cuda.is_available():
        raise RiswbError("--device cuda asked for, but torch sees no CUDA device")
    return torch.device(name)


@dataclass
class TrainResult:
    path: Path
    epochs: int
    steps: int
    history: list[dict[str, float]] = field(default_factory=list)
    seconds: float = 0.0
    baseline_nmse: float = math.nan

    @property
    def final(self) -> dict[str, float]:
        return self.history[-1] if self.history else {}


class Trainer:
    """Trains `CovarianceNet` on simulated scenes; see the module docstring for the loop."""

    def __init__(
        self,
        config: TrainConfig,
        *,
        runs_dir: str | Path | None = None,
        probes: Any = "default",
        plugins: str | Path | None = None,
        resume: str | Path | None = None,
        force_resume: bool = False,
        progress: Callable[[str, dict[str, Any]], None] | None = None,
    ):
        self.cfg = config
        self.progress = progress or (lambda kind, info: None)
        self.device = resolve_device(config.device)
        if config.amp == "fp16" and self.device.type != "cuda":
            raise RiswbError("amp = fp16 needs CUDA (use bf16 on CPU)")
        # the resumed run first: refusing it must cost no scenes and create no run directory
        resumed = (load_resume_state(Path(resume), config, force=force_resume)
                   if resume is not None else None)
        self.weights = self._loss_weights()  # fail fast, before generating any scene
        if self.device.type == "cpu" and config.threads > 0:
            torch.set_num_threads(config.threads)
        torch.manual_seed(config.seed)
        self.preset = get_preset(config.preset)

        self.train_set = scene_dataset(self.preset.name, config.train_scenes, config.seed,
                                       self._snr()).to(self.device)
        self.val_set = (
            self.train_set if config.val_scenes == 0
            else scene_dataset(self.preset.name, config.val_scenes, config.seed + 1,
                               self._snr()).to(self.device)
        )
        try:  # the one option pair the config's per-field rules cannot judge
            self.model = CovarianceNet(self.preset, head=config.head,
                                       refine_steps=config.refine_steps).to(self.device)
        except ValueError as error:
            raise RiswbError(f"bad training config: {error}") from None
        self.optimizer = torch.optim.AdamW(self.param_groups(), lr=config.lr,
                                           weight_decay=config.weight_decay)
        self.steps_per_epoch = math.ceil(config.train_scenes / config.batch_size)
        self.scheduler = self.make_scheduler()
        trainable = [p for p in self.model.parameters() if p.requires_grad]
        self.ema = (WeightAverage(trainable, kind="ema", decay=config.ema_decay)
                    if config.ema_decay > 0 else None)
        self.swa = (WeightAverage(trainable, kind="swa")
                    if config.swa_start_epoch is not None else None)
        self.scaler = torch.amp.GradScaler("cuda") if config.amp == "fp16" else None
        self.epoch = 0
        self.best_value = math.inf
        self.history: list[dict[str, float]] = []
        self.resume_changes: list[str] = []  # trajectory fields a forced resume changed

        self.runs_dir = runs_dir
        self.probes = probes
        self.plugins = plugins
        self.resumed_from = None if resumed is None else self._load_state(Path(resume), *resumed)
        # R_samp's error is a fixed baseline, not a metric that training moves
        self.baseline_nmse = float(covariance_nmse(self.val_set.R_samp, self.val_set.R_true).mean())
        self.wb: Workbench | None = None  # attached by run(); litmus uses the bare pipeline

    def instrument(self) -> Workbench:
        """Attach the Workbench: a fresh run directory, all probes on."""
        self.wb = Workbench(
            self.model, self.optimizer, self.scheduler, runs_dir=self.runs_dir,
            name=self.cfg.name, config={**self.cfg.to_dict(), "weights_used": self.weights,
                                        "resumed_from": self.resumed_from,
                                        "resume_changes": self.resume_changes},
            probes=self.probes, plugins=self.plugins, log_every=self.cfg.log_every,
            seed=self.cfg.seed,
            # a resumed run continues its predecessor's step axis (one loss call per batch)
            first_step=self.epoch * self.steps_per_epoch if self.resumed_from else 0,
        )
        self.wb.writer.update_manifest(baseline={"nmse_samp": self.baseline_nmse})
        if self.resumed_from is not None:
            # a resumed run lives in a new directory; until validation beats the restored
            # best_value it would have no best.pt at all, so carry the previous one over
            previous = Path(self.resumed_from) / "checkpoints" / BEST_FILE
            if previous.is_file():
                try:
                    checkpoints.copy_atomic(previous, self.wb.path / "checkpoints" / BEST_FILE)
                except OSError as error:  # like a failed save: a warning, not the end
                    self.wb.writer.warn(f"best.pt not carried over from {previous}: {error}")
        return self.wb

    # ----------------------------------------------------------------- construction
    def _snr(self):
        snr = self.cfg.snr_db
        return tuple(snr) if isinstance(snr, list) else snr

    def _loss_weights(self) -> dict[str, float]:
        unknown = sorted(set(self.cfg.weights) - set(DEFAULT_WEIGHTS))
        if unknown:
            raise RiswbError(f"unknown loss term(s) in weights: {', '.join(unknown)}; "
                             f"terms are {', '.join(DEFAULT_WEIGHTS)}")
        return {**DEFAULT_WEIGHTS, **{k: float(v) for k, v in self.cfg.weights.items()}}

    def param_groups(self) -> list[dict[str, Any]]:
        """Named groups: `heads` (modules whose name ends in `head`) and `backbone`."""
        backbone, heads = backbone_and_heads(self.model)
        groups = [{"name": "backbone", "params": backbone}]
        if heads:
            groups.append({"name": "heads", "params": heads,
                           "lr": self.cfg.head_lr or self.cfg.lr})
        return groups

    def make_scheduler(self) -> torch.optim.lr_scheduler.LRScheduler:
        return warmup_cosine(
            self.optimizer, warmup_steps=self.cfg.warmup_steps,
            total_steps=self.cfg.epochs * self.steps_per_epoch,
            start_factor=self.cfg.warmup_start, floor=self.cfg.lr_floor,
        )

    # ----------------------------------------------------------------- one step
    def beta(self, epoch: int) -> float:
        """β of R_blend, ramped linearly from beta_start to beta_end."""
        ramp = max(1, self.cfg.beta_ramp_epochs)
        t = min(1.0, epoch / ramp)
        return self.cfg.beta_start + (self.cfg.beta_end - self.cfg.beta_start) * t

    def forward(self, batch: SceneBatch) -> ModelOutput:
        if self.cfg.amp == "none":
            return self.model(batch.y)
        dtype = torch.bfloat16 if self.cfg.amp == "bf16" else torch.float16
        with torch.autocast(self.device.type, dtype=dtype):
            return self.model(batch.y)

    def compute_terms(self, out: ModelOutput, batch: SceneBatch) -> dict[str, torch.Tensor]:
        return loss_terms(out, batch, self.preset, beta=self.beta(self.epoch),
                          contrast=self.cfg.contrast)

    def forward_loss(self, batch: SceneBatch) -> torch.Tensor:
        self.wb.emit(Event.BATCH_START, inputs={"y": batch.y, "R_samp": batch.R_samp,
                                                "R_true": batch.R_true})
        out = self.forward(batch)
        bad = nonfinite(vars(out))  # before the decomposition, which raises on NaN
        if bad:
            nan = torch.full((), math.nan, device=self.device)  # a NaN prediction's terms
            self.wb.loss({name: nan for name in self.weights}, self.weights)
            raise diverged(self.wb, "model output", bad)
        terms = self.compute_terms(out, batch)
        loss = self.wb.loss(terms, self.weights)
        if not torch.isfinite(loss):
            raise diverged(self.wb, "loss term", nonfinite(terms) or ["total"])
        return loss

    def backward_and_step(self, loss: torch.Tensor) -> bool:
        """Backward, sanitize, clip, step; True when the optimizer really stepped."""
        self.clear_grads()
        params = [p for p in self.model.parameters() if p.requires_grad]
        if self.scaler is None:
            loss.backward()
        else:
            self.scaler.scale(loss).backward()
            self.scaler.unscale_(self.optimizer)
        if self.cfg.sanitize:
            self.wb.sanitize_(params)
        if self.cfg.clip_norm:
            self.wb.clip_grad_norm_(params, self.cfg.clip_norm)
        stepped = self.optimizer_step()
        if stepped:
            self.scheduler.step()
            if self.ema is not None:
                self.ema.update()
        return stepped

    def clear_grads(self) -> None:
        """Drop the previous step's gradients before this step's backward."""
        self.optimizer.zero_grad(set_to_none=True)

    def optimizer_step(self) -> bool:
        if self.scaler is None:
            self.optimizer.step()
            return True
        scale = self.scaler.get_scale()
        self.scaler.step(self.optimizer)
        self.scaler.update()
        # a drop in scale = the scaler found inf/NaN and skipped the step (the Workbench's
        # GradScaler watch logs the skip itself)
        return self.scaler.get_scale() >= scale

    def refresh_train_set(self) -> None:
        """With `resample_scenes`, this epoch's fresh training scenes (not cached: drawing
        them costs less than reading them back)."""
        if self.cfg.resample_scenes and self.epoch > 0:
            self.train_set = scene_dataset(self.preset.name, self.cfg.train_scenes,
                                           epoch_seed(self.cfg.seed, self.epoch), self._snr(),
                                           use_cache=False).to(self.device)

    def train_epoch(self) -> None:
        self.model.train()
        for index in batch_indices(len(self.train_set), self.cfg.batch_size,
                                   seed=self.cfg.seed, epoch=self.epoch):
            loss = self.forward_loss(self.train_set[index])
            self.backward_and_step(loss)
            self.progress("step", {"epoch": self.epoch, "loss": loss})

    # ----------------------------------------------------------------- evaluation
    @torch.no_grad()
    def validate(self) -> dict[str, float]:
        """Scores the current weights on the validation scenes (weighted loss, nmse): the
        network alone, without the inference-time physics stage (`model.unrefined`)."""
        self.model.eval()
        totals: dict[str, float] = {}
        preds, trues, ks = [], [], []
        for index in batch_indices(len(self.val_set), 256, seed=0, epoch=0, shuffle=False):
            batch = self.val_set[index]
            with self.model.unrefined():
                out = self.forward(batch)
            terms = loss_terms(out, batch, self.preset, beta=0.0, contrast=self.cfg.contrast)
            scores = {"val_loss": weighted_total(terms, self.weights),
                      **{f"val_{name}": value for name, value in terms.items()}}
            for name, value in scores.items():
                totals[name] = totals.get(name, 0.0) + float(value) * len(batch)
            preds.append(out.R_pred)
            trues.append(batch.R_true)
            ks.append(batch.k)
        count = len(self.val_set)
        metrics = {name: value / count for name, value in totals.items()}
        r_pred, r_true = torch.cat(preds), torch.cat(trues)
        metrics["nmse"] = float(covariance_nmse(r_pred, r_true).mean())
        self._last_eval = (r_pred, r_true, torch.cat(ks))
        return metrics

    def evaluate(self) -> dict[str, float]:
        """Validation on the EMA weights when an EMA is kept (inside a restoring swap)."""
        if self.ema is None:
            metrics = self.validate()
        else:
            with self.ema.swapped_in(self.wb.emit):
                metrics = self.validate()
        r_pred, r_true, k = self._last_eval
        self.wb.evaluate(metrics, R_pred=r_pred, R_true=r_true, K=k)
        return metrics

    def scored_weights(self) -> dict[str, torch.Tensor]:
        """The weights that `evaluate` scored (the EMA's when one is kept)."""
        state = {k: v.detach().clone() for k, v in self.model.state_dict().items()}
        if self.ema is not None:
            names = [n for n, p in self.model.named_parameters() if p.requires_grad]
            state.update({n: t.clone() for n, t in zip(names, self.ema.shadow, strict=True)})
        return state

    def save_checkpoints(self, metrics: dict[str, float]) -> None:
        folder = self.wb.path / "checkpoints"
        value = metrics["val_loss"]
        try:
            if value < self.best_value:
                path = checkpoints.save_atomic(self.scored_weights(), folder / BEST_FILE)
                self.best_value = value
                self.wb.emit(Event.CHECKPOINT, kind="best", path=str(path), metric="val_loss",
                             value=value)
            checkpoints.save_atomic(self.scored_weights(), folder / "last.pt")
            checkpoints.save_atomic(self.state_dict(), folder / STATE_FILE)
        except OSError as error:  # a full disk costs this epoch's checkpoints, not the run
            self.wb.writer.warn(f"epoch {self.epoch}: checkpoints not saved: {error}")

    # ----------------------------------------------------------------- resume
    def state_dict(self) -> dict[str, Any]:
        return {
            "epoch": self.epoch + 1,  # the next epoch to run
            "model": self.model.state_dict(),
            "optimizer": self.optimizer.state_dict(),
            "scheduler": self.scheduler.state_dict(),
            "ema": self.ema.state_dict() if self.ema is not None else None,
            "swa": self.swa.state_dict() if self.swa is not None else None,
            "scaler": self.scaler.state_dict() if self.scaler is not None else None,
            "best_value": self.best_value,
            "history": [list(h.items()) for h in self.history],
            "rng": torch.get_rng_state(),
            "trajectory": self.cfg.trajectory(),  # what a resume must match
        }

    def _load_state(self, run: Path, state: dict[str, Any], changes: list[str]) -> str:
        """Restore a state checked by load_resume_state (loaded on the CPU: the RNG state
        must stay there; load_state_dict moves the rest to the parameters' device)."""
        try:
            self.model.load_state_dict(state["model"])
            self.optimizer.load_state_dict(state["optimizer"])
            self.scheduler.load_state_dict(state["scheduler"])
            for average, key in ((self.ema, "ema"), (self.swa, "swa")):
                if average is not None and state[key] is not None:
                    average.load_state_dict(state[key])
            if self.scaler is not None and state["scaler"] is not None:
                self.scaler.load_state_dict(state["scaler"])
            torch.set_rng_state(state["rng"])
        except (RuntimeError, ValueError, KeyError, TypeError) as error:  # e.g. forced preset
            reason = str(error).strip().splitlines()[0] if str(error).strip() else ""
            raise RiswbError(f"cannot resume {run}: its state does not fit this config's "
                             f"model and optimizer ({type(error).__name__}: {reason})") from None
        self.epoch = state["epoch"]
        self.best_value = state["best_value"]
        self.history = [dict(items) for items in state["history"]]
        self.resume_changes = changes
        return str(run)

    # ----------------------------------------------------------------- the run
    def run(self) -> TrainResult:
        started = time.perf_counter()
        if self.epoch >= self.cfg.epochs:  # nothing to do would be an empty run, not a pass
            raise RiswbError(f"the resumed run already finished its {self.epoch} epoch(s); "
                             f"set epochs above {self.epoch} in the config to continue it")
        with self.instrument():
            while self.epoch < self.cfg.epochs:
                self.refresh_train_set()
                self.train_epoch()
                if self.swa is not None and self.epoch >= self.cfg.swa_start_epoch:
                    self.swa.update()
                if (self.epoch + 1) % self.cfg.eval_every == 0 or self.epoch + 1 == self.cfg.epochs:
                    metrics = self.evaluate()
                    self.history.append({"epoch": self.epoch, **metrics})
                    self.save_checkpoints(metrics)
                    self.progress("epoch", {"epoch": self.epoch, **metrics})
                self.epoch += 1
        return TrainResult(self.wb.path, self.cfg.epochs, self.wb.step + 1, self.history,
                           time.perf_counter() - started, self.baseline_nmse)
