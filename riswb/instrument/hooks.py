"""Events, the Probe base class and the Registry that dispatches events to probes.

A probe is a class with `on_<event>(self, ctx)` methods; the registry subscribes only the
methods a probe overrides, so an unused event costs nothing. Probes accumulate tensors on
the device during a step and turn them into run-log records in `flush()`, which the
Workbench calls once per log interval: no probe forces a host sync per step.

Failures are isolated: a probe that raises is disabled, and the error lands in
events.jsonl (`probe_error`) and the manifest's warnings; training goes on. With
`strict=True` the error propagates instead (for tests and probe development).
"""

from __future__ import annotations

import re
import time
from dataclasses import dataclass, field
from enum import Enum
from typing import TYPE_CHECKING, Any

from riswb.instrument.probe_cost import ProbeCostWatch

if TYPE_CHECKING:  # pragma: no cover
    from riswb.instrument.workbench import Workbench


class Event(str, Enum):
    """What happened in the training loop; each value names a probe method `on_<value>`."""

    RUN_START = "run_start"
    BATCH_START = "batch_start"
    AFTER_FORWARD = "after_forward"
    NOGRAD_FORWARD = "nograd_forward"
    AFTER_LOSS = "after_loss"
    AFTER_BACKWARD = "after_backward"
    BEFORE_OPTIMIZER_STEP = "before_optimizer_step"
    AFTER_OPTIMIZER_STEP = "after_optimizer_step"
    AFTER_SCHEDULER_STEP = "after_scheduler_step"
    STEP_SKIPPED = "step_skipped"
    EVAL = "eval"
    WEIGHTS_SWAP_IN = "weights_swap_in"
    WEIGHTS_SWAP_OUT = "weights_swap_out"
    CHECKPOINT = "checkpoint"
    RUN_END = "run_end"

    @property
    def method(self) -> str:
        return f"on_{self.value}"


# Events tied to a training step honour a probe's `every` schedule; the others always reach it.
SCHEDULED_EVENTS = frozenset(
    {
        Event.BATCH_START,
        Event.AFTER_FORWARD,
        Event.AFTER_LOSS,
        Event.AFTER_BACKWARD,
        Event.BEFORE_OPTIMIZER_STEP,
        Event.AFTER_OPTIMIZER_STEP,
        Event.AFTER_SCHEDULER_STEP,
    }
)


@dataclass
class StepContext:
    """What a probe method receives: the Workbench, the event, its step and payload."""

    wb: Workbench
    event: Event
    step: int
    payload: dict[str, Any] = field(default_factory=dict)


def _snake(name: str) -> str:
    return re.sub(r"(?<!^)(?=[A-Z])", "_", name).lower()


class Probe:
    """Base class for instruments. Override `on_<event>` methods and `flush`.

    `every` sets the schedule for step events (run on steps where step % every == 0);
    `name` defaults to the class name in snake_case. Override `on_<event>` only for the
    events you need: the registry never calls the others. `sampled = True` declares that the
    probe's records are statistics over the steps it saw: its step events then reach it
    only on the cycles the Workbench observes (riswb.instrument.observation). A probe with
    nothing to do on an event between its samples can `ctx.wb.registry.pause(self, event)`
    and `resume` it when it has.
    """

    name: str | None = None
    every: int = 1
    sampled: bool = False

    def __init__(self, every: int | None = None):
        if every is not None:
            if every < 1:
                raise ValueError(f"probe schedule must be >= 1, got every={every}")
            self.every = every
        if self.name is None:
            self.name = _snake(type(self).__name__)

    def flush(self, ctx: StepContext) -> None:
        """Turn accumulated tensors into run-log records (once per log interval)."""

    def describe(self) -> dict[str, Any]:
        return {"name": self.name, "every": self.every, "class": type(self).__qualname__}

    def on_run_start(self, ctx: StepContext) -> None: ...
    def on_batch_start(self, ctx: StepContext) -> None: ...
    def on_after_forward(self, ctx: StepContext) -> None: ...
    def on_nograd_forward(self, ctx: StepContext) -> None: ...
    def on_after_loss(self, ctx: StepContext) -> None: ...
    def on_after_backward(self, ctx: StepContext) -> None: ...
    def on_before_optimizer_step(self, ctx: StepContext) -> None: ...
    def on_after_optimizer_step(self, ctx: StepContext) -> None: ...
    def on_after_scheduler_step(self, ctx: StepContext) -> None: ...
    def on_step_skipped(self, ctx: StepContext) -> None: ...
    def on_eval(self, ctx: StepContext) -> None: ...
    def on_weights_swap_in(self, ctx: StepContext) -> None: ...
    def on_weights_swap_out(self, ctx: StepContext) -> None: ...
    def on_checkpoint(self, ctx: StepContext) -> None: ...
    def on_run_end(self, ctx: StepContext) -> None: ...

    def overrides(self, event: Event) -> bool:
        return getattr(type(self), event.method) is not getattr(Probe, event.method)

    def overrides_flush(self) -> bool:
        return type(self).flush is not Probe.flush


