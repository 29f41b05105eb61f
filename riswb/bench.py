"""Probe overhead benchmark (docs/design.md §10: default probes ≤ 1.10× a plain loop, target 1.05×).

One process, interleaved step by step: the variants — the plain loop, the same loop under a
Workbench with the default probes (`riswb.probes.default_probes()`), and, with
`per_probe=True`, under a Workbench holding one built-in probe alone — take turns, in an
order rotated every turn, each turn timed on its own: one training step on a CPU; on an
accelerator `ACCELERATOR_TURN` steps between two device syncs, so device work is counted
and the host still runs ahead of the device as it does in training. A variant's ratio is
its mean step time over the plain loop's, over the `rounds` × `steps` timed steps.
Interleaving single steps cancels the drift of a shared machine far better than timing
blocks of steps (docs/benchmarks.md has the spreads of both). Each variant owns a copy of
the same model, optimizer and scheduler and one Workbench for the whole benchmark, warmed
up for `warmup` consecutive steps first — which is when the term-gradient probe calibrates
its sampling interval N on the variant's real step time — and closed after the last
(neither is timed).

Sampled work is counted at its true share however short the window: the term-gradient
probe samples one step in N (N ≈ 100–1000, chosen from its cost), more than a round holds.
For the timing the probe's interval is pinned to min(N, `steps`) (at least two turns; a
round is at least two turns), each timed turn is marked sampled or not, and the mean step is
m + e/N, m the mean step of the ordinary turns and e a sampled turn's time less m per step
it held — the mean of an endless run with the real N. Per-round ms/step (`raw_ms`) are raw.

The loop: a `depth`-layer GELU MLP of width `width` (default 4 × 512), batch 256, three loss
terms (mse, l1, l2 of the first layer), AdamW with two named param groups, a warm-up+cosine
LambdaLR, gradient clipping at 1.0 (torch's in the plain loop, `wb.clip_grad_norm_` in the
instrumented one: same work), scheduler stepped after each optimizer step.

`model="reference"` swaps the MLP for the reference pipeline: `CovarianceNet` of the
small preset (width `width`), `batch` simulated scenes, the twelve loss terms with
`losses.DEFAULT_WEIGHTS`, backbone/heads param groups, and the same schedule and clipping
(its per-step cost is dominated by the model and the spectral loss terms, so the ratio is
the overhead a user of the reference trainer pays).

`python -m riswb.bench [--model mlp|reference --steps N --rounds R --width W --batch B
--no-per-probe --json]` prints a table; `run_bench(...)` returns a `BenchResult`.
"""

from __future__ import annotations

import argparse
import copy
import json
import tempfile
import time
from collections.abc import Callable
from dataclasses import asdict, dataclass, field
from typing import Any

import torch

from riswb.instrument.hooks import Probe
from riswb.instrument.workbench import DEFAULT_LOG_EVERY, Workbench
from riswb.reference.losses import weighted_total
from riswb.reference.schedule import warmup_cosine

PLAIN = "plain"
TOTAL = "default"
MODELS = ("mlp", "reference")
BUDGET = 1.10  # docs/design.md §10: default probes ≤ 1.10× a plain loop (target 1.05×)
REFERENCE_BATCH = 32  # the reference model's default batch (`batch=None`)
# Steps per turn on an accelerator: synchronising around every single step would expose all
# host work that a real loop overlaps with the device's; ten steps between syncs keep it
# overlapped, as in training, while the variants still alternate often.
ACCELERATOR_TURN = 10


@dataclass
class BenchResult:
    """Mean ms/step per variant over the timed window and its ratio to the plain loop's."""

    config: dict[str, Any]
    plain_ms: float
    total_ratio: float
    per_probe: dict[str, float] = field(default_factory=dict)
    ms: dict[str, float] = field(default_factory=dict)
    raw_ms: dict[str, list[float]] = field(default_factory=dict)

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)

    @property
    def passed(self) -> bool:
        return self.total_ratio <= BUDGET


class _Setup:
    """One variant's model, optimizer, scheduler and data (identical across variants)."""

    def __init__(self, base: torch.nn.Module, x: torch.Tensor, y: torch.Tensor, lr: float):
        self.model = copy.deepcopy(base)
        first = [p for n, p in self.model.named_parameters() if n.startswith("0.")]
        rest = [p for n, p in self.model.named_parameters() if not n.startswith("0.")]
        self.optimizer = torch.optim.AdamW(
            [{"params": first, "name": "input"}, {"params": rest, "name": "body"}], lr=lr
        )
        self.scheduler = warmup_cosine(self.optimizer, warmup_steps=50, total_steps=100_000,
                                       start_factor=0.1, floor=0.0)
        self.x, self.y = x, y
        self.first_weight = self.model[0].weight
        self.params = list(self.model.parameters())

    def terms(self) -> dict[str, torch.Tensor]:
        out = self.model(self.x)
        return {
            "mse": (out - self.y).square().mean(),
            "l1": out.abs().mean(),
            "l2": self.first_weight.square().sum(),
        }


