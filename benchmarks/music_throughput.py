"""Batched MUSIC throughput (scenes/s) vs a per-scene loop, measured in the same run.

    python benchmarks/music_throughput.py [--preset small] [--scenes 64] [--repeats 3]

Both paths call `music_localize` (grid spectrum, NMS peak picking, refinement) on the same
R_true; the loop calls it once per scene. Reports the best of `repeats` for each, and the
ratio batched/loop.
"""

from __future__ import annotations

import argparse
import time

import torch

from riswb.reference.physics.music import MusicGrid, music_localize
from riswb.reference.physics.presets import get_preset
from riswb.reference.physics.scenes import simulate_scenes


def _best(fn, repeats: int) -> float:
    times = []
    for _ in range(repeats):
        t0 = time.perf_counter()
        fn()
        times.append(time.perf_counter() - t0)
    return min(times)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--preset", default="small")
    parser.add_argument("--scenes", type=int, default=64)
    parser.add_argument("--repeats", type=int, default=3)
    args = parser.parse_args()
    preset = get_preset(args.preset)
    batch = simulate_scenes(preset, args.scenes, seed=0)
    grid = MusicGrid.for_preset(preset)
    r, k = batch.R_true, batch.k

    def batched():
        music_localize(r, k, preset, grid)

    def loop():
        for i in range(len(batch)):
            music_localize(r[i:i + 1], k[i:i + 1], preset, grid)

    batched()  # warm-up
    t_batched, t_loop = _best(batched, args.repeats), _best(loop, args.repeats)
    n = len(batch)
    print(f"preset {preset.name}, {n} scenes, grid {grid.shape}, "
          f"{torch.get_num_threads()} threads")
    print(f"batched : {n / t_batched:8.1f} scenes/s")
    print(f"loop    : {n / t_loop:8.1f} scenes/s")
    print(f"ratio   : {t_loop / t_batched:8.2f}x (batched / loop throughput)")


if __name__ == "__main__":
    main()
