"""`riswb bench`: probe overhead over a plain loop, per probe and in total."""

from __future__ import annotations

from typing import Annotated

import typer
from rich.table import Table
from rich.text import Text

from riswb.commands.options import Format, check_format
from riswb.commands.output import console, echo_json
from riswb.errors import RiswbError


def bench_command(
    steps: Annotated[int, typer.Option(
        "--steps", help="Timed steps per variant per round (term-gradient samples are "
                        "pinned into each round and amortized over their real interval).")] = 50,
    rounds: Annotated[int, typer.Option("--rounds", help="Rounds (per-round spread).")] = 5,
    warmup: Annotated[int, typer.Option(
        "--warmup", help="Untimed steps per variant first (the term-gradient probe "
                         "calibrates in its first 10).")] = 20,
    threads: Annotated[int | None, typer.Option(
        "--threads", help="torch intra-op threads while measuring (default: torch's).")] = None,
    model: Annotated[
        str, typer.Option("--model", help="mlp|reference|tiny, or both (every one): "
                                           "which loop(s) to measure.")
    ] = "both",
    per_probe: Annotated[
        bool, typer.Option("--per-probe/--no-per-probe", help="Also time each probe alone.")
    ] = True,
    blocks: Annotated[int | None, typer.Option(
        "--blocks", help="Also time plain and default in alternating blocks of this many "
                         "steps, each loop alone (reads higher on a host-bound loop).")] = None,
    format: Format = "table",
) -> None:
    """Probe overhead over a plain loop, per probe and in total (budget 1.10×, target 1.05×;
    the host-bound `tiny` MLP 1.25×), with and without fail-fast checks, on a plain MLP and
    on the reference model, measured interleaved in one process."""
    # imported here: every other command starts without loading the reference pipeline
    from riswb.bench import BUDGET, FAIL_FAST, MODELS, TOTAL, run_bench

    format = check_format(format)
    if steps < 1 or rounds < 1 or warmup < 0:
        raise RiswbError(f"--steps and --rounds must be ≥ 1 and --warmup ≥ 0 "
                         f"(got {steps}, {rounds}, {warmup})")
    model = model.strip().lower()
    if model not in (*MODELS, "both"):
        raise RiswbError(f"unknown --model {model!r} (choose from {', '.join(MODELS)}, both)")
    models = list(MODELS) if model == "both" else [model]
    if threads is not None and threads < 1:
        raise RiswbError(f"--threads must be ≥ 1 (got {threads})")
    if blocks is not None and blocks < 1:
        raise RiswbError(f"--blocks must be ≥ 1 (got {blocks})")
    results = {name: run_bench(model=name, steps=steps, rounds=rounds, warmup=warmup,
                               per_probe=per_probe, threads=threads, blocks=blocks)
               for name in models}
    if format == "json":
        echo_json({"budget": BUDGET, "passed": all(r.passed for r in results.values()),
                   "models": {name: r.to_dict() for name, r in results.items()}})
        return
    def mark(ratio: float | None, budget: float) -> Text:
        if ratio is None:
            return Text("—")
        style = "green" if ratio <= 1.05 else "yellow" if ratio <= budget else "bold red"
        return Text(f"{ratio:.3f}×" + ("" if ratio <= budget else " OVER"), style=style)

    out = console()
    first = next(iter(results.values())).config
    table = Table(
        title=f"riswb bench: probe overhead vs a plain loop ({first['steps']} interleaved "
              f"steps per variant, summed; budget {BUDGET:.2f}× (tiny 1.25×), target 1.05×)",
        title_justify="left",
    )
    table.add_column("variant", no_wrap=True)
    for name in results:
        table.add_column(f"{name} ms/step", justify="right")
        table.add_column(f"{name} ratio", justify="right")
    table.add_row("plain", *[c for r in results.values() for c in (f"{r.plain_ms:.2f}", "1.000×")])
    table.add_row(Text("default (all)", style="bold"),
                  *[c for r in results.values() for c in (f"{r.ms[TOTAL]:.2f}",
                                                           mark(r.total_ratio, r.budget))])
    table.add_row(FAIL_FAST, *[c for r in results.values() for c in (
        f"{r.ms[FAIL_FAST]:.2f}" if FAIL_FAST in r.ms else "—",
        mark(r.fail_fast_ratio, r.budget))])
    probes = list(next(iter(results.values())).per_probe)
    for probe in probes:
        table.add_row(f"  {probe}", *[c for r in results.values() for c in (
            f"{r.ms[probe]:.2f}", mark(r.per_probe[probe], r.budget))])
    out.print(table)
    for name, r in results.items():
        c = r.config
        one_off = r.one_off_ms.get(TOTAL)
        if one_off is not None and r.plain_ms > 0:
            out.print(f"  {name}: of which one-off front-loaded term samples "
                      f"({c['term_grad_front']} per run, amortized over {c['run_length']} "
                      f"steps): {one_off:.3f} ms/step = {one_off / r.plain_ms:+.3f}×")
        verdict = Text("within" if r.passed else "OVER", style="green" if r.passed else "bold red")
        checked = ("" if r.fail_fast_ratio is None
                   else f", with fail-fast checks {r.fail_fast_ratio:.3f}×")
        out.print(Text.assemble(f"  {name} (batch {c['batch']}, {c['threads']} threads, "
                                f"{c['steps']} steps, term gradients every "
                                f"{c.get('term_grad_every')}): default "
                                f"probes {r.total_ratio:.3f}× the plain loop{checked}, ",
                                verdict, f" the {r.budget:.2f}× budget"))
        if r.blocks is not None:
            b = r.blocks
            out.print(f"  {name} in alternating blocks of {b.steps} steps ({b.rounds} pairs, "
                      f"each loop alone): plain {b.plain_ms:.2f} ms/step, default "
                      f"{b.probed_ms:.2f} ms/step = {b.ratio:.3f}×")