WEIGHTS = {"mse": 1.0, "l1": 0.1, "l2": 1e-4}


_Setup.weights = WEIGHTS


class _ReferenceSetup(_Setup):
    """The reference pipeline as one variant: CovarianceNet, the twelve loss terms, AdamW
    with backbone/heads groups (as `Trainer.param_groups`), the same schedule as `_Setup`."""

    def __init__(self, base: torch.nn.Module, scenes: Any, lr: float):
        from riswb.reference.losses import DEFAULT_WEIGHTS
        from riswb.reference.model import backbone_and_heads

        self.model = copy.deepcopy(base)
        backbone, heads = backbone_and_heads(self.model)
        self.optimizer = torch.optim.AdamW(
            [{"params": backbone, "name": "backbone"}, {"params": heads, "name": "heads"}], lr=lr
        )
        self.scheduler = warmup_cosine(self.optimizer, warmup_steps=50, total_steps=100_000,
                                       start_factor=0.1, floor=0.0)
        self.scenes = scenes
        self.params = list(self.model.parameters())
        self.weights = dict(DEFAULT_WEIGHTS)

    def terms(self) -> dict[str, torch.Tensor]:
        from riswb.reference.losses import loss_terms

        return loss_terms(self.model(self.scenes.y), self.scenes, self.model.preset)


def _plain_step(s: _Setup, wb: Any = None) -> None:
    loss = weighted_total(s.terms(), s.weights)
    s.optimizer.zero_grad(set_to_none=True)
    loss.backward()
    torch.nn.utils.clip_grad_norm_(s.params, 1.0)
    s.optimizer.step()
    s.scheduler.step()


def _wb_step(s: _Setup, wb: Workbench) -> None:
    loss = wb.loss(s.terms(), s.weights)
    s.optimizer.zero_grad(set_to_none=True)
    loss.backward()
    wb.clip_grad_norm_(max_norm=1.0)
    s.optimizer.step()
    s.scheduler.step()


