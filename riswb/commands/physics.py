"""`riswb eval` and `riswb scene`: simulate scenes, localize with MUSIC, compare to the CRB."""

from __future__ import annotations

import json
import math
from pathlib import Path
from typing import Annotated

import torch
import typer
from rich.console import Console
from rich.table import Table

from riswb.commands.options import Format, RunsDirOption, check_format
from riswb.errors import RiswbError
from riswb.jsonsafe import dumps
from riswb.reference.physics.evaluate import K_MODES, crb_rms, evaluate_localization, localize
from riswb.reference.physics.geometry import fraunhofer_distance, fresnel_limit
from riswb.reference.physics.presets import Preset, get_preset
from riswb.reference.physics.scene_plot import render_scene
from riswb.reference.physics.scenes import SceneBatch, simulate_scenes

COVARIANCES = ("true", "samp")


def _choice(name: str, value: str, allowed: tuple[str, ...]) -> str:
    if value not in allowed:
        raise RiswbError(f"--{name} must be one of {'|'.join(allowed)}, got {value!r}")
    return value


def covariance_for(batch: SceneBatch, cov: str) -> torch.Tensor:
    """The covariance MUSIC localizes from: "true" (R_true, oracle) or "samp" (R_samp,
    regularized back-projection baseline)."""
    if cov == "true":
        return batch.R_true
    if cov == "samp":
        return batch.R_samp
    raise RiswbError(f"--cov must be one of {'|'.join(COVARIANCES)}, got {cov!r}")


def _table(summary: dict, preset: Preset) -> None:
    console = Console()
    table = Table(title=f"riswb eval — preset {preset.name}, cov {summary['cov']}, "
                        f"SNR {summary['snr_db']:g} dB, {summary['scenes']} scenes")
    for col in ("", "RMSE (misses at full span)", "RMSE (matched)", "√CRB"):
        table.add_column(col, justify="right")
    for key, label in (("phi_deg", "φ (deg)"), ("theta_deg", "θ (deg)"), ("r_m", "r (m)")):
        table.add_row(label, *(f"{summary[s][key]:.4g}" for s in ("rmse", "rmse_matched", "crb")))
    console.print(table)
    console.print(
        f"sources {summary['n_sources']}, missed {summary['n_missed']}, false alarms "
        f"{summary['n_false']}, K accuracy {summary['k_accuracy']:.3f} (K {summary['k_mode']}), "
        f"covariance NMSE {summary['nmse']:.4g}; r ∈ [{preset.r_range[0]:g}, "
        f"{preset.r_range[1]:g}] m, Fresnel limit {fresnel_limit(preset):.2f} m, "
        f"Fraunhofer {fraunhofer_distance(preset):.1f} m"
    )


Cov = Annotated[str, typer.Option(help="covariance to localize from: true|samp")]
Snr = Annotated[float | None, typer.Option("--snr", help="SNR in dB (default: the preset's)")]


def eval_command(
    preset: Annotated[str | None, typer.Option(
        help="simulation preset: small|paper (default small; with --run, the run's)")] = None,
    scenes: Annotated[int, typer.Option(help="number of simulated scenes")] = 200,
    cov: Cov = "true",
    snr: Snr = None,
    seed: Annotated[int | None, typer.Option(
        help="scene seed (default 0; with --run, the run's seed + 2: a test split that "
             "neither training split drew)")] = None,
    k: Annotated[str, typer.Option(
        "--k", help="source count for MUSIC: est (eigen-gap)|true")] = "est",
    run: Annotated[str | None, typer.Option(
        "--run", help="evaluate a trained run's best.pt (path, run id or 'latest'): R_pred "
                      "beside R_samp, R_true")] = None,
    runs_dir: RunsDirOption = None,
    format: Format = "table",
) -> None:
    """Simulate scenes, localize with MUSIC, print RMSE beside the CRB."""
    if scenes <= 0:
        raise RiswbError(f"--scenes must be positive, got {scenes}")
    _choice("k", k, K_MODES)
    fmt = check_format(format)
    if snr is not None and not math.isfinite(snr):
        raise RiswbError(f"--snr must be a finite number of dB, got {snr}")
    if run is not None:
        _eval_run(run, runs_dir, preset=preset, scenes=scenes, snr=snr, seed=seed, k=k,
                  fmt=fmt)
        return
    spec = get_preset(preset or "small")
    _choice("cov", cov, COVARIANCES)
    seed = 0 if seed is None else seed
    batch = simulate_scenes(spec, scenes, seed=seed, snr_db=snr)
    summary = {"preset": spec.name, "cov": cov, "seed": seed,
               **evaluate_localization(spec, batch, covariance_for(batch, cov), k_mode=k)}
    if fmt == "json":
        print(dumps(summary))
    else:
        _table(summary, spec)


