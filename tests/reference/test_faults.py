"""The bug zoo against the real pipeline: every training fault, trained with the reduced
overfit recipe (`riswb.reference.faults.zoo_config`: 128 scenes, batch 32, 48 steps, all probes on),
must fail the gate and be named by the findings it expects; the clean trainer must pass.
Crash-signature faults must break the first backward of the bare pipeline."""

from __future__ import annotations

import inspect

import pytest
import torch

from riswb.diagnose.gate import gate
from riswb.diagnose.rules import RULES, diagnose
from riswb.errors import RiswbError
from riswb.reference.config import TrainConfig
from riswb.reference.faults import (
    FAULTS,
    Fault,
    build_trainer,
    get_fault,
    run_fault,
    zoo_config,
    zoo_probes,
)
from riswb.reference.trainer import Trainer
from riswb.runlog import read_run

TRAINING = sorted(n for n, f in FAULTS.items() if f.trains)
CRASHING = sorted(n for n, f in FAULTS.items() if not f.trains)
LITMUS_CHECKS = {
    "finite-nonzero-grads", "oracle-values", "phase-invariance", "spectral-gradcheck",
    "rank-deficient-grads", "optimizer-coverage", "step-moves-groups", "init-loss-range",
    "no-grad-into-inputs", "batch-independence",
}
# Issue 6: the failures the zoo must reproduce, by the finding (or litmus check) naming them
REQUIRED = {
    "optimizer-coverage", "dead-params", "dead-loss-term", "step-cadence", "weights-swapped",
    "lr-stalled", "scheduler-order", "nonfinite-grads", "params-not-moving",
    "clip-saturated", "grad-into-inputs", "stale-checkpoint", "spectrum-mismatch",
    "step-skipped", "grads-not-cleared", "grads-altered",
}
TRAINER_METHODS = {name for name, value in vars(Trainer).items() if callable(value)}


@pytest.fixture(scope="module")
def runs_dir(tmp_path_factory):
    return tmp_path_factory.mktemp("zoo-runs")


def _severe_ids(diagnosis) -> dict[str, str]:
    out: dict[str, str] = {}
    for finding in diagnosis.findings:
        if finding.severity in ("error", "warning"):
            out.setdefault(finding.id, finding.severity)
    return out


# --------------------------------------------------------------------------- the registry
def test_zoo_has_the_required_faults():
    assert len(FAULTS) >= 17
    named = {i for f in FAULTS.values() for i in f.expects}
    assert REQUIRED <= named, f"no fault expects {sorted(REQUIRED - named)}"
    assert any("phase-invariance" in f.litmus for f in FAULTS.values())


@pytest.mark.parametrize("name", sorted(FAULTS))
def test_fault_is_well_formed(name):
    fault = get_fault(name)
    assert fault.name == name and fault.description and fault.failure
    assert fault.expects or fault.litmus, "a fault must say what detects it"
    assert set(fault.expects) <= set(RULES), "expects must be finding ids of docs/design.md §5"
    assert set(fault.also) <= set(RULES)
    assert not set(fault.expects) & set(fault.also)
    assert set(fault.litmus) <= LITMUS_CHECKS
    assert issubclass(fault.trainer, Trainer)
    own = [n for n, v in vars(fault.trainer).items()
           if inspect.isfunction(v) and not n.startswith("__")]
    if fault.trainer is Trainer:
        assert fault.config, "a fault without a Trainer subclass must override the config"
    else:
        assert len(own) == 1, f"{fault.trainer.__name__} overrides {own}: one method only"
        assert own[0] in TRAINER_METHODS, f"{own[0]} is not a Trainer method"
    TrainConfig().replace(**fault.config)  # the overrides are valid config keys
    assert fault.to_dict()["expects"] == list(fault.expects)


def test_clean_trainer_has_no_fault_flags():
    assert "inject" not in inspect.getsource(Trainer)
    assert type(build_trainer(zoo_config(), probes=None)) is Trainer


def test_build_trainer_applies_the_fault_and_its_config(tmp_path):
    trainer = build_trainer(zoo_config("clip-near-zero"), runs_dir=tmp_path, probes=None)
    assert trainer.cfg.clip_norm == FAULTS["clip-near-zero"].config["clip_norm"]
    trainer = build_trainer(zoo_config("heads-not-in-optimizer"), probes=None)
    assert type(trainer) is FAULTS["heads-not-in-optimizer"].trainer
    assert trainer.wb is None  # the bare pipeline, as litmus sees it
    with pytest.raises(RiswbError, match="unknown fault 'no-such-fault'"):
        build_trainer(zoo_config("no-such-fault"))


def test_zoo_probes_sample_term_gradients_often_enough():
    probes = zoo_probes()
    term = [p for p in probes if not isinstance(p, str)]
    assert len(term) == 1 and term[0].interval == 6
    assert len(probes) >= 10


# --------------------------------------------------------------------------- training runs
@pytest.mark.slow
def test_clean_run_passes(runs_dir):
    run = read_run(run_fault(None, runs_dir).path)
    diagnosis = diagnose(run)
    assert not diagnosis.errors, [f.title for f in diagnosis.errors]
    verdict = gate(run, diagnosis=diagnosis)
    assert verdict.passed, verdict.reasons


@pytest.mark.slow
@pytest.mark.parametrize("name", TRAINING)
def test_fault_is_diagnosed(name, runs_dir):
    fault = FAULTS[name]
    run = read_run(run_fault(name, runs_dir).path)
    diagnosis = diagnose(run)
    found = _severe_ids(diagnosis)
    missing = [i for i in fault.expects if i not in found]
    assert not missing, (f"{name}: {missing} not named; found {found}; "
                         f"unchecked {diagnosis.unchecked}")
    verdict = gate(run, diagnosis=diagnosis)
    if fault.gate_fails:
        assert not verdict.passed, f"{name} passed the gate; findings {found}"


@pytest.mark.parametrize("name", CRASHING)
def test_crash_signature_breaks_the_first_backward(name):
    """On the bare pipeline (as litmus builds it): backward through the faulty terms of a
    small batch raises or yields non-finite gradients. (In a full run of batch 32 the
    phase-dependent part can stay under eigh's tolerance: training then goes on with a
    wrong gradient, which is why these faults belong to litmus, not to the gate.)"""
    trainer = build_trainer(zoo_config(name), probes=None)
    batch = trainer.train_set[torch.arange(8)]
    terms = trainer.compute_terms(trainer.forward(batch), batch)
    raised = False
    try:
        sum(trainer.weights[n] * t for n, t in terms.items()).backward()
    except RuntimeError:
        raised = True
    grads = [p.grad for p in trainer.model.parameters() if p.grad is not None]
    assert raised or not all(bool(torch.isfinite(g).all()) for g in grads)


def test_fault_dataclass_defaults():
    fault = Fault("x", "d", "f", expects=("dead-params",))
    assert fault.trains and fault.gate_fails and fault.overrides == ""
