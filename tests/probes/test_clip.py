"""ClipProbe: per-flush aggregation of wb.clip_grad_norm_ calls vs manual norms."""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch
from torch import nn

import riswb
from riswb.probes.clip import ClipProbe, clip_ratio, clip_summary
from riswb.runlog import read_run


def test_clip_record_matches_manual_norms(tmp_path):
    torch.manual_seed(0)
    model = nn.Sequential(nn.Linear(3, 5), nn.Tanh(), nn.Linear(5, 1))
    opt = torch.optim.SGD(model.parameters(), lr=0.01)
    scales = [0.1, 10.0, 0.2, 50.0, 30.0, 0.05, 0.3, 100.0]
    manual = []
    wb = riswb.Workbench(
        model, opt, runs_dir=tmp_path, probes=[ClipProbe()], strict=True, log_every=4
    )
    with wb:
        for scale in scales:
            loss = wb.loss({"mse": scale * model(torch.randn(4, 3)).pow(2).mean()})
            opt.zero_grad()
            loss.backward()
            norm = float(torch.cat([p.grad.reshape(-1) for p in model.parameters()]).norm())
            manual.append(norm)
            wb.clip_grad_norm_(model.parameters(), max_norm=1.0)
            after = float(torch.cat([p.grad.reshape(-1) for p in model.parameters()]).norm())
            assert after <= 1.0 + 1e-4
            opt.step()
    records = read_run(wb.path).kind("clip")
    assert list(records["step"]) == [3, 7] and list(records["opt_step"]) == [4, 8]
    for i, row in records.iterrows():
        window = manual[4 * i : 4 * i + 4]
        assert row["norm"] == pytest.approx(sum(window) / 4, rel=1e-5)
        assert row["max_norm"] == 1.0 and row["calls"] == 4
        assert row["ratio"] == pytest.approx(sum(min(1.0, 1.0 / n) for n in window) / 4, rel=1e-5)
        assert row["clipped"] == pytest.approx(sum(n > 1.0 for n in window) / 4)


def test_no_clip_calls_no_record(tmp_path):
    model = nn.Linear(2, 1)
    opt = torch.optim.SGD(model.parameters(), lr=0.01)
    with riswb.Workbench(model, opt, runs_dir=tmp_path, probes=[ClipProbe()], strict=True) as wb:
        loss = wb.loss({"l": model(torch.randn(2, 2)).sum()})
        loss.backward()
        opt.step()
    assert "clip" not in read_run(wb.path).kinds()


def test_summary_edge_cases():
    out = clip_summary([(torch.tensor(0.0), 1.0), (torch.tensor(float("inf")), torch.tensor(2.0))])
    assert out["ratio"] == 0.5 and out["clipped"] == 0.5 and out["max_norm"] == 2.0
    out = clip_summary([(torch.tensor(float("nan")), 1.0)])
    assert math.isnan(out["ratio"]) and out["clipped"] == 0.0 and out["calls"] == 1


def test_clip_summary_matches_numpy_on_every_edge_case():
    """Oracle: the numpy formulas the record is defined by (min(1, limit/norm) with IEEE
    division, NaN kept; means over the calls), on norms and limits mixing tensors and
    floats, 0, inf and NaN."""
    specials = [0.0, 1e-12, 0.5, 1.0, 3.0, math.inf, math.nan]
    pairs = [(n, lim) for n in specials for lim in specials]
    norms, limits = np.array([n for n, _ in pairs]), np.array([lim for _, lim in pairs])
    with np.errstate(divide="ignore", invalid="ignore"):
        ratios = np.minimum(limits / norms, 1.0)
    for (n, lim), want in zip(pairs, ratios, strict=True):
        got = clip_ratio(n, lim)
        assert (math.isnan(got) and math.isnan(want)) or got == want, (n, lim, got, want)
    finite = [(n, lim) for n, lim in pairs if not (math.isnan(n) or math.isnan(lim))]
    entries = [(torch.tensor(n, dtype=torch.float64) if i % 2 else n, lim)
               for i, (n, lim) in enumerate(finite)]
    norms, limits = np.array([n for n, _ in finite]), np.array([lim for _, lim in finite])
    with np.errstate(divide="ignore", invalid="ignore"):
        ratio = np.minimum(limits / norms, 1.0).mean()
    summary = clip_summary(entries)
    assert summary["norm"] == pytest.approx(norms.mean())  # inf: a norm was infinite
    assert (math.isnan(summary["ratio"]) and math.isnan(ratio)) or summary["ratio"] == ratio
    assert summary["clipped"] == (norms > limits).mean()
    assert summary["max_norm"] == limits[-1] and summary["calls"] == len(finite)
