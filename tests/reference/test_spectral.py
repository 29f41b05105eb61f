"""Oracle tests of riswb.reference.spectral: the one shared decomposition and its backward."""

from __future__ import annotations

import pytest
import torch

from riswb.reference.spectral import factor_projector, hermitize, spectral_decompose

C128 = torch.complex128


def _gen(seed: int) -> torch.Generator:
    return torch.Generator().manual_seed(seed)


def _cn(*shape, seed=0, dtype=C128):
    g = _gen(seed)
    real = torch.float64 if dtype == C128 else torch.float32
    return torch.complex(torch.randn(*shape, generator=g, dtype=real),
                         torch.randn(*shape, generator=g, dtype=real))


def _lowrank(F: torch.Tensor, s: float = 0.3) -> torch.Tensor:
    n = F.shape[-2]
    return F @ F.mH + s * torch.eye(n, dtype=F.dtype)


def test_full_path_gradcheck_float64():
    X = _cn(3, 6, 6, seed=1).requires_grad_()
    k = torch.tensor([1, 2, 3])

    def f(X):
        spec = spectral_decompose(X, k, gap_eps=1e-9)
        assert spec.path == "eigh"
        return spec.evals, spec.proj

    assert torch.autograd.gradcheck(f, (X,), atol=1e-6, rtol=1e-4)


def test_lowrank_path_gradcheck_float64():
    F = _cn(3, 6, 3, seed=2).requires_grad_()
    k = torch.tensor([1, 2, 3])

    def f(F):
        spec = spectral_decompose(_lowrank(F), k, hint=F, gap_eps=1e-9)
        assert spec.path == "lowrank"
        return spec.evals, spec.proj

    assert torch.autograd.gradcheck(f, (F,), atol=1e-6, rtol=1e-4)


def test_lowrank_and_full_paths_agree():
    F = _cn(4, 8, 3, seed=3).requires_grad_()
    k = torch.tensor([1, 2, 3, 2])
    C = _cn(8, 8, seed=4)
    w = torch.randn(8, generator=_gen(5), dtype=torch.float64)
    results = {}
    for hint in (F, None):
        spec = spectral_decompose(_lowrank(F), k, hint=hint)
        loss = (spec.proj * C).real.sum() + (spec.evals * w).sum()
        (g,) = torch.autograd.grad(loss, F)
        results[spec.path] = (spec.evals.detach(), spec.proj.detach(), g)
    (e1, p1, g1), (e2, p2, g2) = results["lowrank"], results["eigh"]
    torch.testing.assert_close(e1, e2)
    torch.testing.assert_close(p1, p2)
    torch.testing.assert_close(g1, g2)


def test_evals_descending_and_projector_properties():
    X = _cn(2, 7, 7, seed=6, dtype=torch.complex64)
    k = torch.tensor([2, 4])
    spec = spectral_decompose(X, k)
    assert (spec.evals[:, :-1] >= spec.evals[:, 1:]).all()
    P = spec.proj
    torch.testing.assert_close(P @ P, P, atol=1e-5, rtol=1e-5)
    torch.testing.assert_close(P, P.mH)
    tr = torch.diagonal(P, dim1=-2, dim2=-1).real.sum(-1)
    torch.testing.assert_close(tr, k.float(), atol=1e-5, rtol=0)
    # decomposes the Hermitian part: a non-Hermitian input equals its hermitized self
    spec_h = spectral_decompose(hermitize(X), k)
    torch.testing.assert_close(spec.evals, spec_h.evals)
    torch.testing.assert_close(spec.proj, spec_h.proj)


@pytest.mark.parametrize("use_hint", [True, False])
def test_rank_deficient_gradients_are_finite(use_hint):
    """R = f fᴴ (rank 1) with k = 3: the gap at k is exactly 0 and N − 1 eigenvalues tie."""
    f = _cn(3, 16, 1, seed=7, dtype=torch.complex64)
    F = torch.cat([f, torch.zeros(3, 16, 2, dtype=f.dtype)], -1).requires_grad_()
    R = F @ F.mH
    k = torch.tensor([3, 3, 3])
    spec = spectral_decompose(R, k, hint=F if use_hint else None)
    assert spec.path == ("lowrank" if use_hint else "eigh")
    loss = spec.proj.real.sum() + spec.proj.abs().square().sum() + spec.evals[:, 2:].sum()
    loss = loss + (spec.noise_proj @ F).abs().square().sum()
    (g,) = torch.autograd.grad(loss, F)
    assert torch.isfinite(g).all()


def test_model_shaped_matrix_uses_lowrank_path_and_rejects_others():
    F = _cn(4, 64, 3, seed=8, dtype=torch.complex64)
    R = _lowrank(F, 1e-3)
    k = torch.tensor([1, 2, 3, 3])
    assert spectral_decompose(R, k, hint=F).path == "lowrank"
    bumped = R + 1e-2 * hermitize(_cn(4, 64, 64, seed=9, dtype=torch.complex64))
    assert spectral_decompose(bumped, k, hint=F).path == "eigh"


def test_projectors_are_phase_invariant():
    F = _cn(2, 10, 3, seed=10)
    phase = torch.polar(torch.ones(2, 1, 3, dtype=torch.float64),
                        torch.rand(2, 1, 3, generator=_gen(11), dtype=torch.float64) * 6.28)
    torch.testing.assert_close(factor_projector(F), factor_projector(F * phase))
    k = torch.tensor([2, 3])
    a = spectral_decompose(_lowrank(F), k, hint=F)
    b = spectral_decompose(_lowrank(F * phase), k, hint=F * phase)
    torch.testing.assert_close(a.proj, b.proj)


def test_factor_projector_is_the_orthogonal_projector_for_small_delta():
    F = _cn(2, 9, 3, seed=12)
    P = factor_projector(F, delta_rel=1e-12)
    Q = torch.linalg.qr(F).Q
    torch.testing.assert_close(P, Q @ Q.mH, atol=1e-8, rtol=0)


def test_project_equals_dense_projector_times_vectors_with_same_gradient():
    F = _cn(3, 10, 3, seed=13).requires_grad_()
    V = _cn(3, 10, 4, seed=14)
    k = torch.tensor([1, 2, 3])
    C = _cn(3, 10, 4, seed=15)
    grads = []
    for dense in (False, True):
        spec = spectral_decompose(_lowrank(F), k, hint=F)
        out = spec.proj @ V if dense else spec.project(V)
        (g,) = torch.autograd.grad((out * C).real.sum(), F)
        grads.append((out.detach(), g))
    torch.testing.assert_close(grads[0][0], grads[1][0])
    torch.testing.assert_close(grads[0][1], grads[1][1])


def test_prepared_projections_match_individual_ones():
    F = _cn(2, 10, 3, seed=16).requires_grad_()
    V1, V2 = _cn(2, 10, 2, seed=17), _cn(5, 10, seed=18).mT  # batched and shared blocks
    k = torch.tensor([2, 3])
    spec = spectral_decompose(_lowrank(F), k, hint=F)
    single = [spec.project(V1), spec.project(V2)]
    spec.prepare(V1, V2)
    prepared = [spec.project(V1), spec.project(V2)]
    for a, b in zip(single, prepared, strict=True):
        torch.testing.assert_close(a, b)
    ga = torch.autograd.grad(sum(x.real.sum() for x in single), F, retain_graph=True)[0]
    gb = torch.autograd.grad(sum(x.real.sum() for x in prepared), F)[0]
    torch.testing.assert_close(ga, gb)
