"""Kind `lr` per group per optimizer step; event `scheduler_order` (docs/failures.md #3)."""

import warnings

import pytest
import torch

from riswb.instrument.workbench import Workbench
from riswb.runlog import read_run


def run(tmp_path, *, scheduler_first: bool, steps=6):
    torch.manual_seed(0)
    model = torch.nn.Linear(3, 1)
    opt = torch.optim.SGD(
        [{"params": [model.weight], "name": "w"}, {"params": [model.bias], "lr": 0.5}], lr=0.1
    )
    sched = torch.optim.lr_scheduler.StepLR(opt, step_size=2, gamma=0.5)
    used = []
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        with Workbench(model, opt, sched, runs_dir=tmp_path, probes=["lr_trace"],
                       log_every=4, strict=True) as wb:
            for _ in range(steps):
                loss = wb.loss({"a": model(torch.randn(2, 3)).sum()})
                opt.zero_grad()
                loss.backward()
                if scheduler_first:
                    sched.step()
                used.append([g["lr"] for g in opt.param_groups])
                opt.step()
                if not scheduler_first:
                    sched.step()
    return read_run(wb.path), used, caught


def test_lr_per_group_each_step_and_good_order(tmp_path):
    run_, used, _ = run(tmp_path, scheduler_first=False)
    frame = run_.kind("lr")
    assert list(frame["opt_step"]) == [1, 2, 3, 4, 5, 6]
    assert list(frame["step"]) == [0, 1, 2, 3, 4, 5]
    assert frame[["group/w", "group/1"]].values.tolist() == used  # exact: the floats torch used
    assert used[0] == [0.1, 0.5] and used[2] == [0.05, 0.25]
    assert run_.events_of("scheduler_order") == []


def test_scheduler_before_optimizer_is_flagged_and_torch_still_warns(tmp_path):
    run_, used, caught = run(tmp_path, scheduler_first=True)
    (event,) = run_.events_of("scheduler_order")
    assert event["scheduler_step"] == 1 and event["opt_step"] == 0 and event["step"] == 0
    assert any("lr_scheduler.step()" in str(w.message) for w in caught)
    assert run_.kind("lr")["group/w"].tolist() == pytest.approx([u[0] for u in used])
