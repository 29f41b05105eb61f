"""What kind of optimizer the loop uses, for the manifest's `optimizers` list.

Rules need it where the same numbers mean different things: a gradient rescaled by a
constant c (clipping that is always active) scales an SGD update by c, but leaves an
Adam-type update m/(√v + ε) nearly unchanged, since m and √v both scale by c. Whether an
optimizer divides by a running second moment is read from its own state after a step —
the accumulators torch's adaptive optimizers keep (Adam, AdamW, NAdam, RAdam: exp_avg_sq;
Adamax: exp_inf; RMSprop, Adadelta: square_avg; Adagrad: sum; factored variants such as
Adafactor: exp_avg_sq_row/col) — so a third-party optimizer built the same way is
recognised without a list of class names. Optimizers that normalize their update another
way keep state no different from SGD's momentum (Lion, Signum: the sign of a momentum;
Muon: an orthogonalized momentum; LARS: a per-layer trust ratio ‖θ‖/‖g‖): those are known
by their class name.
"""

from __future__ import annotations

from typing import Any

import torch

_SECOND_MOMENT = frozenset({"exp_inf", "square_avg", "sum"})  # and exp_avg_sq*, see below
# class names (lower case) of optimizers whose update is normalized without a second moment
_NORMALIZING = ("lion", "muon", "signum", "signsgd", "lars")


def describe_optimizer(optimizer: torch.optim.Optimizer, *, stepped: bool) -> dict[str, Any]:
    """{"class": module.qualname, "state": sorted state keys of one parameter (None before
    the optimizer's first step; [] for a stateless one such as plain SGD),
    "scale_invariant": whether the update divides by a running gradient magnitude}."""
    cls = type(optimizer)
    keys = next((sorted(map(str, s)) for s in optimizer.state.values()
                 if isinstance(s, dict) and s), [] if stepped else None)
    named = any(token in cls.__name__.lower() for token in _NORMALIZING)
    invariant = True if named else None if keys is None else any(
        key in _SECOND_MOMENT or key.startswith("exp_avg_sq") for key in keys)
    return {"class": f"{cls.__module__}.{cls.__qualname__}", "state": keys,
            "scale_invariant": invariant}
