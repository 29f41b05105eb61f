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


def _cadence_last(tmp_path, body, optimizers=None, model=None):
    torch.manual_seed(0)
    model = model or torch.nn.Linear(4, 1)
    optimizers = optimizers or [torch.optim.SGD(model.parameters(), lr=0.01)]
    wb = Workbench(model, optimizers=optimizers, runs_dir=tmp_path, probes=["cadence"],
                   log_every=5, strict=True)
    body(wb, model, optimizers)
    wb.close()
    return read_run(wb.path).kind("cadence").iloc[-1]


def test_closure_steps_and_their_losses_are_one_batch(tmp_path):
    x, y = torch.randn(16, 4), torch.randn(16, 1)

    def body(wb, model, opts):
        def closure():
            opts[0].zero_grad()
            loss = wb.loss({"mse": (model(x) - y).square().mean()})
            loss.backward()
            return loss
        for _ in range(6):
            opts[0].step(closure)  # LBFGS-like: the optimizer may call it several times
            opts[0].step(lambda: (closure(), closure())[1])

    last = _cadence_last(tmp_path, body)
    assert last["closure_steps"] == last["optimizer_step"] == 12
    assert last["loss"] == 18 and last["same_batch_loss"] == 6
    assert last["same_batch_backward"] == 6


def test_same_input_twice_is_one_batch_a_refilled_buffer_is_not(tmp_path):
    def body(wb, model, opts):
        x, buffer = torch.randn(8, 4), torch.empty(8, 4)
        for _ in range(5):  # SAM-like: the same batch twice per step
            for _ in range(2):
                opts[0].zero_grad()
                wb.loss({"mse": model(x).square().mean()}).backward()
            opts[0].step()
        for _ in range(5):  # two batches per step through one reused input buffer
            for _ in range(2):
                buffer.copy_(torch.randn(8, 4))
                opts[0].zero_grad()
                wb.loss({"mse": model(buffer).square().mean()}).backward()
            opts[0].step()

    last = _cadence_last(tmp_path, body)
    assert last["loss"] == 20 and last["same_batch_loss"] == 5


def test_two_optimizers_on_one_backward_share_it(tmp_path):
    model = torch.nn.Sequential(torch.nn.Linear(4, 4), torch.nn.Linear(4, 1))
    opts = [torch.optim.SGD(model[0].parameters(), lr=0.01),
            torch.optim.SGD(model[1].parameters(), lr=0.01)]

    def body(wb, model, opts):
        for _ in range(6):
            for opt in opts:
                opt.zero_grad()
            wb.loss({"mse": model(torch.randn(8, 4)).square().mean()}).backward()
            opts[0].step()
            opts[1].step()
        opts[1].step()  # a second step of the same optimizer with no backward: not shared

    last = _cadence_last(tmp_path, body, opts, model)
    assert last["optimizer_step"] == 13 and last["shared_backward_steps"] == 6


def test_losses_before_a_closure_step_are_batches_only_inside_ones_re_evaluate(tmp_path):
    """Lightning's accumulate_grad_batches=k: k−1 micro-batches run loss/backward before
    optimizer.step, the k-th inside its closure — k batches, none re-evaluated. Only the
    closure's calls beyond its first (a line search) are the same batch again."""

    def body(wb, model, opts):
        def micro_batch(x):
            loss = wb.loss({"mse": model(x).square().mean()})
            loss.backward()
            return loss

        for _ in range(4):  # ×4 accumulation, the 4th micro-batch in the closure
            opts[0].zero_grad()
            for _ in range(3):
                micro_batch(torch.randn(8, 4))
            xb = torch.randn(8, 4)
            opts[0].step(lambda xb=xb: micro_batch(xb))
        for _ in range(4):  # one micro-batch before, then a closure evaluated twice
            opts[0].zero_grad()
            micro_batch(torch.randn(8, 4))
            xb = torch.randn(8, 4)
            opts[0].step(lambda xb=xb: (micro_batch(xb), micro_batch(xb))[1])

    last = _cadence_last(tmp_path, body)
    assert last["closure_steps"] == last["optimizer_step"] == 8
    assert last["loss"] == last["backward"] == 16 + 12
    assert last["same_batch_loss"] == last["same_batch_backward"] == 4
