import dataclasses
import math

import numpy as np
import pytest
import torch

from riswb.reference.physics.baselines import ESTIMATORS, bartlett, dml, run_estimator
from riswb.reference.physics.covariance import coded_operators
from riswb.reference.physics.geometry import ris_positions
from riswb.reference.physics.music import MusicGrid
from riswb.reference.physics.presets import get_preset
from riswb.reference.physics.scenes import simulate_scenes
from riswb.reference.physics.steering import steering_exact

# 4×4 RIS (aperture 0.85 m, Fresnel limit 0.89 m, Fraunhofer 4.8 m), 4 antennas, 8 snapshots
TINY = dataclasses.replace(get_preset("small"), name="tiny", n_h=4, n_v=4, m=4, l=8, k_max=1,
                           r_range=(1.0, 2.0))


@pytest.fixture(scope="module")
def single():
    return simulate_scenes(TINY, 6, seed=11, snr_db=50.0)


@pytest.mark.parametrize("module", [bartlett, dml], ids=["bartlett", "dml"])
def test_finds_a_single_source_near_the_truth(single, module):
    est = module.estimate(TINY, single.y, single.H, single.codes, single.k)
    truth = torch.stack([single.phi, single.theta, single.r], -1)[:, 0].double()
    err = (est.pos[:, 0] - truth).abs()
    assert torch.equal(est.k, single.k)
    assert math.degrees(err[:, :2].max()) < 0.2 and err[:, 2].max() < 0.02


def test_batched_bartlett_spectrum_equals_a_loop(single):
    grid = MusicGrid.for_preset(TINY, step_deg=20.0, n_r=3)
    batched = bartlett.bartlett_spectrum(TINY, single.y, single.H, single.codes, grid, chunk=4)
    g = coded_operators(single.H, single.codes).to(torch.complex128).numpy()
    pos = ris_positions(TINY, dtype=torch.float64)
    y = single.y.to(torch.complex128).numpy()
    loop = np.zeros(batched.shape)
    for b in range(len(single)):
        for i, phi in enumerate(grid.phi):
            for j, theta in enumerate(grid.theta):
                for q, r in enumerate(grid.r):
                    a = steering_exact(pos, phi, theta, r, TINY.wavelength).numpy()
                    for li in range(TINY.l):
                        gl = g[li] @ a
                        loop[b, i, j, q] += abs(np.vdot(gl, y[b, li])) ** 2 / np.vdot(gl, gl).real
    assert np.allclose(batched.numpy(), loop, rtol=1e-4)


def test_dml_cost_equals_a_least_squares_residual():
    p = dataclasses.replace(TINY, k_max=2)
    batch = simulate_scenes(p, 3, seed=2, snr_db=5.0)
    gen = torch.Generator().manual_seed(0)
    pos = torch.stack([torch.empty(3, 2).uniform_(-1, 1, generator=gen),
                       torch.empty(3, 2).uniform_(-0.5, 0.5, generator=gen),
                       torch.empty(3, 2).uniform_(1, 2, generator=gen)], -1).double()
    cost = dml.dml_cost(p, batch.y, batch.H, batch.codes, pos)
    g = coded_operators(batch.H, batch.codes).to(torch.complex128).numpy()
    a = steering_exact(ris_positions(p, dtype=torch.float64), pos[..., 0], pos[..., 1],
                       pos[..., 2], p.wavelength).numpy()  # (B, K, N)
    y = batch.y.to(torch.complex128).numpy()
    for b in range(3):
        total = 0.0
        for li in range(p.l):
            cols = g[li] @ a[b].T  # (M, K)
            coef = np.linalg.lstsq(cols, y[b, li], rcond=None)[0]
            total += np.linalg.norm(y[b, li] - cols @ coef) ** 2
        assert cost[b].item() == pytest.approx(total, rel=1e-9)


def test_every_estimator_returns_the_contract_shapes(single):
    p = dataclasses.replace(TINY, k_max=2)
    batch = simulate_scenes(p, 3, seed=4, snr_db=20.0)
    for name in ("prior", "random", "samp", "true"):
        for k in (batch.k, None):
            est = run_estimator(name, p, batch, k, seed=1)
            assert est.pos.shape == (3, 2, 3) and est.mask.shape == (3, 2)
            assert torch.equal(est.k, est.mask.sum(-1)) and (est.k >= 1).all()
            if k is not None:
                assert torch.equal(est.k, batch.k)
    assert set(ESTIMATORS) == {"prior", "random", "samp", "bartlett", "sparse", "dml", "true"}
