"""Fail fast: stop a run at its first error finding instead of reporting it at the end.

`FailFastProbe(check_every=50, on_finding="raise")` diagnoses the run while it trains: at
the first probe flush at least `check_every` steps after its last check it reads the run
directory (riswb.runlog.read_run, which tolerates a run in progress) and runs the rules
(riswb.diagnose.rules.diagnose: a rule without enough records yet is "unchecked", never a
finding). Each ERROR finding id is acted on once, and written to events.jsonl as event
`fail_fast` {id, severity, title, action} so the run records why it stopped:

* "raise"    — raise `FindingError` (it carries the finding) out of the training loop;
* "warn"     — `warnings.warn(..., FindingWarning)` and train on;
* a callable — call it with the `Finding` and train on.

Why `FindingError` derives from BaseException: the probe registry contains every
`Exception` a probe raises (it disables the probe and training goes on), and a loop may wrap
its step in `except Exception`. A deliberate stop must pass both, as KeyboardInterrupt does
(pytest's outcome exceptions are BaseExceptions for the same reason). Catch it by name.

When it checks. A probe flush writes its records in one batch that reaches the file only
when the flush ends, so the flush only marks a check due; the check runs at the next step
event (after_loss, or before_optimizer_step in loops without `wb.loss`), with the whole
interval on disk. Never at close: a finished run is the report's business.

Cost. A check reads and diagnoses the whole run, ~10–40 ms on a CPU whatever the step
costs. So that a fast loop is not slowed by its own watchdog, no check starts while the
checks so far have taken more than `max_overhead` (default 1%) of the loop's own time: its
busy time (`wb.busy_seconds`, less the checks, which run inside its cycles) once an
optimizer step ended a cycle, the wall time since the run started before that (a loop that
never steps is checked too). Data loading, or other loops sharing the process, do not buy
checks. A slow step (the reference model) is seldom held back, a 2 ms step is checked less
often than `check_every` asks.
"""

from __future__ import annotations

import os
import time
import warnings
from collections.abc import Callable
from pathlib import Path
from typing import Any

from riswb.diagnose.rules import Finding, Thresholds, diagnose
from riswb.instrument.hooks import Probe, StepContext
from riswb.runlog import read_run

ACTIONS = ("raise", "warn")
OnFinding = str | Callable[[Finding], Any]


def describe_finding(finding: Finding, step: int) -> str:
    """One line: `lr-stalled (error) at step 12: <title>`."""
    return f"{finding.id} ({finding.severity}) at step {step}: {finding.title}"


class FindingError(BaseException):
    """A fail-fast stop: `finding` (a riswb.diagnose.rules.Finding) was seen at `step` in
    the run at `run`. A BaseException on purpose (see the module docstring)."""

    def __init__(self, finding: Finding, step: int, run: str | os.PathLike):
        super().__init__(describe_finding(finding, step))
        self.finding = finding
        self.step = step
        self.run = Path(run)


class FindingWarning(UserWarning):
    """An error finding seen while the run trains (`on_finding="warn"`)."""


class FailFastProbe(Probe):
    """Diagnoses the run in progress every `check_every` steps; acts on new error findings."""

    name = "fail_fast"

    def __init__(
        self,
        check_every: int = 50,
        on_finding: OnFinding = "raise",
        *,
        thresholds: Thresholds | None = None,
        max_overhead: float | None = 0.01,
    ):
        super().__init__()
        if check_every < 1:
            raise ValueError(f"check_every must be >= 1, got {check_every}")
        if not callable(on_finding) and on_finding not in ACTIONS:
            raise ValueError(
                f"on_finding must be 'raise', 'warn' or a callable, got {on_finding!r}")
        if max_overhead is not None and not max_overhead > 0:
            raise ValueError(f"max_overhead must be > 0 (or None: no cap), got {max_overhead}")
        self.check_every = int(check_every)
        self.on_finding = on_finding
        self.thresholds = thresholds
        self.max_overhead = max_overhead
        self.reported: dict[str, Finding] = {}  # id -> the finding acted on
        self.checks = 0
        self.check_seconds = 0.0
        self._last_check = 0
        self._started = time.perf_counter()
        self._due = False

    def describe(self) -> dict[str, Any]:
        action = self.on_finding if isinstance(self.on_finding, str) else "callable"
        return {**super().describe(), "check_every": self.check_every, "on_finding": action,
                "max_overhead": self.max_overhead}

    def on_run_start(self, ctx: StepContext) -> None:
        self._started = time.perf_counter()
        self._last_check = ctx.wb.step  # first_step: a resumed run counts from there

    def flush(self, ctx: StepContext) -> None:
        if ctx.step - self._last_check >= self.check_every and self._within_budget(ctx.wb):
            self._due = True

    def on_after_loss(self, ctx: StepContext) -> None:
        if self._due:
            self._check(ctx)

    def on_before_optimizer_step(self, ctx: StepContext) -> None:
        if self._due:
            self._check(ctx)

    def _within_budget(self, wb: Any) -> bool:
        if self.max_overhead is None:
            return True
        if wb.busy_seconds:
            own = max(wb.busy_seconds - self.check_seconds, 0.0)
        else:
            own = time.perf_counter() - self._started
        return self.check_seconds <= self.max_overhead * own

    def _check(self, ctx: StepContext) -> None:
        self._due = False
        began = time.perf_counter()
        try:
            diagnosis = diagnose(read_run(ctx.wb.path), self.thresholds)
        finally:
            self.check_seconds += time.perf_counter() - began
            self.checks += 1
            self._last_check = ctx.step
        for finding in diagnosis.errors:  # ranked: the root cause comes first
            if finding.id not in self.reported:
                self.reported[finding.id] = finding
                self._act(ctx, finding)

    def _act(self, ctx: StepContext, finding: Finding) -> None:
        action = self.on_finding if isinstance(self.on_finding, str) else "callable"
        ctx.wb.writer.event(ctx.step, "fail_fast", id=finding.id, severity=finding.severity,
                            title=finding.title, action=action)
        if self.on_finding == "raise":
            raise FindingError(finding, ctx.step, ctx.wb.path)
        if self.on_finding == "warn":
            warnings.warn(f"riswb fail-fast: {describe_finding(finding, ctx.step)}",
                          FindingWarning, stacklevel=2)
        else:
            self.on_finding(finding)
