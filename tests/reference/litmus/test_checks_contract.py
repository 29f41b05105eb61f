"""The contract checks fail on pipelines broken the way docs/failures.md describes
(riswb/reference/litmus/checks_contract.py)."""

from __future__ import annotations

from dataclasses import replace

import pytest
import torch

from riswb.reference import litmus
from riswb.reference.trainer import Trainer


class AscendingGap(Trainer):
    """docs/failures.md #14: the eigengap hinge on eigenvalues in ascending order."""

    def compute_terms(self, out, batch):
        terms = super().compute_terms(out, batch)
        lam = torch.linalg.svdvals(out.R_pred).flip(-1)  # BUG: flipped to ascending
        idx = (batch.k - 1).clamp_min(0)[:, None]
        lam_k, lam_next = lam.gather(-1, idx)[:, 0], lam.gather(-1, idx + 1)[:, 0]
        terms["gap"] = torch.relu(lam_next / lam_k.abs().clamp_min(1e-12) - 0.01).mean()
        return terms


class SimilarityNmse(Trainer):
    """docs/failures.md #15: nmse written as a similarity (≈ 1 at a perfect prediction)."""

    def compute_terms(self, out, batch):
        terms = super().compute_terms(out, batch)
        err = (out.R_pred - batch.R_true).abs().square().sum((-2, -1))
        ref = batch.R_true.abs().square().sum((-2, -1))
        terms["nmse"] = (1 - err / ref).mean()
        return terms


class ZeroLrHeads(Trainer):
    """docs/failures.md #6: the heads group at lr 0."""

    def param_groups(self):
        groups = super().param_groups()
        groups[-1]["lr"] = 0.0
        return groups


class SkippingStep(Trainer):
    """docs/failures.md #5: a step gate that never lets the optimizer step."""

    def optimizer_step(self):
        return False


class RSampRequiresGrad(Trainer):
    """docs/failures.md #22: R_samp.detach() removed; R_samp requires grad and enters R_blend."""

    def compute_terms(self, out, batch):
        r_samp = batch.R_samp.requires_grad_()  # BUG: in place, on the dataset's tensor
        terms = super().compute_terms(out, batch)
        beta = 0.3
        terms["nmse"] = (((1 - beta) * out.R_pred + beta * r_samp - batch.R_true).abs().square()
                         .sum((-2, -1)) / batch.R_true.abs().square().sum((-2, -1))).mean()
        return terms


class UnnormalizedRSamp(Trainer):
    """docs/failures.md #13: R_samp not trace-normalized, blended into R_pred with β > 0."""

    def __init__(self, config, **kwargs):
        super().__init__(config, **kwargs)
        self.train_set = replace(self.train_set, R_samp=self.train_set.R_samp * 3e12)


class RealCovariance(Trainer):
    """docs/failures.md #17: R_pred as a real matrix."""

    def forward(self, batch):
        out = super().forward(batch)
        return replace(out, R_pred=out.R_pred.real)


@pytest.mark.parametrize(
    ("trainer_cls", "name", "cfg"),
    [
        (AscendingGap, "oracle-values", {}),
        (SimilarityNmse, "oracle-values", {}),
        (ZeroLrHeads, "optimizer-coverage", {}),
        (ZeroLrHeads, "step-moves-groups", {}),
        (SkippingStep, "step-moves-groups", {}),
        (RSampRequiresGrad, "no-grad-into-inputs", {}),
        (UnnormalizedRSamp, "init-loss-range", {"beta_start": 0.5, "beta_end": 0.5}),
        (RealCovariance, "output-contract", {}),
    ],
    ids=lambda v: v.__name__ if isinstance(v, type) else (v if isinstance(v, str) else None),
)
def test_check_fails_on_a_broken_pipeline(check, trainer_cls, name, cfg):
    result = check(trainer_cls, name, **cfg)
    assert not result.passed, f"{name} passed on {trainer_cls.__name__}: {result.detail}"
    assert result.detail and "\n" not in result.detail


def test_failures_name_the_offender(check):
    assert "gap" in check(AscendingGap, "oracle-values").detail
    assert "nmse" in check(SimilarityNmse, "oracle-values").detail
    assert "heads" in check(ZeroLrHeads, "optimizer-coverage").detail
    assert "R_samp" in check(RSampRequiresGrad, "no-grad-into-inputs").detail


def test_unnamed_groups_are_labelled_by_index(check):
    """A param group without a name reads as its index (probes.params.group_label), never
    "None"."""

    class UnnamedGroups(Trainer):
        def param_groups(self):
            return [{k: v for k, v in g.items() if k != "name"} for g in super().param_groups()]

    coverage = check(UnnamedGroups, "optimizer-coverage")
    assert coverage.passed and "groups (0: " in coverage.detail, coverage.detail
    step = check(UnnamedGroups, "step-moves-groups")
    assert step.passed and "every group: 0 ‖Δθ‖" in step.detail, step.detail


def test_a_skipped_step_names_the_event_the_trainer_wrote(check):
    class GateSkips(Trainer):
        def optimizer_step(self):
            self.wb.writer.event(self.wb.step, "step_skipped", reason="gate", count=1)
            return False

    result = check(GateSkips, "step-moves-groups")
    assert not result.passed and result.evidence["events"] == ["step_skipped"]
    assert "did not step (step_skipped)" in result.detail


def test_a_crashing_pipeline_fails_its_checks_instead_of_raising(config):
    class Crashing(Trainer):
        def compute_terms(self, out, batch):
            raise RuntimeError("boom")

    (result,) = litmus.run_checks(Crashing(config()), ["init-loss-range"])
    assert not result.passed and "boom" in result.detail
