"""The bare pipeline the litmus checks share: the (possibly faulty) trainer, never `run()`,
one tiny batch, and throw-away copies of the trainer for anything that steps or mutates.

A copy runs the trainer's own step methods under a real `Workbench` writing to a scratch
folder, so a fault that overrides `forward_loss` or `backward_and_step` meets exactly the
Workbench it meets in training (sanitize, clip and all); its only probe, `Seen`, keeps what
the step handed over: the inputs announced at batch_start and the terms given to `wb.loss`.
"""

from __future__ import annotations

import contextlib
import copy
import dataclasses
import inspect
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch

from riswb.instrument.hooks import Probe, StepContext
from riswb.instrument.workbench import Workbench
from riswb.runlog import read_run

BATCH = 4  # scenes per check batch: small enough that the per-term gradient checks stay cheap
SCENES = 16  # scenes the pipeline is built with (cached after the first build)


class Seen(Probe):
    """Keeps the latest step's announced inputs and its terms (graphs intact) and weights."""

    name = "litmus_seen"

    def __init__(self) -> None:
        super().__init__()
        self.inputs: dict[str, Any] = {}
        self.terms: dict[str, torch.Tensor] = {}
        self.weights: dict[str, float] = {}

    def on_batch_start(self, ctx: StepContext) -> None:
        self.inputs = dict(ctx.payload.get("inputs") or {})

    def on_after_loss(self, ctx: StepContext) -> None:
        self.terms = dict(ctx.payload["terms"])
        self.weights = {n: float(w) for n, w in ctx.payload["weights"].items()}


@dataclass
class Pipeline:
    """What the checks share: the (possibly faulty) trainer, one tiny batch, and the scratch
    folder the copies' Workbenches write to."""

    trainer: Any
    batch: Any
    runs_dir: Path
    seed: int = 0

    @classmethod
    def of(cls, trainer: Any, runs_dir: Path, batch_size: int = BATCH,
           seed: int = 0) -> Pipeline:
        return cls(trainer, _pick_batch(trainer.train_set, batch_size), runs_dir, seed)

    @property
    def preset(self):
        return self.trainer.preset

    @contextlib.contextmanager
    def copy(self, *, beta: float | None = None) -> Iterator[tuple[Any, Seen]]:
        """A shallow copy of the trainer with its own model copy, a fresh optimizer holding
        the same groups (same hyperparameters, current lr), its own scheduler (the trainer's
        `make_scheduler`), no averages, no scaler, under a Workbench; and its `Seen` probe.
        Groups left without a model parameter are dropped; with none left the optimizer
        holds one empty group (the Workbench hooks an optimizer; step-moves-groups fails)."""
        t = self.trainer
        clone = copy.copy(t)
        clone.model = copy.deepcopy(t.model)
        clone.model.train()
        mapping = {id(p): q for p, q in zip(t.model.parameters(), clone.model.parameters(),
                                            strict=True)}
        groups = []
        for group in t.optimizer.param_groups:
            g = {k: v for k, v in group.items() if k != "params"}
            g["params"] = [mapping[id(p)] for p in group["params"] if id(p) in mapping]
            if g["params"]:
                groups.append(g)
        groups = groups or [{"params": [], "lr": 0.0}]
        clone.optimizer = _same_optimizer(type(t.optimizer), groups, t.optimizer.defaults)
        # the trainer built its scheduler the same way in __init__; the initial lr step it
        # takes is undone so the copy starts at the lr the original stands at now
        clone.scheduler = clone.make_scheduler()
        for g, original in zip(clone.optimizer.param_groups, groups, strict=True):
            g["lr"] = original["lr"]
        clone.ema = None
        clone.swa = None
        clone.scaler = None
        if beta is not None:
            clone.beta = lambda epoch: beta
        seen = Seen()
        with Workbench(clone.model, clone.optimizer, clone.scheduler, runs_dir=self.runs_dir,
                       name="litmus", probes=[seen]) as clone.wb:
            yield clone, seen

    def batch_copy(self, **fields_: Any):
        return dataclasses.replace(self.batch, **fields_)


def written_events(wb: Workbench) -> list[str]:
    """The names of the events the trainer wrote into the copy's run (e.g. step_skipped)."""
    names = read_run(wb.path).events["event"].tolist()
    return [n for n in names if n not in ("run_start", "run_end")]


def _same_optimizer(opt_cls: type, groups: list[dict[str, Any]], defaults: dict[str, Any]):
    """`opt_cls(groups, **defaults)` with the defaults its constructor accepts (every group
    already carries every hyperparameter)."""
    accepted = inspect.signature(opt_cls.__init__).parameters
    return opt_cls(groups, **{k: v for k, v in defaults.items() if k in accepted})


def _pick_batch(scenes: Any, size: int):
    """`size` scenes covering every source count present, k = K_MAX first."""
    k = scenes.k
    chosen: list[int] = []
    for value in sorted(set(k.tolist()), reverse=True):
        chosen.append(int((k == value).nonzero()[0]))
    for i in range(len(scenes)):
        if len(chosen) >= size:
            break
        if i not in chosen:
            chosen.append(i)
    return scenes[torch.tensor(sorted(chosen[:size]))]
