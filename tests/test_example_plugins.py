"""The worked-example plugins in ./probes: loaded like a user's, checked against oracles."""

from __future__ import annotations

import math
from pathlib import Path

import numpy as np
import pytest
import torch
from torch import nn

import riswb
from riswb.instrument.plugins import plugin_classes
from riswb.runlog import read_run

PLUGINS = Path(__file__).resolve().parents[1] / "probes"


@pytest.fixture(scope="module")
def classes():
    found = {cls.__name__: cls for cls in plugin_classes(PLUGINS)}
    assert {"WeightSpectrumProbe", "ActivationStatsProbe"} <= set(found)
    return found


def module_of(cls):
    import sys

    return sys.modules[cls.__module__]


class Net(nn.Module):
    def __init__(self):
        super().__init__()
        self.fc1 = nn.Linear(6, 16)
        self.act = nn.ReLU()
        self.fc2 = nn.Linear(16, 8)
        self.squash = nn.Tanh()
        self.conv = nn.Conv1d(1, 3, kernel_size=3)

    def forward(self, x):
        h = self.squash(self.fc2(self.act(self.fc1(x))))
        return h.sum(-1) + self.conv(h[:, None, :]).mean((-1, -2))


def train(tmp_path, probes, steps=12, log_every=4, model=None):
    torch.manual_seed(0)
    model = model or Net()
    opt = torch.optim.SGD(model.parameters(), lr=0.01)
    wb = riswb.Workbench(
        model, opt, runs_dir=tmp_path, probes=probes, strict=True, log_every=log_every
    )
    with wb:
        for _ in range(steps):
            loss = wb.loss({"mse": (model(torch.randn(5, 6)) - 1).pow(2).mean()})
            opt.zero_grad()
            loss.backward()
            opt.step()
        with torch.no_grad():  # eval forwards are not sampled
            model.eval()
            model(torch.randn(3, 6))
            model.train()
    return read_run(wb.path), model


def test_weight_spectrum_matches_numpy_svd(tmp_path, classes):
    probe = classes["WeightSpectrumProbe"](every=8)
    run, model = train(tmp_path, [probe])
    records = run.kind("weight_spectrum")
    assert list(records["step"]) == [3, 11]  # every 8 steps at a flush, first flush included
    last = records.iloc[-1]
    for name in ("fc1", "fc2", "conv"):
        W = dict(model.named_modules())[name].weight.detach().double().numpy()
        sigma = np.linalg.svd(W.reshape(W.shape[0], -1), compute_uv=False)
        assert last[f"{name}/spectral_norm"] == pytest.approx(sigma[0], rel=1e-6)
        assert last[f"{name}/stable_rank"] == pytest.approx((sigma**2).sum() / sigma[0] ** 2)
    assert math.isnan(last["conv/alpha"])  # 3 singular values: no tail to fit
    assert np.isfinite(last["fc1/alpha"])


def test_hill_alpha_recovers_a_power_law(classes):
    hill_alpha = module_of(classes["WeightSpectrumProbe"]).hill_alpha
    gen = torch.Generator().manual_seed(0)
    alpha = 3.0  # density ∝ λ^-3: λ = u^(-1/(alpha-1))
    u = torch.rand(20000, generator=gen, dtype=torch.float64)
    eigs = (u ** (-1.0 / (alpha - 1))).sort(descending=True).values
    assert hill_alpha(eigs, tail=0.2) == pytest.approx(alpha, rel=0.05)


def test_activation_stats_match_manual_hooks(tmp_path, classes):
    probe = classes["ActivationStatsProbe"](every=3)
    seen = {"act": [], "squash": []}
    model = Net()
    calls = {"n": 0}

    def pre(mod, args):
        calls["sampled"] = mod.training and calls["n"] % 3 == 0
        calls["n"] += mod.training

    model.register_forward_pre_hook(pre)
    def record(name):
        def hook(module, args, out):
            if calls["sampled"]:
                seen[name].append(out.detach())

        return hook

    for name in seen:
        getattr(model, name).register_forward_hook(record(name))
    run, _ = train(tmp_path, [probe], steps=12, log_every=6, model=model)
    records = run.kind("activations")
    assert list(records["step"]) == [5, 11]
    assert set(probe.describe()["watched"]) == {"act", "squash"}
    for i, row in records.iterrows():
        for name in seen:
            outs = seen[name][2 * i : 2 * i + 2]  # forwards 0, 3 | 6, 9
            assert row[f"{name}/mean"] == pytest.approx(np.mean([o.mean() for o in outs]))
            assert row[f"{name}/std"] == pytest.approx(np.mean([o.std() for o in outs]))
            zero = np.mean([(o == 0).float().mean() for o in outs])
            assert row[f"{name}/zero_frac"] == pytest.approx(zero)
        sat = np.mean([(o.abs() > 0.99).float().mean() for o in seen["squash"][2 * i : 2 * i + 2]])
        assert row["squash/sat_frac"] == pytest.approx(sat)
    assert "act/sat_frac" not in records.columns
    assert len(seen["act"]) == 4


def test_dead_relus_show_as_zero_fraction_one(tmp_path, classes):
    model = Net()
    with torch.no_grad():
        model.fc1.bias.fill_(-100.0)  # every unit of layer 1 is dead
    run, _ = train(tmp_path, [classes["ActivationStatsProbe"](every=1)], steps=4, model=model)
    assert run.kind("activations")["act/zero_frac"].tolist() == [1.0]


def test_functional_model_falls_back_to_layers(tmp_path, classes):
    class Functional(nn.Module):
        def __init__(self):
            super().__init__()
            self.fc = nn.Linear(6, 4)

        def forward(self, x):
            return torch.relu(self.fc(x)).sum(-1)

    probe = classes["ActivationStatsProbe"](every=1)
    run, _ = train(tmp_path, [probe], steps=4, model=Functional())
    row = run.kind("activations").iloc[0]
    assert 0 < row["fc/neg_frac"] < 1 and "fc/sat_frac" not in row.index


def test_plugins_load_through_the_workbench(tmp_path):
    model = Net()
    opt = torch.optim.SGD(model.parameters(), lr=0.01)
    with riswb.Workbench(
        model, opt, runs_dir=tmp_path, probes=None, plugins=PLUGINS, strict=True, log_every=2
    ) as wb:
        for _ in range(2):
            loss = wb.loss({"mse": model(torch.randn(4, 6)).pow(2).mean()})
            loss.backward()
            opt.step()
    run = read_run(wb.path)
    assert {"weight_spectrum", "activations"} <= set(run.kinds())
