"""The end of the OUTERMOST backward pass, seen from the parameters' gradient hooks.

`register_post_accumulate_grad_hook` fires on every trainable tensor as its `.grad` is
written; the first firing in a graph task queues an engine callback that runs when that
task ends — before the user's code can touch the gradients. Reentrant activation
checkpointing (`torch.utils.checkpoint(..., use_reentrant=True)`) runs a nested backward
(its own graph task) inside a node of the outer one, and the nested task's callback would
fire once per checkpointed segment. A nested task is recognised in its callback by the
engine still executing an enclosing node (`torch._C._current_autograd_node()` is None only
at the outermost level); instead of reporting, the callback hooks that enclosing node so
that, once it finishes, a callback is queued on the enclosing task in turn. So `on_end`
fires once per outermost backward, however deep the nesting and whether or not the outer
task owns any parameter itself.
"""

from __future__ import annotations

from collections.abc import Callable

import torch

_ENGINE = torch.autograd.Variable._execution_engine


class BackwardEnd:
    """Calls `on_end()` once at the end of each outermost backward that reaches `params`."""

    def __init__(self, params: list[torch.Tensor], on_end: Callable[[], None]):
        self.on_end = on_end
        self.last_task: int | None = None  # graph task id of the latest outermost backward
        self._queued: set[int] = set()  # graph tasks with a callback queued
        self._handles = [p.register_post_accumulate_grad_hook(self._queue) for p in params]

    def reset(self) -> None:
        """Forget queued tasks: a backward that raised never ran its callback."""
        self._queued.clear()

    def remove(self) -> None:
        for handle in self._handles:
            handle.remove()
        self._handles.clear()

    def _queue(self, _param: torch.Tensor | None = None) -> None:
        """Queue the end-of-task callback once per graph task (also the parameters' hook:
        it fires once per tensor and backward, so it takes the tensor and does no more)."""
        task = torch._C._current_graph_task_id()
        if task not in self._queued:
            self._queued.add(task)
            _ENGINE.queue_callback(lambda: self._on_task_end(task))

    def _on_task_end(self, task: int) -> None:
        self._queued.discard(task)
        enclosing = torch._C._current_autograd_node()
        if enclosing is None:
            self.last_task = task
            self.on_end()
            return
        # nested (reentrant checkpoint): report when the enclosing task ends instead
        def after_enclosing(_grad_inputs, _grad_outputs):
            handle.remove()
            self._queue()

        handle = enclosing.register_hook(after_enclosing)
