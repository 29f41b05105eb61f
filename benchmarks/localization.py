"""Localization baselines judged by the two scores of riswb/reference/physics/scoring.py.

For each SNR and each of several deployments (H, codes drawn from deploy_seed + i, the
same scenes for every deployment), runs `evaluate_estimators` with K given and with K
estimated, prints markdown tables (means over deployments; GOSPA ± its std across them)
and writes every raw result to JSON.

    nice python benchmarks/localization.py                  # 500 scenes, 0/10/20 dB, 3 deployments
    nice python benchmarks/localization.py --scenes 40      # a quick check
"""

from __future__ import annotations

import argparse
import json
import time
from pathlib import Path

import numpy as np
import torch

from riswb.reference.physics.baselines import ESTIMATORS
from riswb.reference.physics.presets import get_preset
from riswb.reference.physics.scoring import K_MODES, evaluate_estimators

COORDS = ("phi_deg", "theta_deg", "r_m")


def _mean(results: list[dict], pick) -> float:
    return float(np.mean([pick(r) for r in results]))


def _row_of(result: dict, name: str) -> dict:
    return next(r for r in result["rows"] if r["estimator"] == name)


def markdown(results: list[dict], k_mode: str, estimators: list[str]) -> str:
    """One table for k_mode: per SNR, the √CRB line then one line per estimator."""
    given = k_mode == "true"
    head = ["SNR dB", "estimator"]
    if given:
        head += [f"{c} RMSE (median)" for c in COORDS]
    head += ["GOSPA", "detect", "false alarm", "K acc", "ms/scene"]
    lines = ["| " + " | ".join(head) + " |", "|" + "---|" * len(head)]
    for snr in sorted({r["snr_db"] for r in results}):
        group = [r for r in results if r["snr_db"] == snr and r["k_mode"] == k_mode]
        if given:
            crb = [f"{_mean(group, lambda r, c=c: r['crb']['mean'][c]):.3g} "
                   f"({_mean(group, lambda r, c=c: r['crb']['median'][c]):.3g})"
                   + (" uninformative" if any(r["crb"]["uninformative"][c] for r in group)
                      else "") for c in COORDS]
            lines.append("| " + " | ".join([f"{snr:g}", "√CRB", *crb, "", "", "", "", ""]) + " |")
        for name in estimators:
            rows = [_row_of(r, name) for r in group]
            cells = [f"{snr:g}", rows[0]["label"]]
            if given:
                cells += [f"{np.mean([x['rmse'][c] for x in rows]):.3g} "
                          f"({np.mean([x['median'][c] for x in rows]):.3g})" for c in COORDS]
            gospa = [x["gospa"] for x in rows]
            cells += [f"{np.mean(gospa):.3f} ± {np.std(gospa):.3f}",
                      *(f"{np.mean([x[key] for x in rows]):.3f}"
                        for key in ("detection_rate", "false_alarm_rate", "k_accuracy")),
                      f"{1000 * np.mean([x['seconds_per_scene'] for x in rows]):.1f}"]
            lines.append("| " + " | ".join(cells) + " |")
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--preset", default="small")
    parser.add_argument("--scenes", type=int, default=500, help="scenes per SNR and deployment")
    parser.add_argument("--snr", type=float, nargs="+", default=[0.0, 10.0, 20.0])
    parser.add_argument("--deployments", type=int, default=3)
    parser.add_argument("--seed", type=int, default=1000, help="scene seed")
    parser.add_argument("--estimators", nargs="+", default=list(ESTIMATORS))
    parser.add_argument("--k-modes", nargs="+", default=list(K_MODES), choices=K_MODES)
    parser.add_argument("--threads", type=int, default=1)
    parser.add_argument("--out", default="localization.json", help="JSON file to write")
    args = parser.parse_args(argv)
    torch.set_num_threads(args.threads)
    preset = get_preset(args.preset)
    results, t0 = [], time.perf_counter()
    for snr in args.snr:
        for i in range(args.deployments):
            for k_mode in args.k_modes:
                results.append(evaluate_estimators(
                    preset, snr_db=snr, scenes=args.scenes, seed=args.seed,
                    deployment_seed=preset.deploy_seed + i, k_mode=k_mode,
                    estimators=args.estimators))
    seconds = time.perf_counter() - t0
    print(f"# {preset.name}: {args.scenes} scenes × {args.deployments} deployments per SNR, "
          f"{seconds:.0f} s\n")
    for k_mode in args.k_modes:
        print(f"## K {'given' if k_mode == 'true' else 'estimated'}\n")
        print(markdown(results, k_mode, args.estimators) + "\n")
    Path(args.out).write_text(json.dumps({"args": vars(args), "seconds": seconds,
                                          "results": results}, indent=1))
    print(f"wrote {args.out}")


if __name__ == "__main__":
    main()