def scene_command(
    plot: Annotated[str, typer.Option("--plot", help="PNG file to write")],
    preset: Annotated[str, typer.Option(help="simulation preset: small|paper")] = "small",
    seed: Annotated[int, typer.Option(help="scene seed")] = 0,
    cov: Cov = "true",
    snr: Snr = None,
) -> None:
    """Render one scene's MUSIC spectrum (angle map and range cuts) with true positions."""
    spec = get_preset(preset)
    _choice("cov", cov, COVARIANCES)
    scene = simulate_scenes(spec, 1, seed=seed, snr_db=snr)
    r = covariance_for(scene, cov)
    loc, k_est = localize(spec, scene, r)
    title = (f"preset {spec.name}, seed {seed}, cov {cov}, SNR {float(scene.snr_db[0]):g} dB, "
             f"K = {int(scene.k[0])} (estimated {int(k_est[0])})")
    path = render_scene(spec, scene, r, loc.k, loc, plot, title)
    print(f"wrote {path}")


# ----------------------------------------------------------------- eval --run
ROWS = ("pred", "samp", "true")
ROW_LABELS = {"pred": "R_pred", "samp": "R_samp", "true": "R_true"}
K_SHORT = {"model k_logits (argmax + 1)": "k head", "eigen-gap": "eig-gap", "true": "true"}


def load_run_model(run_path: Path):
    """(preset, CovarianceNet with RUN/checkpoints/best.pt loaded weights_only, config)."""
    from riswb.reference.model import CovarianceNet

    manifest_path = run_path / "manifest.json"
    try:
        manifest = json.loads(manifest_path.read_text(encoding="utf-8"))
    except (OSError, ValueError) as error:
        raise RiswbError(f"{run_path} has no readable manifest.json ({error})") from None
    config = manifest.get("config") or {}
    spec = get_preset(config.get("preset", "small"))
    best = run_path / "checkpoints" / "best.pt"
    if not best.is_file():
        raise RiswbError(f"{run_path} has no checkpoints/best.pt (did its first evaluation "
                         "run?)")
    try:
        state = torch.load(best, map_location="cpu", weights_only=True)
        model = CovarianceNet(spec)
        model.load_state_dict(state)
    except Exception as error:  # a checkpoint from another model or a torn file
        raise RiswbError(f"cannot load {best} into CovarianceNet({spec.name}): "
                         f"{type(error).__name__}: {error}") from None
    return spec, model.eval(), config


@torch.no_grad()
def predict(model, batch: SceneBatch, chunk: int = 256) -> tuple[torch.Tensor, torch.Tensor]:
    """The model's R_pred (B, N, N) and its K = argmax(k_logits) + 1 (B,), in chunks."""
    r_pred, k_pred = [], []
    for start in range(0, len(batch), chunk):
        out = model(batch.y[start:start + chunk])
        r_pred.append(out.R_pred)
        k_pred.append(out.k_logits.argmax(-1) + 1)
    return torch.cat(r_pred), torch.cat(k_pred)


