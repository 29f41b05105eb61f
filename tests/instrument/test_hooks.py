"""Registry semantics: subscription, schedules, failure isolation, strict mode."""

import pytest
import torch

from riswb.instrument.hooks import SCHEDULED_EVENTS, Event, Probe, ProbeError, Registry, StepContext
from riswb.instrument.workbench import Workbench
from riswb.runlog import read_run


class Recorder(Probe):
    def __init__(self, every=None):
        super().__init__(every)
        self.calls: list[tuple[str, int]] = []

    def on_after_loss(self, ctx: StepContext) -> None:
        self.calls.append(("after_loss", ctx.step))

    def on_eval(self, ctx: StepContext) -> None:
        self.calls.append(("eval", ctx.step))


class FakeWriter:
    def __init__(self):
        self.events, self.warnings = [], []

    def event(self, step, event, **payload):
        self.events.append((step, event, payload))

    def warn(self, message):
        self.warnings.append(message)


class FakeWb:
    def __init__(self):
        self.writer = FakeWriter()


def test_only_overridden_methods_are_subscribed():
    registry = Registry(FakeWb())
    probe = registry.add(Recorder())
    subscribed = {e for e in Event if probe in registry._subscribers[e]}
    assert subscribed == {Event.AFTER_LOSS, Event.EVAL}
    assert registry.subscribed(Event.AFTER_LOSS)
    assert not registry.subscribed(Event.AFTER_BACKWARD)
    assert registry._flushers == []  # flush not overridden
    assert probe.name == "recorder"


def test_every_schedule_applies_to_step_events_only():
    registry = Registry(FakeWb())
    probe = registry.add(Recorder(every=3))
    for step in range(7):
        registry.emit(Event.AFTER_LOSS, step)
        registry.emit(Event.EVAL, step)
    assert [s for e, s in probe.calls if e == "after_loss"] == [0, 3, 6]
    assert [s for e, s in probe.calls if e == "eval"] == list(range(7))
    assert Event.EVAL not in SCHEDULED_EVENTS and Event.AFTER_LOSS in SCHEDULED_EVENTS


def test_a_paused_event_skips_only_that_probe_until_resumed_in_registration_order():
    registry = Registry(FakeWb())
    first = registry.add(Recorder())
    second = Recorder()
    second.name = "second"
    registry.add(second)
    registry.pause(first, Event.AFTER_LOSS)
    registry.emit(Event.AFTER_LOSS, 0)
    registry.emit(Event.EVAL, 0)  # other events still reach it
    assert first.calls == [("eval", 0)] and second.calls == [("after_loss", 0), ("eval", 0)]
    registry.pause(second, Event.AFTER_LOSS)
    assert not registry.subscribed(Event.AFTER_LOSS)  # nobody listens: no payload is built
    registry.resume(first, Event.AFTER_LOSS)
    registry.resume(second, Event.AFTER_LOSS)
    order = []
    first.on_after_loss = lambda ctx: order.append("first")
    second.on_after_loss = lambda ctx: order.append("second")
    registry._rebuild_handlers()  # pick up the replaced methods
    registry.emit(Event.AFTER_LOSS, 1)
    assert order == ["first", "second"]


def test_a_resumed_probe_keeps_its_schedule_after_another_probe_was_disabled(tmp_path):
    class Every4(Probe):
        def __init__(self):
            super().__init__(every=4)
            self.steps = []

        def on_after_loss(self, ctx):
            self.steps.append(ctx.step)
            if ctx.step == 8:
                ctx.wb.registry.pause(self, Event.AFTER_LOSS)

        def on_after_optimizer_step(self, ctx):
            if ctx.step == 12:
                ctx.wb.registry.resume(self, Event.AFTER_LOSS)

    class Boom(Probe):
        def on_after_backward(self, ctx):
            if ctx.step == 10:
                raise RuntimeError("probe bug")  # disabled: every handler list rebuilt

    model = torch.nn.Linear(3, 1)
    opt = torch.optim.SGD(model.parameters(), lr=0.1)
    every4 = Every4()
    with Workbench(model, opt, runs_dir=tmp_path, probes=[every4, Boom()], log_every=5) as wb:
        for _ in range(28):
            loss = wb.loss({"l": model(torch.randn(2, 3)).square().mean()})
            opt.zero_grad()
            loss.backward()
            opt.step()
    assert list(wb.registry.disabled) == ["boom"]
    assert every4.steps == [0, 4, 8, 16, 20, 24]


def test_every_must_be_positive():
    with pytest.raises(ValueError):
        Recorder(every=0)


class Boom(Probe):
    def __init__(self, exc=ValueError):
        super().__init__()
        self.exc = exc
        self.calls = 0

    def on_after_backward(self, ctx: StepContext) -> None:
        self.calls += 1
        raise self.exc("broken probe")


def _loop(wb, model, opt, steps=5):
    for _ in range(steps):
        out = model(torch.randn(4, 3))
        loss = wb.loss({"mse": out.square().mean()})
        opt.zero_grad()
        loss.backward()
        opt.step()


def test_raising_probe_is_disabled_logged_and_training_continues(tmp_path):
    model = torch.nn.Linear(3, 2)
    opt = torch.optim.SGD(model.parameters(), lr=0.1)
    boom = Boom()
    wb = Workbench(model, opt, runs_dir=tmp_path, probes=["cadence", boom])
    before = model.weight.detach().clone()
    _loop(wb, model, opt)
    wb.close()
    assert boom.calls == 1  # disabled after the first failure
    assert not torch.equal(before, model.weight)  # training went on
    run = read_run(wb.path)
    errors = run.events_of("probe_error")
    assert len(errors) == 1 and errors[0]["probe"] == "boom"
    assert "ValueError: broken probe" in errors[0]["error"]
    assert any("boom" in w for w in run.manifest["warnings"])
    described = {p["name"]: p for p in run.manifest["probes"]}
    assert "disabled" in described["boom"] and "disabled" not in described["cadence"]
    assert run.kind("cadence")["optimizer_step"].iloc[-1] == 5


def test_strict_reraises_with_original_type(tmp_path):
    model = torch.nn.Linear(3, 2)
    opt = torch.optim.SGD(model.parameters(), lr=0.1)
    wb = Workbench(model, opt, runs_dir=tmp_path, probes=[Boom()], strict=True)
    with pytest.raises(ValueError, match="broken probe") as info:
        _loop(wb, model, opt, steps=1)
    assert isinstance(info.value, ProbeError)
    assert isinstance(info.value.__cause__, ValueError)
    wb.close()


def test_strict_error_falls_back_for_unsubclassable_types():
    registry = Registry(FakeWb(), strict=True)
    registry.add(Boom(exc=lambda msg: OSError(5, msg)))
    with pytest.raises(ProbeError) as info:
        registry.emit(Event.AFTER_BACKWARD, 0)
    assert isinstance(info.value.__cause__, OSError)


def test_strict_failure_at_run_start_leaves_the_loop_untouched(tmp_path):
    class BadStart(Probe):
        def on_run_start(self, ctx):
            raise RuntimeError("no")

    model = torch.nn.Linear(3, 2)
    opt = torch.optim.SGD(model.parameters(), lr=0.1)
    with pytest.raises(RuntimeError, match="no"):
        Workbench(model, opt, runs_dir=tmp_path, probes=[BadStart()], strict=True)
    assert not model._forward_hooks and not opt._optimizer_step_pre_hooks
    (path,) = tmp_path.iterdir()
    assert read_run(path).manifest["status"] == "failed"
