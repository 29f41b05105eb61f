import math

import pytest
import torch

from riswb.reference.physics.channel import complex_normal
from riswb.reference.physics.geometry import ris_positions
from riswb.reference.physics.music import MusicGrid, music_localize, music_spectrum
from riswb.reference.physics.order import descending_eigvals, estimate_k_gap, estimate_k_mdl
from riswb.reference.physics.presets import get_preset
from riswb.reference.physics.scenes import simulate_scenes
from riswb.reference.physics.steering import steering_exact


@pytest.fixture(scope="module")
def scenes():
    return simulate_scenes("small", 60, seed=7, snr_db=30.0)


def _matched_errors(batch, loc):
    """Per true source, the error to the nearest estimate (sources are ≥15° apart)."""
    errs = []
    for b in range(len(batch)):
        for j in range(int(batch.k[b])):
            d = (loc.phi[b] - batch.phi[b, j]).abs() + (loc.theta[b] - batch.theta[b, j]).abs()
            d = torch.where(loc.mask[b], d, torch.inf)
            i = int(d.argmin())
            errs.append([math.degrees(abs(loc.phi[b, i] - batch.phi[b, j])),
                         math.degrees(abs(loc.theta[b, i] - batch.theta[b, j])),
                         abs(float(loc.r[b, i] - batch.r[b, j]))])
    return torch.tensor(errs)


def test_music_on_r_true_recovers_every_source(scenes):
    p = get_preset("small")
    k = estimate_k_gap(descending_eigvals(scenes.R_true), p.k_max)
    assert torch.equal(k, scenes.k)
    loc = music_localize(scenes.R_true, k, p)
    assert torch.equal(loc.mask, scenes.mask)
    err = _matched_errors(scenes, loc)
    assert len(err) == int(scenes.k.sum())
    assert err[:, 0].max() <= 1.0 and err[:, 1].max() <= 1.0 and err[:, 2].max() <= 0.5


def test_refinement_beats_the_grid(scenes):
    p = get_preset("small")
    coarse = _matched_errors(scenes, music_localize(scenes.R_true, scenes.k, p, refine=False))
    fine = _matched_errors(scenes, music_localize(scenes.R_true, scenes.k, p))
    assert fine.square().mean(0).lt(coarse.square().mean(0) / 10).all()


def test_batched_spectrum_equals_per_scene(scenes):
    p = get_preset("small")
    grid = MusicGrid.for_preset(p, step_deg=6.0, n_r=4)
    batched = music_spectrum(scenes.R_true[:5], scenes.k[:5], p, grid, chunk=100)
    single = torch.cat([music_spectrum(scenes.R_true[i:i + 1], scenes.k[i:i + 1], p, grid)
                        for i in range(5)])
    assert torch.allclose(batched.log(), single.log(), atol=1e-3)


def test_spectrum_peaks_at_a_single_source_oracle():
    """R = a aᴴ: the spectrum's grid maximum is the grid point nearest the source."""
    p = get_preset("small")
    grid = MusicGrid.for_preset(p, step_deg=5.0, n_r=5)
    i, j, m = 7, 3, 2
    a = steering_exact(ris_positions(p), grid.phi[i].float(), grid.theta[j].float(),
                       grid.r[m].float(), p.wavelength)
    spec = music_spectrum((a[:, None] * a.conj()[None, :])[None], torch.tensor([1]), p, grid)
    assert torch.unravel_index(spec[0].argmax(), grid.shape) == (i, j, m)


def _noisy_covariance(k, n_snap=400, n=64, sigma2=0.05, seed=0):
    g = torch.Generator().manual_seed(seed)
    p = get_preset("small")
    phi = torch.linspace(-0.8, 0.8, k, dtype=torch.float64)
    a = steering_exact(ris_positions(p, dtype=torch.float64), phi, torch.zeros(k),
                       torch.full((k,), 4.0, dtype=torch.float64), p.wavelength)
    s = complex_normal((n_snap, k), g, torch.complex128)
    x = s @ a + math.sqrt(sigma2) * complex_normal((n_snap, n), g, torch.complex128)
    return x.T @ x.conj() / n_snap


@pytest.mark.parametrize("k", [1, 2, 3])
def test_k_estimators_on_white_noise_covariance(k):
    ev = descending_eigvals(_noisy_covariance(k)[None])
    assert int(estimate_k_gap(ev, 3)) == k
    assert int(estimate_k_mdl(ev, 3, n_snapshots=400)) == k

