"""riswb under torchrun/DDP: a Workbench for this rank, or none but on rank 0.

Every Workbench names its run by rank and records the rank (riswb/instrument/ranks.py).

Gradient norms under DistributedDataParallel are LOCAL (before the all-reduce): riswb reads
the gradients at the end of each backward, and DDP (gradient_as_bucket_view=False, its
default) copies the averaged buckets back into `.grad` in a callback queued after riswb's.
"""

from __future__ import annotations

from typing import Any

import torch

from riswb.instrument.ranks import rank_info


def should_log(rank_zero_only: bool, info: dict[str, Any] | None = None) -> bool:
    """Whether this process writes a run: every rank, or only rank 0 when asked."""
    return not rank_zero_only or (info or rank_info())["rank"] == 0


def open_workbench(model: torch.nn.Module, optimizer: Any = None, scheduler: Any = None, *,
                   rank_zero_only: bool = False, **kwargs: Any) -> Any:
    """A Workbench for this rank — its run named by rank, the rank in its manifest — or None
    on ranks other than 0 when `rank_zero_only` (the Workbench itself names the run by rank
    and records the rank in its manifest). A DistributedDataParallel wrapper is
    unwrapped, so module names in the records are the user's own."""
    from riswb.instrument.workbench import Workbench

    info = rank_info()
    if not should_log(rank_zero_only, info):
        return None
    if isinstance(model, torch.nn.parallel.DistributedDataParallel):
        model = model.module
    return Workbench(model, optimizer, scheduler, **kwargs)
