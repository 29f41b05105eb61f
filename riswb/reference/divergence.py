"""Divergence of the reference trainer, diagnosed instead of crashing.

With a learning rate far too large (lr = 1e12) one update overflows the weights, the next
forward returns NaN, and the decomposition of R_pred (riswb/reference/spectral.py) fails
inside torch.linalg.eigh with a LinAlgError that names neither the step nor the cause. The
trainer (riswb/reference/trainer.py, `forward_loss`) instead checks the model's outputs
before that decomposition and the total loss after it, one host sync each per step (the
decomposition syncs anyway), and stops with `Diverged`.
"""

from __future__ import annotations

from collections.abc import Mapping

import torch

from riswb.errors import RiswbError
from riswb.instrument.workbench import Workbench


class Diverged(RiswbError):
    """Training stopped at `step` because the named model outputs or loss terms (`kind`)
    were non-finite. A RiswbError: the CLI prints it as its one-line reason, exit 2."""

    def __init__(self, step: int, kind: str, names: list[str], run: str):
        self.step, self.kind, self.names = step, kind, names
        plural = len(names) > 1
        super().__init__(
            f"training diverged at step {step}: {kind}{'s' if plural else ''} "
            f"{', '.join(names)} {'are' if plural else 'is'} non-finite (is the lr too "
            f"large?); the run is kept: riswb report {run}")


def nonfinite(tensors: Mapping[str, torch.Tensor]) -> list[str]:
    """The names of the tensors holding a NaN or ±Inf (one host sync for all of them)."""
    flags = torch.stack([~torch.isfinite(t.detach()).all() for t in tensors.values()])
    return [name for name, bad in zip(tensors, flags.tolist(), strict=True) if bad]


def diverged(wb: Workbench, kind: str, names: list[str]) -> Diverged:
    """The error for a divergence at the Workbench's current step, recorded in the run first:
    a `diverged` event (kind, names) and the manifest's `crash_reason`. Raised inside the
    Workbench's `with`, it then closes the run as `crashed`."""
    error = Diverged(wb.step, kind, names, str(wb.path))
    wb.writer.event(wb.step, "diverged", kind=kind, names=names)
    wb.writer.update_manifest(crash_reason=str(error))
    return error
