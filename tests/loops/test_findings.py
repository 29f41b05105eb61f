"""Findings on foreign loops riswb has never been told about (tests/loops/zoo.py,
tests/loops/unseen.py, plus four buggy loops of the same make below): every healthy loop
draws no error and no warning (info is allowed), every buggy loop is named by its finding
id — a warning on a healthy loop is a defect like a missed bug.

    python -m pytest -q tests/loops/test_findings.py -s    # prints the precision/recall table
"""

from __future__ import annotations

from pathlib import Path

import pytest
import torch

import riswb
from tests.loops import optimizers_and_resumes as optimizer_loops
from tests.loops import test_closure_and_multi_optimizer_loops as closure_loops
from tests.loops import test_constraint_and_unfreeze_loops as constraint_loops
from tests.loops import test_distillation_loops as distillation_loops
from tests.loops import validation_and_schedule as validation_loops
from tests.loops.unseen import unseen_buggy, unseen_healthy
from tests.loops.zoo import (
    LOG_EVERY,
    _batches,
    _data,
    _mlp,
    buggy_loops,
    diagnose_loop,
    healthy_loops,
)

SEVERE = ("error", "warning")


# -- four more buggy loops --------------------------------------------------------------


def nan_grads_sanitized_by_hand(runs_dir: Path) -> Path:
    """A sqrt at exactly 0 gives NaN gradients; the loop's own nan_to_num_ hides them."""
    model = _mlp()
    opt = torch.optim.SGD(model.parameters(), lr=0.05)
    batches = _batches(*_data())
    with riswb.Workbench(model, opt, runs_dir=runs_dir, name="nan-by-hand",
                         log_every=LOG_EVERY) as wb:
        for _ in range(40):
            xb, yb = next(batches)
            out = model(xb)
            loss = wb.loss({"mse": (out - yb).square().mean(),
                            "dist": (out - out.detach()).square().sum(1).sqrt().mean()})
            opt.zero_grad()
            loss.backward()
            for p in model.parameters():
                p.grad.nan_to_num_(0.0)
            opt.step()
    return wb.path


def one_step_per_epoch_cleared(runs_dir: Path) -> Path:
    """zero_grad/backward per batch but step() after the batch loop: only the last batch of
    each epoch is stepped."""
    model = _mlp()
    opt = torch.optim.SGD(model.parameters(), lr=0.05)
    x, y = _data()
    with riswb.Workbench(model, opt, runs_dir=runs_dir, name="step-per-epoch",
                         log_every=LOG_EVERY) as wb:
        for _epoch in range(10):
            for xb, yb in zip(x.split(8), y.split(8), strict=True):
                loss = wb.loss({"mse": (model(xb) - yb).square().mean()})
                opt.zero_grad()
                loss.backward()
            opt.step()
    return wb.path


def accumulation_declared_not_done(runs_dir: Path) -> Path:
    """`accumulation=4` declared, but the loop steps after every batch."""
    model = _mlp()
    opt = torch.optim.SGD(model.parameters(), lr=0.05)
    batches = _batches(*_data())
    with riswb.Workbench(model, opt, runs_dir=runs_dir, name="accum-declared",
                         log_every=LOG_EVERY, accumulation=4) as wb:
        for _ in range(40):
            xb, yb = next(batches)
            loss = wb.loss({"mse": (model(xb) - yb).square().mean()})
            opt.zero_grad()
            loss.backward()
            opt.step()
    return wb.path


def amp_nan_every_step(runs_dir: Path) -> Path:
    """fp16 + GradScaler with a term whose gradient is NaN on every step: the scaler skips
    every step — not calibration."""
    model = _mlp()
    opt = torch.optim.AdamW(model.parameters(), lr=1e-2)
    scaler = torch.amp.GradScaler("cpu")
    batches = _batches(*_data())
    with riswb.Workbench(model, opt, runs_dir=runs_dir, name="amp-nan",
                         log_every=LOG_EVERY) as wb:
        for _ in range(40):
            xb, yb = next(batches)
            with torch.autocast("cpu", dtype=torch.float16):
                out = model(xb).float()
            loss = wb.loss({"mse": (out - yb).square().mean(),
                            "dist": (out - out.detach()).abs().sqrt().mean()})
            opt.zero_grad()
            scaler.scale(loss).backward()
            scaler.step(opt)
            scaler.update()
    return wb.path


# the scout round's regression suites, each checked there for its own ids, here for all
SUITES = {"closure": closure_loops, "constraint": constraint_loops,
          "distillation": distillation_loops, "validation": validation_loops,
          "optimizers": optimizer_loops}
HEALTHY = {**healthy_loops(), **unseen_healthy(),
           **{f"{key}:{loop.__name__}": loop for key, suite in SUITES.items()
              for loop in suite.HEALTHY}}
