"""The Workbench: attaches probes to a user's own training loop through PyTorch's hooks.

```python
wb = riswb.Workbench(model, optimizer, scheduler, runs_dir="runs", name="mlp")
for x, y in loader:
    out = model(x)
    loss = wb.loss({"mse": mse(out, y), "l1": out.abs().mean()}, {"mse": 1.0, "l1": 0.1})
    optimizer.zero_grad(); loss.backward(); optimizer.step(); scheduler.step()
wb.evaluate({"val_loss": val})
wb.close()
```

What the Workbench sees, and how (no other call in the loop is needed):

* forward    — a forward hook on the root module (with keyword arguments): grad-enabled
  forwards are counted and emit AFTER_FORWARD; grad-disabled ones emit NOGRAD_FORWARD
  (payload `inputs`, `kwargs`, `output`);
* loss       — `wb.loss(terms, weights)`; `step` is the 0-based index of the latest call
  (plus `first_step`, which a resumed run sets to continue its predecessor's step axis);
* backward   — riswb.instrument.backward: AFTER_BACKWARD once per OUTERMOST backward, at
  its end, before the user's code can sanitize or clip the gradients (reentrant
  checkpointing's nested backwards are not counted);
* optimizers — `register_step_pre_hook` / `register_step_post_hook` on each optimizer (one
  or many: `Workbench(m, opt)`, `Workbench(m, [a, b])`, `optimizers=[a, b]`); a step skipped
  by a GradScaler never runs them, so `opt_step` counts real steps only;
* GradScaler — riswb.instrument.scaler: the scale the gradients carry, what `unscale_` did,
  and skipped steps (written as `step_skipped` reason "scaler", emitted as STEP_SKIPPED);
* clearing   — riswb.instrument.grad_clearing: whether each step's gradients were cleared;
* observing  — riswb.instrument.observation: which optimizer-step cycles reach the sampled
  probes (`Probe.sampled`); all of them unless those probes cost a noticeable share of the
  loop's step (event `observation_stride` when that changes);
* scheduler  — `scheduler.step` wrapped on the instance (riswb.instrument.loop_hooks).

The hook callbacks live in riswb.instrument.loop_events (a mixin of this class).

`cycle_busy` / `cycle_losses`: the latest optimizer-step cycle's busy time (its first
forward or `wb.loss` call to the end of its optimizer step: data loading and other loops'
turns excluded) and its `wb.loss` calls — what budget-driven probes weigh their cost
against; `busy_seconds`: the busy time of all cycles so far.

Counters: `n_forward`, `n_loss`, `n_backward`, `opt_step` (all optimizers), `opt_steps[i]`,
`n_scheduler`, `n_eval` (`wb.counts()` returns them under the `cadence` record's keys).
Probes are flushed at the start of every `log_interval.every`-th `wb.loss` call (so a record
covers whole batches, its `step` being the interval's last loss step), after as many
optimizer steps when no `wb.loss` call came in between (loops that step without it), and at
`close`: nothing here forces a host sync per step. The interval is `log_every` when given,
else 20 calls, grown on loops whose step is well under a millisecond
(riswb.instrument.log_interval; event `log_interval` when it changes).

A constructor that fails (bad arguments: before any directory exists; a probe that raises
under strict=True, or anything later) detaches every hook and marks the run `failed`.

`wb.cached(key, fn)` is a memo shared by probes; it is cleared whenever the state it could
describe changes: at each `wb.loss` call, at the end of each backward, after each optimizer
step and after `sanitize_`/`clip_grad_norm_`.
"""

from __future__ import annotations

import os
import time
from collections.abc import Callable, Iterable, Mapping
from pathlib import Path
from typing import Any

import torch

from riswb.instrument import scaler as scaler_hooks
from riswb.instrument.backward import BackwardEnd
from riswb.instrument.grad_clearing import GradClearWatch
from riswb.instrument.hooks import Event, Registry
from riswb.instrument.log_interval import LogInterval
from riswb.instrument.loop_events import LoopEvents
from riswb.instrument.loop_hooks import SchedulerPatch, optimizer_list
from riswb.instrument.loss_weights import LossWeights, checked_metrics, checked_terms
from riswb.instrument.observation import ObservationSchedule
from riswb.instrument.optimizer_info import describe_optimizer
from riswb.instrument.probe_resolution import resolve_probes
from riswb.instrument.ranks import rank_info, run_name_for_rank
from riswb.runlog import RunWriter


