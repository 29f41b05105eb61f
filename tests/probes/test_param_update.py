"""Kind `param_update` against parameter copies taken around optimizer.step (the oracle)."""

import math

import pytest
import torch

from riswb.instrument.workbench import Workbench
from riswb.probes.param_update import ParamUpdateProbe
from riswb.runlog import read_run


def test_delta_matches_parameter_copies(tmp_path):
    torch.manual_seed(0)
    model = torch.nn.Sequential(torch.nn.Linear(5, 7), torch.nn.Tanh(), torch.nn.Linear(7, 2))
    opt = torch.optim.AdamW(
        [{"params": model[0].parameters(), "name": "first", "lr": 1e-2},
         {"params": [model[2].weight], "lr": 1e-3}],  # model[2].bias is missing on purpose
        weight_decay=0.1,
    )
    probe = ParamUpdateProbe(sample_every=3, warmup=2)
    oracle = {}
    with Workbench(model, opt, runs_dir=tmp_path, probes=[probe], log_every=4,
                   strict=True) as wb:
        for step in range(12):
            loss = wb.loss({"mse": model(torch.randn(8, 5)).square().mean()})
            opt.zero_grad()
            loss.backward()
            before = [p.detach().clone() for p in model.parameters()]
            opt.step()
            after = [p.detach().clone() for p in model.parameters()]
            oracle[step] = (before, after)
    frame = read_run(wb.path).kind("param_update")
    # sampled: opt_step 1, 2 (warm-up), then opt_step ≡ 1 mod 3: 4, 7, 10
    assert list(frame["opt_step"]) == [1, 2, 4, 7, 10]
    assert list(frame["step"]) == [0, 1, 3, 6, 9]
    for record in frame.to_dict("records"):
        before, after = oracle[record["step"]]
        deltas = [a - b for a, b in zip(after, before, strict=True)]
        upd = math.sqrt(sum(float(d.square().sum()) for d in deltas))
        par = math.sqrt(sum(float(b.square().sum()) for b in before))
        assert record["update_norm"] == pytest.approx(upd, rel=1e-5)
        assert record["param_norm"] == pytest.approx(par, rel=1e-5)
        assert record["ratio"] == pytest.approx(upd / par, rel=1e-5)
        assert record["frac_moving"] == pytest.approx(3 / 4)  # the missing bias never moves
        g_first = math.sqrt(sum(float(d.square().sum()) for d in deltas[:2])) / math.sqrt(
            sum(float(b.square().sum()) for b in before[:2]))
        g_1 = float(deltas[2].norm()) / float(before[2].norm())
        assert record["group/first/ratio"] == pytest.approx(g_first, rel=1e-5)
        assert record["group/1/ratio"] == pytest.approx(g_1, rel=1e-5)


def test_frozen_optimizer_reads_zero(tmp_path):
    torch.manual_seed(0)
    model = torch.nn.Linear(3, 1)
    opt = torch.optim.SGD(model.parameters(), lr=0.0)
    with Workbench(model, opt, runs_dir=tmp_path, probes=["param_update"]) as wb:
        for _ in range(3):
            wb.loss({"a": model(torch.randn(2, 3)).sum()}).backward()
            opt.step()
    frame = read_run(wb.path).kind("param_update")
    assert len(frame) == 3
    assert (frame["update_norm"] == 0).all() and (frame["ratio"] == 0).all()
    assert (frame["frac_moving"] == 0).all() and (frame["param_norm"] > 0).all()


def test_tensors_frozen_at_start_are_measured_once_unfrozen(tmp_path):
    """requires_grad is read at each sampled step, not when the Workbench was built: the
    frozen group reads NaN (unmeasured, not 'did not move') until it is unfrozen."""
    torch.manual_seed(0)
    model = torch.nn.Sequential(torch.nn.Linear(3, 4), torch.nn.Tanh(), torch.nn.Linear(4, 1))
    opt = torch.optim.SGD([{"params": model[0].parameters()},
                           {"params": model[2].parameters()}], lr=0.1)
    model[0].requires_grad_(False)
    with Workbench(model, opt, runs_dir=tmp_path, probes=["param_update"]) as wb:
        for step in range(6):
            if step == 3:
                model[0].requires_grad_(True)
            opt.zero_grad()
            wb.loss({"a": model(torch.randn(8, 3)).square().mean()}).backward()
            opt.step()
    frame = read_run(wb.path).kind("param_update")
    assert frame["group/0/ratio"][:3].isna().all() and (frame["group/0/ratio"][3:] > 0).all()
    assert (frame["group/1/ratio"] > 0).all() and (frame["frac_moving"] == 1).all()


def test_nothing_trainable_yet_writes_nothing(tmp_path):
    model = torch.nn.Linear(3, 1).requires_grad_(False)
    opt = torch.optim.SGD(model.parameters(), lr=0.1)
    with Workbench(model, opt, runs_dir=tmp_path, probes=["param_update"], strict=True) as wb:
        for _ in range(2):
            wb.loss({"a": model(torch.randn(2, 3)).sum()})
            opt.step()
    frame = read_run(wb.path).kind("param_update")
    assert frame is None or frame.empty
