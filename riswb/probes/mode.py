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
* at every grad-disabled forward, and for `wb.evaluate` at the forwards it followed: was
  any of them still in training mode? (validation with Dropout active and BatchNorm
  statistics updated by val batches).

Record (one per flush with anything counted; counts over the interval): `modules` (mode-
dependent modules found), `forwards` (grad-enabled forwards), `forwards_eval_mode` (of those,
forwards with ≥ 1 of them in eval mode), `nograd_forwards`, `nograd_forwards_train_mode`,
`evals` (`wb.evaluate` calls), `evals_own` (of those, calls the watched model ran forwards
for since the last backward: it, not a separate copy, was evaluated), `evals_train_mode`
(calls whose forwards — those the watched model ran since the last backward — ran with
mode-dependent modules in train mode: the mode at the call itself does not count, as a
loop may switch back to model.train() before logging; an evaluation of a separate copy, an
EMA or SWA model, runs none of its forwards and is not judged). Event
`mode_mismatch` {`phase`: "train" (eval-mode modules at training forwards) | "eval" (train-
mode modules at no-grad forwards or evaluate), `modules` (names, wrapper prefixes stripped,
at most 20), `trainable` (how many of them hold trainable parameters: a frozen, deliberately
eval-mode backbone holds none), `params` ({module: its trainable parameters' names, wrapper
prefixes stripped} for the listed modules holding any, at most 20 names each; read with the
`coverage` and `coverage_grads` events, it tells a sub-network that is stepped in eval mode
from one that requires grad but never gets a gradient, e.g. a KD teacher run under
torch.no_grad), `eval_holders` (phase train: {module: its own trainable parameters' names}
for modules holding parameters themselves — Linear, Conv, … — that were in eval mode at a
training forward; read when a mode-dependent module was, and again whenever more were:
`model.eval()` left on puts them there too, which tells it from a deliberately frozen
eval-mode backbone when only parameter-free Dropout layers are listed), `selective` (phase
train: those layers are all mode-dependent ones holding trainable parameters, and no
parameter-free one such as Dropout is in eval mode — BatchNorm put in eval mode on its own
while the Linear and Conv layers train, as detection codebases' `norm_eval` does, not a
`model.eval()` left on), `first_step`} once per phase and set of names. Built at flush,
from the cached module list.
"""

from __future__ import annotations

from typing import Any

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
        self._holders: list[tuple[str, nn.Module]] = []  # modules with parameters of their own
        self._eval_holders: dict[str, list[str]] = {}  # see `_note_eval_holders`
        self._size = -1
        # forwards since the last backward or evaluation: evaluation forwards
        self._forget_loose(0)
        self._reported: dict[str, frozenset[str]] = {}
        self._reset()

    def _reset(self) -> None:
        self._counts = dict.fromkeys(("forwards", "forwards_eval_mode", "nograd_forwards",
                                      "nograd_forwards_train_mode", "evals", "evals_own",
                                      "evals_train_mode"), 0)
        self._wrong: dict[str, set[str]] = {"train": set(), "eval": set()}
        self._first: dict[str, int] = {}
        # eval-mode modules at the last `_note_eval_holders` of this interval (0: none yet)
        self._holders_seen = 0

    def _refresh(self, model: nn.Module) -> None:
        size = sum(1 for _ in model.modules())
        if size != self._size:
            self._size, self._modules = size, mode_dependent(model)
            self._holders = [(strip_wrappers(name) or "<root>", module)
                             for name, module in model.named_modules()
                             if next(module.parameters(recurse=False), None) is not None]

    def _note_eval_holders(self) -> None:
        """Modules holding trainable parameters themselves (Linear, Conv, ...) that are in
        eval mode at a training forward: `model.eval()` left on puts them there along with
        the Dropout and BatchNorm layers; a deliberately frozen eval-mode backbone holds no
        trainable one, and `model.eval(); model.head.train()` leaves the head in train mode.
        Read when a mode-dependent module ran in eval mode, and again in the interval
        whenever more of them do."""
        for name, module in self._holders:
            if not module.training and name not in self._eval_holders:
                prefix = "" if name == "<root>" else name + "."
                trainable = [prefix + n for n, p in module.named_parameters(recurse=False)
                             if p.requires_grad]
                if trainable:
                    self._eval_holders[name] = trainable[:_MAX_NAMES]

    def _selective(self, names: set[str], owners: dict[str, nn.Module]) -> bool:
        """Only mode-dependent layers with trainable parameters of their own are in eval
        mode (BatchNorm frozen on purpose, `norm_eval`): every layer in eval mode holding
        trainable parameters is one of them, and none of the eval-mode ones is parameter-
        free (a Dropout in eval mode at training forwards is `model.eval()` left on)."""
        return bool(self._eval_holders) and all(
            name in owners for name in self._eval_holders) and all(
            name in owners and any(p.requires_grad for p in owners[name].parameters())
            for name in names)

    def on_run_start(self, ctx: StepContext) -> None:
        self._refresh(ctx.wb.model)

    def _check(self, ctx: StepContext, key: str, phase: str, training: bool) -> list[str]:
        """Count a forward; the modules not in the expected mode (`training`)."""
        self._counts[key] += 1
        wrong = [name for name, module in self._modules if module.training is not training]
        if wrong:
            self._counts[f"{key}_{'eval' if training else 'train'}_mode"] += 1
            self._wrong[phase].update(wrong)
            self._first.setdefault(phase, ctx.step)
        return wrong

    def _since_backward(self, wb: Any) -> None:
        """Forwards before the latest backward were training forwards: forget them. Read
        from the Workbench's backward count, which spares this probe a call per backward."""
        if wb.n_backward != self._loose_since:
            self._forget_loose(wb.n_backward)

    def on_after_forward(self, ctx: StepContext) -> None:
        backwards = ctx.wb.n_backward  # `_since_backward` inlined: this runs every step
        if backwards != self._loose_since:
            self._forget_loose(backwards)
        self._loose += 1
        in_eval = self._check(ctx, "forwards", "train", training=True)
        if len(in_eval) < len(self._modules):  # some ran in train mode
            self._loose_grad_train = True
        if len(in_eval) > self._holders_seen:  # more of them in eval mode: read again
            self._holders_seen = len(in_eval)
            self._note_eval_holders()

    def on_nograd_forward(self, ctx: StepContext) -> None:
        self._since_backward(ctx.wb)
        self._loose += 1
        self._loose_train.update(self._check(ctx, "nograd_forwards", "eval", training=False))

    def _forget_loose(self, backwards: int) -> None:
        self._loose_since = backwards  # wb.n_backward when the count restarted
        self._loose = 0
        self._loose_train: set[str] = set()  # in train mode at a loose no-grad forward
        self._loose_grad_train = False  # a loose grad-enabled forward ran some in train mode

    def on_eval(self, ctx: StepContext) -> None:
        """An evaluation is judged by the mode its own forwards (those since the last
        backward) ran in: a loop that switches back to model.train() before logging the
        metrics evaluated correctly."""
        self._counts["evals"] += 1
        self._since_backward(ctx.wb)
        if self._loose:
            self._counts["evals_own"] += 1
            wrong = set(self._loose_train)
            if self._loose_grad_train:  # validation without torch.no_grad, in train mode
                wrong.update(name for name, module in self._modules if module.training)
            if wrong:
                self._counts["evals_train_mode"] += 1
                self._wrong["eval"].update(wrong)
                self._first.setdefault("eval", ctx.step)
        # else the watched model ran no forward for it: a separate copy (EMA, SWA) was
        # evaluated, whose mode is not this model's
        self._forget_loose(ctx.wb.n_backward)

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
                extra = {"eval_holders": dict(self._eval_holders),
                         # every layer in eval mode with trainable parameters of its own is a
                         # mode-dependent one: BatchNorm frozen on purpose (norm_eval), the
                         # rest of the model training
                         "selective": self._selective(names, owners),
                         } if phase == "train" else {}
                wb.writer.event(ctx.step, "mode_mismatch", phase=phase, modules=listed,
                                trainable=trainable, params=params,
                                first_step=self._first.get(phase, ctx.step), **extra)
        self._reset()
        self._refresh(wb.model)
