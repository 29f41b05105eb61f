"""`riswb eval` and `riswb scene`: score localization on simulated scenes, draw one scene.

`riswb eval` is `riswb.reference.physics.scoring.evaluate_estimators` on the command line:
every row of `scoring.ROWS` (the baselines of riswb/reference/physics/baselines/, and with
--run a trained model's aux head and MUSIC on its R_pred) scored twice, never mixed: (a)
with K given, matched RMSE beside √CRB; (b) GOSPA, detection, false alarms, K accuracy.
The `true` row (MUSIC on the noise-free R_true) is the grid/refinement floor, shown apart.
"""

from __future__ import annotations

import json
import math
import sys
from pathlib import Path
from typing import Annotated

import torch
import typer
from rich.console import Console
from rich.table import Table

from riswb.commands.options import Format, RunsDirOption, check_format
from riswb.errors import RiswbError
from riswb.jsonsafe import dumps
from riswb.reference import checkpoints
from riswb.reference.checkpoints import BEST_FILE
from riswb.reference.physics.music import music_localize
from riswb.reference.physics.order import descending_eigvals, estimate_k_gap
from riswb.reference.physics.presets import Preset, get_preset
from riswb.reference.physics.scene_plot import render_scene
from riswb.reference.physics.scenes import SceneBatch, simulate_scenes
from riswb.reference.physics.scoring import (
    K_MODES,
    MODEL_ROWS,
    ROWS,
    default_rows,
    evaluate_estimators,
)

COORDS = ("phi_deg", "theta_deg", "r_m")
# short table labels (the JSON rows carry the long `label`)
TABLE_LABELS = {"samp": "samp (MUSIC, R_samp)", "aux": "aux (model head)",
                "pred": "pred (MUSIC, R_pred)", "true": "true: floor (R_true)"}
COVARIANCES = ("true", "samp")


def _choice(name: str, value: str, allowed: tuple[str, ...]) -> str:
    if value not in allowed:
        raise RiswbError(f"--{name} must be one of {'|'.join(allowed)}, got {value!r}")
    return value


def covariance_for(batch: SceneBatch, cov: str) -> torch.Tensor:
    """The covariance `riswb scene` draws: "true" (R_true, oracle) or "samp" (R_samp,
    regularized back-projection baseline)."""
    return batch.R_true if _choice("cov", cov, COVARIANCES) == "true" else batch.R_samp


def parse_estimators(value: str | None, cov: str | None, with_model: bool) -> list[str]:
    """The rows of `riswb eval`: a comma list of `scoring.ROWS` names (None: every row that
    applies); the deprecated --cov true|samp means --estimators true|samp."""
    if cov is not None:
        _choice("cov", cov, COVARIANCES)
        if value is not None:
            raise RiswbError("--cov is deprecated and cannot be combined with --estimators")
        print(f"note: --cov is deprecated; use --estimators {cov}", file=sys.stderr)
        value = cov
    if value is None:
        return default_rows(with_model)
    names = [name.strip() for name in value.split(",") if name.strip()]
    unknown = [name for name in names if name not in ROWS]
    if unknown or not names:
        raise RiswbError(f"--estimators takes a comma list of {','.join(ROWS)}; got {value!r}")
    if not with_model and any(name in MODEL_ROWS for name in names):
        raise RiswbError(f"--estimators {','.join(n for n in names if n in MODEL_ROWS)} needs "
                         "--run (a trained model)")
    return list(dict.fromkeys(names))  # once each, in the order given


Snr = Annotated[float | None, typer.Option("--snr", help="SNR in dB (default: the preset's)")]


