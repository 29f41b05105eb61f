"""riswb in a test suite: `assert_learns`, and the pytest fixture `riswb_workbench`.

```python
from riswb.testing import assert_learns

def test_mlp_learns():
    model = MLP(); opt = torch.optim.Adam(model.parameters(), 1e-2)
    assert_learns(model, opt, batches, lambda m, b: mse(m(b[0]), b[1]), steps=60)

def test_my_loop(riswb_workbench):          # a Workbench in tmp_path, closed at teardown
    wb = riswb_workbench(model, opt)
```

`assert_learns` runs the plain loop (loss → zero_grad → backward → step → scheduler) under a
Workbench, gates the run (riswb.diagnose.gate: params move, the loss drops, no error
finding) and raises AssertionError naming each failed check and error finding by id, with
the run's path so `riswb report PATH` shows the evidence (a passing run in the default
temporary folder is deleted).

Registered as the pytest plugin `riswb` (entry point pytest11). Loading it costs nothing:
torch and riswb's instrumentation are imported only when the fixture or `assert_learns` is
used, and it defines no hooks, so a suite that never asks for it runs exactly as without it
(`-p no:riswb` switches it off altogether).
"""

from __future__ import annotations

import shutil
import tempfile
from collections.abc import Callable, Iterable, Iterator, Mapping
from pathlib import Path
from typing import Any

try:
    import pytest
except ImportError:  # assert_learns works without pytest; only the fixture needs it
    pytest = None

__all__ = ["assert_learns"]

LossFn = Callable[[Any, Any], Any]


def _cycle(batches: Iterable[Any], steps: int) -> Iterator[Any]:
    """The batches again and again (a list or a DataLoader), `steps` of them in all."""
    given = 0
    while given < steps:
        before = given
        for batch in batches:
            yield batch
            given += 1
            if given == steps:
                return
        if given == before:
            raise ValueError(f"batches ran out after {given} of {steps} steps (pass a list "
                             "or a DataLoader, not a one-shot iterator, or fewer steps)")


def assert_learns(
    model: Any,
    optimizer: Any,
    batches: Iterable[Any],
    loss_fn: LossFn,
    steps: int = 50,
    *,
    min_loss_drop: float | None = None,
    weights: Mapping[str, float] | None = None,
    scheduler: Any = None,
    runs_dir: str | Path | None = None,
    name: str = "assert-learns",
    **workbench_kwargs: Any,
) -> Any:
    """Train `steps` steps and fail unless riswb's gate passes; return its GateResult.

    `loss_fn(model, batch)` returns the loss, or a dict of named terms (summed with
    `weights`, default 1 each). `min_loss_drop`: the fraction the loss must fall by (default:
    the gate's threshold). The run goes to `runs_dir`, by default a fresh temporary folder
    that is kept only when the assertion fails.
    """
    from riswb.diagnose.gate import gate
    from riswb.diagnose.rules import Thresholds
    from riswb.instrument.workbench import Workbench
    from riswb.runlog import read_run

    if steps < 1:
        raise ValueError(f"steps must be >= 1, got {steps}")
    scratch = runs_dir is None  # a passing run in our own temporary folder is removed
    runs_dir = tempfile.mkdtemp(prefix="riswb-") if scratch else runs_dir
    # ~20 records whatever the length, so the gate's first/last tenths are real windows
    workbench_kwargs.setdefault("log_every", max(1, steps // 20))
    with Workbench(model, optimizer, scheduler, runs_dir=runs_dir, name=name,
                   **workbench_kwargs) as wb:
        for batch in _cycle(batches, steps):
            out = loss_fn(model, batch)
            loss = wb.loss(out if isinstance(out, Mapping) else {"loss": out}, weights)
            for opt in wb.optimizers:
                opt.zero_grad()
            loss.backward()
            for opt in wb.optimizers:
                opt.step()
            if scheduler is not None:
                scheduler.step()
    thresholds = Thresholds()
    if min_loss_drop is not None:
        thresholds = thresholds.overrides(min_loss_drop=min_loss_drop)
    result = gate(read_run(wb.path), thresholds)
    if not result.passed:
        lines = "\n".join(f"  {reason}" for reason in result.reasons)
        raise AssertionError(f"riswb: the model did not learn in {steps} steps "
                             f"(run {wb.path}; `riswb report {wb.path}` for evidence)\n{lines}")
    if scratch:
        shutil.rmtree(runs_dir, ignore_errors=True)
    return result


if pytest is not None:

    @pytest.fixture
    def riswb_workbench(tmp_path: Path) -> Iterator[Callable[..., Any]]:
        """Factory: `riswb_workbench(model, optimizer, scheduler=None, **kwargs)` → a
        Workbench writing under `tmp_path/riswb-runs`; every one is closed at teardown."""
        from riswb.instrument.workbench import Workbench

        opened: list[Any] = []

        def factory(model: Any, optimizer: Any = None, scheduler: Any = None,
                    **kwargs: Any) -> Any:
            kwargs.setdefault("runs_dir", tmp_path / "riswb-runs")
            wb = Workbench(model, optimizer, scheduler, **kwargs)
            opened.append(wb)
            return wb

        yield factory
        for wb in opened:
            wb.close()
