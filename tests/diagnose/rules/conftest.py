"""Synthetic run logs for the rule tests, written record by record with RunWriter.

`healthy(steps=200)` returns a `Spec`: the records of a healthy run in internals.md §3
shapes (loss falling, lr warming up from above 0 then cosine, every step moving the
params, cadence 1:1, sampled term gradients, evals with spectra, checkpoints that follow
validation, EMA swaps that restore). Tests perturb it, then `make_run(spec)` writes it
with RunWriter and reads it back with read_run:

    spec = healthy()
    spec.update("lr", lambda step, rec: {**rec, "group/heads": 0.0})
    spec.event(40, "weights_swapped", kind="ema", params_changed=3, restored=False)
    run = make_run(spec)
"""

from __future__ import annotations

import math
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

import numpy as np
import pytest

from riswb.diagnose.rules import RULES, Finding, Thresholds
from riswb.diagnose.rules._util import probe_name
from riswb.probes import BUILTIN
from riswb.runlog import Run, RunWriter, read_run

TERMS = ("nmse", "ortho", "gap")
WEIGHTS = {"nmse": 1.0, "ortho": 0.1, "gap": 0.5}
GROUPS = ("backbone", "heads")
# the manifest names the workbench records for the built-in probes
PROBES = tuple(probe_name(module) for module, _ in BUILTIN)


@dataclass
class Spec:
    """The records of one synthetic run, editable before it is written."""

    steps: int
    manifest: dict[str, Any] = field(default_factory=dict)
    scalars: dict[str, list[tuple[int, dict]]] = field(default_factory=dict)
    events: list[tuple[int, str, dict]] = field(default_factory=list)
    spectra: list[tuple[int, str, list[float]]] = field(default_factory=list)

    def add(self, step: int, kind: str, **values: Any) -> Spec:
        self.scalars.setdefault(kind, []).append((step, values))
        return self

    def update(self, kind: str, fn: Callable[[int, dict], dict | None]) -> Spec:
        """Rewrite each record of `kind`: fn(step, record) -> new record, or None to drop."""
        out = []
        for step, record in self.scalars.get(kind, []):
            new = fn(step, dict(record))
            if new is not None:
                out.append((step, new))
        self.scalars[kind] = out
        return self

    def drop(self, *kinds: str) -> Spec:
        for kind in kinds:
            self.scalars.pop(kind, None)
        return self

    def event(self, step: int, name: str, **payload: Any) -> Spec:
        self.events.append((step, name, payload))
        return self

    def drop_events(self, *names: str) -> Spec:
        self.events = [e for e in self.events if e[1] not in names]
        return self

    def write(self, root) -> Run:
        writer = RunWriter(root, "rules-test", argv=["test"], **self.manifest)
        records = [(step, 0, kind, values) for kind, recs in self.scalars.items()
                   for step, values in recs]
        records += [(step, 1, name, payload) for step, name, payload in self.events]
        records += [(step, 2, name, values) for step, name, values in self.spectra]
        for step, stream, name, values in sorted(records, key=lambda r: (r[0], r[1])):
            if stream == 0:
                writer.scalars(step, name, values)
            elif stream == 1:
                writer.event(step, name, **values)
            else:
                writer.spectrum(step, name, values)
        writer.close()
        return read_run(writer.path)