def eval_command(
    preset: Annotated[str | None, typer.Option(
        help="simulation preset: small|paper (default small; with --run, the run's)")] = None,
    scenes: Annotated[int, typer.Option(help="number of simulated scenes")] = 200,
    snr: Snr = None,
    seed: Annotated[int | None, typer.Option(
        help="scene seed (default 0; with --run, the run's seed + 2: a test split that "
             "neither training split drew)")] = None,
    k: Annotated[str, typer.Option(
        "--k", help="source count: true (given to every row; RMSE beside √CRB) | est "
                    "(each estimator's own; GOSPA, detection, K accuracy only)")] = "true",
    estimators: Annotated[str | None, typer.Option(
        "--estimators", help=f"comma list of {','.join(ROWS)} (default: all that apply; "
                             "aux and pred need --run)")] = None,
    cov: Annotated[str | None, typer.Option(
        help="deprecated: --cov X is --estimators X (true|samp)")] = None,
    run: Annotated[str | None, typer.Option(
        "--run", help="a trained run (path, run id or 'latest'): its verified best.pt adds "
                      "the rows aux and pred")] = None,
    runs_dir: RunsDirOption = None,
    format: Format = "table",
) -> None:
    """Score localization on simulated scenes: baselines, a trained model, the CRB."""
    fmt = check_format(format)
    if scenes <= 0:
        raise RiswbError(f"--scenes must be positive, got {scenes}")
    _choice("k", k, K_MODES)
    if snr is not None and not math.isfinite(snr):
        raise RiswbError(f"--snr must be a finite number of dB, got {snr}")
    rows = parse_estimators(estimators, cov, with_model=run is not None)
    head: dict = {}
    model_predict = None
    if run is None:
        spec = get_preset(preset or "small")
        seed = 0 if seed is None else seed
    else:
        spec, model, seed, head = _load_for_eval(run, runs_dir, preset, seed)
        def model_predict(batch):
            return predict(model, batch)
    summary = evaluate_estimators(spec, snr_db=snr, scenes=scenes, seed=seed, k_mode=k,
                                  estimators=rows, predict=model_predict)
    summary = {**head, **summary}
    if fmt == "json":
        print(dumps(summary))
    else:
        _table(summary, spec)


def scene_command(
    plot: Annotated[str, typer.Option("--plot", help="PNG file to write")],
    preset: Annotated[str, typer.Option(help="simulation preset: small|paper")] = "small",
    seed: Annotated[int, typer.Option(help="scene seed")] = 0,
    cov: Annotated[str, typer.Option(help="covariance to draw: true|samp")] = "true",
    snr: Snr = None,
) -> None:
    """Render one scene's MUSIC spectrum (angle map and range cuts) with true positions."""
    spec = get_preset(preset)
    _choice("cov", cov, COVARIANCES)  # before the simulation: a bad value costs nothing
    scene = simulate_scenes(spec, 1, seed=seed, snr_db=snr)
    r = covariance_for(scene, cov)
    k_est = estimate_k_gap(descending_eigvals(r), spec.k_max)
    loc = music_localize(r, k_est, spec)
    title = (f"preset {spec.name}, seed {seed}, cov {cov}, SNR {float(scene.snr_db[0]):g} dB, "
             f"K = {int(scene.k[0])} (estimated {int(k_est[0])})")
    path = render_scene(spec, scene, r, loc.k, loc, plot, title)
    print(f"wrote {path}")


# ----------------------------------------------------------------- eval --run
def load_run_model(run_path: Path):
    """(preset, CovarianceNet with RUN/checkpoints/best.pt loaded, config); the checkpoint
    is read through `riswb.reference.checkpoints.load` (SHA-256 verified, weights_only)."""
    from riswb.reference.model import CovarianceNet

    manifest_path = run_path / "manifest.json"
    try:
        manifest = json.loads(manifest_path.read_text(encoding="utf-8"))
    except (OSError, ValueError) as error:
        raise RiswbError(f"{run_path} has no readable manifest.json ({error})") from None
    config = manifest.get("config") or {}
    spec = get_preset(config.get("preset", "small"))
    best = run_path / "checkpoints" / BEST_FILE
    if not best.is_file():
        raise RiswbError(f"{run_path} has no checkpoints/{BEST_FILE} (did its first evaluation "
                         "run?)")
    state = checkpoints.load(best)
    try:  # a run from before the head/refine_steps options has the factor head
        model = CovarianceNet(spec, head=config.get("head", "factor"),
                              refine_steps=int(config.get("refine_steps", 0)))
        model.load_state_dict(state)
    except Exception as error:  # a checkpoint from another model
        raise RiswbError(f"cannot load {best} into CovarianceNet({spec.name}): "
                         f"{type(error).__name__}: {error}") from None
    return spec, model.eval(), config


