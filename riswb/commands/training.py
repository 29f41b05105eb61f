"""`riswb overfit` and `riswb train`: run the reference trainer with a live progress bar,
then judge the run with the gate ("params move and loss drops").

Numeric options arrive as text and are checked here against the config's rules
(riswb/reference/config.py, RULES), so that `--samples 2.5` or `--seed -1` is the CLI's
one-line error (exit 2) naming the option, like a bad value in a config file.
"""

from __future__ import annotations

import math
from pathlib import Path
from typing import Annotated

import typer
from rich.console import Console
from rich.progress import BarColumn, Progress, TextColumn, TimeElapsedColumn, TimeRemainingColumn
from rich.table import Table

from riswb.commands.options import Format, check_format
from riswb.diagnose.gate import gate
from riswb.errors import RiswbError
from riswb.instrument.fail_fast import FailFastProbe, FindingError
from riswb.jsonsafe import dumps
from riswb.reference.config import TrainConfig, check_field
from riswb.runlog import read_run, resolve_run


def _plugins_dir(probes_dir: Path | None) -> Path | None:
    """--probes DIR, else ./probes when it exists (like pytest's conftest.py)."""
    if probes_dir is not None:
        return probes_dir
    return Path("probes") if Path("probes").is_dir() else None


def _int_option(option: str, text: str | None, field: str) -> int | None:
    """The integer that `option` (setting config field `field`) was given; None if absent."""
    if text is None:
        return None
    try:
        value: int | str = int(text.strip())
    except ValueError:
        value = text  # not an integer: check_field names the option and what it must be
    problem = check_field(field, value, label=option)
    if problem:
        raise RiswbError(problem)
    return value


def _run_with_progress(config: TrainConfig, *, resume: Path | None, force: bool = False,
                       runs_dir: Path | None, probes_dir: Path | None, quiet: bool,
                       fail_fast: bool = False):
    from riswb.reference.faults import build_trainer

    console = Console(stderr=True, quiet=quiet)
    columns = (TextColumn("[bold]{task.description}"), BarColumn(),
               TextColumn("{task.completed}/{task.total} steps"),
               TextColumn("loss {task.fields[loss]}"), TextColumn("nmse {task.fields[nmse]}"),
               TimeElapsedColumn(), TextColumn("ETA"), TimeRemainingColumn())
    # transient: a bar left on screen would stand between the user and an error line
    with Progress(*columns, console=console, transient=True) as bar:
        task = None

        def progress(kind: str, info: dict) -> None:
            if kind == "step":
                bar.update(task, advance=1)
                if bar.tasks[task].completed % 10 == 0:  # a host sync only every 10 steps
                    bar.update(task, loss=f"{float(info['loss'].detach()):.4g}")
            else:
                bar.update(task, nmse=f"{info['nmse']:.4f}")

        probes = ["default", FailFastProbe(check_every=config.log_every)] if fail_fast \
            else "default"
        trainer = build_trainer(config, runs_dir=runs_dir, resume=resume, force_resume=force,
                                progress=progress, plugins=_plugins_dir(probes_dir),
                                probes=probes)
        total = config.epochs * trainer.steps_per_epoch
        task = bar.add_task(config.name, total=total, loss="-", nmse="-",
                            completed=trainer.epoch * trainer.steps_per_epoch)
        return trainer.run()


def _verdict(result, verdict, fmt: str) -> None:
    final = result.final
    terms = [c for c in read_run(result.path).kind("loss").columns if c not in ("step", "total")]
    if fmt == "json":
        print(dumps({"run": str(result.path), "seconds": round(result.seconds, 2),
                     "final": final, "loss_terms": terms, "gate": verdict.to_dict()}))
        return
    console = Console()
    table = Table(title=f"verdict: {result.path.name}", show_lines=False)
    table.add_column("check")
    table.add_column("value")
    table.add_column("status")
    for check in verdict.checks:
        table.add_row(check.name, check.detail, "[green]PASS" if check.passed else "[red]FAIL")
    if "nmse" in final:
        table.add_row("nmse (validation)", f"{final['nmse']:.4f}", "")
        table.add_row("nmse of R_samp (baseline)", f"{result.baseline_nmse:.4f}", "")
    table.add_row("loss terms logged", f"{len(terms)}: {', '.join(terms)}", "")
    table.add_row("time", f"{result.seconds:.1f} s", "")
    console.print(table)
    console.print(("[green]PASSED" if verdict.passed else "[red]FAILED") +
                  f"[/] — riswb report {result.path}")


RunsDir = Annotated[Path | None, typer.Option(
    help="Where runs go (default $RISWB_RUNS_DIR or ./runs).")]
