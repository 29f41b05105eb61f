"""Shared fixtures: synthetic runs written with RunWriter, record by record (internals.md §3).

`synthetic_run(tmp_path, steps=2000, healthy=True, **perturbations)` writes a run that looks
like what the built-in probes log (every `every` steps: loss, lr, param_update, grad_norm,
cadence, nonfinite, clip, dead; term gradients on sampled steps; eval, spectrum and
spectra.jsonl at evaluations; coverage, checkpoint, run_start/run_end events) and returns
its directory. `healthy=False` is shorthand for `frozen=True, flat_loss=True`.

Perturbations (all off by default):
  frozen           Δparam = 0 on every optimizer step (params-not-moving)
  flat_loss        the loss does not fall (loss-not-dropping)
  nan_loss_at      step from which the total loss is NaN (nonfinite-loss)
  nonfinite_grads  non-finite gradient elements counted and sanitized; term "gap" carries them
  dead_term        name of a term whose gradient is zero (dead-loss-term)
  dominant_term    name of a term whose gradient is 1e4× the others (term-dominates)
  conflict         the first two terms' gradients have cosine -0.95 (term-conflict)
  lr_zero          the learning rate stays 0 (lr-stalled)
  per_epoch        one optimizer step per 100 batches (step-cadence)
  missing_params   trainable params missing from the optimizer (optimizer-coverage)
  swap_unrestored  an EMA swap that was never swapped back (weights-swapped)
  skipped_steps    step_skipped events (scaler overflow)
  clip_saturated   clipping active on every step
  dead_params      some params never get a gradient (dead-params)
  spectrum_flat    R_pred's spectrum stays flat (spectrum-mismatch)
  status           "completed" (default), "crashed", "running" or "killed"
  torn             append a torn last line to scalars.jsonl
  spectra          write eval/spectrum/spectra records (default True)
  name, terms, every, grad_every, eval_every, seed
"""

from __future__ import annotations

import math
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import torch

from riswb.runlog import RunWriter


def pytest_configure(config):
    # Batched LAPACK calls on small complex matrices (eigh of 64×64) run up to 60× slower
    # with 2 OpenMP threads than with 1 as soon as anything else shares the 2 cores.
    torch.set_num_threads(1)

DEFAULT_TERMS = ("nmse", "ortho", "gap", "K")
DEFAULT_WEIGHTS = {"nmse": 1.0, "ortho": 0.1, "gap": 0.5, "K": 0.2, "aux": 0.3, "peak": 0.05}
GROUPS = ("backbone", "heads")
N_EIG = 16
K_TRUE = 3


def _dead_pid() -> int:
    proc = subprocess.Popen([sys.executable, "-c", "pass"])
    proc.wait()
    return proc.pid


