"""The reference network's output contract (docs/internals.md §4) and that it learns."""

from __future__ import annotations

import re

import pytest
import torch

import riswb.reference.model as model_module
from riswb.reference.losses import LossGeometry, loss_terms, weighted_total
from riswb.reference.model import CovarianceNet, ModelOutput
from riswb.reference.physics.presets import get_preset
from riswb.reference.physics.scenes import simulate_scenes
from riswb.reference.spectral import spectral_decompose


@pytest.fixture(scope="module")
def preset():
    return get_preset("small")


@pytest.fixture(scope="module")
def batch(preset):
    return simulate_scenes(preset, 16, seed=1)


@pytest.fixture(scope="module")
def model(preset):
    torch.manual_seed(0)
    return CovarianceNet(preset)


@pytest.mark.parametrize("feature", ["backprojection", "snapshot"])
def test_output_contract(batch, preset, feature):
    torch.manual_seed(0)
    model = CovarianceNet(preset, width=128, feature=feature)
    out = model(batch.y)
    assert isinstance(out, ModelOutput)
    b, n, k = len(batch), preset.n, preset.k_max
    assert out.R_pred.shape == (b, n, n) and out.R_pred.dtype == torch.complex64
    assert out.factor.shape == (b, n, k) and out.factor.is_complex()
    assert out.k_logits.shape == (b, k) and out.k_logits.dtype == torch.float32
    assert out.aux.shape == (b, k, 3) and out.aux.dtype == torch.float32
    R = out.R_pred.detach()
    assert torch.equal(R, R.mH)  # exactly Hermitian
    lam = torch.linalg.eigvalsh(R.to(torch.complex128))
    assert (lam > 0).all()  # PSD, and strictly positive thanks to the σ² loading
    tr = torch.diagonal(R, dim1=-2, dim2=-1).real.sum(-1)
    torch.testing.assert_close(tr, torch.full_like(tr, float(n)), rtol=1e-5, atol=0)


def test_aux_within_field_of_view(model, batch, preset):
    aux = model(batch.y).aux
    for i, (lo, hi) in enumerate((preset.phi_range, preset.theta_range, preset.r_range)):
        assert (aux[..., i] >= lo).all() and (aux[..., i] <= hi).all()


def test_r_pred_is_low_rank_plus_scalar(model, batch):
    """The loss decomposes R_pred through the cheap certified path, not a full eigh."""
    out = model(batch.y)
    assert spectral_decompose(out.R_pred, batch.k, hint=out.factor).path == "lowrank"


def test_input_scale_invariance(model, batch):
    with torch.no_grad():
        a, b = model(batch.y), model(batch.y * 37.0)
    torch.testing.assert_close(a.R_pred, b.R_pred, atol=2e-4, rtol=1e-3)


def test_parameter_count_matches_docstring(model):
    count = sum(p.numel() for p in model.parameters())
    documented = re.search(r"Parameters: ([\d,]+)", CovarianceNet.__doc__).group(1)
    assert count == int(documented.replace(",", ""))
    assert f"{count:,}" in model_module.__doc__


def test_state_dict_holds_parameters_only(model):
    keys = set(model.state_dict())
    assert keys == {name for name, _ in model.named_parameters()}


def test_every_parameter_gets_a_gradient(model, batch, preset):
    model.zero_grad()
    weighted_total(loss_terms(model(batch.y), batch, preset)).backward()
    for name, p in model.named_parameters():
        assert p.grad is not None and torch.isfinite(p.grad).all(), name
        assert p.grad.abs().sum() > 0, name
    model.zero_grad()


def test_unknown_feature_is_rejected(preset):
    with pytest.raises(ValueError):
        CovarianceNet(preset, feature="raw")


def test_a_few_steps_reduce_the_loss(preset):
    # one thread: on a shared 2-core box, 2 OpenMP threads can run 20× slower than 1
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    try:
        torch.manual_seed(0)
        b = simulate_scenes(preset, 32, seed=7)
        net = CovarianceNet(preset, width=128)
        geo = LossGeometry.from_preset(preset)
        opt = torch.optim.AdamW(net.parameters(), lr=2e-3, weight_decay=0.0)
        first = None
        for _ in range(12):
            terms = loss_terms(net(b.y), b, geo)
            loss = weighted_total(terms)
            opt.zero_grad()
            loss.backward()
            opt.step()
            first = terms["nmse"].item() if first is None else first
        assert terms["nmse"].item() < 0.6 * first
    finally:
        torch.set_num_threads(threads)
