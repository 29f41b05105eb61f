"""GradNormsProbe: total and per-top-level-module raw gradient norms vs a manual oracle."""

from __future__ import annotations

import math

import pytest
import torch
from torch import nn

import riswb
from riswb.probes.grad_norms import GradNormsProbe
from riswb.probes.gradients import tensor_norms
from riswb.runlog import read_run


class Net(nn.Module):
    def __init__(self):
        super().__init__()
        self.body = nn.Sequential(nn.Linear(4, 8), nn.ReLU())
        self.head = nn.Linear(8, 2)
        self.idle = nn.Linear(8, 1)  # never used: its norm is 0, not missing
        self.scale = nn.Parameter(torch.tensor(1.5))  # a parameter on the root module

    def forward(self, x):
        return self.head(self.body(x)) * self.scale


def module_norms(model):
    groups = {}
    for name, p in model.named_parameters():
        g = torch.zeros_like(p) if p.grad is None else p.grad
        groups.setdefault(name.split(".")[0], []).append(g.reshape(-1))
    norms = {m: float(torch.cat(gs).norm()) for m, gs in groups.items()}
    norms["total"] = math.sqrt(sum(v * v for v in norms.values()))
    return norms


def test_norms_are_raw_rms_per_interval(tmp_path):
    torch.manual_seed(0)
    model = Net()
    opt = torch.optim.SGD(model.parameters(), lr=0.05)
    oracle = []
    wb = riswb.Workbench(
        model, opt, runs_dir=tmp_path, probes=[GradNormsProbe()], strict=True, log_every=3
    )
    with wb:
        for _ in range(9):
            loss = wb.loss({"mse": (model(torch.randn(6, 4)) - 1).pow(2).mean() * 20})
            opt.zero_grad()
            loss.backward()
            oracle.append(module_norms(model))  # before clipping
            wb.clip_grad_norm_(max_norm=0.01)
            opt.step()
    records = read_run(wb.path).kind("grad_norm")
    assert list(records["step"]) == [2, 5, 8]
    assert sorted(c for c in records.columns if c != "step") == [
        "module/body", "module/head", "module/idle", "module/scale", "total"
    ]
    for i, row in records.iterrows():
        window = oracle[3 * i : 3 * i + 3]
        for key in ("body", "head", "idle", "scale"):
            expected = math.sqrt(sum(w[key] ** 2 for w in window) / 3)
            assert row[f"module/{key}"] == pytest.approx(expected, rel=1e-5, abs=1e-12)
        rms = math.sqrt(sum(w["total"] ** 2 for w in window) / 3)
        assert row["total"] == pytest.approx(rms, rel=1e-5)
        assert row["total"] > 0.01  # raw: clipping to 0.01 happened after the probe looked
    assert (records["module/idle"] == 0).all()


def test_nan_stays_in_its_module(tmp_path):
    model = Net()
    opt = torch.optim.SGD(model.parameters(), lr=0.0)
    model.head.bias.register_hook(lambda g: g * float("nan"))
    with riswb.Workbench(
        model, opt, runs_dir=tmp_path, probes=[GradNormsProbe()], strict=True
    ) as wb:
        loss = wb.loss({"mse": model(torch.randn(3, 4)).pow(2).mean()})
        loss.backward()
    row = read_run(wb.path).kind("grad_norm").iloc[0]
    assert math.isnan(row["module/head"]) and math.isnan(row["total"])
    assert math.isfinite(row["module/body"]) and row["module/body"] > 0
    assert row["module/idle"] == 0


def test_fallback_norms_with_none_and_mixed_dtypes():
    grads = [torch.ones(4), None, torch.full((2,), 2.0, dtype=torch.float64)]
    norms = tensor_norms(grads, torch.device("cpu"))
    assert norms.dtype == torch.float32
    torch.testing.assert_close(norms, torch.tensor([2.0, 0.0, math.sqrt(8.0)]))


def test_norms_of_sparse_and_dense_gradients_together():
    # an nn.Embedding(sparse=True) beside dense layers: one norm per tensor, as torch's own
    emb = nn.Embedding(20, 3, sparse=True)
    lin = nn.Linear(3, 1)
    lin(emb(torch.tensor([1, 4, 4, 7]))).sum().backward()
    grads = [emb.weight.grad, lin.weight.grad, None, lin.bias.grad]
    expected = [emb.weight.grad.to_dense().norm(), lin.weight.grad.norm(), 0.0,
                lin.bias.grad.norm()]
    torch.testing.assert_close(tensor_norms(grads, torch.device("cpu")),
                               torch.tensor(expected, dtype=torch.float32))


def test_default_probes_run_on_sparse_gradients(tmp_path):
    """SparseAdam for the table, Adam for the rest: no probe fails (strict raises)."""
    torch.manual_seed(0)
    emb, lin = nn.Embedding(50, 4, sparse=True), nn.Linear(4, 1)
    model = nn.ModuleDict({"emb": emb, "lin": lin})
    opts = [torch.optim.SparseAdam(emb.parameters(), lr=1e-2),
            torch.optim.Adam(lin.parameters(), lr=1e-2)]
    with riswb.Workbench(model, optimizers=opts, runs_dir=tmp_path, strict=True,
                         log_every=5) as wb:
        for _ in range(30):
            loss = wb.loss({"mse": (lin(emb(torch.randint(0, 50, (8,)))) - 1).square().mean()})
            for opt in opts:
                opt.zero_grad()
            loss.backward()
            for opt in opts:
                opt.step()
    run = read_run(wb.path)
    assert run.manifest["warnings"] == []
    assert (run.kind("grad_norm")["total"] > 0).all()
