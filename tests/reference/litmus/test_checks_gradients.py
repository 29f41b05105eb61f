"""The gradient checks fail on pipelines broken the way docs/failures.md describes, and only
there (riswb/reference/litmus/checks_gradients.py)."""

from __future__ import annotations

from dataclasses import replace

import pytest
import torch

from riswb.reference import litmus
from riswb.reference.losses import loss_terms
from riswb.reference.trainer import Trainer


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


class DetachedTerm(Trainer):
    """docs/failures.md #16: a term on detached outputs (its value moves, its gradient is 0)."""

    def compute_terms(self, out, batch):
        terms = super().compute_terms(out, batch)
        frozen = replace(out, R_pred=out.R_pred.detach(), factor=out.factor.detach())
        terms["peak"] = loss_terms(frozen, batch, self.preset)["peak"]
        return terms


class BatchMixing(Trainer):
    """A BatchNorm-like input normalization with batch statistics: samples mix."""

    def forward(self, batch):
        y = batch.y - 0.5 * batch.y.mean(0, keepdim=True)
        return self.model(y)


@pytest.mark.parametrize(
    ("trainer_cls", "name"),
    [
        (PhaseDependentTerm, "phase-invariance"),
        (PhaseDependentTerm, "rank-deficient-grads"),
        (EighProjectorTerm, "rank-deficient-grads"),
        (DetachedTerm, "finite-nonzero-grads"),
        (BatchMixing, "batch-independence"),
    ],
    ids=lambda v: v.__name__ if isinstance(v, type) else v,
)
def test_check_fails_on_a_broken_pipeline(check, trainer_cls, name):
    result = check(trainer_cls, name)
    assert not result.passed, f"{name} passed on {trainer_cls.__name__}: {result.detail}"
    assert result.detail and "\n" not in result.detail


def test_failures_name_the_offender(check):
    assert "peak" in check(DetachedTerm, "finite-nonzero-grads").detail
    assert "subspace_align" in check(EighProjectorTerm, "rank-deficient-grads").detail


def test_phase_free_eigh_projector_passes_phase_invariance(check):
    """Specificity: a projector from torch's eigh is phase-free (only rank-deficient fails)."""
    assert check(EighProjectorTerm, "phase-invariance").passed


def test_spectral_gradcheck_fails_on_a_wrong_backward(monkeypatch, config):
    from riswb.reference import spectral
    monkeypatch.setattr(spectral, "_broadened_inverse", lambda d, eps: 2 * d / (d * d + eps * eps))
    (result,) = litmus.run_checks(Trainer(config()), ["spectral-gradcheck"])
    assert not result.passed and "subspace_align" in result.detail