@torch.no_grad()
def predict(model, batch: SceneBatch, chunk: int = 256):
    """The model on `batch` in chunks: R_pred (B, N, N), K = argmax(k_logits) + 1 (B,) and
    the aux head's (φ, θ, r) slots (B, K_MAX, 3) — what `evaluate_estimators` takes."""
    outs = [model(batch.y[start:start + chunk]) for start in range(0, len(batch), chunk)]
    return (torch.cat([o.R_pred for o in outs]),
            torch.cat([o.k_logits.argmax(-1) + 1 for o in outs]),
            torch.cat([o.aux for o in outs]))


def _load_for_eval(run: str, runs_dir: Path | None, preset: str | None, seed: int | None):
    """(preset, model, scene seed, JSON head) for `riswb eval --run`."""
    from riswb.runlog import resolve_run

    run_path = resolve_run(run, runs_dir)
    spec, model, config = load_run_model(run_path)
    if preset is not None and get_preset(preset).name != spec.name:
        raise RiswbError(f"--preset {preset} does not match the run's preset {spec.name}")
    run_seed = int(config.get("seed", 0))
    seed = run_seed + 2 if seed is None else seed
    if seed in (run_seed, run_seed + 1):
        raise RiswbError(f"--seed {seed} draws the run's training or validation scenes "
                         f"(seeds {run_seed}, {run_seed + 1}); pick another")
    return spec, model, seed, {"run": str(run_path), "checkpoint": f"checkpoints/{BEST_FILE}"}


# ----------------------------------------------------------------- the table
def _cells(values: dict | None, median: dict | None = None) -> list[str]:
    if values is None:
        return ["—"] * 3
    return [f"{values[c]:.3g}" + (f" ({median[c]:.3g})" if median else "") for c in COORDS]


def _label(row: dict) -> str:
    return TABLE_LABELS.get(row["estimator"], row["estimator"])


def _table(summary: dict, spec: Preset) -> None:
    console = Console()
    given = summary["k_mode"] == "true"
    where = f" — run {Path(summary['run']).name}" if "run" in summary else ""
    console.print(f"riswb eval{where}: preset {spec.name}, SNR {summary['snr_db']:g} dB, "
                  f"{summary['scenes']} scenes (seed {summary['seed']}), K "
                  f"{'given' if given else 'estimated by each row'}")
    rows = [r for r in summary["rows"] if r["estimator"] != "true"]
    floor = [r for r in summary["rows"] if r["estimator"] == "true"]
    crb = summary["crb"]
    if given:
        table = Table(title="(a) K given: matched RMSE, mean (median over scenes)")
        for col in ("", "φ (deg)", "θ (deg)", "r (m)", "scenes scored"):
            table.add_column(col, justify="right")
        bound = [cell + (" uninformative" if crb["uninformative"][c] else "")
                 for cell, c in zip(_cells(crb["mean"], crb["median"]), COORDS, strict=True)]
        table.add_row("√CRB", *bound, "")
        table.add_section()
        for row in rows:
            table.add_row(_label(row), *_cells(row["rmse"], row["median"]),
                          str(row["scenes_scored"]))
        console.print(table)
    table = Table(title="(b) detection: GOSPA (p = 2, α = 2, cut-offs "
                        + ", ".join(f"{summary['gospa_cutoff'][c]:.3g}" for c in COORDS)
                        + " in deg, deg, m)")
    for col in ("", "GOSPA", "detection", "false alarm", "K accuracy", "ms/scene"):
        table.add_column(col, justify="right")
    for row in rows + floor:
        if row in floor:
            table.add_section()
        table.add_row(_label(row), f"{row['gospa']:.3f}", f"{row['detection_rate']:.3f}",
                      f"{row['false_alarm_rate']:.3f}", f"{row['k_accuracy']:.3f}",
                      f"{1000 * row['seconds_per_scene']:.1f}")
    console.print(table)
    if given and floor:
        console.print("numerical floor (MUSIC on the noise-free R_true; the grid and "
                      "refinement, not the data): RMSE "
                      + ", ".join(f"{c} {v}" for c, v in
                                  zip(("φ", "θ", "r"), _cells(floor[0]["rmse"]), strict=True)))
    console.print("√CRB flagged uninformative where it exceeds the prior's spread "
                  "(span/√12): the data cannot beat guessing the field-of-view centre there. "
                  "(a) leaves unmatched truths and estimates to (b).")