def localization_row(spec: Preset, batch: SceneBatch, r: torch.Tensor,
                     k_music: torch.Tensor) -> dict:
    """MUSIC on `r` with the given per-scene K; RMSE (misses at full span), matched RMSE,
    misses, false alarms, K accuracy of `k_music`, covariance NMSE."""
    from riswb.reference.physics.covariance import nmse
    from riswb.reference.physics.metrics import (
        k_accuracy,
        localization_summary,
        match_sources,
        spans,
    )
    from riswb.reference.physics.music import music_localize

    loc = music_localize(r, k_music, spec)

    def stack(*coords):
        return torch.stack(coords, -1).cpu().numpy()

    matching = match_sources(stack(batch.phi, batch.theta, batch.r), batch.mask.cpu().numpy(),
                             stack(loc.phi, loc.theta, loc.r), loc.mask.cpu().numpy(), spans(spec))
    summary = localization_summary(matching)
    return {"rmse": summary["rmse"], "rmse_matched": summary["rmse_matched"],
            "n_sources": summary["n_sources"], "n_missed": summary["n_missed"],
            "n_false": summary["n_false"], "k_accuracy": k_accuracy(k_music, batch.k),
            "nmse": float(nmse(r, batch.R_true).mean())}


def _eval_run(run: str, runs_dir: Path | None, *, preset: str | None, scenes: int,
              snr: float | None, seed: int | None, k: str, fmt: str) -> None:
    from riswb.reference.physics.order import descending_eigvals, estimate_k_gap
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
    batch = simulate_scenes(spec, scenes, seed=seed, snr_db=snr)
    r_pred, k_pred = predict(model, batch)
    rows = {}
    for name, r in (("pred", r_pred), ("samp", batch.R_samp), ("true", batch.R_true)):
        if name == "pred":  # the model's own source count: its k head
            k_music, k_source = k_pred, "model k_logits (argmax + 1)"
        elif k == "true":
            k_music, k_source = batch.k, "true"
        else:
            k_music, k_source = estimate_k_gap(descending_eigvals(r), spec.k_max), "eigen-gap"
        rows[name] = {**localization_row(spec, batch, r, k_music), "k_source": k_source}
    snr_values = batch.snr_db.unique()
    summary = {
        "run": str(run_path), "preset": spec.name, "checkpoint": "checkpoints/best.pt",
        "scenes": len(batch), "seed": seed,
        "snr_db": float(snr_values[0]) if len(snr_values) == 1 else float(batch.snr_db.mean()),
        "rows": rows, "crb": crb_rms(spec, batch),
    }
    if fmt == "json":
        print(dumps(summary))
    else:
        _run_table(summary, spec)


def _run_table(summary: dict, spec: Preset) -> None:
    console = Console()
    table = Table(title=f"riswb eval --run {Path(summary['run']).name}\npreset {spec.name}, "
                        f"SNR {summary['snr_db']:g} dB, {summary['scenes']} test scenes "
                        f"(seed {summary['seed']})")
    for col in ("", "φ (deg)", "θ (deg)", "r (m)", "K acc", "miss", "false", "NMSE", "K by"):
        table.add_column(col, justify="right")
    for name in ROWS:
        row = summary["rows"][name]
        table.add_row(ROW_LABELS[name], *(f"{row['rmse'][c]:.3g}" for c in
                                          ("phi_deg", "theta_deg", "r_m")),
                      f"{row['k_accuracy']:.3f}", str(row["n_missed"]), str(row["n_false"]),
                      f"{row['nmse']:.3g}", K_SHORT.get(row["k_source"], row["k_source"]))
    crb = summary["crb"]
    table.add_row("√CRB", *(f"{crb[c]:.3g}" for c in ("phi_deg", "theta_deg", "r_m")),
                  "", "", "", "", "")
    console.print(table)
    console.print(f"RMSE over {summary['rows']['true']['n_sources']} true sources, a missed "
                  "source counted at the full field-of-view span (json: rmse_matched too). "
                  "R_pred: the model's best.pt, MUSIC with K = argmax(k_logits) + 1; R_samp: "
                  "back-projection baseline; R_true: noise-free oracle; √CRB: the bound on "
                  "the noisy measurements.")
