"""How the Workbench hooks a loop's optimizers and schedulers.

* `optimizer_list` normalises `Workbench(model, opt)`, `Workbench(model, [a, b])` and
  `optimizers=[...]` into one list (an optimizer given twice is kept once).
* `SchedulerPatch` counts `scheduler.step()` by wrapping it on the instance (restored by
  `restore`). Schedulers serialize their `__dict__`, where the wrapper lives, so
  `state_dict` is wrapped too, to leave both out: `torch.save(scheduler.state_dict())` keeps
  working. PyTorch's own warnings from `step` (e.g. "lr_scheduler.step() before
  optimizer.step()", issued with stacklevel=2) would name the wrapper's line; they are
  caught and re-issued one frame up, at the user's call site. PyTorch warns only on a
  scheduler's first steps (the order check) or when `step` gets an argument (the deprecated
  `epoch`), so only those calls are caught: entering `catch_warnings` resets every module's
  record of warnings already shown, and on every step it would repeat the loop's own
  once-per-location warnings each step (and cost a host-bound loop ~1% of its step).
"""

from __future__ import annotations

import warnings
from collections.abc import Callable
from typing import Any

import torch


def optimizer_list(optimizer: Any, optimizers: Any) -> list[torch.optim.Optimizer]:
    """One list of optimizers from the positional argument and the `optimizers` keyword."""
    found: list[Any] = []
    for source in (optimizer, optimizers):
        if source is None:
            continue
        found.extend(source if isinstance(source, (list, tuple)) else [source])
    unique: list[Any] = []
    for item in found:
        if not isinstance(item, torch.optim.Optimizer):
            raise TypeError(f"expected a torch.optim.Optimizer, got {type(item).__name__}")
        if not any(item is seen for seen in unique):
            unique.append(item)
    if not unique:
        raise ValueError("Workbench needs at least one optimizer (optimizer= or optimizers=)")
    return unique


def scheduler_list(scheduler: Any) -> list[Any]:
    if scheduler is None:
        return []
    return list(scheduler) if isinstance(scheduler, (list, tuple)) else [scheduler]


_WARNING_CALLS = 2  # the scheduler's first calls, where PyTorch checks the step order


class SchedulerPatch:
    """`scheduler.step` and `state_dict` wrapped on the instance until `restore()`."""

    PATCHED = ("step", "state_dict")

    def __init__(self, scheduler: Any, on_step: Callable[[Any], None]):
        if not callable(getattr(scheduler, "step", None)):
            raise TypeError(f"scheduler {type(scheduler).__name__} has no step()")
        self.scheduler = scheduler
        self._saved = {n: (n in vars(scheduler), vars(scheduler).get(n)) for n in self.PATCHED}
        original_step = scheduler.step
        original_state_dict = getattr(scheduler, "state_dict", None)

        calls = [0]

        def step(*args: Any, **kwargs: Any):
            calls[0] += 1
            if calls[0] > _WARNING_CALLS and not args and not kwargs:
                result = original_step()
                on_step(scheduler)
                return result
            with warnings.catch_warnings(record=True) as caught:
                warnings.simplefilter("always")
                result = original_step(*args, **kwargs)
            for warning in caught:  # re-issued at the user's line, under their filters
                warnings.warn(warning.message, warning.category, stacklevel=2)
            on_step(scheduler)
            return result

        scheduler.step = step
        if original_state_dict is not None:
            def state_dict() -> dict:
                return {k: v for k, v in original_state_dict().items() if k not in self.PATCHED}

            scheduler.state_dict = state_dict

    def restore(self) -> None:
        for name, (had, previous) in self._saved.items():
            if had:
                setattr(self.scheduler, name, previous)
            else:
                vars(self.scheduler).pop(name, None)
