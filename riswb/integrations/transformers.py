"""riswb inside a Hugging Face Trainer: one callback, no `compute_loss` override.

```python
from riswb.integrations.transformers import RiswbCallback
trainer = Trainer(model=model, args=args, train_dataset=ds, callbacks=[RiswbCallback(name="bert")])
trainer.train()                   # runs/<stamp>-bert/, then `riswb report latest`
```

What the callback does, and why there:

* train begin — builds the Workbench on the model, the REAL optimizer and the scheduler.
  accelerate wraps the optimizer in an `AcceleratedOptimizer` that subclasses
  torch.optim.Optimizer without running its `__init__`, so it has no hook registries (riswb
  failed with AttributeError '_optimizer_step_pre_hooks'); the torch optimizer is its
  `.optimizer`. The intent goes into the manifest: `accumulation` =
  `args.gradient_accumulation_steps` unless the callback is told otherwise, and `clip` =
  `args.max_grad_norm` (the Trainer clips at 1.0 by default), so clipping the run sees is
  known to be the Trainer's.
* loss — a forward hook on the model records `outputs.loss` as `wb.loss({"loss": ...})`
  when a training forward (grad enabled, `model.training`) returns one: that is before the
  Trainer's backward, so the graph is alive for per-term gradients. The value is the model's
  own (the Trainer divides by the accumulation steps only for backward). A `compute_loss`
  that builds named terms itself passes `capture_loss=False` and returns
  `callback.loss(terms, weights)`; a model that returns no `.loss` records nothing.
* evaluate — `wb.evaluate(metrics)` with the Trainer's metrics (`eval_loss`, ...).
* train end — closes the run `completed`. The Trainer has no exception event: a run whose
  training raised stays `running` (read as `killed` once the process is gone) and is closed
  `crashed` at interpreter exit or when the callback starts its next run.

Under DDP each rank writes its own run `<name>-rank<r>` (`rank_zero_only=True`: rank 0 only);
see riswb.integrations.distributed.
"""

from __future__ import annotations

import atexit
from collections.abc import Mapping
from typing import Any

import torch
from accelerate.optimizer import AcceleratedOptimizer
from transformers import TrainerCallback

from riswb.integrations.distributed import open_workbench

_ARGS_KEPT = ("learning_rate", "weight_decay", "per_device_train_batch_size",
              "gradient_accumulation_steps", "max_grad_norm", "max_steps", "num_train_epochs",
              "lr_scheduler_type", "warmup_steps", "seed", "optim")


def _real_optimizer(optimizer: Any) -> torch.optim.Optimizer:
    return optimizer.optimizer if isinstance(optimizer, AcceleratedOptimizer) else optimizer


def _loss_of(output: Any) -> torch.Tensor | None:
    loss = output.get("loss") if isinstance(output, Mapping) else getattr(output, "loss", None)
    if isinstance(loss, torch.Tensor) and loss.requires_grad and loss.numel() == 1:
        return loss
    return None


class RiswbCallback(TrainerCallback):
    """Instrument `Trainer.train` with a riswb Workbench (keyword arguments: Workbench's, plus
    `rank_zero_only` and `capture_loss`). The live Workbench is `callback.workbench`."""

    def __init__(self, *, capture_loss: bool = True, rank_zero_only: bool = False,
                 **workbench_kwargs: Any):
        self.workbench_kwargs = workbench_kwargs
        self.capture_loss = capture_loss
        self.rank_zero_only = rank_zero_only
        self.workbench: Any = None
        self._hook: Any = None
        atexit.register(self._close, "crashed")

    def on_train_begin(self, args: Any, state: Any, control: Any, model: Any = None,
                       optimizer: Any = None, lr_scheduler: Any = None, **kwargs: Any) -> None:
        self._close("crashed")  # a previous train() that raised never reached train end
        if model is None or optimizer is None:
            raise ValueError("RiswbCallback needs the Trainer's model and optimizer")
        options = dict(self.workbench_kwargs)
        config = getattr(model, "config", None)
        options.setdefault("name", getattr(config, "model_type", None) or type(model).__name__)
        options["intent"] = {**self._intent(args), **(options.get("intent") or {})}
        options.setdefault("accumulation", int(args.gradient_accumulation_steps))
        if options.get("config") is None:
            options["config"] = {"training_args": {k: getattr(args, k, None) for k in _ARGS_KEPT}}
        self.workbench = open_workbench(model, _real_optimizer(optimizer), lr_scheduler,
                                        rank_zero_only=self.rank_zero_only, **options)
        if self.workbench is not None and self.capture_loss:
            self._hook = model.register_forward_hook(self._on_forward)

    @staticmethod
    def _intent(args: Any) -> dict[str, Any]:
        intent: dict[str, Any] = {
            "framework": "transformers",
            "trainer_accumulation": int(args.gradient_accumulation_steps),
        }
        if args.max_grad_norm and args.max_grad_norm > 0:
            intent["clip"] = {"max_norm": float(args.max_grad_norm), "algorithm": "norm",
                              "by": "transformers.TrainingArguments(max_grad_norm)"}
        return intent

    def _on_forward(self, module: torch.nn.Module, args: Any, output: Any) -> None:
        if self.workbench is None or not module.training or not torch.is_grad_enabled():
            return
        loss = _loss_of(output)
        if loss is not None:
            self.workbench.loss({"loss": loss})

    def loss(self, terms: Mapping[str, torch.Tensor],
             weights: Mapping[str, float] | None = None) -> torch.Tensor:
        """Record named terms from a custom `compute_loss` (with `capture_loss=False`) and
        return their weighted sum, graph intact — the loss to return to the Trainer."""
        if self.workbench is None:  # a rank that does not log
            return sum((weights or {}).get(n, 1.0) * t for n, t in terms.items())
        return self.workbench.loss(terms, weights)

    def on_evaluate(self, args: Any, state: Any, control: Any, metrics: Any = None,
                    **kwargs: Any) -> None:
        if self.workbench is None or not metrics:
            return
        numeric = {k: v for k, v in metrics.items() if isinstance(v, (int, float, torch.Tensor))}
        if numeric:
            self.workbench.evaluate(numeric)

    def on_train_end(self, args: Any, state: Any, control: Any, **kwargs: Any) -> None:
        self._close("completed")

    def _close(self, status: str) -> None:
        hook, self._hook = self._hook, None
        if hook is not None:
            hook.remove()
        wb, self.workbench = self.workbench, None
        if wb is not None:
            wb.close(status)
