"""Oracle tests of riswb.reference.losses: values at the truth, invariances, gradients."""

from __future__ import annotations

import math
from dataclasses import replace

import pytest
import torch

from riswb.reference import losses as L
from riswb.reference.model import CovarianceNet, ModelOutput
from riswb.reference.physics.presets import get_preset
from riswb.reference.physics.scenes import simulate_scenes
from riswb.reference.spectral import spectral_decompose

COVARIANCE_TERMS = ("nmse", "nmse_pred", "ortho", "cross", "gap", "margin", "peak", "align",
                    "subspace_align", "peak_contrast")


@pytest.fixture(scope="module")
def preset():
    return get_preset("small")


@pytest.fixture(scope="module")
def batch(preset):
    return simulate_scenes(preset, 12, seed=3)


@pytest.fixture(scope="module")
def geo(preset):
    return L.LossGeometry.from_preset(preset)


@pytest.fixture(scope="module")
def model(preset):
    torch.manual_seed(0)
    return CovarianceNet(preset)


def oracle_output(batch, geo) -> ModelOutput:
    """A perfect prediction: R_pred = R_true, F spans the truth, k and (φ, θ, r) exact."""
    lam, U = torch.linalg.eigh(batch.R_true.to(torch.complex128))
    k_max = batch.mask.shape[-1]
    lam, U = lam.flip(-1)[:, :k_max].clamp_min(0), U.flip(-1)[:, :, :k_max]
    factor = (U * lam.sqrt()[:, None, :]).to(torch.complex64)
    logits = torch.full((len(batch), k_max), -30.0)
    logits[torch.arange(len(batch)), batch.k - 1] = 30.0
    mid = geo.lo + geo.span / 2
    truth = torch.stack([batch.phi, batch.theta, batch.r], -1)
    # the sources in the first k slots (where the k head switches them on), the rest mid
    order = torch.sort((~batch.mask).to(torch.int8), dim=-1, stable=True).indices
    packed = truth.gather(1, order[..., None].expand_as(truth))
    aux = torch.where(batch.mask.gather(1, order)[..., None], packed, mid)
    return ModelOutput(R_pred=batch.R_true.clone(), factor=factor, k_logits=logits, aux=aux)


def test_names_weights_and_docstrings():
    assert L.TERM_NAMES == ("nmse", "nmse_pred", "ortho", "cross", "gap", "margin", "K", "aux",
                            "peak", "align", "subspace_align", "peak_contrast")
    assert set(L.DEFAULT_WEIGHTS) == set(L.TERM_NAMES)
    assert all(w > 0 for w in L.DEFAULT_WEIGHTS.values())
    for name in L.TERM_NAMES:
        doc = getattr(L, name).__doc__
        assert doc and doc.strip() and "\n" not in doc.strip(), name


def test_every_term_is_zero_at_the_truth(batch, geo):
    terms = L.loss_terms(oracle_output(batch, geo), batch, geo)
    assert set(terms) == set(L.TERM_NAMES)
    for name, value in terms.items():
        assert value.dim() == 0 and torch.isfinite(value), name
        assert abs(value.item()) < 2e-3, (name, value.item())


def test_nmse_of_zero_is_one_on_the_training_path(batch, geo, model):
    out = model(batch.y)
    zero = replace(out, R_pred=torch.zeros_like(out.R_pred))
    terms = L.loss_terms(zero, batch, geo, beta=0.0)
    assert terms["nmse"].item() == pytest.approx(1.0, abs=1e-6)
    assert terms["nmse_pred"].item() == pytest.approx(1.0, abs=1e-6)
    assert all(torch.isfinite(v) for v in terms.values())


def test_blend_uses_detached_r_samp(batch, geo):
    out = oracle_output(batch, geo)
    r_samp = batch.R_samp.clone().requires_grad_()
    b = replace(batch, R_samp=r_samp)
    terms = L.loss_terms(out, b, geo, beta=1.0)
    expect = ((r_samp - batch.R_true).abs().square().sum((-2, -1))
              / batch.R_true.abs().square().sum((-2, -1))).mean()
    torch.testing.assert_close(terms["nmse"], expect.detach())
    assert not terms["nmse"].requires_grad  # R_samp.detach(): nothing reaches the input
    assert terms["nmse_pred"].item() < 1e-6
    # at β = ½ with R_pred = R_true the blend is halfway to R_samp
    half = L.loss_terms(out, batch, geo, beta=0.5)["nmse"]
    torch.testing.assert_close(half, expect.detach() / 4, rtol=1e-4, atol=1e-6)


