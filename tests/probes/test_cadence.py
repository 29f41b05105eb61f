"""Cadence counts on normal, accumulation and once-per-epoch loops (docs/failures.md #1, 9)."""

import pytest
import torch

from riswb.instrument.workbench import Workbench
from riswb.runlog import read_run

BATCHES, EPOCHS = 8, 3


def run_loop(tmp_path, cadence: str):
    torch.manual_seed(0)
    model = torch.nn.Sequential(torch.nn.Linear(4, 8), torch.nn.Tanh(), torch.nn.Linear(8, 1))
    opt = torch.optim.SGD(model.parameters(), lr=0.01)
    sched = torch.optim.lr_scheduler.StepLR(opt, 100)
    accumulation = 4 if cadence == "accumulation" else 1
    wb = Workbench(model, opt, sched, runs_dir=tmp_path, probes=["cadence"], log_every=5,
                   accumulation=accumulation, strict=True)
    for _ in range(EPOCHS):
        for b in range(BATCHES):
            loss = wb.loss({"mse": model(torch.randn(8, 4)).square().mean()})
            if cadence == "per_epoch":
                continue  # the docs/failures.md #1 bug: backward/step sit after the batch loop
            (loss / accumulation).backward()
            if cadence == "normal" or (b + 1) % accumulation == 0:
                opt.step()
                opt.zero_grad()
                sched.step()
        if cadence == "per_epoch":
            loss.backward()
            opt.step()
            opt.zero_grad()
            sched.step()
        with torch.no_grad():  # evaluation forwards are not training forwards
            model(torch.randn(8, 4))
        wb.evaluate({"val": 0.0})
    wb.close()
    return read_run(wb.path)


@pytest.mark.parametrize(
    "cadence, backward, steps",
    [("normal", 24, 24), ("accumulation", 24, 6), ("per_epoch", 3, 3)],
)
def test_cadence_counts(tmp_path, cadence, backward, steps):
    run = run_loop(tmp_path, cadence)
    frame = run.kind("cadence")
    last = frame.iloc[-1]
    assert last["forward"] == last["loss"] == BATCHES * EPOCHS
    assert last["backward"] == backward
    assert last["optimizer_step"] == last["scheduler_step"] == steps
    assert last["eval"] == EPOCHS
    assert last["step"] == BATCHES * EPOCHS - 1
    assert frame["loss"].is_monotonic_increasing and len(frame) >= 4  # one per flush
    # a flush at the start of loss call 5k covers whole batches: step 4 holds 5 loss calls
    assert frame.iloc[0]["step"] == 4 and frame.iloc[0]["loss"] == 5
    assert run.manifest["intent"]["accumulation"] == (4 if cadence == "accumulation" else 1)
