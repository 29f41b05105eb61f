"""Litmus: every check passes on the clean pipeline, and each one fails on a pipeline broken
the way docs/failures.md describes (a broken Trainer subclass, never a mocked check)."""

from __future__ import annotations

import json
from dataclasses import replace

import pytest
import torch

from riswb.errors import RiswbError
from riswb.reference import litmus
from riswb.reference.config import TrainConfig
from riswb.reference.faults import FAULTS
from riswb.reference.losses import loss_terms
from riswb.reference.trainer import Trainer


def config(**overrides) -> TrainConfig:
    base = dict(name="litmus-test", preset="small", train_scenes=litmus.SCENES, val_scenes=0,
                seed=0, batch_size=litmus.BATCH, device="cpu")
    base.update(overrides)
    return TrainConfig(**base)


def check(trainer_cls: type[Trainer], name: str, **cfg) -> litmus.CheckResult:
    torch.manual_seed(0)
    (result,) = litmus.run_checks(trainer_cls(config(**cfg)), [name])
    return result


@pytest.fixture(scope="module")
def clean() -> litmus.LitmusResult:
    return litmus.run_litmus("small", seed=0)


# --------------------------------------------------------------------------- clean


@pytest.mark.parametrize("name", list(litmus.CHECKS))
def test_each_check_passes_on_the_clean_pipeline(clean, name):
    result = clean[name]
    assert result.passed, f"{name}: {result.detail}"
    assert result.detail and "\n" not in result.detail
    assert isinstance(result.evidence, dict)


def test_result_shape_and_json(clean):
    assert clean.passed and clean.failed == [] and clean.inject is None
    assert [c.name for c in clean.checks] == list(litmus.CHECKS)
    data = json.loads(json.dumps(clean.to_dict(), allow_nan=False))
    assert data["passed"] is True and len(data["checks"]) == len(litmus.CHECKS)
    assert clean.seconds < 120  # ~5-15 s on two cores; generous for a loaded CI box


def test_unknown_inputs_are_usage_errors():
    with pytest.raises(RiswbError, match="preset"):
        litmus.run_litmus("huge")
    with pytest.raises(RiswbError, match="fault"):
        litmus.run_litmus("small", inject="no-such-fault")
    with pytest.raises(RiswbError, match="check"):
        litmus.run_checks(object(), ["no-such-check"])


def test_random_gauge_restores_linalg_and_keeps_decompositions_valid():
    saved = torch.linalg.eigh
    A = torch.randn(3, 5, 5, dtype=torch.complex128)
    A = A + A.mH
    with litmus.random_gauge(torch.Generator().manual_seed(0)):
        lam, U = torch.linalg.eigh(A)
        assert torch.allclose((U * lam.to(U.dtype)[..., None, :]) @ U.mH, A, atol=1e-10)
        assert not torch.allclose(U, saved(A).eigenvectors)
        S = torch.linalg.svd(A)
        assert torch.allclose((S.U * S.S.to(A.dtype)[..., None, :]) @ S.Vh, A, atol=1e-10)
    assert torch.linalg.eigh is saved


# --------------------------------------------------------------------------- broken pipelines


class PhaseDependentTerm(Trainer):
    """docs/failures.md #11: subspace_align compares eigenvectors entry by entry."""

    def compute_terms(self, out, batch):
        terms = super().compute_terms(out, batch)
        u = torch.linalg.eigh(out.R_pred).eigenvectors.flip(-1)[..., :1]
        terms["subspace_align"] = (u - 1 / 8).abs().square().sum((-2, -1)).mean()
        return terms


class EighProjectorTerm(Trainer):
    """docs/failures.md #10: a phase-free projector, but through torch's eigh backward (1/(λi − λj)
    for every pair: infinite at degenerate eigenvalues)."""

    def compute_terms(self, out, batch):
        terms = super().compute_terms(out, batch)
        u = torch.linalg.eigh(out.R_pred).eigenvectors.flip(-1)[..., :3]
        proj = u @ u.mH
        terms["subspace_align"] = proj.diagonal(dim1=-2, dim2=-1).real[..., :8].sum(-1).mean()
        return terms


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


