"""riswb inside a Lightning Trainer: one callback, no change to the training loop.

```python
from riswb.integrations.lightning import RiswbCallback
trainer = L.Trainer(max_steps=1000, callbacks=[RiswbCallback(name="mlp")])
trainer.fit(module, loader)       # runs/<stamp>-mlp/, then `riswb report latest`

def training_step(self, batch, i):      # named terms: return them beside the loss
    terms = {"mse": mse, "l1": l1}
    return {"loss": mse + 0.1 * l1, "terms": terms, "weights": {"l1": 0.1}}
```

What the callback does, and why there:

* fit start — builds the Workbench on the LightningModule, the Trainer's real optimizers
  (Lightning keeps plain torch optimizers in `trainer.optimizers`; a LightningOptimizer
  wrapper is unwrapped) and its schedulers. The intent goes into the manifest:
  `accumulation` = `accumulate_grad_batches` unless the callback is told otherwise (a
  declared `accumulation=N` is what the user MEANT; step-cadence then judges the Trainer
  against it), and `clip` = `gradient_clip_val` / `gradient_clip_algorithm`, so clipping the
  run sees is known to be Lightning's.
* before each backward (`on_before_backward`) — `wb.loss(terms, weights)`, while the graph
  is still alive, so per-term gradients can be taken. The terms come from, in order: a
  `log_terms(self, terms, weights)` call in this batch (needed with manual optimization,
  where `training_step` returns after its own `manual_backward`); the `"terms"` (and
  optional `"weights"`) of `training_step`'s returned dict (seen through a wrapper on the
  module instance, removed at teardown); else the step's loss alone, `{"loss": loss}`.
  Values are unscaled: Lightning divides the loss by `accumulate_grad_batches` only for
  backward.
* validation end — `wb.evaluate(trainer.callback_metrics)` (not during the sanity check).
* fit end — closes the run `completed`; an exception closes it `crashed`.

Under DDP each rank writes its own run `<name>-rank<r>` (`rank_zero_only=True`: rank 0 only);
see riswb.integrations.distributed.

Automatic optimization calls `optimizer.step(closure)`: torch runs the step pre-hooks before
the closure's forward and backward, so riswb's pre-step records of step n see the gradients
of step n − 1 (counts, learning rates and Δθ are unaffected).
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

import lightning.pytorch as pl
import torch

from riswb.instrument.hooks import Event
from riswb.integrations.distributed import open_workbench

_STASH = "_riswb_terms"


def log_terms(
    module: torch.nn.Module,
    terms: Mapping[str, torch.Tensor],
    weights: Mapping[str, float] | None = None,
) -> None:
    """Hand this batch's named loss terms (graph attached) to the RiswbCallback; call it in
    `training_step` before `manual_backward`, or instead of returning `"terms"`."""
    setattr(module, _STASH, (dict(terms), None if weights is None else dict(weights)))


def _real_optimizer(optimizer: Any) -> torch.optim.Optimizer:
    # LightningOptimizer keeps the torch optimizer in `_optimizer`; the strategy's list
    # normally holds it bare already.
    return getattr(optimizer, "_optimizer", optimizer)


class RiswbCallback(pl.Callback):
    """Instrument `trainer.fit` with a riswb Workbench (keyword arguments: Workbench's, plus
    `rank_zero_only`). The live Workbench is `callback.workbench` during fit."""

    def __init__(self, *, rank_zero_only: bool = False, **workbench_kwargs: Any):
        self.workbench_kwargs = workbench_kwargs
        self.rank_zero_only = rank_zero_only
        self.workbench: Any = None
        self._output: Any = None  # this batch's training_step output
        self._module: pl.LightningModule | None = None

    # -- fit lifecycle --------------------------------------------------------------------

    def on_fit_start(self, trainer: pl.Trainer, pl_module: pl.LightningModule) -> None:
        kwargs = dict(self.workbench_kwargs)
        kwargs.setdefault("name", type(pl_module).__name__.lower())
        kwargs["intent"] = {**self._intent(trainer), **(kwargs.get("intent") or {})}
        kwargs.setdefault("accumulation", int(trainer.accumulate_grad_batches))
        if kwargs.get("config") is None:
            kwargs["config"] = {"hparams": dict(getattr(pl_module, "hparams", {}) or {})}
        optimizers = [_real_optimizer(o) for o in trainer.optimizers]
        schedulers = [config.scheduler for config in trainer.lr_scheduler_configs] or None
        self.workbench = open_workbench(pl_module, optimizers, schedulers,
                                        rank_zero_only=self.rank_zero_only, **kwargs)
        if self.workbench is not None:
            self._wrap_training_step(pl_module)

    @staticmethod
    def _intent(trainer: pl.Trainer) -> dict[str, Any]:
        intent: dict[str, Any] = {
            "framework": "lightning",
            "trainer_accumulation": int(trainer.accumulate_grad_batches),
        }
        if trainer.gradient_clip_val:
            intent["clip"] = {
                "max_norm": float(trainer.gradient_clip_val),
                "algorithm": str(trainer.gradient_clip_algorithm or "norm"),
                "by": "lightning.Trainer(gradient_clip_val)",
            }
        return intent

    def on_fit_end(self, trainer: pl.Trainer, pl_module: pl.LightningModule) -> None:
        self._close("completed")

    def on_exception(self, trainer: pl.Trainer, pl_module: pl.LightningModule,
                     exception: BaseException) -> None:
        self._close("crashed")

    def teardown(self, trainer: pl.Trainer, pl_module: pl.LightningModule, stage: str) -> None:
        # fit end already closed a finished run; this catches any path that skipped it
        self._close("crashed" if trainer.interrupted else "completed")

    def _close(self, status: str) -> None:
        module, self._module = self._module, None
        if module is not None:
            vars(module).pop("training_step", None)
            vars(module).pop(_STASH, None)
        wb, self.workbench = self.workbench, None
        if wb is not None:
            wb.close(status)

    # -- loss terms -----------------------------------------------------------------------

    def _wrap_training_step(self, pl_module: pl.LightningModule) -> None:
        """Keep `training_step`'s output for on_before_backward; the return value is passed
        through untouched. Set on the instance, so strategies that redirect `forward` to
        `training_step` (DDP) find it too; the Workbench is told that the root-module call
        returning this output is that redirection, so it is not counted (or captured) as a
        second forward."""
        original = pl_module.training_step

        def training_step(*args: Any, **kwargs: Any) -> Any:
            wb = self.workbench
            if wb is not None:
                wb.cancel_redirect()
            output = original(*args, **kwargs)
            self._output = output
            if wb is not None:  # under DDP the module's own __call__ returns it next
                wb.expect_redirect(output)
            return output

        pl_module.training_step = training_step
        self._module = pl_module

    def on_train_batch_start(self, trainer: pl.Trainer, pl_module: pl.LightningModule,
                             batch: Any, batch_idx: int) -> None:
        self._output = None
        vars(pl_module).pop(_STASH, None)
        if self.workbench is not None:  # the inputs probe checks the batch carries no graph
            self.workbench.emit(Event.BATCH_START, inputs={"batch": batch})

    def on_before_backward(self, trainer: pl.Trainer, pl_module: pl.LightningModule,
                           loss: torch.Tensor) -> None:
        if self.workbench is None:
            return
        terms, weights = self._terms(pl_module, loss)
        self.workbench.loss(terms, weights)

    def _terms(self, pl_module: pl.LightningModule, loss: torch.Tensor) -> tuple[dict, Any]:
        stashed = vars(pl_module).pop(_STASH, None)
        if stashed is not None:
            return stashed
        output, self._output = self._output, None
        if isinstance(output, Mapping):
            if output.get("terms"):
                return dict(output["terms"]), output.get("weights")
            output = output.get("loss")
        if isinstance(output, torch.Tensor):
            return {"loss": output}, None
        return {"loss": loss}, None  # manual optimization without log_terms

    # -- evaluation -----------------------------------------------------------------------

    def on_validation_end(self, trainer: pl.Trainer, pl_module: pl.LightningModule) -> None:
        if self.workbench is None or trainer.sanity_checking:
            return
        metrics = {
            key: value for key, value in trainer.callback_metrics.items()
            if not isinstance(value, torch.Tensor) or value.numel() == 1
        }
        if metrics:
            self.workbench.evaluate(metrics)