def grad_versions(params: list[torch.Tensor]) -> list[int]:
    """Each `.grad`'s in-place version counter (-1 without one): equal lists mean no
    in-place op and no replacement reached the gradients in between — except through
    `.data`, which bumps no counter."""
    return [-1 if p.grad is None else p.grad._version for p in params]


_MISSING = object()  # a memo entry not computed yet (None is a value)


# -- the Workbench ------------------------------------------------------------------------


class Workbench(LoopEvents):
    """Instruments a model, its optimizer(s) and (optionally) scheduler(s); writes one run."""

    def __init__(
        self,
        model: torch.nn.Module,
        optimizer: Any = None,
        scheduler: Any = None,
        *,
        optimizers: Iterable[torch.optim.Optimizer] | None = None,
        runs_dir: str | os.PathLike | None = None,
        name: str | None = None,
        config: dict | None = None,
        probes: Any = "default",
        strict: bool = False,
        log_every: int | None = None,
        accumulation: int = 1,
        intent: dict | None = None,
        plugins: str | os.PathLike | None = None,
        seed: int | None = None,
        first_step: int = 0,
        check_every: int | None = None,
        on_finding: str | Callable[..., Any] = "raise",
        observe_every: int | None = None,
    ):
        """`optimizer`: one optimizer or a list; `optimizers`: more of them (the union is
        watched, in that order: optimizer i is `opt/<i>` in the records). `log_every`: flush
        probes every N `wb.loss` calls (None: riswb.instrument.log_interval decides).
        `accumulation`: loss calls per intended optimizer step (manifest intent).
        `plugins`: a directory of plugin probes to add to `probes`.
        `first_step`: the step number of the first `wb.loss` call — a resumed run passes
        where its predecessor stopped, so both runs share one step axis. `check_every`:
        diagnose the run in progress every N steps and act on the first error finding —
        `on_finding` "raise" (fail_fast.FindingError), "warn", or a callable. Under torchrun
        each rank writes its own run `<name>-rank<r>`, its rank in manifest `distributed`.
        `observe_every`: the sampled probes observe one optimizer-step cycle in this many
        (1: every cycle); None measures it (riswb.instrument.observation)."""
        if not isinstance(model, torch.nn.Module):
            raise TypeError(f"model must be a torch.nn.Module, got {type(model).__name__}")
        if accumulation < 1:
            raise ValueError(f"accumulation must be >= 1, got {accumulation}")
        if first_step < 0:
            raise ValueError(f"first_step must be >= 0, got {first_step}")
        self.model = model
        self.optimizers = optimizer_list(optimizer, optimizers)
        self.optimizer = self.optimizers[0]
        self.scheduler = scheduler
        self.strict = strict
        self.log_interval = LogInterval(log_every)
        self.log_every = self.log_interval.base  # the interval records start from
        self.named_params: list[tuple[str, torch.nn.Parameter]] = [
            (n, p) for n, p in model.named_parameters() if p.requires_grad
        ]
        self.params: list[torch.nn.Parameter] = [p for _, p in self.named_params]
        first = next(iter(model.parameters()), None)
        self.device = first.device if first is not None else torch.device("cpu")
        probe_list = resolve_probes(probes)
        if plugins is not None:
            from riswb.instrument.plugins import load_plugins

            probe_list.extend(load_plugins(plugins))
        if check_every is not None:  # imported here: it loads the rules, which few runs need
            from riswb.instrument.fail_fast import FailFastProbe

            probe_list.append(FailFastProbe(check_every, on_finding))

        # counters (cadence)
        self.first_step = int(first_step)
        self.step = self.first_step  # step of the latest wb.loss() call (first_step before any)
        self.n_loss = self.n_forward = self.n_nograd_forward = self.n_backward = 0
        # autograd graph task of the latest backward (a `.backward()` into the parameters,
        # not a probe's autograd.grad): riswb.probes.term_reach tells which terms it reached
        self.backward_task: int | None = None
        self.opt_step = self.n_scheduler = self.n_eval = 0
        self.opt_steps = [0] * len(self.optimizers)
        self.observation = ObservationSchedule(observe_every)
        # the loop's own busy time per optimizer-step cycle, from the cycle's first forward
        # (or wb.loss call) to the end of its optimizer step: set before AFTER_OPTIMIZER_STEP,
        # read by the probes that budget their cost against the loop's step
        self.cycle_busy: float | None = None  # seconds of the latest cycle (None: unknown)
        self.cycle_losses = 0  # wb.loss calls in it
        self.busy_seconds = 0.0  # the busy time of every cycle so far
        self._cycle_opened: float | None = None
        self._cycle_loss_start = 0
        self._stride_noted = 1  # a fixed stride > 1 is noted at the first cycle's end
        self.skipped: dict[str, int] = {}  # reason -> skipped optimizer-step attempts
        self.loss_without_backward = 0  # wb.loss calls followed by no backward
        self.steps_without_backward = 0  # optimizer steps with no backward since the last one
        self._bw_since_loss = True
        self._bw_since_step = 0
        self._bw_per_step: list[int] = []  # this interval's backwards per step (≥ 1)

        # shared state read by probes
        self.sanitized = torch.zeros((), dtype=torch.int64, device=self.device)
        self.clip_log: list[tuple[torch.Tensor, torch.Tensor | float]] = []
        self.observed_clip_log: list[tuple[torch.Tensor, torch.Tensor]] = []  # grad_step's
        self.observed_sanitized = torch.zeros((), dtype=torch.float64, device=self.device)
        # the latest whole-model wb.clip_grad_norm_ of an observed cycle: (grad versions
        # before, after, its total norm, max_norm)
        self.last_clip: tuple[list[int], list[int], torch.Tensor, Any] | None = None
        self._cache: dict[Any, Any] = {}
        self._skip_log: dict[str, list[int]] = {}  # reason -> [count, first step, optimizer]

        self.intent = {"accumulation": int(accumulation), **(intent or {})}
        self._closed = False
        self._flushed_loss = self._flushed_opt = 0
        self._optimizers_noted = False
        self._redirect: tuple[Any] | None = None  # see LoopEvents.expect_redirect
        self._handles: list[Any] = []
        self._patches: list[SchedulerPatch] = []
        self._backward: BackwardEnd | None = None
        self.grad_clearing: GradClearWatch | None = None
        self.scaler = scaler_hooks.ScalerWatch(
            self.optimizers, lambda i: self.opt_steps[i], self._on_scaler_skip
        )
        rank = rank_info()
        self.writer = RunWriter(runs_dir, run_name_for_rank(name, rank), config=config,
                                seed=seed, intent=self.intent, first_step=self.first_step,
                                loss_terms=[], probes=[], distributed=rank)
        self.path: Path = self.writer.path
        try:
            self.loss_weights = LossWeights(self.writer)
            self.registry = Registry(self, strict=strict)
            for probe in probe_list:
                self.registry.add(probe)
            self.writer.update_manifest(probes=self._describe_probes())
            self._attach()
            self.writer.event(0, "run_start", status="running")
            self._emit(Event.RUN_START, 0)
        except BaseException:  # leave the loop untouched and no run reading "running"
            self._closed = True
            self._detach()
            self.writer.event(0, "run_end", status="failed")
            self.writer.close("failed")
            raise

    # -- dispatch ---------------------------------------------------------------------------

    def _emit(self, event: Event, step: int, **payload: Any) -> None:
        if self._closed and event is not Event.RUN_END:
            return
        self.registry.emit(event, step, payload)

    # -- public API -------------------------------------------------------------------------

    def loss(
        self, terms: Mapping[str, torch.Tensor], weights: Mapping[str, Any] | None = None
    ) -> torch.Tensor:
        """Record named loss terms; return Σ weight·term with its graph intact.

        Terms are scalar tensors or Python numbers (constants: recorded, no gradient).
        Missing weights default to 1.0. The AFTER_LOSS payload holds `terms`, `weights`
        (the weights used, one per term), `total`, `values` (detached float32 vector:
        the unweighted terms in order, then the total) and `constants` (names).
        """
        terms, constants = checked_terms(terms, self.device)
        if not self._closed:
            self.registry.cost.on_loss(self.n_loss)
            if self._cycle_opened is None:
                self._cycle_opened = time.perf_counter()
        names = tuple(terms)
        used = {n: (1.0 if weights is None else weights.get(n, 1.0)) for n in names}
        total, values = self.loss_weights.total(names, terms, used)
        if self._closed:
            return total
        if self.n_loss - self._flushed_loss >= self.log_interval.every:
            self.flush()
        if not self._bw_since_loss:
            self.loss_without_backward += 1
        self._bw_since_loss = False
        self.n_loss += 1
        self.step = self.first_step + self.n_loss - 1
        self._backward.reset()
        self._cache.clear()
        self.loss_weights.note(self.step, names, used)
        self.registry.emit(Event.AFTER_LOSS, self.step, {
            "terms": terms, "weights": used, "total": total, "values": values,
            "constants": constants})
        return total

    def evaluate(
        self,
        metrics: Mapping[str, Any],
        *,
        R_pred: torch.Tensor | None = None,
        R_true: torch.Tensor | None = None,
        K: Any = None,
    ) -> None:
        """Write kind `eval` (the metrics as floats) and emit Event.EVAL to the probes."""
        metrics = checked_metrics(metrics)
        values = {}
        for key, value in metrics.items():
            if isinstance(value, torch.Tensor):
                value = value.detach().float().mean().item()
            values[str(key)] = float(value) if isinstance(value, (int, float)) else value
        if not self._closed:
            self.writer.scalars(self.step, "eval", values)
        self.emit(Event.EVAL, metrics=dict(metrics), R_pred=R_pred, R_true=R_true, K=K)

    def emit(self, event: Event | str, **payload: Any) -> None:
        """Emit an event that PyTorch's hooks cannot see (batch_start, weights_swap_in/out,
        checkpoint, eval). `checkpoint` is also written to events.jsonl as is."""
        event = Event(event)
        if self._closed:
            return
        step = self.next_step if event is Event.BATCH_START else self.step
        if event is Event.EVAL:
            self.n_eval += 1
        elif event is Event.CHECKPOINT:
            self.writer.event(step, "checkpoint", **payload)
        self._emit(event, step, **payload)

    @property
    def next_step(self) -> int:
        """The step number the next `wb.loss` call will get."""
        return self.first_step + self.n_loss

    def cached(self, key: Any, fn: Callable[[], Any]) -> Any:
        """Per-step memo shared by probes (see the module docstring for when it clears)."""
        value = self._cache.get(key, _MISSING)  # no KeyError: most calls of a cycle miss
        if value is _MISSING:
            value = self._cache[key] = fn()
        return value

    def counts(self) -> dict[str, int]:
        """Cumulative counts under the `cadence` record's keys (docs/internals.md §3)."""
        counts = {
            "forward": self.n_forward,
            "loss": self.n_loss,
            "backward": self.n_backward,
            "optimizer_step": self.opt_step,
            "scheduler_step": self.n_scheduler,
            "eval": self.n_eval,
            "nograd_forward": self.n_nograd_forward,
            "step_attempts": self.opt_step + sum(self.skipped.values()),
            "loss_without_backward": self.loss_without_backward,
            "steps_without_backward": self.steps_without_backward,
        }
        for index, steps in enumerate(self.opt_steps):
            counts[f"opt/{index}/optimizer_step"] = steps
        return counts

    def step_skipped(self, reason: str, count: int = 1, *, optimizer: int = 0) -> None:
        """Log `count` optimizer-step attempts the loop skipped on purpose (`reason`: e.g.
        "gate", "nonfinite"; GradScaler skips are seen without this call, as "scaler").
        Written as one `step_skipped` event per reason per log interval."""
        if count < 1 or self._closed:
            return
        reason = str(reason)
        self.skipped[reason] = self.skipped.get(reason, 0) + int(count)
        entry = self._skip_log.setdefault(reason, [0, self.step, optimizer])
        entry[0] += int(count)
        self._emit(Event.STEP_SKIPPED, self.step, reason=reason, count=int(count),
                   optimizer=optimizer)

    def take_backward_per_step(self) -> list[int]:
        """Backward passes before each optimizer step since the last call (steps with none
        are counted in `steps_without_backward` instead)."""
        taken, self._bw_per_step = self._bw_per_step, []
        return taken

    def sanitize_(self, params: Iterable[torch.Tensor] | None = None) -> torch.Tensor:
        """Replace non-finite gradient elements by 0 in place; count them into `sanitized`.

        Returns this call's count as a device tensor (no host sync)."""
        chosen = self.params if params is None else list(params)
        grads = [p.grad for p in chosen if p.grad is not None]
        count = torch.zeros((), dtype=torch.int64, device=self.sanitized.device)
        if grads:
            with torch.no_grad():
                bad = [(~torch.isfinite(g)).sum() for g in grads]
                count = torch.stack([b.to(count.device) for b in bad]).sum()
                for g in grads:
                    torch.nan_to_num_(g, nan=0.0, posinf=0.0, neginf=0.0)
            self.sanitized += count
        self._cache.clear()
        return count

    def clip_grad_norm_(
        self,
        params: Iterable[torch.Tensor] | None = None,
        max_norm: float | None = None,
        norm_type: float = 2.0,
        **kwargs: Any,
    ) -> torch.Tensor:
        """torch.nn.utils.clip_grad_norm_ that logs (pre-clip norm, max_norm) to `clip_log`.

        It takes its own pass over the gradients: the probes' end-of-backward norms cannot
        stand in for it, since a loop may change gradients in between through `.data`,
        which leaves no trace (no version-counter bump) to check."""
        if max_norm is None:
            raise TypeError("clip_grad_norm_() needs max_norm")
        chosen = self.params if params is None else list(params)
        # for grad_step, which reads it on observed cycles only: the clip's norm, to rescale
        # its backward-end norms instead of taking a pass of its own
        tracked = params is None and self.registry.observing
        before = grad_versions(chosen) if tracked else None
        norm = torch.nn.utils.clip_grad_norm_(chosen, max_norm, norm_type, **kwargs)
        kept = norm.detach() if norm.requires_grad else norm  # torch computes it without grad
        limit = max_norm.detach() if isinstance(max_norm, torch.Tensor) else float(max_norm)
        if not self._closed:
            self.clip_log.append((kept, limit))
        self.last_clip = None if before is None else (before, grad_versions(chosen), kept, limit)
        self._cache.clear()
        return norm

    def flush(self) -> None:
        """Turn probe accumulators into records now (normally automatic)."""
        if self._closed:
            return
        self._flushed_loss = self.n_loss
        self._flushed_opt = self.opt_step
        with self.writer.batched():
            for reason, (count, first, optimizer) in self._skip_log.items():
                self.writer.event(self.step, "step_skipped", reason=reason, count=count,
                                  first_step=first, optimizer=optimizer,
                                  total=self.skipped[reason])
            self._skip_log.clear()
            self.loss_weights.flush(self.step)
            self.observation.note_flush(self.registry.flush(self.step))
        if not self._optimizers_noted and self.opt_step:
            self._note_optimizers()
        if self.log_interval.update(self.n_loss):
            self.writer.event(self.step, "log_interval", every=self.log_interval.every)

    def _note_optimizers(self) -> None:
        """Manifest `optimizers`: class and kind of each, once all of them hold state."""
        described = [describe_optimizer(opt, stepped=steps > 0)
                     for opt, steps in zip(self.optimizers, self.opt_steps, strict=True)]
        self._optimizers_noted = all(self.opt_steps)
        self.writer.update_manifest(optimizers=described)

    def close(self, status: str = "completed") -> None:
        """Detach all hooks, flush the probes and finish the run (idempotent)."""
        if self._closed:
            return
        try:
            self._emit(Event.RUN_END, self.step, status=status)
            self.flush()
        finally:
            self._closed = True
            self._detach()
            self.writer.update_manifest(
                probes=self._describe_probes(), loss_terms=self.loss_weights.terms
            )
            self.writer.event(self.step, "run_end", status=status)
            self.writer.close(status)

    @property
    def closed(self) -> bool:
        return self._closed

    def __enter__(self) -> Workbench:
        return self

    def __exit__(self, exc_type: Any, exc: Any, tb: Any) -> bool:
        if exc_type is None:
            self.close("completed")
        else:
            try:
                self.close("crashed")
            except Exception:  # never mask the user's exception
                pass
        return False

    def __repr__(self) -> str:
        return f"Workbench({self.path}, step={self.step}, opt_step={self.opt_step})"

    # -- internals --------------------------------------------------------------------------

    def _describe_probes(self) -> list[dict[str, Any]]:
        described = []
        for probe in self.registry.probes:
            try:
                entry = dict(probe.describe())
            except Exception as error:  # a broken describe must not break the run
                entry = {"name": probe.name, "describe_error": repr(error)}
            if probe.name in self.registry.disabled:
                entry["disabled"] = self.registry.disabled[probe.name]
            described.append(entry)
        return described