class DetachedTerm(Trainer):
    """docs/failures.md #16: a term on detached outputs (its value moves, its gradient is 0)."""

    def compute_terms(self, out, batch):
        terms = super().compute_terms(out, batch)
        frozen = replace(out, R_pred=out.R_pred.detach(), factor=out.factor.detach())
        terms["peak"] = loss_terms(frozen, batch, self.preset)["peak"]
        return terms


class ZeroLrHeads(Trainer):
    """docs/failures.md #6: the heads group at lr 0."""

    def param_groups(self):
        groups = super().param_groups()
        groups[-1]["lr"] = 0.0
        return groups


class BatchMixing(Trainer):
    """A BatchNorm-like input normalization with batch statistics: samples mix."""

    def forward(self, batch):
        y = batch.y - 0.5 * batch.y.mean(0, keepdim=True)
        return self.model(y)


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


class SkippingStep(Trainer):
    """docs/failures.md #5: a step gate that never lets the optimizer step."""

    def optimizer_step(self):
        return False


class RealCovariance(Trainer):
    """docs/failures.md #17: R_pred as a real matrix."""

    def forward(self, batch):
        out = super().forward(batch)
        return replace(out, R_pred=out.R_pred.real)


@pytest.mark.parametrize(
    ("trainer_cls", "name", "cfg"),
    [
        (PhaseDependentTerm, "phase-invariance", {}),
        (PhaseDependentTerm, "rank-deficient-grads", {}),
        (EighProjectorTerm, "rank-deficient-grads", {}),
        (AscendingGap, "oracle-values", {}),
        (SimilarityNmse, "oracle-values", {}),
        (DetachedTerm, "finite-nonzero-grads", {}),
        (ZeroLrHeads, "optimizer-coverage", {}),
        (ZeroLrHeads, "step-moves-groups", {}),
        (SkippingStep, "step-moves-groups", {}),
        (BatchMixing, "batch-independence", {}),
        (RSampRequiresGrad, "no-grad-into-inputs", {}),
        (UnnormalizedRSamp, "init-loss-range", {"beta_start": 0.5, "beta_end": 0.5}),
        (RealCovariance, "output-contract", {}),
    ],
    ids=lambda v: v.__name__ if isinstance(v, type) else (v if isinstance(v, str) else None),
)
def test_check_fails_on_a_broken_pipeline(trainer_cls, name, cfg):
    result = check(trainer_cls, name, **cfg)
    assert not result.passed, f"{name} passed on {trainer_cls.__name__}: {result.detail}"
    assert result.detail and "\n" not in result.detail


def test_failures_name_the_offender():
    assert "peak" in check(DetachedTerm, "finite-nonzero-grads").detail
    assert "gap" in check(AscendingGap, "oracle-values").detail
    assert "nmse" in check(SimilarityNmse, "oracle-values").detail
    assert "heads" in check(ZeroLrHeads, "optimizer-coverage").detail
    assert "R_samp" in check(RSampRequiresGrad, "no-grad-into-inputs").detail
    assert "subspace_align" in check(EighProjectorTerm, "rank-deficient-grads").detail


def test_phase_free_eigh_projector_passes_phase_invariance():
    """Specificity: a projector from torch's eigh is phase-free (only rank-deficient fails)."""
    assert check(EighProjectorTerm, "phase-invariance").passed


def test_spectral_gradcheck_fails_on_a_wrong_backward(monkeypatch):
    from riswb.reference import spectral
    monkeypatch.setattr(spectral, "_broadened_inverse", lambda d, eps: 2 * d / (d * d + eps * eps))
    (result,) = litmus.run_checks(Trainer(config()), ["spectral-gradcheck"])
    assert not result.passed and "subspace_align" in result.detail


def test_a_crashing_pipeline_fails_its_checks_instead_of_raising():
    class Crashing(Trainer):
        def compute_terms(self, out, batch):
            raise RuntimeError("boom")

    (result,) = litmus.run_checks(Crashing(config()), ["init-loss-range"])
    assert not result.passed and "boom" in result.detail


@pytest.mark.parametrize("fault", [n for n, f in FAULTS.items() if f.litmus])
def test_fault_signatures_fail_their_checks(fault):
    result = litmus.run_litmus("small", inject=fault)
    assert result.expected_failures == FAULTS[fault].litmus
    missed = set(FAULTS[fault].litmus) - set(result.failed)
    assert not missed, {n: result[n].detail for n in missed}