def build_synthetic_run(
    root: str | Path,
    steps: int = 2000,
    healthy: bool = True,
    *,
    name: str = "synthetic",
    terms: tuple[str, ...] = DEFAULT_TERMS,
    every: int = 10,
    grad_every: int | None = None,
    eval_every: int | None = None,
    seed: int = 0,
    frozen: bool = False,
    flat_loss: bool = False,
    nan_loss_at: int | None = None,
    nonfinite_grads: bool = False,
    dead_term: str | None = None,
    dominant_term: str | None = None,
    conflict: bool = False,
    lr_zero: bool = False,
    per_epoch: bool = False,
    missing_params: bool = False,
    swap_unrestored: bool = False,
    skipped_steps: bool = False,
    clip_saturated: bool = False,
    dead_params: bool = False,
    spectrum_flat: bool = False,
    status: str = "completed",
    torn: bool = False,
    spectra: bool = True,
) -> Path:
    """Write a synthetic run under `root` and return its directory."""
    if not healthy:
        frozen = flat_loss = True
    rng = np.random.default_rng(seed)
    grad_every = grad_every or every * 5
    eval_every = eval_every or max(every, steps // 10)
    weights = {t: DEFAULT_WEIGHTS.get(t, 0.1) for t in terms}
    base = {t: 1.0 / (i + 1) for i, t in enumerate(terms)}
    epoch = 100
    writer = RunWriter(
        root,
        name,
        config={"preset": "small", "lr": 1e-3, "batch_size": 32},
        seed=seed,
        argv=["train", "--synthetic"],
        intent={"accumulation": 1},
        loss_terms=list(terms),
        probes=["cadence", "loss_terms", "term_gradients", "param_update", "spectra"],
    )
    writer.event(0, "run_start", status="running")
    coverage = {
        "missing": ["heads.range.weight", "heads.range.bias"] if missing_params else [],
        "duplicated": [],
        "zero_lr_groups": ["heads"] if lr_zero else [],
        "stale": [],
        "groups": {"backbone": {"backbone": 12}, "heads": {"heads": 6}},
    }
    writer.event(0, "coverage", **coverage)
    writer.scalars(0, "loss_weight", weights)
    if dead_params:
        writer.event(0, "dead_params", names=["heads.k.weight", "heads.k.bias"], steps=every)

    lr0, floor, warm = 1e-3, 1e-5, max(1, steps // 20)
    opt_step = 0
    evals = 0
    best = math.inf
    pnorm = 40.0
    for step in range(0, steps, every):
        progress = step / max(1, steps)
        decay = 1.0 if flat_loss else 0.03 + 0.97 * math.exp(-5.0 * progress)
        noise = 1.0 + 0.03 * rng.standard_normal(len(terms))
        values = {t: base[t] * decay * float(n) for t, n in zip(terms, noise, strict=True)}
        total = sum(weights[t] * values[t] for t in terms)
        nan_now = nan_loss_at is not None and step >= nan_loss_at
        if nan_now:
            total = math.nan
        writer.scalars(step, "loss", {**values, "total": total})

        opt_step = (step // epoch + 1) if per_epoch else step + 1
        if lr_zero:
            lr = 0.0
        elif step < warm:
            lr = lr0 * (0.1 + 0.9 * step / warm)
        else:
            cos = 0.5 * (1 + math.cos(math.pi * (step - warm) / max(1, steps - warm)))
            lr = floor + (lr0 - floor) * cos
        writer.scalars(step, "lr", {"opt_step": opt_step, **{f"group/{g}": lr for g in GROUPS}})

        moving = not frozen and lr > 0
        ratio = (lr * 0.5 * (1 + 0.1 * float(rng.standard_normal()))) if moving else 0.0
        pnorm += ratio * pnorm * 0.01
        writer.scalars(
            step,
            "param_update",
            {
                "opt_step": opt_step,
                "update_norm": ratio * pnorm,
                "param_norm": pnorm,
                "ratio": ratio,
                "frac_moving": (0.67 if dead_params else 1.0) if moving else 0.0,
                **{f"group/{g}/ratio": ratio * (1.3 if g == "heads" else 1.0) for g in GROUPS},
            },
        )
        gtotal = 2.0 * decay * (1 + 0.1 * abs(float(rng.standard_normal())))
        writer.scalars(
            step,
            "grad_norm",
            {"total": gtotal, "module/backbone": 0.8 * gtotal, "module/heads": 0.6 * gtotal},
        )
        bad = nonfinite_grads and step % (every * 20) == 0 and step > 0
        writer.scalars(
            step,
            "nonfinite",
            {
                "grad_elems": 128 if bad else 0,
                "params": 2 if bad else 0,
                "sanitized": 128 if bad else 0,
                "loss": 1 if nan_now else 0,
            },
        )
        n_batches = step + 1
        writer.scalars(
            step,
            "cadence",
            {
                "forward": n_batches,
                "loss": n_batches,
                "backward": n_batches,
                "optimizer_step": opt_step,
                "scheduler_step": opt_step,
                "eval": evals,
            },
        )
        max_norm = 1.0
        clip_norm = gtotal * (10.0 if clip_saturated else 0.3)
        writer.scalars(
            step,
            "clip",
            {
                "opt_step": opt_step,
                "norm": clip_norm,
                "max_norm": max_norm,
                "ratio": min(1.0, max_norm / clip_norm),
                "clipped": int(clip_norm > max_norm),
            },
        )
        writer.scalars(
            step,
            "dead",
            {"n_dead": 2 if dead_params else 0, "frac_dead_elems": 0.33 if dead_params else 0.0},
        )
        if step % grad_every == 0:
            grads = {}
            for t in terms:
                g = weights[t] * base[t] * decay * (1 + 0.1 * abs(float(rng.standard_normal())))
                if t == dead_term:
                    g = 0.0
                if t == dominant_term:
                    g *= 1e4
                grads[t] = g
            if conflict:  # of comparable size: a much weaker opposing term is only info
                grads[terms[1]] = 0.8 * grads[terms[0]]
            writer.scalars(step, "term_grad", grads)
            cos = {}
            for i, a in enumerate(terms):
                for b in terms[i + 1 :]:
                    value = 0.1 + 0.1 * float(rng.standard_normal())
                    if conflict and (a, b) == (terms[0], terms[1]):
                        value = -0.95
                    if dead_term in (a, b):
                        value = 0.0
                    cos[f"{a}|{b}"] = value
            writer.scalars(step, "term_cosine", cos)
            writer.scalars(
                step,
                "term_nonfinite",
                {t: (64 if bad and t == "gap" else 0) for t in terms},
            )
        if skipped_steps and step % (every * 10) == 0 and step > 0:
            writer.event(step, "step_skipped", reason="scaler", count=3)
        if spectra and step > 0 and step % eval_every == 0:
            evals += 1
            val = total * 1.1 if not nan_now else math.nan
            writer.scalars(
                step, "eval", {"val_loss": val, "nmse": 0.9 * decay, "rmse_phi_deg": 8 * decay}
            )
            true = np.full(N_EIG, 1e-4)
            true[:K_TRUE] = [8.0, 5.0, 3.0]
            true *= N_EIG / true.sum()
            flat = np.full(N_EIG, 1.0)
            mix = 1.0 if spectrum_flat else min(1.0, decay * 1.2)
            pred = mix * flat + (1 - mix) * true
            samp = 0.7 * true + 0.3 * flat
            for label, vec in (("R_pred", pred), ("R_true", true), ("R_samp", samp)):
                writer.spectrum(step, label, sorted(vec.tolist(), reverse=True))
            writer.scalars(
                step,
                "spectrum",
                {
                    "eff_rank_pred": float(K_TRUE + (N_EIG - K_TRUE) * mix),
                    "eff_rank_true": float(K_TRUE),
                    "gap_pred": float((pred[K_TRUE - 1] - pred[K_TRUE]) / pred[0]),
                    "gap_true": float((true[K_TRUE - 1] - true[K_TRUE]) / true[0]),
                    "scale_ratio": 1.0,
                    "top_k_energy_pred": float(pred[:K_TRUE].sum() / N_EIG),
                    "top_k_energy_true": float(true[:K_TRUE].sum() / N_EIG),
                },
            )
            if swap_unrestored and evals == 1:
                writer.event(
                    step,
                    "weights_swapped",
                    kind="ema",
                    params_changed=18,
                    restored=False,
                    noop=False,
                )
            elif evals <= 3:
                writer.event(
                    step,
                    "weights_swapped",
                    kind="ema",
                    params_changed=18,
                    restored=True,
                    noop=False,
                )
            if val < best:
                best = val
                writer.event(
                    step,
                    "checkpoint",
                    kind="best",
                    path="checkpoints/best.pt",
                    metric="val_loss",
                    value=val,
                )
            writer.event(
                step,
                "checkpoint",
                kind="last",
                path="checkpoints/last.pt",
                metric="val_loss",
                value=val,
            )

    last_step = ((steps - 1) // every) * every
    if status == "killed":
        writer.update_manifest(pid=_dead_pid())  # "running" with a dead process reads "killed"
    elif status == "running":
        pass
    else:
        writer.event(last_step, "run_end", status=status)
        writer.close(status)
    if status in ("killed", "running"):
        for handle in writer._streams.values():
            handle.close()
    if torn:
        with open(writer.path / "scalars.jsonl", "a", encoding="utf-8") as handle:
            torn_step = last_step + every
            handle.write(f'{{"step": {torn_step}, "kind": "loss", "nmse": 0.1, "tot')
    return writer.path


@pytest.fixture
def synthetic_run():
    """Factory fixture: `synthetic_run(tmp_path, steps=..., healthy=True, **perturbations)`."""
    return build_synthetic_run