def lr_at(step: int, steps: int, peak: float = 1e-3, floor: float = 1e-5) -> float:
    warm = max(1, steps // 20)
    if step < warm:
        return peak * (0.1 + 0.9 * step / warm)
    return floor + (peak - floor) * 0.5 * (1 + math.cos(math.pi * (step - warm) / (steps - warm)))


def healthy(steps: int = 200, *, sample_every: int = 10, eval_every: int = 50,
            seed: int = 0) -> Spec:
    """A healthy run: every rule checks it, and none finds an error."""
    rng = np.random.default_rng(seed)
    spec = Spec(steps, manifest={
        "intent": {"accumulation": 1},
        "loss_terms": list(TERMS),
        "probes": [{"name": name, "every": 1} for name in PROBES],
        "config": {"weights": dict(WEIGHTS)},
    })
    spec.event(0, "run_start", status="running")
    spec.event(0, "coverage", missing=[], duplicated=[], zero_lr_groups=[], stale=[],
               groups={"backbone": {"backbone": 8}, "heads": {"heads": 4}})
    spec.add(0, "loss_weight", **WEIGHTS)
    best = math.inf
    for step in range(steps):
        decay = 0.05 + math.exp(-step / (steps / 5))
        noise = 1 + 0.02 * rng.standard_normal(len(TERMS))
        terms = {t: float(decay * (i + 1) * noise[i]) for i, t in enumerate(TERMS)}
        total = sum(WEIGHTS[t] * v for t, v in terms.items())
        spec.add(step, "loss", **terms, total=total)
        lr = lr_at(step, steps)
        spec.add(step, "lr", opt_step=step + 1, **{f"group/{g}": lr for g in GROUPS})
        ratio = lr * (0.5 + 0.05 * float(rng.standard_normal()))
        spec.add(step, "param_update", opt_step=step + 1, update_norm=ratio * 30.0,
                 param_norm=30.0, ratio=ratio, frac_moving=1.0,
                 **{f"group/{g}/ratio": ratio for g in GROUPS})
        norm = 2.0 * decay
        spec.add(step, "grad_norm", total=norm, **{f"module/{g}": norm / 2 for g in GROUPS})
        spec.add(step, "clip", opt_step=step + 1, norm=norm * 0.4, max_norm=1.0,
                 ratio=min(1.0, 1.0 / (norm * 0.4)), clipped=int(norm * 0.4 > 1.0))
        if step % sample_every == 0:
            spec.add(step, "term_grad", **{t: WEIGHTS[t] * terms[t] for t in TERMS})
            spec.add(step, "term_cosine", **{
                f"{a}|{b}": float(0.2 + 0.1 * rng.standard_normal())
                for i, a in enumerate(TERMS) for b in TERMS[i + 1:]})
            spec.add(step, "term_nonfinite", **{t: 0 for t in TERMS})
            spec.add(step, "nonfinite", grad_elems=0, params=0, sanitized=0, loss=0,
                     step_attempts=sample_every, attempts_nonfinite=0, attempts_skipped=0)
            spec.add(step, "term_grad_out", **{t: 0.3 * WEIGHTS[t] * terms[t] for t in TERMS})
            spec.add(step, "term_cosine_out", **{
                f"{a}|{b}": float(0.3 + 0.1 * rng.standard_normal())
                for i, a in enumerate(TERMS) for b in TERMS[i + 1:]})
            spec.add(step, "cadence", forward=step + 1, loss=step + 1, backward=step + 1,
                     optimizer_step=step + 1, scheduler_step=step + 1, eval=step // eval_every,
                     step_attempts=step + 1, loss_without_backward=0,
                     steps_without_backward=0, grads_cleared_steps=step + 1,
                     grads_carried_steps=0, backward_accumulating=0,
                     backward_per_step_min=1, backward_per_step_max=1)
            spec.add(step, "grad_step", steps=sample_every, norm_backward=norm,
                     norm_step=norm, ratio=1.0, rescaled=0.0, altered=0.0, zeroed=0.0,
                     replaced=0.0, unscaled=0.0, nonfinite_backward=0.0, sanitized=0.0)
            spec.add(step, "mode", modules=2, forwards=sample_every, forwards_eval_mode=0,
                     nograd_forwards=0, nograd_forwards_train_mode=0, evals=0,
                     evals_train_mode=0)
            spec.add(step, "dead", n_dead=0, frac_dead_elems=0.0)
            spec.add(step, "inputs", requires_grad=0, grad_fn=0)
        if step > 0 and step % eval_every == 0:
            val = total * 1.1
            spec.add(step, "eval", val_loss=val, nmse=0.9 * decay)
            spec.add(step, "spectrum", eff_rank_pred=3.3, eff_rank_true=3.0, gap_pred=0.8,
                     gap_true=0.9, scale_ratio=1.02, top_k_energy_pred=0.9,
                     top_k_energy_true=0.95)
            spec.spectra.append((step, "R_pred", [5.0, 4.0, 3.0, 0.1, 0.1, 0.1]))
            spec.spectra.append((step, "R_true", [5.2, 4.1, 3.1, 0.01, 0.01, 0.01]))
            spec.event(step, "weights_swapped", kind="ema", params_changed=12, restored=True,
                       noop=False)
            if val < best:
                best = val
                spec.event(step, "checkpoint", kind="best", path="checkpoints/best.pt",
                           metric="val_loss", value=val)
            spec.event(step, "checkpoint", kind="last", path="checkpoints/last.pt",
                       metric="val_loss", value=val)
    spec.event(steps - 1, "run_end", status="completed")
    return spec


def as_reference(spec: Spec) -> Spec:
    """`spec` as a run of the reference pipeline (its TrainConfig in the manifest), where fix
    texts may cite that pipeline's history."""
    spec.manifest["config"] = {**spec.manifest.get("config", {}), "preset": "small",
                               "train_scenes": 256}
    return spec


@pytest.fixture(autouse=True)
def _no_git_probe(monkeypatch):
    """RunWriter asks git for the sha of every run; these tests write ~150 runs."""
    monkeypatch.setattr("riswb.runlog._git_sha", lambda: None)


@pytest.fixture
def make_run(tmp_path):
    """make_run(spec=None) -> Run: writes `spec` (default: healthy()) and reads it back."""
    counter = iter(range(10_000))

    def make(spec: Spec | None = None) -> Run:
        root = tmp_path / f"runs{next(counter)}"
        return (spec or healthy()).write(root)

    return make


def check(run: Run, rule_id: str, **thresholds: Any) -> list[Finding]:
    """One rule's findings (raises Unchecked like the rule does)."""
    return RULES[rule_id](run, Thresholds().overrides(**thresholds))


def severities(findings: list[Finding]) -> list[str]:
    return [f.severity for f in findings]
