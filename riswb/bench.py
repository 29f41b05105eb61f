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
(neither is timed). Each Workbench then keeps stepping, untimed, until it has chosen its
observation stride (riswb.instrument.observation: `CALIBRATED` cycles, when it holds a
sampled probe) and its log interval (riswb.instrument.log_interval: up to `FRONT` calls on
a fast loop; the early records' extra flushes, at most ~1 ms per 20 steps over 200 steps,
are left out); the cycles a run
observes in full beyond that stride (its first ones, and a calibration every `RECHECK`
cycles) are charged at their measured cost, spread over `run_length` steps, on a line of
their own.

Sampled work is counted at its true share however short the window: the term-gradient
probe samples one step in N (N ≈ 100–1000, chosen from its cost), more than a round holds.
For the timing the probe's interval is pinned to min(N, `steps`) (at least two turns; a
round is at least two turns), each timed turn is marked sampled or not by the probe's own
schedule (`_due`: its front-loaded steps too), and the mean step is
m + e/N + 12·e/`run_length`, m the mean step of the ordinary turns, e a sample's time less m
per step it held, 12 the one-off front-loaded samples of a run spread over `run_length`
(10k) steps — reported on their own line. Per-round ms/step (`raw_ms`) are raw.

Variants beyond the default set: "default+fail_fast" (`Workbench(check_every=50)`; its
checks cap themselves at 1% of the loop's own busy time, so over the timed window, after
the warm-up's first check, they may run less often than over a whole run: its long-run
cost is at most the default's + 0.01) and, with `model="tiny"`, a host-bound MLP
(plain CPU step under ~2 ms: Python per event dominates, as on a GPU; budget 1.25×).

The loop: a `depth`-layer GELU MLP of width `width` (default 4 × 512), batch 256, three loss
terms (mse, l1, l2 of the first layer), AdamW with two named param groups, a warm-up+cosine
LambdaLR, gradient clipping at 1.0 (torch's in the plain loop, `wb.clip_grad_norm_` in the
instrumented one: same work), scheduler stepped after each optimizer step.

`model="reference"` swaps the MLP for the reference pipeline: `CovarianceNet` of the
small preset (width `width`), `batch` simulated scenes, the twelve loss terms with
`losses.DEFAULT_WEIGHTS`, backbone/heads param groups, and the same schedule and clipping
(its per-step cost is dominated by the model and the spectral loss terms, so the ratio is
the overhead a user of the reference trainer pays).

`python -m riswb.bench [--model mlp|reference|tiny --steps N --rounds R --width W --batch B
--no-per-probe --no-fail-fast --run-length L --json]` prints a table; `run_bench(...)`
returns a `BenchResult`.
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

from riswb.bench_blocks import BlockTiming, block_ratio
from riswb.bench_sampling import StepTimes, calibration_share, pin_term_sampling, term_samples
from riswb.instrument import observation
from riswb.instrument.hooks import Probe
from riswb.instrument.workbench import Workbench
from riswb.probes.term_gradients import FRONT
from riswb.reference.losses import weighted_total
from riswb.reference.schedule import warmup_cosine

PLAIN = "plain"
TOTAL = "default"
FAIL_FAST = "default+fail_fast"
MODELS = ("mlp", "reference", "tiny")
# The host-bound case: an MLP small enough that its plain CPU step stays under ~2 ms, so
# that Python per event dominates as it does on a GPU; its own budget is 1.25×.
TINY = {"width": 64, "depth": 3, "batch": 32}
TINY_BUDGET = 1.25
RUN_LENGTH = 10_000  # steps over which one-off front-loaded term samples are amortized
FAIL_FAST_EVERY = 50  # Workbench(check_every=...) of the fail-fast variant
# optimizer-step cycles after which a Workbench has chosen its observation stride
CALIBRATED = observation.FRONT + 2 * observation.CALIBRATE
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
    # per variant: ms/step of the one-off front-loaded term samples over `run_length` steps
    # (included in `ms` and the ratios, reported on their own line)
    one_off_ms: dict[str, float] = field(default_factory=dict)
    # per variant: ms/step of the cycles observed in full beyond the chosen stride (the
    # first ones of a run, and the calibrations), included in `ms` and the ratios
    calibration_ms: dict[str, float] = field(default_factory=dict)
    fail_fast_ratio: float | None = None
    # `blocks`: the default probes against the plain loop in alternating blocks of steps
    blocks: BlockTiming | None = None

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)

    @property
    def budget(self) -> float:
        return TINY_BUDGET if self.config.get("model") == "tiny" else BUDGET

    @property
    def passed(self) -> bool:
        ratios = [self.total_ratio]
        if self.fail_fast_ratio is not None:
            ratios.append(self.fail_fast_ratio)
        return max(ratios) <= self.budget


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


