"""Alternating blocks: the default probes against the plain loop, each running alone.

Interleaving single steps (riswb.bench) cancels a shared machine's drift, but every variant
then runs with the others' code and data in the caches. A real loop runs alone: its own code
stays warm, and the Workbench's per-step Python and small ops — a larger footprint than
the loop's — miss the caches more than they do interleaved. `block_ratio` times blocks of
consecutive steps instead, the plain loop's and the instrumented one's in turn, so each
block sees its loop alone; flushes, term-gradient samples and observed cycles fall inside
the blocks at their real rates when a block holds several of each. On a host-bound loop it
reads higher than the interleaved figure (docs/benchmarks.md).
"""

from __future__ import annotations

import statistics
from collections.abc import Callable
from dataclasses import dataclass


@dataclass
class BlockTiming:
    """Median ms/step of each loop's blocks, and the median of the per-pair ratios."""

    steps: int
    rounds: int
    plain_ms: float
    probed_ms: float
    ratio: float


def block_ratio(plain: Callable[[], None], probed: Callable[[], None], *, steps: int,
                rounds: int, timer: Callable[[], float],
                sync: Callable[[], None] = lambda: None) -> BlockTiming:
    """Time `rounds` pairs of blocks of `steps` calls, `plain()` then `probed()` (one
    training step each; `sync` waits for an accelerator at the ends of a block)."""
    if steps < 1 or rounds < 1:
        raise ValueError(f"blocks need steps >= 1 and rounds >= 1, got {steps}, {rounds}")
    times: dict[str, list[float]] = {"plain": [], "probed": []}
    for _ in range(rounds):
        for name, step in (("plain", plain), ("probed", probed)):
            sync()
            start = timer()
            for _ in range(steps):
                step()
            sync()
            times[name].append((timer() - start) / steps)
    ratios = [p / q for q, p in zip(times["plain"], times["probed"], strict=True) if q > 0]
    return BlockTiming(steps=steps, rounds=rounds,
                       plain_ms=1e3 * statistics.median(times["plain"]),
                       probed_ms=1e3 * statistics.median(times["probed"]),
                       ratio=statistics.median(ratios) if ratios else float("nan"))