class ProbeError(RuntimeError):
    """A probe failed under strict=True.

    The exception actually raised is also an instance of the original error's type when
    that type allows it (`pytest.raises(ValueError)` and `pytest.raises(ProbeError)` both
    match a probe that raised ValueError); the original is chained as `__cause__`.
    """


def strict_error(probe: Probe, ctx: StepContext, error: Exception) -> ProbeError:
    """A ProbeError that also inherits the original exception's type where possible."""
    message = (
        f"probe {probe.name!r} failed on {ctx.event.value}: {type(error).__name__}: {error}"
    )
    base = type(error)
    if issubclass(base, ProbeError):
        return ProbeError(message)
    try:
        combined = type(f"Probe{base.__name__}", (ProbeError, base), {"__module__": __name__})
        return combined(message)
    except TypeError:  # a base with its own C layout (OSError) or required arguments
        return ProbeError(message)


class Registry:
    """Subscribes probes to the events they handle and dispatches in registration order."""

    def __init__(self, wb: Workbench, *, strict: bool = False):
        self.wb = wb
        self.strict = strict
        self.probes: list[Probe] = []
        self.disabled: dict[str, str] = {}
        self._subscribers: dict[Event, list[Probe]] = {event: [] for event in Event}
        self._flushers: list[Probe] = []
        # per event, the enabled subscribers' bound methods: emit runs several times per
        # step, so the lookups happen once here (and again whenever a probe is disabled);
        # `_unobserved`: the same less the sampled probes', for step events of cycles the
        # Workbench does not observe
        self._handlers: dict[Event, list[tuple[Probe, Any]]] = {event: [] for event in Event}
        self._unobserved: dict[Event, list[tuple[Probe, Any]]] = dict(self._handlers)
        self._scheduled: frozenset[Event] = frozenset()  # see `_rebuild_handlers`
        self._paused: set[tuple[str, Event]] = set()  # (probe name, event): see `pause`
        # whether the current optimizer-step cycle reaches the sampled probes: set by the
        # Workbench (riswb.instrument.observation), read on every event
        self.observing = True
        self.cost = ProbeCostWatch(lambda message: self.wb.writer.warn(message))

    def add(self, probe: Probe) -> Probe:
        if any(existing.name == probe.name for existing in self.probes):
            raise ValueError(f"a probe named {probe.name!r} is already registered")
        self.probes.append(probe)
        for event in Event:
            if probe.overrides(event):
                self._subscribers[event].append(probe)
        if probe.overrides_flush():
            self._flushers.append(probe)
        self._rebuild_handlers()
        return probe

    def pause(self, probe: Probe, event: Event) -> None:
        """Stop calling `probe` on `event` until `resume`: a probe with nothing to do on
        most steps (it waits for its next sample) keeps its call, a microsecond or two on a
        host-bound loop, off them. Only that event's lists are rebuilt."""
        if (probe.name, event) not in self._paused:
            self._paused.add((probe.name, event))
            self._rebuild_event(event)

    def resume(self, probe: Probe, event: Event) -> None:
        if (probe.name, event) in self._paused:
            self._paused.discard((probe.name, event))
            self._rebuild_event(event)

    def _rebuild_event(self, event: Event) -> None:
        handlers = self._handlers[event] = [
            (p, getattr(p, event.method)) for p in self._subscribers[event]
            if p.name not in self.disabled and (p.name, event) not in self._paused]
        self._unobserved[event] = ([(p, m) for p, m in handlers if not p.sampled]
                                   if event in SCHEDULED_EVENTS else handlers)

    def _rebuild_handlers(self) -> None:
        for event in self._subscribers:
            self._rebuild_event(event)
        # events where some subscriber runs on a schedule (`every` > 1): only those pay the
        # check. From the subscribers, not the current handlers: a paused probe resumed
        # later (`_rebuild_event` alone) keeps its schedule
        self._scheduled = frozenset(
            event for event, subscribers in self._subscribers.items()
            if event in SCHEDULED_EVENTS and any(p.every != 1 for p in subscribers)
        )

    def get(self, name: str) -> Probe | None:
        return next((probe for probe in self.probes if probe.name == name), None)

    def subscribed(self, event: Event) -> bool:
        """Whether any enabled probe listens: lets the Workbench skip work nobody needs."""
        return bool(self._handlers[event])

    def emit(self, event: Event, step: int, payload: dict[str, Any] | None = None) -> None:
        handlers = (self._handlers if self.observing else self._unobserved)[event]
        if not handlers:
            return
        ctx = StepContext(self.wb, event, step, {} if payload is None else payload)
        disabled = self.disabled
        if self.cost.active or event in self._scheduled:
            scheduled = event in self._scheduled
            for probe, method in handlers:
                if (scheduled and step % probe.every) or (disabled and probe.name in disabled):
                    continue
                self._call(probe, method, ctx)
            return
        for probe, method in handlers:  # the usual event: `_call` inlined, some forty per step
            if disabled and probe.name in disabled:  # by an earlier handler just now
                continue
            try:
                method(ctx)
            except Exception as error:
                self._failed(probe, ctx, error)

    def _call(self, probe: Probe, method, ctx: StepContext) -> None:
        """Run one probe method; its Exception disables the probe (or raises when strict).
        On the steps the cost watch samples, the call is timed."""
        start = time.perf_counter() if self.cost.active else None
        try:
            method(ctx)
        except Exception as error:
            self._failed(probe, ctx, error)
        if start is not None:
            self.cost.add(probe.name, time.perf_counter() - start)

    def _failed(self, probe: Probe, ctx: StepContext, error: Exception) -> None:
        if self.strict:
            raise strict_error(probe, ctx, error) from error
        self._disable(probe, ctx, error)

    def flush(self, step: int) -> float:
        """Flush every probe; the seconds the sampled probes' flushes took (their records
        grow with the cycles they observed: part of what observing a cycle costs)."""
        ctx = StepContext(self.wb, Event.RUN_END, step)
        sampled = 0.0
        for probe in self._flushers:
            if probe.name not in self.disabled:
                start = time.perf_counter()
                self._call(probe, probe.flush, ctx)
                if probe.sampled:
                    sampled += time.perf_counter() - start
        return sampled

    def _disable(self, probe: Probe, ctx: StepContext, error: Exception) -> None:
        reason = f"{type(error).__name__}: {error}"
        self.disabled[probe.name] = reason
        self._rebuild_handlers()
        self.wb.writer.event(ctx.step, "probe_error", probe=probe.name, hook=ctx.event.value,
                             error=reason)
        self.wb.writer.warn(f"probe {probe.name} disabled after {ctx.event.value}: {reason}")