def _settled(wb: Workbench) -> bool:
    """Whether the Workbench has chosen its observation stride (when it holds a sampled
    probe) and its log interval: what the timed window should see is the steady state."""
    observed = (wb.observation.fixed or wb.observation.cycle >= CALIBRATED
                or not any(probe.sampled for probe in wb.registry.probes))
    return observed and wb.log_interval.settled(wb.n_loss)


def _sync(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def run_bench(
    *,
    model: str = "mlp",
    width: int | None = None,
    depth: int | None = None,
    batch: int | None = None,
    steps: int = 50,
    rounds: int = 5,
    warmup: int = 20,
    per_probe: bool = True,
    fail_fast: bool = True,
    run_length: int = RUN_LENGTH,
    log_every: int | None = None,
    device: str | torch.device = "cpu",
    seed: int = 0,
    threads: int | None = None,
    clock: str = "wall",
    blocks: int | None = None,
    progress: Callable[[str], None] | None = None,
) -> BenchResult:
    """Measure the default probes' (and each built-in's) overhead over a plain loop.

    `clock`: "wall" (perf_counter) or "cpu" (this process's CPU time: steadier on a shared
    machine, meaningful on CPU only, best with threads=1). `threads`: torch intra-op
    threads for the run (restored afterwards). `model`: "mlp" (the plain MLP loop),
    "reference" (the reference pipeline, see the module docstring) or "tiny" (the
    host-bound MLP, `TINY`). `width`/`depth`/`batch`: default 512/4/256 for the MLP, `TINY`
    for the tiny one, width 512 and `REFERENCE_BATCH` scenes for the reference model.
    `fail_fast`: also time the default probes with `Workbench(check_every=50)`.
    `run_length`: the run over which the one-off front-loaded term samples are amortized.
    `blocks`: also time the plain and default variants in `rounds` pairs of alternating
    blocks of that many steps (riswb.bench_blocks), after the interleaved rounds."""
    if clock not in ("wall", "cpu"):
        raise ValueError(f"clock must be 'wall' or 'cpu', got {clock!r}")
    if model not in MODELS:
        raise ValueError(f"model must be one of {', '.join(MODELS)}, got {model!r}")
    sizes = TINY if model == "tiny" else {
        "width": 512, "depth": 4, "batch": 256 if model == "mlp" else REFERENCE_BATCH}
    width = sizes["width"] if width is None else width
    depth = sizes["depth"] if depth is None else depth
    batch = sizes["batch"] if batch is None else batch
    if run_length < 1:
        raise ValueError(f"run_length must be >= 1, got {run_length}")
    saved_threads = torch.get_num_threads()
    if threads is not None:
        torch.set_num_threads(threads)
    try:
        return _measure(
            model=model, width=width, depth=depth, batch=batch, steps=steps, rounds=rounds,
            warmup=warmup, per_probe=per_probe, fail_fast=fail_fast, run_length=run_length,
            log_every=log_every, device=torch.device(device), seed=seed, clock=clock,
            blocks=blocks, progress=progress,
        )
    finally:
        torch.set_num_threads(saved_threads)


def _measure(
    *, model: str, width: int, depth: int, batch: int, steps: int, rounds: int, warmup: int,
    per_probe: bool, fail_fast: bool, run_length: int, log_every: int, device: torch.device,
    seed: int, clock: str, blocks: int | None, progress: Callable[[str], None] | None,
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
    options: dict[str, dict[str, Any]] = {}
    if fail_fast:  # the checks' findings are not the point here: acted on by a no-op
        factories[FAIL_FAST] = default_probes
        options[FAIL_FAST] = {"check_every": FAIL_FAST_EVERY, "on_finding": lambda _: None}
    if per_probe:
        for (module, _), cls in zip(BUILTIN, builtin_probe_classes(), strict=True):
            factories[module] = (lambda cls=cls: [cls()])
    setups = {name: make_setup() for name in factories}
    raw: dict[str, list[float]] = {name: [] for name in factories}
    turn = 1 if device.type == "cpu" else ACCELERATOR_TURN
    steps = max(-(-steps // turn), 2) * turn  # ≥ 2 turns: a round always has ordinary ones
    window = rounds * steps
    timing = {name: StepTimes() for name in factories}
    order = list(factories)
    interval: int | None = None
    timed: BlockTiming | None = None

    with tempfile.TemporaryDirectory(prefix="riswb-bench-") as runs_dir:
        benches: dict[str, Workbench | None] = {}
        try:
            for name, factory in factories.items():  # steady state: one Workbench each
                setup = setups[name]
                wb = None
                if factory is not None:
                    wb = Workbench(setup.model, setup.optimizer, setup.scheduler,
                                   runs_dir=runs_dir, name=f"bench-{name}", probes=factory(),
                                   log_every=log_every, **options.get(name, {}))
                benches[name] = wb
                step = _plain_step if wb is None else _wb_step
                for _ in range(warmup):
                    step(setup, wb)
                while wb is not None and not _settled(wb):
                    step(setup, wb)
            probes = {name: wb and wb.registry.get("term_gradients")
                      for name, wb in benches.items()}
            sampled = {name: pin_term_sampling(probe, steps, turn)
                       for name, probe in probes.items()}
            interval = sampled[TOTAL][1] if sampled.get(TOTAL) else None
            for r in range(rounds):
                spent = dict.fromkeys(order, 0.0)
                for i in range(steps // turn):
                    shift = (r * steps // turn + i) % len(order)
                    for name in order[shift:] + order[:shift]:
                        setup, wb = setups[name], benches[name]
                        step = _plain_step if wb is None else _wb_step
                        hits = term_samples(probes[name], wb, turn)
                        _sync(device)
                        start = timer()
                        for _ in range(turn):
                            step(setup, wb)
                        _sync(device)
                        elapsed = timer() - start
                        spent[name] += elapsed
                        timing[name].add(elapsed, hits, turn)
                for name in order:
                    raw[name].append(1e3 * spent[name] / steps)
                if progress is not None:
                    progress(f"round {r + 1}/{rounds}: plain {raw[PLAIN][-1]:.2f} ms/step, "
                             f"default {raw[TOTAL][-1]:.2f} ms/step")
            if blocks:  # the term probe samples at its own interval again
                if sampled.get(TOTAL):
                    probes[TOTAL].interval = sampled[TOTAL][1]
                timed = block_ratio(
                    lambda: _plain_step(setups[PLAIN]),
                    lambda: _wb_step(setups[TOTAL], benches[TOTAL]),
                    steps=blocks, rounds=rounds, timer=timer, sync=lambda: _sync(device))
        finally:
            for wb in benches.values():
                if wb is not None:
                    wb.close()

    # steady state: one sample per chosen interval (none if the probe never chose one);
    # plus the one-off front-loaded samples, spread over `run_length` steps
    per_step, one_off, calibrating = {}, {}, {}
    for name in factories:
        chosen = sampled[name][1] if sampled.get(name) else None
        steady = timing[name].amortized(chosen)
        one_off[name] = 1e3 * len(FRONT) * timing[name].extra() / run_length
        calibrating[name] = 1e3 * calibration_share(benches[name], run_length)
        per_step[name] = 1e3 * steady + one_off[name] + calibrating[name]

    def ratio(name: str) -> float:
        return per_step[name] / per_step[PLAIN] if per_step[PLAIN] > 0 else float("nan")

    benches_stride = {name: wb.observation.stride for name, wb in benches.items()
                      if wb is not None}.get(TOTAL)
    config = {"model": model, "width": width, "depth": depth, "batch": batch, "steps": window,
              "rounds": rounds, "steps_per_turn": turn, "term_grad_every": interval,
              "term_grad_samples_timed": timing[TOTAL].samples,
              "term_grad_front": len(FRONT), "run_length": run_length,
              "warmup": warmup, "log_every": log_every,
              "observe_stride": benches_stride, "device": str(device), "clock": clock,
              "threads": torch.get_num_threads(), "torch": torch.__version__,
              "probes": [m for m, _ in BUILTIN]}
    return BenchResult(
        config=config,
        plain_ms=per_step[PLAIN],
        total_ratio=ratio(TOTAL),
        per_probe={name: ratio(name) for name in factories
                   if name not in (PLAIN, TOTAL, FAIL_FAST)},
        ms=per_step,
        raw_ms=raw,
        one_off_ms={name: value for name, value in one_off.items() if probes[name]},
        calibration_ms={name: value for name, value in calibrating.items() if value},
        fail_fast_ratio=ratio(FAIL_FAST) if fail_fast else None,
        blocks=timed,
    )


def format_table(result: BenchResult) -> str:
    """A plain-text table: variant, mean ms/step (samples amortized), ratio to plain; then
    the one-off front-loaded term samples' share on its own line, and the verdict."""
    c = result.config
    what = {"reference": f"reference CovarianceNet (small, width {c['width']}, 12 loss terms)",
            "tiny": f"host-bound MLP {c['depth']}x{c['width']}"}.get(
        c.get("model"), f"MLP {c['depth']}x{c['width']}")
    lines = [
        f"riswb bench: {what}, batch {c['batch']}, {c['steps']} interleaved steps per "
        f"variant ({c['rounds']} rounds; term gradients every {c.get('term_grad_every')}), "
        f"{c['device']} ({c['threads']} threads), log_every {c['log_every']}, "
        f"{c['clock']} clock; sampled probes observe one cycle in {c['observe_stride']}",
        f"{'variant':<20}{'ms/step':>10}{'ratio':>9}",
        f"{PLAIN:<20}{result.plain_ms:>10.2f}{1.0:>9.3f}",
        f"{'default (all)':<20}{result.ms[TOTAL]:>10.2f}{result.total_ratio:>9.3f}",
    ]
    if result.fail_fast_ratio is not None:
        lines.append(f"{FAIL_FAST:<20}{result.ms[FAIL_FAST]:>10.2f}"
                     f"{result.fail_fast_ratio:>9.3f}")
    for name, value in result.per_probe.items():
        lines.append(f"{'  ' + name:<20}{result.ms[name]:>10.2f}{value:>9.3f}")
    one_off = result.one_off_ms.get(TOTAL)
    if one_off is not None and result.plain_ms > 0:
        lines.append(f"  of which one-off front-loaded term samples ({c['term_grad_front']} "
                     f"per run, amortized over {c['run_length']} steps): {one_off:.3f} ms/step "
                     f"= {one_off / result.plain_ms:+.3f}x")
    calibrating = result.calibration_ms.get(TOTAL)
    if calibrating and result.plain_ms > 0:
        lines.append(f"  of which cycles observed in full beyond the stride "
                     f"({c['observe_stride']}: a run's first ones and the calibrations, over "
                     f"{c['run_length']} steps): {calibrating:.3f} ms/step = "
                     f"{calibrating / result.plain_ms:+.3f}x")
    timed = result.blocks
    if timed is not None:
        lines.append(f"in alternating blocks of {timed.steps} steps ({timed.rounds} pairs; each "
                     f"loop alone, its own code warm): plain {timed.plain_ms:.2f} ms/step, "
                     f"default {timed.probed_ms:.2f} ms/step = {timed.ratio:.3f}x")
    verdict = "within" if result.passed else "OVER"
    target = "" if c.get("model") == "tiny" else "; target 1.05x"
    checked = ("" if result.fail_fast_ratio is None
               else f", with fail-fast checks {result.fail_fast_ratio:.3f}x")
    lines.append(f"default probes: {result.total_ratio:.3f}x the plain loop{checked} "
                 f"({verdict} the {result.budget:.2f}x budget{target})")
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m riswb.bench", description=__doc__.split(
        "\n")[0])
    parser.add_argument("--steps", type=int, default=50)
    parser.add_argument("--warmup", type=int, default=20)
    parser.add_argument("--rounds", type=int, default=5)
    parser.add_argument("--width", type=int, default=None)
    parser.add_argument("--depth", type=int, default=None)
    parser.add_argument("--batch", type=int, default=None)
    parser.add_argument("--model", choices=MODELS, default="mlp")
    parser.add_argument("--log-every", type=int, default=None)
    parser.add_argument("--device", default="cpu")
    parser.add_argument("--threads", type=int, default=None)
    parser.add_argument("--clock", choices=("wall", "cpu"), default="wall")
    parser.add_argument("--no-per-probe", action="store_true")
    parser.add_argument("--no-fail-fast", action="store_true")
    parser.add_argument("--run-length", type=int, default=RUN_LENGTH)
    parser.add_argument("--blocks", type=int, default=None, metavar="STEPS",
                        help="also time plain and default in alternating blocks of STEPS steps")
    parser.add_argument("--json", action="store_true")
    args = parser.parse_args(argv)
    result = run_bench(model=args.model, steps=args.steps, rounds=args.rounds, warmup=args.warmup,
                       width=args.width, depth=args.depth, batch=args.batch,
                       log_every=args.log_every, device=args.device,
                       per_probe=not args.no_per_probe, fail_fast=not args.no_fail_fast,
                       run_length=args.run_length, threads=args.threads, clock=args.clock,
                       blocks=args.blocks,
                       progress=None if args.json else (lambda m: print(m, flush=True)))
    print(json.dumps(result.to_dict(), indent=2) if args.json else format_table(result))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