def test_loss_terms_accepts_preset_name_and_geometry(batch, geo, model, preset):
    out = model(batch.y)
    a = L.loss_terms(out, batch, geo)
    for g in (preset, "small"):
        b = L.loss_terms(out, batch, g)
        for name in L.TERM_NAMES:
            torch.testing.assert_close(a[name], b[name])


def test_invariant_to_factor_column_phase(batch, geo, model):
    with torch.no_grad():
        out = model(batch.y)
    g = torch.Generator().manual_seed(1)
    phase = torch.polar(torch.ones(out.factor.shape[0], 1, out.factor.shape[2]),
                        2 * math.pi * torch.rand(out.factor.shape[0], 1, out.factor.shape[2],
                                                 generator=g))
    rotated = replace(out, factor=out.factor * phase)
    a, b = L.loss_terms(out, batch, geo), L.loss_terms(rotated, batch, geo)
    for name in L.TERM_NAMES:
        torch.testing.assert_close(a[name], b[name], atol=2e-5, rtol=1e-4, msg=name)


def test_invariant_to_source_order(batch, geo, model):
    with torch.no_grad():
        out = model(batch.y)
    perm = torch.tensor([2, 0, 1])
    shuffled = replace(batch, **{f: getattr(batch, f)[:, perm]
                                 for f in ("phi", "theta", "r", "mask", "power")})
    assert not torch.equal(shuffled.mask, batch.mask)  # empty slots now sit anywhere
    a, b = L.loss_terms(out, batch, geo), L.loss_terms(out, shuffled, geo)
    for name in L.TERM_NAMES:
        torch.testing.assert_close(a[name], b[name], atol=2e-5, rtol=1e-4, msg=name)
    ob = L.loss_terms(oracle_output(shuffled, geo), shuffled, geo)
    assert max(abs(v.item()) for v in ob.values()) < 2e-3


def test_every_term_sends_finite_nonzero_gradient_at_init(batch, geo, model):
    params = [p for p in model.parameters() if p.requires_grad]
    for name in L.TERM_NAMES:
        out = model(batch.y)
        term = L.loss_terms(out, batch, geo, beta=0.3)[name]
        grads = torch.autograd.grad(term, params, allow_unused=True)
        flat = torch.cat([g.flatten() for g in grads if g is not None])
        assert torch.isfinite(flat).all(), name
        assert flat.norm() > 1e-6, (name, flat.norm().item())


def _small_truth(B=2, N=6, K=3, seed=0):
    g = torch.Generator().manual_seed(seed)
    a = torch.complex(torch.randn(B, N, K, generator=g, dtype=torch.float64),
                      torch.randn(B, N, K, generator=g, dtype=torch.float64))
    a = a / a.norm(dim=-2, keepdim=True)
    mask = torch.tensor([[True, False, False], [True, True, False]])
    A = a * mask[:, None, :]
    Q = torch.linalg.qr(A).Q * mask[:, None, :]  # first-slot masks keep QR columns aligned
    probe = torch.complex(torch.randn(5, N, generator=g, dtype=torch.float64),
                          torch.randn(5, N, generator=g, dtype=torch.float64))
    return A, Q, mask, mask.sum(-1), probe / probe.norm(dim=-1, keepdim=True)


def test_spectral_terms_gradcheck_float64():
    A, Q, mask, k, probe = _small_truth()
    X = torch.complex(torch.randn(2, 6, 6, dtype=torch.float64, generator=torch.Generator()
                                  .manual_seed(5)),
                      torch.randn(2, 6, 6, dtype=torch.float64)).requires_grad_()

    def terms(X):
        R = X @ X.mH  # PSD with a generic spectrum
        spec = spectral_decompose(R, k, gap_eps=1e-9)
        return torch.stack([
            L.gap(spec, k, tau=0.0), L.margin(spec, k), L.subspace_align(spec, Q, k),
            L.peak(spec, A, mask), L.peak_contrast(spec, A, mask, probe),
            L.ortho(spec, Q), L.nmse(R, A @ A.mH + 0),
        ])

    assert torch.autograd.gradcheck(terms, (X,), atol=1e-6, rtol=1e-4)


