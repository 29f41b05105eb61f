"""diagnose() on a 100k-step run stays far inside the 3 s report budget (docs/design.md §10).

The frames are built with numpy and handed to Run directly (writing and parsing 87 MB of
JSONL is the reader's cost, not the rules'): this measures the rules alone.
"""

import math
import time
from pathlib import Path

import numpy as np
import pandas as pd

from riswb.diagnose.rules import diagnose
from riswb.runlog import Run

from .conftest import GROUPS, PROBES, TERMS, WEIGHTS


def _run_100k(n: int = 100_000, sample: int = 10) -> Run:
    rng = np.random.default_rng(0)
    step = np.arange(n)
    decay = 0.05 + np.exp(-step / (n / 5))
    warm = n // 20
    lr = np.where(step < warm, 1e-3 * (0.1 + 0.9 * step / warm),
                  1e-5 + (1e-3 - 1e-5) * 0.5 * (1 + np.cos(np.pi * (step - warm) / (n - warm))))
    terms = {t: decay * (i + 1) * (1 + 0.02 * rng.standard_normal(n))
             for i, t in enumerate(TERMS)}
    total = sum(WEIGHTS[t] * v for t, v in terms.items())
    ratio = lr * (0.5 + 0.05 * rng.standard_normal(n))
    norm = 2 * decay
    s = step[::sample]
    m = len(s)
    frames = {
        "loss": pd.DataFrame({"step": step, **terms, "total": total}),
        "loss_weight": pd.DataFrame({"step": [0], **{t: [w] for t, w in WEIGHTS.items()}}),
        "lr": pd.DataFrame({"step": step, "opt_step": step + 1,
                            **{f"group/{g}": lr for g in GROUPS}}),
        "param_update": pd.DataFrame({"step": step, "opt_step": step + 1, "ratio": ratio,
                                      "frac_moving": 1.0, "update_norm": ratio * 30,
                                      "param_norm": 30.0,
                                      **{f"group/{g}/ratio": ratio for g in GROUPS}}),
        "grad_norm": pd.DataFrame({"step": step, "total": norm,
                                   **{f"module/{g}": norm / 2 for g in GROUPS}}),
        "clip": pd.DataFrame({"step": step, "norm": 0.4 * norm, "max_norm": 1.0,
                              "ratio": np.minimum(1, 1 / (0.4 * norm)),
                              "clipped": (0.4 * norm > 1).astype(int)}),
        "term_grad": pd.DataFrame({"step": s, **{t: WEIGHTS[t] * terms[t][::sample]
                                                 for t in TERMS}}),
        "term_cosine": pd.DataFrame({"step": s, **{f"{a}|{b}": 0.2 + 0.1 * rng.standard_normal(m)
                                                   for i, a in enumerate(TERMS)
                                                   for b in TERMS[i + 1:]}}),
        "term_nonfinite": pd.DataFrame({"step": s, **{t: 0 for t in TERMS}}),
        "nonfinite": pd.DataFrame({"step": s, "grad_elems": 0, "params": 0, "sanitized": 0,
                                   "loss": 0}),
        "cadence": pd.DataFrame({"step": s, "loss": s + 1, "backward": s + 1,
                                 "optimizer_step": s + 1, "scheduler_step": s + 1,
                                 "grads_cleared_steps": s + 1, "grads_carried_steps": 0}),
        "grad_step": pd.DataFrame({"step": s, "steps": sample, "ratio": 1.0, "zeroed": 0.0,
                                   "replaced": 0.0, "altered": 0.0, "sanitized": 0.0}),
        "mode": pd.DataFrame({"step": s, "modules": 1, "forwards": sample,
                              "forwards_eval_mode": 0}),
        "dead": pd.DataFrame({"step": s, "n_dead": 0, "frac_dead_elems": 0.0}),
        "inputs": pd.DataFrame({"step": s, "requires_grad": 0}),
    }
    evals = step[1000::1000]
    frames["eval"] = pd.DataFrame({"step": evals, "val_loss": 1.1 * total[evals]})
    frames["spectrum"] = pd.DataFrame({"step": evals, "eff_rank_pred": 3.3, "eff_rank_true": 3.0,
                                       "gap_pred": 0.8, "gap_true": 0.9, "scale_ratio": 1.0})
    events = [{"step": 0, "event": "coverage", "missing": [], "duplicated": [],
               "zero_lr_groups": [], "stale": []}]
    best = math.inf
    for e in evals.tolist():
        value = float(1.1 * total[e])
        events.append({"step": e, "event": "weights_swapped", "kind": "ema",
                       "params_changed": 12, "restored": True, "noop": False})
        if value < best:
            best = value
            events.append({"step": e, "event": "checkpoint", "kind": "best",
                           "metric": "val_loss", "value": value})
    manifest = {"id": "speed", "intent": {"accumulation": 1}, "loss_terms": list(TERMS),
                "probes": [{"name": p} for p in PROBES]}
    run = Run(path=Path("."), manifest=manifest, _event_records=events)
    run.__dict__["_by_kind"] = frames  # what read_run's cached property would hold
    return run


def test_diagnose_100k_steps_is_fast():
    run = _run_100k()
    diagnose(run, rules=["stale-checkpoint"])  # warm imports
    start = time.perf_counter()
    diagnosis = diagnose(run, strict=True)
    elapsed = time.perf_counter() - start
    assert diagnosis.errors == [] and diagnosis.unchecked == {}
    assert elapsed < 1.5, f"diagnose took {elapsed:.2f}s on 100k steps"
