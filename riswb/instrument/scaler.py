"""GradScaler awareness without user calls.

While at least one Workbench is alive, `torch.amp.GradScaler.scale`, `.unscale_` and `.step`
are wrapped on the class (torch.cuda.amp / torch.cpu.amp's scalers subclass it without
overriding them); the last Workbench to close restores the originals (reference-counted).
`unscale_` and `step` receive the optimizer, so a scaler maps exactly onto the Workbench
that watches that optimizer; `scale(loss)` runs before the backward, which is how a
Workbench learns the scale its gradients carry before any step (adopted by every live
Workbench without an exactly mapped scaler yet).

Per Workbench (`ScalerWatch`):

* `inverse()` — 1/scale of the adopted scaler as a device tensor (no host sync), or None:
  the raw gradients of a backward under `scaler.scale(loss)` are scale× the real ones;
* `unscaled[i]` — the inverse scale `unscale_` applied to optimizer i since its last step
  (set by `unscale_`, explicit or inside `step`; cleared after the step or skip);
* a step attempt whose optimizer did not step (found inf/NaN) calls `on_skip(i)`; the
  optimizer's step hooks never run for it, so its real-step count tells, without a read.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import torch

_GradScaler = torch.amp.GradScaler
_WATCHES: list[ScalerWatch] = []
_ORIGINALS: dict[str, Any] = {}


def _inverse(scaler: Any) -> torch.Tensor:
    # as GradScaler.unscale_ computes it (fp64 reciprocal), so the products match bit for bit
    return scaler._scale.double().reciprocal().float()


def _enabled(scaler: Any) -> bool:
    return bool(scaler.is_enabled()) and getattr(scaler, "_scale", None) is not None


class ScalerWatch:
    """What the GradScaler did to one Workbench's optimizers."""

    def __init__(
        self,
        optimizers: list[torch.optim.Optimizer],
        real_steps: Callable[[int], int],
        on_skip: Callable[[int], None],
    ):
        self.optimizers = optimizers
        self.real_steps = real_steps
        self.on_skip = on_skip
        self.scaler: Any = None
        self.exact = False  # mapped through unscale_/step (not only seen at scale())
        self.unscaled: dict[int, torch.Tensor] = {}

    def index(self, optimizer: Any) -> int | None:
        return next((i for i, o in enumerate(self.optimizers) if o is optimizer), None)

    def inverse(self) -> torch.Tensor | None:
        scaler = self.scaler
        return _inverse(scaler) if scaler is not None and _enabled(scaler) else None

    def _adopt(self, scaler: Any, exact: bool) -> None:
        if exact:
            self.scaler, self.exact = scaler, True
        elif not self.exact:
            self.scaler = scaler


def _scale(self, outputs, *args, **kwargs):
    result = _ORIGINALS["scale"](self, outputs, *args, **kwargs)
    if _enabled(self):
        for watch in list(_WATCHES):
            watch._adopt(self, exact=False)
    return result


def _unscale_(self, optimizer, *args, **kwargs):
    result = _ORIGINALS["unscale_"](self, optimizer, *args, **kwargs)
    if _enabled(self):
        for watch in list(_WATCHES):
            index = watch.index(optimizer)
            if index is not None:
                watch._adopt(self, exact=True)
                watch.unscaled[index] = _inverse(self)
    return result


def _step(self, optimizer, *args, **kwargs):
    watching = [(w, w.index(optimizer)) for w in list(_WATCHES)] if _enabled(self) else []
    watching = [(w, i, w.real_steps(i)) for w, i in watching if i is not None]
    result = _ORIGINALS["step"](self, optimizer, *args, **kwargs)
    for watch, index, before in watching:
        watch._adopt(self, exact=True)
        watch.unscaled.pop(index, None)
        if watch.real_steps(index) == before:
            watch.on_skip(index)
    return result


_WRAPPERS = {"scale": _scale, "unscale_": _unscale_, "step": _step}


def attach(watch: ScalerWatch) -> None:
    """Start watching GradScaler calls for `watch` (patches the class for the first one)."""
    if not _WATCHES:
        for name, wrapper in _WRAPPERS.items():
            _ORIGINALS[name] = vars(_GradScaler)[name]
            setattr(_GradScaler, name, wrapper)
    _WATCHES.append(watch)


def detach(watch: ScalerWatch) -> None:
    """Stop watching; the last live watch restores GradScaler's own methods."""
    if watch in _WATCHES:
        _WATCHES.remove(watch)
        if not _WATCHES:
            for name, original in _ORIGINALS.items():
                setattr(_GradScaler, name, original)
            _ORIGINALS.clear()
