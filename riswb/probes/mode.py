"""Train/eval mode of the modules whose behaviour depends on `.training` (kind `mode`,
event `mode_mismatch`).

Mode-dependent modules — BatchNorm*, Dropout*, InstanceNorm* with running stats,
MultiheadAttention and RNNs with dropout > 0, and any module whose class overrides
`train()` — are listed once at run start and again at each flush when the module count
changed (`sum(1 for _ in model.modules())`, once per interval). Checks are Python attribute
reads on that cached list:

* at every grad-enabled forward of the root module (training): is any of them in eval
  mode? (`model.eval()` left on from validation: BatchNorm stops updating its statistics,
  Dropout stops dropping);
* at every grad-disabled forward and at `wb.evaluate`: is any of them still in training
  mode? (validation with Dropout active and BatchNorm statistics updated by val batches).
  A loop that calls `wb.evaluate` after switching back to `model.train()` shows up here at
  `wb.evaluate` but not in `nograd_forwards_train_mode`: the forward counts are the better
  evidence.

Record (one per flush with anything counted; counts over the interval): `modules` (mode-
dependent modules found), `forwards` (grad-enabled forwards), `forwards_eval_mode` (of those,
forwards with ≥ 1 of them in eval mode), `nograd_forwards`, `nograd_forwards_train_mode`,
`evals` (`wb.evaluate` calls), `evals_train_mode` (calls made with mode-dependent modules in
train mode after the watched model ran forwards no backward followed; an evaluation of a
separate copy, an EMA or SWA model, runs none of its forwards and is not judged). Event
`mode_mismatch` {`phase`: "train" (eval-mode modules at training forwards) | "eval" (train-
mode modules at no-grad forwards or evaluate), `modules` (names, wrapper prefixes stripped,
at most 20), `trainable` (how many of them hold trainable parameters: a frozen, deliberately
eval-mode backbone holds none), `params` ({module: its trainable parameters' names, wrapper
prefixes stripped} for the listed modules holding any, at most 20 names each; read with the
`coverage` and `coverage_grads` events, it tells a sub-network that is stepped in eval mode
from one that requires grad but never gets a gradient, e.g. a KD teacher run under
torch.no_grad), `first_step`} once per phase and set of names. Built at flush, from the
cached module list.
"""

from __future__ import annotations

from torch import nn

from riswb.instrument.hooks import Probe, StepContext
from riswb.probes.params import strip_wrappers

_MODE_CLASSES = (nn.modules.batchnorm._BatchNorm, nn.modules.dropout._DropoutNd)
_MAX_NAMES = 20


def mode_dependent(model: nn.Module) -> list[tuple[str, nn.Module]]:
    """(name, module) of every module whose forward depends on `.training`."""
    found = []
    for name, module in model.named_modules():
        if isinstance(module, _MODE_CLASSES):
            hit = True
        elif isinstance(module, nn.modules.instancenorm._InstanceNorm):
            hit = module.track_running_stats
        elif isinstance(module, (nn.MultiheadAttention, nn.RNNBase)):
            hit = float(getattr(module, "dropout", 0.0)) > 0
        else:
            hit = type(module).train is not nn.Module.train
        if hit:
            found.append((strip_wrappers(name) or "<root>", module))
    return found


def _trainable_names(name: str, module: nn.Module) -> list[str]:
    """Full (stripped) names of the module's trainable parameters, at most _MAX_NAMES."""
    prefix = "" if name == "<root>" else name + "."
    out = [prefix + n for n, p in module.named_parameters() if p.requires_grad]
    return out[:_MAX_NAMES]


class ModeProbe(Probe):
    """Counts forwards run with mode-dependent modules in the wrong mode."""

    name = "mode"

    def __init__(self, every: int | None = None):
        super().__init__(every)
        self._modules: list[tuple[str, nn.Module]] = []
        self._size = -1
        self._loose = 0  # forwards since the last backward or evaluation: evaluation forwards
        self._reported: dict[str, frozenset[str]] = {}
        self._reset()

    def _reset(self) -> None:
        self._counts = dict.fromkeys(("forwards", "forwards_eval_mode", "nograd_forwards",
                                      "nograd_forwards_train_mode", "evals",
                                      "evals_train_mode"), 0)
        self._wrong: dict[str, set[str]] = {"train": set(), "eval": set()}
        self._first: dict[str, int] = {}

    def _refresh(self, model: nn.Module) -> None:
        size = sum(1 for _ in model.modules())
        if size != self._size:
            self._size, self._modules = size, mode_dependent(model)

    def on_run_start(self, ctx: StepContext) -> None:
        self._refresh(ctx.wb.model)

    def _check(self, ctx: StepContext, key: str, phase: str, training: bool) -> None:
        self._counts[key] += 1
        wrong = [name for name, module in self._modules if module.training is not training]
        if wrong:
            self._counts[f"{key}_{'eval' if training else 'train'}_mode"] += 1
            self._wrong[phase].update(wrong)
            self._first.setdefault(phase, ctx.step)

    def on_after_forward(self, ctx: StepContext) -> None:
        self._loose += 1
        self._check(ctx, "forwards", "train", training=True)

    def on_nograd_forward(self, ctx: StepContext) -> None:
        self._loose += 1
        self._check(ctx, "nograd_forwards", "eval", training=False)

    def on_after_backward(self, ctx: StepContext) -> None:
        self._loose = 0  # those forwards were training forwards

    def on_eval(self, ctx: StepContext) -> None:
        if self._loose:
            self._check(ctx, "evals", "eval", training=False)
        else:  # the watched model ran no forward for it: a separate copy (EMA, SWA) was
            self._counts["evals"] += 1  # evaluated, whose mode is not this model's
        self._loose = 0

    def flush(self, ctx: StepContext) -> None:
        wb = ctx.wb
        if any(self._counts.values()):
            wb.writer.scalars(ctx.step, "mode", {"modules": len(self._modules), **self._counts})
        owners = dict(self._modules)
        for phase, names in self._wrong.items():
            key = frozenset(names)
            if names and self._reported.get(phase) != key:
                self._reported[phase] = key
                listed = sorted(names)[:_MAX_NAMES]
                params = {n: _trainable_names(n, owners[n]) for n in listed if n in owners}
                params = {n: p for n, p in params.items() if p}
                trainable = sum(any(p.requires_grad for p in owners[n].parameters())
                                for n in names if n in owners)
                wb.writer.event(ctx.step, "mode_mismatch", phase=phase, modules=listed,
                                trainable=trainable, params=params,
                                first_step=self._first.get(phase, ctx.step))
        self._reset()
        self._refresh(wb.model)