ProbesDir = Annotated[Path | None, typer.Option(
    help="Plugin probe folder (default ./probes if present).")]
FailFast = Annotated[bool, typer.Option(
    "--fail-fast", help="Stop at the first error finding (checked at each log flush); exit 1.")]


def _train_or_stop(config: TrainConfig, **kwargs):
    """Train with a progress bar; a fail-fast stop is one line on stderr and exit 1."""
    try:
        return _run_with_progress(config, **kwargs)
    except FindingError as stop:
        typer.echo(f"riswb: fail-fast: {stop}", err=True)
        raise typer.Exit(1) from None


def overfit_command(
    samples: Annotated[str, typer.Option(
        metavar="INTEGER", help="Scenes to memorize (train = validation).")] = "512",
    epochs: Annotated[str | None, typer.Option(
        metavar="INTEGER", help="Epochs (default: the overfit recipe's).")] = None,
    preset: Annotated[str, typer.Option(help="Physics preset.")] = "small",
    seed: Annotated[str, typer.Option(
        metavar="INTEGER", help="Seed of scenes, init and batch order.")] = "0",
    inject: Annotated[str | None, typer.Option(
        help="Run with a fault from `riswb faults`.")] = None,
    device: Annotated[str, typer.Option(help="auto | cpu | cuda")] = "auto",
    runs_dir: RunsDir = None,
    probes: ProbesDir = None,
    fail_fast: FailFast = False,
    format: Format = "table",
) -> None:
    """The overfit test: memorize N scenes with all probes on; exit 0 when params move
    and loss drops, 1 when not."""
    fmt = check_format(format)
    config = overfit_config(samples=_int_option("--samples", samples, "train_scenes"),
                            epochs=_int_option("--epochs", epochs, "epochs"), preset=preset,
                            seed=_int_option("--seed", seed, "seed"), inject=inject,
                            device=device)
    result = _train_or_stop(config, resume=None, runs_dir=runs_dir, probes_dir=probes,
                            quiet=fmt == "json", fail_fast=fail_fast)
    verdict = gate(read_run(result.path))
    _verdict(result, verdict, fmt)
    raise typer.Exit(0 if verdict.passed else 1)


def overfit_config(*, samples: int, epochs: int | None, preset: str, seed: int,
                   inject: str | None, device: str) -> TrainConfig:
    """The overfit recipe: train = validation, a short warm-up, no EMA lag to wait for.

    Batches of 64, but at least 4 per epoch for a small sample (64 samples in one
    full-batch step per epoch barely move). A short run still gets a verdict: the warm-up
    is at most a fifth of the run and the loss is logged often enough (≥ ~20 records,
    every 10 steps at most) for the gate to compare its start with its end."""
    batch_size = max(1, min(64, samples // 4)) if samples >= 8 else samples
    steps_per_epoch = math.ceil(samples / batch_size)
    default_epochs = max(10, math.ceil(200 / steps_per_epoch))
    epochs = default_epochs if epochs is None else epochs
    total_steps = epochs * steps_per_epoch
    return TrainConfig(
        name="overfit" if inject is None else f"overfit-{inject}", preset=preset,
        train_scenes=samples, val_scenes=0, seed=seed, epochs=epochs,
        batch_size=batch_size, ema_decay=0.0, warmup_steps=min(10, total_steps // 5), inject=inject,
        device=device, eval_every=max(1, epochs // 10),
        log_every=max(1, min(10, total_steps // 20)),
    )


def train_command(
    config: Annotated[Path, typer.Option("--config", help="TOML training config.")],
    resume: Annotated[str | None, typer.Option(
        help="Continue a run from its checkpoints/state.pt.")] = None,
    force: Annotated[bool, typer.Option(
        "--force", help="Resume even if the config's trajectory fields (seed, batch_size, "
        "lr, ...) differ from the run's.")] = False,
    runs_dir: RunsDir = None,
    probes: ProbesDir = None,
    fail_fast: FailFast = False,
    format: Format = "table",
) -> None:
    """Full training with a train/validation split, from a TOML config. --resume checks the
    run's checkpoints and that the config continues its trajectory before anything starts."""
    fmt = check_format(format)
    cfg = TrainConfig.from_toml(config)
    if force and not resume:
        raise RiswbError("--force only applies to --resume")
    resume_path = resolve_run(resume, runs_dir) if resume else None
    result = _train_or_stop(cfg, resume=resume_path, force=force, runs_dir=runs_dir,
                            probes_dir=probes, quiet=fmt == "json", fail_fast=fail_fast)
    verdict = gate(read_run(result.path))
    _verdict(result, verdict, fmt)
    raise typer.Exit(0 if verdict.passed else 1)
