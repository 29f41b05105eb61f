"""How the Workbench wraps a loop's schedulers (riswb/instrument/loop_hooks.py)."""

import warnings

import torch

from riswb.instrument.loop_hooks import _WARNING_CALLS, SchedulerPatch


def _loop_warning() -> None:
    warnings.warn("the loop's own warning", UserWarning, stacklevel=1)


def _scheduled_sgd():
    model = torch.nn.Linear(2, 1)
    opt = torch.optim.SGD(model.parameters(), lr=0.1)
    return model, opt, torch.optim.lr_scheduler.StepLR(opt, step_size=1, gamma=0.9)


def test_a_once_per_location_warning_of_the_loop_is_not_repeated_every_step(tmp_path):
    """Catching PyTorch's warnings resets Python's record of warnings already shown; done
    on every scheduler step, the loop's once-per-location warning came back every step."""
    model, opt, sched = _scheduled_sgd()
    steps, shown_at = [], []
    SchedulerPatch(sched, steps.append)
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("default")  # Python's own: once per location
        for step in range(12):
            model(torch.randn(3, 2)).sum().backward()
            opt.step()
            before = len(caught)
            _loop_warning()
            shown_at += [step] * (len(caught) - before)
            sched.step()
    assert shown_at and max(shown_at) <= _WARNING_CALLS  # not after the checked first calls
    assert len(steps) == 12


def test_pytorch_order_warning_names_the_callers_line():
    _, opt, sched = _scheduled_sgd()
    SchedulerPatch(sched, lambda _: None)
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        sched.step()  # before any optimizer.step(): PyTorch warns
        sched.step()
        sched.step(epoch=3)  # deprecated argument: PyTorch warns at every such call
    order = [w for w in caught if "optimizer.step()" in str(w.message)]
    assert order and all(w.filename == __file__ for w in order)
    assert any(w.filename == __file__ and "epoch" in str(w.message) for w in caught)
