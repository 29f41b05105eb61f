"""Litmus: gradient checks on the bare reference pipeline, before any training (docs/design.md §6).

`run_litmus(preset, inject, seed)` builds the pipeline with `faults.build_trainer` (a few
scenes, never `run()`) and runs named checks on a tiny batch; each returns a `CheckResult`
(name, passed, one-line detail with the numbers, evidence dict). The checks go through the
trainer's own methods (`forward_loss`, `forward`, `compute_terms`, `backward_and_step`,
`optimizer_step`, the optimizer and scheduler it built), so a fault that overrides one of
them is exercised exactly where it sits — on a copy of the trainer under a real Workbench
writing to a scratch folder (`pipeline.Pipeline.copy`).

Modules: `pipeline` (the bare pipeline and its copies), `checks_gradients` and
`checks_contract` (the checks), `checks` (their registry, `CHECKS`), `results`.

Checks (names are stable; `riswb.reference.faults` refers to them):

=====================  ===================================================================
finite-nonzero-grads   every term (unweighted) sends a finite, non-zero gradient to the
                       params; no term has weight 0; every trainable tensor gets a non-zero
                       gradient from the weighted total (docs/failures.md #7, 8, 10, 16)
oracle-values          at R_pred = R_true (factor spanning the truth, β = 0) every
                       covariance term ≤ ORACLE_TOL; nmse(0, R) = nmse_pred(0, R) = 1 ± 1e-4
                       through `compute_terms` (docs/failures.md #14, 15)
phase-invariance       terms unchanged (≤ PHASE_RTOL) when the factor's columns and every
                       eigh/eig/svd eigenvector are multiplied by random e^{iφ} (signs for
                       real input), and backward does not raise (docs/failures.md #11)
spectral-gradcheck     torch.autograd.gradcheck (float64, N = 6) of the spectral terms on both
                       decomposition paths (full eigh; certified low-rank with a factor hint)
rank-deficient-grads   finite gradients, ‖g‖ ≤ RANK_GRAD_MAX, of every term at a rank-1 R_pred
                       (generic direction; and axis-aligned, so its N − 1 zero eigenvalues
                       are exactly equal) with k = K_MAX true sources (docs/failures.md #10)
optimizer-coverage     every trainable param in exactly one group, nothing stale, no group
                       with lr = 0 (current or initial; docs/failures.md #2, 6)
step-moves-groups      one real training step (backward_and_step) on a copy moves every
                       param group: ‖Δθ‖/‖θ‖ > MOVE_TOL (docs/failures.md #2, 5, 6)
init-loss-range        at init every term finite and |term| ≤ 1e3, total in [1e-3, 1e3], at
                       the β ramp's start and end (docs/failures.md #8, 13)
no-grad-into-inputs    after a backward, the announced inputs, the batch, the dataset and the
                       model's buffers neither require grad, hold .grad, nor hang off a graph
                       (docs/failures.md #22)
batch-independence     ∂ℓ_0/∂y_j = 0 for j ≠ 0 through the model (≤ 1e-6 relative), and
                       B·∂L/∂out_0 = ∂ℓ_0/∂out_0 through the terms (≤ 1e-3 relative)
output-contract        R_pred complex, (B,N,N), Hermitian, PSD, trace N; k_logits, aux shapes;
                       all finite (docs/failures.md #17)
=====================  ===================================================================
"""

from __future__ import annotations

import tempfile
import time
from pathlib import Path
from typing import Any

import torch

from riswb.errors import RiswbError
from riswb.reference.litmus.checks import CHECKS
from riswb.reference.litmus.checks_gradients import random_gauge
from riswb.reference.litmus.pipeline import BATCH, SCENES, Pipeline
from riswb.reference.litmus.results import CheckResult, LitmusResult, first_line

__all__ = [
    "BATCH",
    "CHECKS",
    "SCENES",
    "CheckResult",
    "LitmusResult",
    "Pipeline",
    "random_gauge",
    "run_checks",
    "run_litmus",
]


def _run_one(name: str, pipe: Pipeline) -> CheckResult:
    started = time.perf_counter()
    state = torch.get_rng_state()
    try:
        result = CHECKS[name](pipe)
    except Exception as error:  # noqa: BLE001 - a pipeline that crashes fails the check
        result = CheckResult(name, False, f"raised {first_line(error)}",
                             {"error": first_line(error)})
    finally:
        torch.set_rng_state(state)
    result.seconds = time.perf_counter() - started
    return result


def run_checks(trainer: Any, names: list[str] | tuple[str, ...] | None = None, *,
               seed: int = 0, batch_size: int = BATCH) -> list[CheckResult]:
    """Run the named checks (all by default) on an already built trainer."""
    names = list(CHECKS) if names is None else list(names)
    unknown = [n for n in names if n not in CHECKS]
    if unknown:
        raise RiswbError(f"unknown litmus check(s) {', '.join(unknown)}; checks are "
                         f"{', '.join(CHECKS)}")
    with tempfile.TemporaryDirectory(prefix="riswb-litmus-") as scratch:
        pipe = Pipeline.of(trainer, Path(scratch), batch_size=batch_size, seed=seed)
        return [_run_one(name, pipe) for name in names]


def run_litmus(preset: str = "small", inject: str | None = None, seed: int = 0, *,
               checks: list[str] | tuple[str, ...] | None = None, scenes: int = SCENES,
               batch_size: int = BATCH) -> LitmusResult:
    """Build the (faulty, with `inject`) reference pipeline without running it and check it."""
    from riswb.reference.config import TrainConfig
    from riswb.reference.faults import build_trainer, get_fault
    from riswb.reference.physics.presets import get_preset

    started = time.perf_counter()
    name = get_preset(preset).name  # RiswbError for an unknown preset
    expected = get_fault(inject).litmus if inject is not None else ()
    config = TrainConfig(name="litmus", preset=name, train_scenes=scenes, val_scenes=0,
                         seed=seed, batch_size=batch_size, device="cpu", inject=inject)
    torch.manual_seed(seed)
    trainer = build_trainer(config)
    results = run_checks(trainer, checks, seed=seed, batch_size=batch_size)
    return LitmusResult(preset=name, inject=inject, seed=seed, checks=results,
                        seconds=time.perf_counter() - started,
                        expected_failures=tuple(expected))
