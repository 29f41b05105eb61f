"""The bug zoo at the size a user runs it: `riswb overfit --samples 256 --inject FAULT` (default
epochs: 200 steps, default probes) must name every training fault by the findings it expects
and fail the gate when the fault says so; the clean run must pass with no error.

The 48-step zoo recipe (tests/reference/test_faults.py, benchmarks/fault_matrix.py) samples
per-term gradients every 6th step; here the default probe schedule must find the same bugs.
One run takes ~20 s on a 2-core CPU, so the default run covers a representative subset (the
faults that once went unnamed at this size, and those of the newest findings);
RISWB_ZOO_256=all runs every training fault (~8 minutes).
"""

from __future__ import annotations

import os

import pytest

from riswb.commands.training import overfit_config
from riswb.diagnose.gate import gate
from riswb.diagnose.rules import diagnose
from riswb.reference.faults import FAULTS, build_trainer
from riswb.runlog import read_run

TRAINING = sorted(n for n, f in FAULTS.items() if f.trains)
REPRESENTATIVE = ["detached-r-pred", "detached-term", "zero-grad-never", "zero-grad-before-step",
                  "torch-clip-tiny", "nan-term-sanitized"]
SELECTED = TRAINING if os.environ.get("RISWB_ZOO_256") == "all" else REPRESENTATIVE


def _overfit(inject: str | None, runs_dir):
    """What `riswb overfit --samples 256 [--inject FAULT] --device cpu` trains and gates."""
    config = overfit_config(samples=256, epochs=None, preset="small", seed=0, inject=inject,
                            device="cpu")
    run = read_run(build_trainer(config, runs_dir=runs_dir).run().path)
    diagnosis = diagnose(run)
    return diagnosis, gate(run, diagnosis=diagnosis)


@pytest.mark.slow
def test_clean_overfit_passes_with_no_error(tmp_path):
    diagnosis, verdict = _overfit(None, tmp_path)
    assert not diagnosis.errors, [f.title for f in diagnosis.errors]
    assert verdict.passed, verdict.reasons


@pytest.mark.slow
@pytest.mark.parametrize("name", SELECTED)
def test_fault_is_named_at_256_samples(name, tmp_path):
    fault = FAULTS[name]
    diagnosis, verdict = _overfit(name, tmp_path)
    found = {f.id: f.severity for f in diagnosis.findings if f.severity in ("error", "warning")}
    missing = [i for i in fault.expects if i not in found]
    assert not missing, f"{name}: {missing} not named; found {found}; {diagnosis.unchecked}"
    if fault.gate_fails:
        assert not verdict.passed, f"{name} passed the gate; findings {found}"
