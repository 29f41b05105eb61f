"""SpectraProbe vs numpy.linalg.eigvalsh on hermitized matrices."""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch
from torch import nn

import riswb
from riswb.probes.spectra import SpectraProbe, descending_eigvals, spectrum_record
from riswb.runlog import read_run

B, N = 5, 6


def matrices(seed=0):
    g = torch.Generator().manual_seed(seed)
    X = torch.randn(B, N, N, dtype=torch.complex64, generator=g)
    noise = 0.1 * torch.randn(B, N, N, dtype=torch.complex64, generator=g)
    R_pred = X @ X.mH + noise  # not Hermitian: the probe must hermitize
    K = torch.tensor([1, 2, 3, 0, 2])
    A = torch.randn(B, N, 3, dtype=torch.complex64, generator=g)
    A = A * (torch.arange(3)[None, None, :] < K[:, None, None])
    R_true = A @ A.mH
    return R_pred, R_true, K


def np_evals(R):
    R = R.numpy().astype(np.complex128)
    H = 0.5 * (R + np.conj(np.swapaxes(R, -1, -2)))
    return np.linalg.eigvalsh(H)[:, ::-1]


def np_record(pred, true, K):
    with np.errstate(divide="ignore", invalid="ignore"):
        return _np_record(pred, true, K)


def _np_record(pred, true, K):
    out = {}
    for suffix, lam in (("pred", pred), ("true", true)):
        pos = np.clip(lam, 0, None)
        keep = pos.sum(-1) > 0  # an all-zero spectrum has no effective rank
        p = pos[keep] / pos[keep].sum(-1, keepdims=True)
        ent = -np.where(p > 0, p * np.log(np.where(p > 0, p, 1.0)), 0.0).sum(-1)
        out[f"eff_rank_{suffix}"] = np.exp(ent).mean()
        gaps, energy = [], []
        for b, k in enumerate(K):
            if k == 0:
                continue
            nxt = pos[b, k] if k < N else 0.0
            gaps.append((pos[b, k - 1] - nxt) / pos[b, 0])
            energy.append(pos[b, :k].sum() / pos[b].sum())
        out[f"gap_{suffix}"] = np.mean(gaps)
        out[f"top_k_energy_{suffix}"] = np.mean(energy)
    out["scale_ratio"] = pred.sum() / true.sum()
    return out


def test_eigvals_match_numpy():
    R_pred, _, _ = matrices()
    np.testing.assert_allclose(descending_eigvals(R_pred).numpy(), np_evals(R_pred), atol=1e-4)
    real = torch.randn(N, N)
    np.testing.assert_allclose(
        descending_eigvals(real)[0].numpy(), np_evals(real[None].to(torch.complex64))[0],
        atol=1e-5,
    )


def test_probe_writes_spectra_and_statistics(tmp_path):
    R_pred, R_true, K = matrices()
    R_samp = R_true + torch.eye(N)
    model = nn.Linear(2, 1)
    opt = torch.optim.SGD(model.parameters(), lr=0.1)
    with riswb.Workbench(
        model, opt, runs_dir=tmp_path, probes=[SpectraProbe()], strict=True
    ) as wb:
        wb.evaluate({"nmse": 0.5}, R_pred=R_pred, R_true=R_true, K=K)
        wb.emit("eval", metrics={"R_samp": R_samp}, R_pred=R_pred, R_true=R_true, K=2)
    run = read_run(wb.path)
    spectra = run.spectra
    first = spectra[spectra["step"] == 0]
    assert list(first["name"][:2]) == ["R_pred", "R_true"]
    np.testing.assert_allclose(first["values"].iloc[0], np_evals(R_pred).mean(0), atol=1e-4)
    np.testing.assert_allclose(first["values"].iloc[1], np_evals(R_true).mean(0), atol=1e-4)
    samp = spectra[spectra["name"] == "R_samp"]["values"].iloc[0]
    np.testing.assert_allclose(samp, np_evals(R_samp).mean(0), atol=1e-4)
    assert np.all(np.diff(samp) <= 0)

    records = run.kind("spectrum")
    expected = np_record(np_evals(R_pred), np_evals(R_true), K.tolist())
    for key, value in expected.items():
        assert records[key].iloc[0] == pytest.approx(value, rel=1e-4), key
    expected = np_record(np_evals(R_pred), np_evals(R_true), [2] * B)
    assert records["gap_pred"].iloc[1] == pytest.approx(expected["gap_pred"], rel=1e-4)


def test_rank_k_truth_and_inferred_k():
    _, R_true, K = matrices(1)
    lam = descending_eigvals(R_true)
    inferred = spectrum_record(None, lam)
    given = spectrum_record(None, lam, K)
    assert inferred == pytest.approx(given)
    # an exact rank-K matrix keeps all its energy in the top K
    assert given["top_k_energy_true"] == pytest.approx(1.0, abs=1e-6)
    flat = spectrum_record(descending_eigvals(torch.eye(N).expand(B, N, N)), lam, K)
    assert flat["gap_pred"] == pytest.approx(0.0, abs=1e-9)
    assert flat["eff_rank_pred"] == pytest.approx(N)
    assert set(spectrum_record(lam, None)) == {"eff_rank_pred"}
    assert math.isnan(spectrum_record(None, lam, torch.zeros(B, dtype=torch.long))["gap_true"])