def test_factor_terms_gradcheck_float64():
    A, Q, mask, k, _ = _small_truth(seed=1)
    F = torch.complex(torch.randn(2, 6, 3, dtype=torch.float64),
                      torch.randn(2, 6, 3, dtype=torch.float64)).requires_grad_()
    assert torch.autograd.gradcheck(
        lambda F: torch.stack([L.cross(F, Q, k), L.align(F, Q, k)]), (F,), atol=1e-6, rtol=1e-4)


def test_rank_deficient_prediction_has_finite_gradients(batch, geo):
    """R_pred of rank 1 while the truth has up to 3 sources: degenerate noise eigenvalues."""
    g = torch.Generator().manual_seed(2)
    n = batch.R_true.shape[-1]
    f = torch.complex(torch.randn(len(batch), n, 1, generator=g),
                      torch.randn(len(batch), n, 1, generator=g))
    F = torch.cat([f, torch.zeros(len(batch), n, 2, dtype=f.dtype)], -1).requires_grad_()
    b3 = replace(batch, k=torch.full_like(batch.k, 3), mask=torch.ones_like(batch.mask))
    logits = torch.zeros(len(batch), 3, requires_grad=True)
    aux = (geo.lo + geo.span / 2).expand(len(batch), 3, 3).clone().requires_grad_()

    def rank_one():
        R = F @ F.mH
        return R * (n / torch.diagonal(R, dim1=-2, dim2=-1).real.sum(-1))[:, None, None]

    for rb in (b3, batch):
        R = rank_one()
        out = ModelOutput(R_pred=R, factor=F, k_logits=logits, aux=aux)
        terms = L.loss_terms(out, rb, geo)
        assert spectral_decompose(R, rb.k, hint=F).path == "lowrank"
        total = L.weighted_total(terms)
        (gF,) = torch.autograd.grad(total, F)
        assert torch.isfinite(total) and torch.isfinite(gF).all()
    # and through the full eigh path (no factor hint available to the decomposition)
    spec = spectral_decompose(rank_one(), b3.k)
    assert spec.path == "eigh"
    (gF,) = torch.autograd.grad(L.peak(spec, F, b3.mask) + L.gap(spec, b3.k)
                                + L.margin(spec, b3.k), F)
    assert torch.isfinite(gF).all()


def test_gap_orientation_clean_vs_flat():
    """docs/failures.md #14: a clean gap at k scores 0, a flat spectrum does not (descending)."""
    n = 8
    k = torch.tensor([2])
    clean = torch.diag(torch.tensor([[5.0, 3.0] + [1e-4] * (n - 2)])[0]).to(torch.complex64)
    flat = torch.eye(n, dtype=torch.complex64)[None]
    s_clean = spectral_decompose(clean[None], k)
    s_flat = spectral_decompose(flat, k)
    assert L.gap(s_clean, k).item() == 0.0
    assert L.gap(s_flat, k).item() > 0.9
    assert L.margin(s_clean, k).item() < 1e-3
    assert L.margin(s_flat, k).item() == pytest.approx((n - 2) / n)


def test_aux_is_permutation_invariant_and_ignores_empty_slots(batch, geo):
    out = oracle_output(batch, geo)
    # reverse the first k slots of every scene: the same estimates, another slot order
    k = batch.k[:, None]
    j = torch.arange(out.aux.shape[1])[None, :]
    order = torch.where(j < k, k - 1 - j, j)
    shuffled_pred = out.aux.gather(1, order[..., None].expand_as(out.aux))
    a = L.aux(shuffled_pred, batch.phi, batch.theta, batch.r, batch.mask, geo)
    assert a.item() < 1e-10
    # a source estimated in a slot the k head leaves off (slot ≥ k) does not count
    one = batch.k == 1
    assert one.any()
    moved = out.aux.clone()
    moved[one, 1], moved[one, 0] = out.aux[one, 0], out.aux[one, 1]
    sub = batch[one.nonzero()[:, 0]]
    c = L.aux(moved[one], sub.phi, sub.theta, sub.r, sub.mask, geo)
    assert c.item() > 1e-3
    off = out.aux + geo.span * 0.1
    b = L.aux(off, batch.phi, batch.theta, batch.r, batch.mask, geo)
    assert b.item() == pytest.approx(0.01, rel=1e-4)