def _sync(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def run_bench(
    *,
    model: str = "mlp",
    width: int = 512,
    depth: int = 4,
    batch: int | None = None,
    steps: int = 50,
    rounds: int = 5,
    warmup: int = 20,
    per_probe: bool = True,
    log_every: int = DEFAULT_LOG_EVERY,
    device: str | torch.device = "cpu",
    seed: int = 0,
    threads: int | None = None,
    clock: str = "wall",
    progress: Callable[[str], None] | None = None,
) -> BenchResult:
    """Measure the default probes' (and each built-in's) overhead over a plain loop.

    `clock`: "wall" (perf_counter) or "cpu" (this process's CPU time: steadier on a shared
    machine, meaningful on CPU only, best with threads=1). `threads`: torch intra-op
    threads for the run (restored afterwards). `model`: "mlp" (the plain MLP loop) or
    "reference" (the reference pipeline, see the module docstring). `batch`: default 256
    for the MLP, `REFERENCE_BATCH` scenes for the reference model."""
    if clock not in ("wall", "cpu"):
        raise ValueError(f"clock must be 'wall' or 'cpu', got {clock!r}")
    if model not in MODELS:
        raise ValueError(f"model must be one of {', '.join(MODELS)}, got {model!r}")
    if batch is None:
        batch = 256 if model == "mlp" else REFERENCE_BATCH
    saved_threads = torch.get_num_threads()
    if threads is not None:
        torch.set_num_threads(threads)
    try:
        return _measure(
            model=model, width=width, depth=depth, batch=batch, steps=steps, rounds=rounds,
            warmup=warmup,
            per_probe=per_probe, log_every=log_every, device=torch.device(device), seed=seed,
            clock=clock, progress=progress,
        )
    finally:
        torch.set_num_threads(saved_threads)


def _measure(
    *, model: str, width: int, depth: int, batch: int, steps: int, rounds: int, warmup: int,
    per_probe: bool, log_every: int, device: torch.device, seed: int, clock: str,
    progress: Callable[[str], None] | None,
) -> BenchResult:
    from riswb.probes import BUILTIN, builtin_probe_classes, default_probes

    timer = time.perf_counter if clock == "wall" else time.process_time
    gen = torch.Generator().manual_seed(seed)
    layers: list[torch.nn.Module] = []
    width_in = width // 2
    dims = [width_in] + [width] * (depth - 1) + [64]
    for i in range(depth):
        layers.append(torch.nn.Linear(dims[i], dims[i + 1]))
        if i < depth - 1:
            layers.append(torch.nn.GELU())
    torch.manual_seed(seed)
    if model == "reference":
        from riswb.reference.data import scene_dataset
        from riswb.reference.model import CovarianceNet

        base = CovarianceNet("small", width=width).to(device)
        scenes = scene_dataset("small", batch, seed).to(device)

        def make_setup() -> _Setup:
            return _ReferenceSetup(base, scenes, lr=1e-3)
    else:
        base = torch.nn.Sequential(*layers).to(device)
        x = torch.randn(batch, width_in, generator=gen).to(device)
        y = torch.randn(batch, 64, generator=gen).to(device)

        def make_setup() -> _Setup:
            return _Setup(base, x, y, lr=1e-3)

    factories: dict[str, Callable[[], list[Probe]] | None] = {PLAIN: None, TOTAL: default_probes}
    if per_probe:
        for (module, _), cls in zip(BUILTIN, builtin_probe_classes(), strict=True):
            factories[module] = (lambda cls=cls: [cls()])
    setups = {name: make_setup() for name in factories}
    raw: dict[str, list[float]] = {name: [] for name in factories}
    turn = 1 if device.type == "cpu" else ACCELERATOR_TURN
    steps = max(-(-steps // turn), 2) * turn  # ≥ 2 turns: a round always has ordinary ones
    window = rounds * steps
    timing = {name: _StepTimes() for name in factories}
    order = list(factories)
    interval: int | None = None

    with tempfile.TemporaryDirectory(prefix="riswb-bench-") as runs_dir:
        benches: dict[str, Workbench | None] = {}
        try:
            for name, factory in factories.items():  # steady state: one Workbench each
                setup = setups[name]
                wb = None
                if factory is not None:
                    wb = Workbench(setup.model, setup.optimizer, setup.scheduler,
                                   runs_dir=runs_dir, name=f"bench-{name}", probes=factory(),
                                   log_every=log_every)
                benches[name] = wb
                step = _plain_step if wb is None else _wb_step
                for _ in range(warmup):
                    step(setup, wb)
            sampled = {name: _pin_term_sampling(wb, steps, turn)
                       for name, wb in benches.items()}
            interval = sampled[TOTAL][1] if sampled.get(TOTAL) else None
            for r in range(rounds):
                spent = dict.fromkeys(order, 0.0)
                for i in range(steps // turn):
                    shift = (r * steps // turn + i) % len(order)
                    for name in order[shift:] + order[:shift]:
                        setup, wb = setups[name], benches[name]
                        step = _plain_step if wb is None else _wb_step
                        pinned = sampled[name]
                        hit = pinned is not None and any(
                            (wb.next_step + k) % pinned[0] == 0 for k in range(turn))
                        _sync(device)
                        start = timer()
                        for _ in range(turn):
                            step(setup, wb)
                        _sync(device)
                        elapsed = timer() - start
                        spent[name] += elapsed
                        timing[name].add(elapsed, hit, turn)
                for name in order:
                    raw[name].append(1e3 * spent[name] / steps)
                if progress is not None:
                    progress(f"round {r + 1}/{rounds}: plain {raw[PLAIN][-1]:.2f} ms/step, "
                             f"default {raw[TOTAL][-1]:.2f} ms/step")
        finally:
            for wb in benches.values():
                if wb is not None:
                    wb.close()

    per_step = {name: 1e3 * timing[name].amortized((sampled.get(name) or (0, 1))[1])
                for name in factories}

    def ratio(name: str) -> float:
        return per_step[name] / per_step[PLAIN] if per_step[PLAIN] > 0 else float("nan")

    config = {"model": model, "width": width, "depth": depth, "batch": batch, "steps": window,
              "rounds": rounds, "steps_per_turn": turn, "term_grad_every": interval,
              "term_grad_samples_timed": timing[TOTAL].samples,
              "warmup": warmup, "log_every": log_every, "device": str(device), "clock": clock,
              "threads": torch.get_num_threads(), "torch": torch.__version__,
              "probes": [m for m, _ in BUILTIN]}
    return BenchResult(
        config=config,
        plain_ms=per_step[PLAIN],
        total_ratio=ratio(TOTAL),
        per_probe={name: ratio(name) for name in factories if name not in (PLAIN, TOTAL)},
        ms=per_step,
        raw_ms=raw,
    )


class _StepTimes:
    """One variant's timed turns (of one or more steps), split by whether a turn held a
    term-gradient sample (at most one: intervals are never shorter than a turn)."""

    def __init__(self) -> None:
        self.other = self.sampled = 0.0
        self.other_steps = self.sampled_steps = self.samples = 0

    def add(self, seconds: float, sampled: bool, steps: int = 1) -> None:
        if sampled:
            self.sampled += seconds
            self.sampled_steps += steps
            self.samples += 1
        else:
            self.other += seconds
            self.other_steps += steps

    def amortized(self, interval: int) -> float:
        """Seconds per step when one step in `interval` samples: m + e/interval, with m the
        mean ordinary step and e a sample's extra time (a sampled turn's time less m per
        step it held) — exactly Σt/n when the window holds one sample per `interval` steps."""
        if not self.other_steps:
            return self.sampled / max(self.sampled_steps, 1)
        ordinary = self.other / self.other_steps
        if not self.samples:
            return ordinary
        extra = (self.sampled - ordinary * self.sampled_steps) / self.samples
        return ordinary + extra / interval


def _pin_term_sampling(wb: Workbench | None, steps: int, turn: int) -> tuple[int, int] | None:
    """(interval used while timing, interval the probe chose) for a variant whose
    term-gradient probe has settled on one, else None. An interval longer than a round is
    pinned to the round length (every round then times one sample, whose extra cost is
    amortized over the real interval); a shorter one is left alone; never under two turns,
    so that ordinary turns are timed too and no turn holds two samples."""
    probe = None if wb is None else wb.registry.get("term_gradients")
    chosen = getattr(probe, "interval", None)
    if not chosen:
        return None
    used = max(min(int(chosen), steps), 2 * turn)
    probe.interval = used
    return used, int(chosen)


def format_table(result: BenchResult) -> str:
    """A plain-text table: variant, mean ms/step (samples amortized), ratio to plain."""
    c = result.config
    what = (f"reference CovarianceNet (small, width {c['width']}, 12 loss terms)"
            if c.get("model") == "reference" else f"MLP {c['depth']}x{c['width']}")
    lines = [
        f"riswb bench: {what}, batch {c['batch']}, {c['steps']} interleaved steps per "
        f"variant ({c['rounds']} rounds; term gradients every {c.get('term_grad_every')}), "
        f"{c['device']} ({c['threads']} threads), log_every {c['log_every']}, "
        f"{c['clock']} clock",
        f"{'variant':<18}{'ms/step':>10}{'ratio':>9}",
        f"{PLAIN:<18}{result.plain_ms:>10.2f}{1.0:>9.3f}",
        f"{'default (all)':<18}{result.ms[TOTAL]:>10.2f}{result.total_ratio:>9.3f}",
    ]
    for name, value in result.per_probe.items():
        lines.append(f"{'  ' + name:<18}{result.ms[name]:>10.2f}{value:>9.3f}")
    verdict = "within" if result.passed else "OVER"
    lines.append(f"default probes: {result.total_ratio:.3f}x the plain loop ({verdict} the 1.10x "
                 "budget; target 1.05x)")
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m riswb.bench", description=__doc__.split(
        "\n")[0])
    parser.add_argument("--steps", type=int, default=50)
    parser.add_argument("--warmup", type=int, default=20)
    parser.add_argument("--rounds", type=int, default=5)
    parser.add_argument("--width", type=int, default=512)
    parser.add_argument("--depth", type=int, default=4)
    parser.add_argument("--batch", type=int, default=None)
    parser.add_argument("--model", choices=MODELS, default="mlp")
    parser.add_argument("--log-every", type=int, default=DEFAULT_LOG_EVERY)
    parser.add_argument("--device", default="cpu")
    parser.add_argument("--threads", type=int, default=None)
    parser.add_argument("--clock", choices=("wall", "cpu"), default="wall")
    parser.add_argument("--no-per-probe", action="store_true")
    parser.add_argument("--json", action="store_true")
    args = parser.parse_args(argv)
    result = run_bench(model=args.model, steps=args.steps, rounds=args.rounds, warmup=args.warmup,
                       width=args.width, depth=args.depth, batch=args.batch,
                       log_every=args.log_every, device=args.device,
                       per_probe=not args.no_per_probe, threads=args.threads, clock=args.clock,
                       progress=None if args.json else (lambda m: print(m, flush=True)))
    print(json.dumps(result.to_dict(), indent=2) if args.json else format_table(result))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