BUGGY = {
    **buggy_loops(),
    **unseen_buggy(),
    **{f"{key}:{loop.__name__}": loop for key, suite in SUITES.items() for loop in suite.BUGGY},
    "nan_grads_sanitized_by_hand": nan_grads_sanitized_by_hand,
    "one_step_per_epoch_cleared": one_step_per_epoch_cleared,
    "accumulation_declared_not_done": accumulation_declared_not_done,
    "amp_nan_every_step": amp_nan_every_step,
}
# the finding id that must name each buggy loop (error or warning)
EXPECTS = {
    "clip_tiny_max_norm": "clip-saturated",
    "zero_grad_never": "grads-not-cleared",
    "eval_mode_training": "train-mode",
    "zero_grad_between_backward_and_step": "grads-altered",
    "head_missing_from_optimizer": "optimizer-coverage",
    "l2_penalty_dominates": "term-dominates",
    "detached_term": "dead-loss-term",
    "nan_grads_sanitized_by_hand": "nonfinite-grads",
    "one_step_per_epoch_cleared": "step-cadence",
    "accumulation_declared_not_done": "step-cadence",
    "amp_nan_every_step": "nonfinite-grads",
    "sparse_table_never_used": "dead-params",
    "adafactor_head_missing": "optimizer-coverage",
    **{f"{key}:{loop.__name__}": rule for key, suite in SUITES.items()
       for loop, (rule, _) in suite.BUGGY.items()},
}
# the severity a suite requires of its buggy loop's finding
SEVERITY = {f"{key}:{loop.__name__}": severity for key, suite in SUITES.items()
            for loop, (_, severity) in suite.BUGGY.items()}
# findings a bug legitimately causes besides its own (its symptoms)
ALSO = {
    "zero_grad_between_backward_and_step": {"params-not-moving", "step-skipped"},
    "head_missing_from_optimizer": {"params-not-moving"},
    "amp_nan_every_step": {"step-skipped", "params-not-moving", "loss-not-dropping"},
    # NaN reaches every gradient element: sanitized to 0, nothing moves
    "nan_grads_sanitized_by_hand": {"params-not-moving", "step-skipped", "loss-not-dropping"},
    "one_step_per_epoch_cleared": {"loss-not-dropping"},
    "sparse_table_never_used": {"params-not-moving"},
    "adafactor_head_missing": {"params-not-moving"},
    "distillation:head_missing_from_optimizer": {"params-not-moving"},
    # the lr is ~0 from the first tenth of the run on: the loss stops where it was
    "validation:lr_decayed_by_hand_per_batch": {"loss-not-dropping"},
    # the auxiliary head gets no gradient at all
    "validation:backward_on_one_term": {"dead-params", "params-not-moving"},
    # nothing trains: the loss stays where it started
    "optimizers:backward_on_a_rebuilt_loss": {"loss-not-dropping"},
    # the classifier weight never changes
    "optimizers:classifier_gradient_masked_by_a_hook": {"params-not-moving"},
    # the new head never trains: the loss stays high, the old head is never reached again
    "optimizers:head_replaced_after_the_optimizer": {"loss-not-dropping", "params-not-moving"},
}


@pytest.fixture(scope="module")
def diagnoses(tmp_path_factory):
    root = tmp_path_factory.mktemp("findings")
    out = {}
    for name, loop in {**HEALTHY, **BUGGY}.items():
        out[name] = diagnose_loop(loop, root)
    return out


def severe(diagnosis) -> dict[str, str]:
    return {f.id: f.severity for f in diagnosis.findings if f.severity in SEVERE}


def test_every_buggy_loop_has_an_expected_id():
    assert set(EXPECTS) == set(BUGGY) and len(BUGGY) >= 8


@pytest.mark.parametrize("name", list(HEALTHY))
def test_healthy_loop_draws_no_error_and_no_warning(diagnoses, name):
    assert severe(diagnoses[name]) == {}, [f.title for f in diagnoses[name].findings]


@pytest.mark.parametrize("name", list(BUGGY))
def test_buggy_loop_is_named(diagnoses, name):
    found = severe(diagnoses[name])
    assert EXPECTS[name] in found, (found, diagnoses[name].unchecked)
    assert found[EXPECTS[name]] == SEVERITY.get(name, found[EXPECTS[name]]), found
    extra = set(found) - {EXPECTS[name]} - ALSO.get(name, set())
    assert not extra, [f.title for f in diagnoses[name].findings if f.id in extra]


def test_one_finding_per_id(diagnoses):
    for name, diagnosis in diagnoses.items():
        ids = [f.id for f in diagnosis.findings]
        assert len(ids) == len(set(ids)), name


def test_precision_and_recall(diagnoses):
    """Recall = buggy loops named by their id; precision = (loop, id) error/warning pairs
    that are expected or a legitimate symptom, over healthy and buggy loops."""
    named = sum(EXPECTS[n] in severe(diagnoses[n]) for n in BUGGY)
    pairs = [(n, i) for n, d in diagnoses.items() for i in severe(d)]
    right = [(n, i) for n, i in pairs if n in BUGGY and (i == EXPECTS[n] or i in ALSO.get(n, ()))]
    print(f"\nforeign loops: recall {named}/{len(BUGGY)}, precision {len(right)}/{len(pairs)}, "
          f"healthy loops with a warning or error: "
          f"{sum(bool(severe(diagnoses[n])) for n in HEALTHY)}/{len(HEALTHY)}")
    assert named == len(BUGGY) and len(right) == len(pairs)
