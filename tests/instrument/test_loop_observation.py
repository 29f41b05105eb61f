"""What the Workbench observes by itself: GradScaler, nested backwards, several optimizers,
failed constructors, wb.step_skipped (real loops, real torch)."""

from __future__ import annotations

import pytest
import torch
from torch import nn
from torch.utils.checkpoint import checkpoint

import riswb
from riswb.instrument import scaler as scaler_hooks
from riswb.runlog import read_run


def net(seed=0):
    torch.manual_seed(seed)
    return nn.Sequential(nn.Linear(4, 8), nn.ReLU(), nn.Linear(8, 1))


def data(i):
    gen = torch.Generator().manual_seed(i)
    return torch.randn(8, 4, generator=gen), torch.randn(8, 1, generator=gen)


def test_unscaled_grad_norms_equal_a_by_hand_reference(tmp_path):
    model = net()
    opt = torch.optim.SGD(model.parameters(), lr=0.01)
    scaler = torch.amp.GradScaler("cpu", init_scale=1024.0)
    reference = []
    with riswb.Workbench(model, opt, runs_dir=tmp_path, probes=["grad_norms", "grad_step"],
                         log_every=1, strict=True) as wb:
        for step in range(3):
            x, y = data(step)
            loss = wb.loss({"mse": (model(x) - y).square().mean()})
            opt.zero_grad()
            scaler.scale(loss).backward()
            raw = torch.cat([p.grad.flatten() for p in model.parameters()]).norm()
            reference.append(float(raw) / scaler.get_scale())
            scaler.step(opt)
            scaler.update()
    norms = read_run(wb.path).kind("grad_norm")["total"].tolist()
    assert norms == pytest.approx(reference, rel=1e-6)
    step = read_run(wb.path).kind("grad_step")
    assert (step["unscaled"] == 1).all() and (step["ratio"] == 1).all()
    assert (step["rescaled"] == 0).all()  # an unscale is not an alteration
    assert not scaler_hooks._WATCHES and "step" in vars(torch.amp.GradScaler)
    assert torch.amp.GradScaler.step.__module__ == "torch.amp.grad_scaler"


def test_scaler_patch_is_reference_counted(tmp_path):
    original = vars(torch.amp.GradScaler)["unscale_"]
    a = riswb.Workbench(net(), torch.optim.SGD(net().parameters(), lr=0.1), runs_dir=tmp_path)
    b = riswb.Workbench(net(), torch.optim.SGD(net().parameters(), lr=0.1), runs_dir=tmp_path)
    assert vars(torch.amp.GradScaler)["unscale_"] is not original
    a.close()
    assert vars(torch.amp.GradScaler)["unscale_"] is not original
    b.close()
    assert vars(torch.amp.GradScaler)["unscale_"] is original


def test_step_skipped_public_api_and_scheduler_order(tmp_path):
    model = net()
    opt = torch.optim.SGD(model.parameters(), lr=0.1)
    sched = torch.optim.lr_scheduler.StepLR(opt, 5)
    with riswb.Workbench(model, opt, sched, runs_dir=tmp_path, log_every=5) as wb:
        for step in range(10):
            x, y = data(step)
            loss = wb.loss({"mse": (model(x) - y).square().mean()})
            opt.zero_grad()
            loss.backward()
            if step < 2:
                wb.step_skipped("gate")
            else:
                opt.step()
            with pytest.warns(UserWarning) if step == 0 else _nothing():
                sched.step()
    run = read_run(wb.path)
    (event,) = [e for e in run.events.to_dict("records") if e["event"] == "step_skipped"]
    assert (event["reason"], event["count"], event["first_step"]) == ("gate", 2, 0)
    assert "scheduler_order" not in set(run.events["event"])  # attempted, then skipped
    assert run.kind("cadence").iloc[-1]["step_attempts"] == 10


class _nothing:
    def __enter__(self):
        return self

    def __exit__(self, *exc):
        return False


class Checkpointed(nn.Module):
    def __init__(self, reentrant):
        super().__init__()
        torch.manual_seed(0)
        self.stem = nn.Linear(4, 8)
        self.blocks = nn.ModuleList(nn.Linear(8, 8) for _ in range(3))
        self.reentrant = reentrant

    def forward(self, x):
        x = self.stem(x)
        for block in self.blocks:
            x = checkpoint(block, x, use_reentrant=self.reentrant)
        return x.sum(1, keepdim=True)


@pytest.mark.parametrize("reentrant", [True, False])
def test_one_after_backward_per_outermost_backward(tmp_path, reentrant):
    model = Checkpointed(reentrant)
    opt = torch.optim.SGD(model.parameters(), lr=0.01)
    with riswb.Workbench(model, opt, runs_dir=tmp_path, probes=["cadence", "grad_norms"],
                         strict=True) as wb:
        for step in range(5):
            x, y = data(step)
            loss = wb.loss({"mse": (model(x) - y).square().mean()})
            opt.zero_grad()
            loss.backward()
            opt.step()
    assert wb.n_backward == 5


def test_two_optimizers_union_coverage(tmp_path):
    model = nn.ModuleDict({"a": nn.Linear(3, 3), "b": nn.Linear(3, 1), "c": nn.Linear(1, 1)})
    opt_a = torch.optim.SGD([*model["a"].parameters(), model["b"].weight], lr=0.1)
    opt_b = torch.optim.SGD(model["b"].parameters(), lr=0.1)  # b.weight in both, c in none
    with riswb.Workbench(model, optimizers=[opt_a, opt_b], runs_dir=tmp_path) as wb:
        assert wb.optimizers == [opt_a, opt_b] and wb.optimizer is opt_a
    coverage = read_run(wb.path).events.iloc[1].to_dict()
    assert coverage["event"] == "coverage"
    assert coverage["duplicated"] == ["b.weight"]
    assert coverage["missing"] == ["c.weight", "c.bias"]
    assert set(coverage["groups"]) == {"opt/0/0", "opt/1/0"}


@pytest.mark.parametrize("args", [dict(optimizer=None), dict(optimizer="sgd"),
                                  dict(optimizer=None, optimizers=[])])
def test_bad_arguments_leave_no_run(tmp_path, args):
    model = net()
    with pytest.raises((TypeError, ValueError)):
        riswb.Workbench(model, runs_dir=tmp_path, **args)
    assert not list(tmp_path.iterdir()) and not model._forward_hooks
    assert not scaler_hooks._WATCHES


def test_failed_constructor_detaches_everything(tmp_path):
    class Boom(riswb.Probe):
        def on_run_start(self, ctx):
            raise RuntimeError("boom")

    model = net()
    opt = torch.optim.SGD(model.parameters(), lr=0.1)
    sched = torch.optim.lr_scheduler.StepLR(opt, 1)
    with pytest.raises(RuntimeError, match="boom"):
        riswb.Workbench(model, opt, sched, runs_dir=tmp_path, probes=[Boom()], strict=True)
    assert not model._forward_hooks and not opt._optimizer_step_pre_hooks
    assert all(not p._post_accumulate_grad_hooks and not p._backward_hooks
               for p in model.parameters())
    assert "step" not in vars(sched) and not scaler_hooks._WATCHES
    (path,) = tmp_path.iterdir()
    assert read_run(path).manifest["status"] == "failed"