def test_weighted_total():
    terms = {name: torch.tensor(float(i + 1)) for i, name in enumerate(L.TERM_NAMES)}
    expect = sum(L.DEFAULT_WEIGHTS[n] * (i + 1) for i, n in enumerate(L.TERM_NAMES))
    assert L.weighted_total(terms).item() == pytest.approx(expect)
    custom = L.weighted_total(terms, {"nmse": 0.0})
    assert custom.item() == pytest.approx(expect - L.DEFAULT_WEIGHTS["nmse"])


def test_paper_preset_runs():
    preset = get_preset("paper")
    b = simulate_scenes(preset, 3, seed=0)
    model = CovarianceNet(preset, width=64)
    terms = L.loss_terms(model(b.y), b, preset)
    total = L.weighted_total(terms)
    total.backward()
    assert torch.isfinite(total)
    assert L.loss_terms(oracle_output(b, L.LossGeometry.from_preset(preset)), b,
                        preset)["subspace_align"].item() < 2e-3


def test_reduced_formulas_match_their_dense_definitions():
    """ortho, cross, align, subspace_align, peak: r×r / Ritz shortcuts vs N×N definitions."""
    from riswb.reference.spectral import factor_projector

    A, Q, mask, k, probe = _small_truth(seed=3)
    g = torch.Generator().manual_seed(4)
    F = torch.complex(torch.randn(2, 6, 3, generator=g, dtype=torch.float64),
                      torch.randn(2, 6, 3, generator=g, dtype=torch.float64))
    X = torch.complex(torch.randn(2, 6, 6, generator=g, dtype=torch.float64),
                      torch.randn(2, 6, 6, generator=g, dtype=torch.float64))
    R = X @ X.mH
    spec = spectral_decompose(R, k)
    Pt = Q @ Q.mH
    eye = torch.eye(6, dtype=R.dtype)

    def fro2(M):
        return M.abs().square().sum((-2, -1))

    def tr(M):
        return torch.diagonal(M, dim1=-2, dim2=-1).real.sum(-1)

    kf = k.to(torch.float64)
    PF = factor_projector(F, delta_rel=L.FACTOR_DELTA)
    torch.testing.assert_close(L.ortho(spec, Q), (fro2(R - Pt @ R @ Pt) / fro2(R)).mean())
    torch.testing.assert_close(L.cross(F, Q, k), (tr(PF @ (eye - Pt)) / kf).mean())
    torch.testing.assert_close(L.align(F, Q, k), (1 - tr(PF @ Pt) / kf).mean())
    Pk = spec.proj
    torch.testing.assert_close(L.subspace_align(spec, Q, k), (1 - tr(Pk @ Pt) / kf).mean())
    Pn = eye - Pk
    depth = torch.einsum("bnj,bnm,bmj->bj", A.conj(), Pn, A).real
    torch.testing.assert_close(L.peak(spec, A, mask), ((depth * mask).sum(-1) / kf).mean())


def test_range_contrast_reads_range_that_the_subspace_terms_barely_see(batch, geo, model):
    """contrast="range": 0 at the truth, ≈ 1 for a covariance of the sources' range twins
    (right directions, wrong ranges), which subspace_align scores as almost right; finite
    nonzero gradients at init."""
    twins = L.range_twins(batch.phi, batch.theta, batch.r, batch.mask, geo)
    assert torch.equal(twins.abs().sum(1) > 0, batch.mask)
    at_truth = L.loss_terms(oracle_output(batch, geo), batch, geo, contrast="range")
    assert at_truth["peak_contrast"].item() < 1e-3
    A, Q_t = L.truth_basis(batch.phi, batch.theta, batch.r, batch.mask, geo)
    p = batch.power[:, None, :].to(twins.dtype)
    R = (twins * p) @ twins.mH
    R = R + 1e-4 * torch.eye(R.shape[-1])
    spec = spectral_decompose(R, batch.k)
    assert L.subspace_align(spec, Q_t, batch.k).item() < 0.1
    assert L.peak_contrast(spec, A, batch.mask, geo.probe, twins).item() > 0.9
    out = model(batch.y)
    term = L.loss_terms(out, batch, geo, contrast="range")["peak_contrast"]
    grads = torch.autograd.grad(term, [p for p in model.parameters() if p.requires_grad],
                                allow_unused=True)
    flat = torch.cat([g.flatten() for g in grads if g is not None])
    assert torch.isfinite(flat).all() and flat.norm() > 1e-6
    with pytest.raises(ValueError, match="contrast"):
        L.loss_terms(out, batch, geo, contrast="angles")
