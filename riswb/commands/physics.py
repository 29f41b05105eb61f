"""`riswb eval` and `riswb scene`: simulate scenes, localize with MUSIC, compare to the CRB."""

from __future__ import annotations

import json
import math

import torch
import typer
from rich.console import Console
from rich.table import Table

from riswb.errors import RiswbError
from riswb.physics.evaluate import K_MODES, evaluate_localization, localize
from riswb.physics.geometry import fraunhofer_distance, fresnel_limit
from riswb.physics.presets import Preset, get_preset
from riswb.physics.scene_plot import render_scene
from riswb.physics.scenes import SceneBatch, simulate_scenes

COVARIANCES = ("true", "samp")
FORMATS = ("table", "json")


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


def eval_command(
    preset: str = typer.Option("small", help="simulation preset: small|paper"),
    scenes: int = typer.Option(200, help="number of simulated scenes"),
    cov: str = typer.Option("true", help="covariance to localize from: true|samp"),
    snr: float | None = typer.Option(None, "--snr", help="SNR in dB (default: the preset's)"),
    seed: int = typer.Option(0, help="scene seed"),
    k: str = typer.Option("est", "--k", help="source count for MUSIC: est (eigen-gap)|true"),
    format: str = typer.Option("table", "--format", help="table|json"),
) -> None:
    """Simulate scenes, localize with MUSIC, print RMSE beside the CRB."""
    spec = get_preset(preset)
    if scenes <= 0:
        raise RiswbError(f"--scenes must be positive, got {scenes}")
    _choice("cov", cov, COVARIANCES)
    _choice("k", k, K_MODES)
    _choice("format", format, FORMATS)
    if snr is not None and not math.isfinite(snr):
        raise RiswbError(f"--snr must be a finite number of dB, got {snr}")
    batch = simulate_scenes(spec, scenes, seed=seed, snr_db=snr)
    summary = {"preset": spec.name, "cov": cov, "seed": seed,
               **evaluate_localization(spec, batch, covariance_for(batch, cov), k_mode=k)}
    if format == "json":
        print(json.dumps(summary))
    else:
        _table(summary, spec)


def scene_command(
    plot: str = typer.Option(..., "--plot", help="PNG file to write"),
    preset: str = typer.Option("small", help="simulation preset: small|paper"),
    seed: int = typer.Option(0, help="scene seed"),
    cov: str = typer.Option("true", help="covariance to localize from: true|samp"),
    snr: float | None = typer.Option(None, "--snr", help="SNR in dB (default: the preset's)"),
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
