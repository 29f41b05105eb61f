"""The eleven named litmus checks, in the order `riswb litmus` runs and shows them (the names
are stable: `riswb.reference.faults` signatures refer to them)."""

from __future__ import annotations

from collections.abc import Callable

from riswb.reference.litmus.checks_contract import (
    check_init_loss_range,
    check_no_grad_into_inputs,
    check_optimizer_coverage,
    check_oracle_values,
    check_output_contract,
    check_step_moves_groups,
)
from riswb.reference.litmus.checks_gradients import (
    check_batch_independence,
    check_finite_nonzero_grads,
    check_phase_invariance,
    check_rank_deficient_grads,
    check_spectral_gradcheck,
)
from riswb.reference.litmus.pipeline import Pipeline
from riswb.reference.litmus.results import CheckResult

CHECKS: dict[str, Callable[[Pipeline], CheckResult]] = {
    "finite-nonzero-grads": check_finite_nonzero_grads,
    "oracle-values": check_oracle_values,
    "phase-invariance": check_phase_invariance,
    "spectral-gradcheck": check_spectral_gradcheck,
    "rank-deficient-grads": check_rank_deficient_grads,
    "optimizer-coverage": check_optimizer_coverage,
    "step-moves-groups": check_step_moves_groups,
    "init-loss-range": check_init_loss_range,
    "no-grad-into-inputs": check_no_grad_into_inputs,
    "batch-independence": check_batch_independence,
    "output-contract": check_output_contract,
}
