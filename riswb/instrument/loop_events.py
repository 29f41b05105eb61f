"""What PyTorch's hooks tell the Workbench: attachment and the hook callbacks.

A mixin of `riswb.instrument.workbench.Workbench` (it reads and updates the Workbench's
counters and emits through its registry): the root module's forward hook (registered with
`with_kwargs=True`, so keyword inputs — Hugging Face's `input_ids=`, `labels=` — reach the
AFTER_FORWARD payload as `kwargs`), the end of each outermost backward
(riswb.instrument.backward), the step pre-/post-hooks of every optimizer, the schedulers'
wrapped `step`, GradScaler skips and the gradient-clearing watch.

Payload dicts are built only for events some enabled probe subscribes to
(`Registry.subscribed`): several of these callbacks run on every step.
"""

from __future__ import annotations

import functools
import math
import time
from typing import Any

import torch

from riswb.instrument import scaler as scaler_hooks
from riswb.instrument.backward import BackwardEnd
from riswb.instrument.grad_clearing import GradClearWatch
from riswb.instrument.hooks import Event
from riswb.instrument.loop_hooks import SchedulerPatch, scheduler_list


class LoopEvents:
    """Hook registration and callbacks; the state they touch lives on the Workbench."""

    def _attach(self) -> None:
        self._handles.append(self.model.register_forward_hook(self._on_forward, with_kwargs=True))
        self._backward = BackwardEnd(self.params, self._on_backward_end)
        self.grad_clearing = GradClearWatch(self.optimizers, self.params)
        for index, optimizer in enumerate(self.optimizers):
            self._handles.append(optimizer.register_step_pre_hook(
                functools.partial(self._on_pre_step, index)))
            self._handles.append(optimizer.register_step_post_hook(
                functools.partial(self._on_post_step, index)))
        for scheduler in scheduler_list(self.scheduler):
            self._patches.append(SchedulerPatch(scheduler, self._on_scheduler_step))
        scaler_hooks.attach(self.scaler)

    def _detach(self) -> None:
        scaler_hooks.detach(self.scaler)
        for handle in self._handles:
            handle.remove()
        self._handles.clear()
        for watch in (self._backward, self.grad_clearing):
            if watch is not None:
                watch.remove()
        for patch in self._patches:
            patch.restore()
        self._patches.clear()

    def expect_redirect(self, output: Any) -> None:
        """The next call of the root module that returns `output` (this very object) is a
        framework running a step method through the module's __call__ — Lightning under
        DDP/FSDP redirects `forward` to `training_step` — not a forward of its own."""
        self._redirect = (output,)

    def cancel_redirect(self) -> None:
        self._redirect = None

    def _on_forward(self, module: torch.nn.Module, args: Any, kwargs: dict, output: Any) -> None:
        redirect = self._redirect
        if redirect is not None and output is redirect[0]:
            self._redirect = None
            return
        if torch.is_grad_enabled():
            self.n_forward += 1
            if self._cycle_opened is None:
                self._cycle_opened = time.perf_counter()
            event = Event.AFTER_FORWARD
        else:
            self.n_nograd_forward += 1
            event = Event.NOGRAD_FORWARD
        if self.registry.subscribed(event):  # the hooks are attached only while open
            self.registry.emit(event, self.step,
                               {"inputs": args, "kwargs": kwargs, "output": output})

    def _on_backward_end(self) -> None:
        self.backward_task = self._backward.last_task
        self.n_backward += 1
        self._bw_since_loss = True
        self._bw_since_step += 1
        self._cache.clear()
        self.last_clip = None  # a clip before this backward says nothing about its gradients
        if self.registry.subscribed(Event.AFTER_BACKWARD):
            self.registry.emit(Event.AFTER_BACKWARD, self.step, {"backward": self.n_backward})

    def _on_pre_step(self, index: int, _opt: Any, args: tuple, kwargs: dict) -> None:
        self._backward.reset()  # a backward that raised never ran its callback
        if self.registry.subscribed(Event.BEFORE_OPTIMIZER_STEP):
            self.registry.emit(Event.BEFORE_OPTIMIZER_STEP, self.step, {
                "opt_step": self.opt_step + 1, "optimizer": index,
                "optimizer_step": self.opt_steps[index] + 1,
                "closure": _closure(args, kwargs)})

    def _on_post_step(self, index: int, _opt: Any, args: tuple, kwargs: dict) -> None:
        # counted after the step: a closure (Lightning) runs its backward inside step()
        self.grad_clearing.on_step(index)
        if self._bw_since_step:
            self._bw_per_step.append(self._bw_since_step)
        else:
            self.steps_without_backward += 1
        self._bw_since_step = 0
        self.opt_step += 1
        self.opt_steps[index] += 1
        self._cache.clear()
        opened, self._cycle_opened = self._cycle_opened, None
        self.cycle_busy = None if opened is None else time.perf_counter() - opened
        if opened is not None:
            self.busy_seconds += self.cycle_busy
        self.cycle_losses, self._cycle_loss_start = (self.n_loss - self._cycle_loss_start,
                                                     self.n_loss)
        self.log_interval.note_cycle(self.cycle_busy, self.cycle_losses)
        if self.registry.subscribed(Event.AFTER_OPTIMIZER_STEP):
            self.registry.emit(Event.AFTER_OPTIMIZER_STEP, self.step, {
                "opt_step": self.opt_step, "optimizer": index,
                "optimizer_step": self.opt_steps[index],
                "closure": _closure(args, kwargs)})
        # the schedule's measure of the cycle includes the step's own probe handlers
        self._end_cycle(None if opened is None else time.perf_counter() - opened)
        # loops that step without wb.loss (or between loss calls) still flush
        if (
            self.n_loss == self._flushed_loss
            and self.opt_step - self._flushed_opt >= self.log_interval.every
        ):
            self.flush()

    def _end_cycle(self, busy: float | None) -> None:
        """The optimizer step closes a cycle (`busy` seconds from its first forward to the
        end of its post-step handlers): decide whether the next one is observed."""
        schedule, registry = self.observation, self.registry
        registry.observing = schedule.end_cycle(busy, registry.observing)
        if schedule.stride != self._stride_noted and not self._closed:
            self._stride_noted = schedule.stride
            observed, unobserved = schedule.costs or (math.nan, math.nan)
            self.writer.event(self.step, "observation_stride", stride=schedule.stride,
                              cycle=schedule.cycle, observed_ms=observed * 1e3,
                              unobserved_ms=unobserved * 1e3)

    def _on_scaler_skip(self, index: int) -> None:
        self.step_skipped("scaler", optimizer=index)

    def _on_scheduler_step(self, scheduler: Any) -> None:
        self.n_scheduler += 1
        if self.registry.subscribed(Event.AFTER_SCHEDULER_STEP):
            self.registry.emit(Event.AFTER_SCHEDULER_STEP, self.step, {
                "scheduler": scheduler, "scheduler_step": self.n_scheduler,
                "opt_step": self.opt_step})


def _closure(args: tuple, kwargs: dict) -> bool:
    """Whether `optimizer.step` got a closure: its backward then runs inside the step.
    The step hooks get the bound call's args, the optimizer itself first."""
    if args and isinstance(args[0], torch.optim.Optimizer):
        args = args[1:]
    return bool(args and callable(args[0])) or callable(kwargs.get("closure"))
