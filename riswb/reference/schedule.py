"""Learning-rate schedule of the reference trainer: linear warm-up from above zero, then
cosine decay to a floor (docs/design.md §9). A warm-up that starts at 0 is a classic silent
failure (docs/failures.md #2): `start_factor` must be > 0.
"""

from __future__ import annotations

import math

import torch


def warmup_cosine_factor(
    step: int, *, warmup_steps: int, total_steps: int, start_factor: float, floor: float
) -> float:
    """Multiplier of the base lr at optimizer step `step` (0-based)."""
    if warmup_steps > 0 and step < warmup_steps:
        return start_factor + (1.0 - start_factor) * step / warmup_steps
    decay_steps = max(1, total_steps - warmup_steps)
    progress = min(1.0, (step - warmup_steps) / decay_steps)
    return floor + (1.0 - floor) * 0.5 * (1.0 + math.cos(math.pi * progress))


def warmup_cosine(
    optimizer: torch.optim.Optimizer, *, warmup_steps: int, total_steps: int,
    start_factor: float = 0.1, floor: float = 0.05,
) -> torch.optim.lr_scheduler.LambdaLR:
    if not 0.0 < start_factor <= 1.0:
        raise ValueError(f"warm-up start_factor must be in (0, 1], got {start_factor}")
    if not 0.0 <= floor <= 1.0:
        raise ValueError(f"cosine floor must be in [0, 1], got {floor}")

    def factor(step: int) -> float:
        return warmup_cosine_factor(step, warmup_steps=warmup_steps, total_steps=total_steps,
                                    start_factor=start_factor, floor=floor)

    return torch.optim.lr_scheduler.LambdaLR(optimizer, factor)
