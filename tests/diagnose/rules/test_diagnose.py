"""diagnose(): ranking, unchecked, thresholds, JSON, isolation; healthy runs give no error."""

import json
import math

import pytest

from riswb.diagnose.rules import IMPACT_ORDER, RULES, Diagnosis, Finding, Thresholds, diagnose, rank
from riswb.diagnose.rules._util import probe_name
from riswb.errors import RiswbError

from .conftest import Spec, healthy

DESIGN_IDS = [
    "params-not-moving", "loss-not-dropping", "nonfinite-loss", "optimizer-coverage",
    "dead-params", "dead-loss-term", "term-dominates", "term-conflict", "nonfinite-grads",
    "step-skipped", "step-cadence", "weights-swapped", "lr-stalled", "scheduler-order",
    "clip-saturated", "grad-into-inputs", "spectrum-mismatch", "stale-checkpoint",
    "grads-altered", "grads-not-cleared", "train-mode",
]


def test_rules_cover_every_design_id_in_order():
    assert list(RULES) == DESIGN_IDS
    assert sorted(IMPACT_ORDER) == sorted(DESIGN_IDS)


def test_healthy_run_has_no_finding_and_everything_checked(make_run):
    diagnosis = diagnose(make_run(), strict=True)
    assert diagnosis.findings == [] and diagnosis.ok
    assert diagnosis.unchecked == {}
    assert diagnosis.checked == DESIGN_IDS


@pytest.mark.parametrize("steps", [30, 600])
def test_healthy_runs_of_other_lengths_have_no_error(make_run, steps):
    diagnosis = diagnose(make_run(healthy(steps=steps, eval_every=max(10, steps // 4))),
                         strict=True)
    assert diagnosis.errors == [], [f.title for f in diagnosis.errors]


def test_missing_data_run_reports_unchecked(make_run):
    spec = Spec(50, manifest={})
    for step in range(50):
        spec.add(step, "loss", nmse=1.0 / (step + 1), total=1.0 / (step + 1))
    diagnosis = diagnose(make_run(spec), strict=True)
    assert diagnosis.findings == []
    assert set(diagnosis.checked) == {"loss-not-dropping", "nonfinite-loss", "dead-loss-term"}
    assert set(diagnosis.unchecked) == set(DESIGN_IDS) - set(diagnosis.checked)
    assert "param_update" in diagnosis.unchecked["params-not-moving"]
    assert "could not be observed" in diagnosis.unchecked["weights-swapped"]
    assert all(reason for reason in diagnosis.unchecked.values())


def test_disabled_probe_is_named_in_unchecked(make_run):
    name = probe_name("clip")  # the name the workbench records for riswb/probes/clip.py
    spec = healthy().drop("clip").event(3, "probe_error", probe=name, hook="after_backward",
                                        error="RuntimeError: boom")
    diagnosis = diagnose(make_run(spec), strict=True)
    assert f"probe disabled by an error: {name} (RuntimeError: boom)" in (
        diagnosis.unchecked["clip-saturated"])


def test_ranking_errors_first_then_impact(make_run):
    spec = healthy()
    spec.update("loss", lambda s, r: {**r, "total": 1.0 + 0.01 * (s % 3)})  # loss-not-dropping
    # and validation that does not improve either (one that did would make it a surrogate)
    spec.update("eval", lambda s, r: {**r, "val_loss": 1.1 + 0.01 * (s % 3)})
    spec.update("cadence", lambda s, r: {**r, "optimizer_step": s // 50,  # step-cadence
                                         "step_attempts": s // 50})
    spec.update("term_grad", lambda s, r: {**r, "gap": r["gap"] * 1e4})  # term-dominates
    spec.event(0, "scheduler_order", scheduler_step=1)  # warning
    diagnosis = diagnose(make_run(spec), strict=True)
    ids = [(f.severity, f.id) for f in diagnosis.findings]
    assert ids[:2] == [("error", "step-cadence"), ("error", "loss-not-dropping")]
    assert {i for s, i in ids if s == "warning"} >= {"term-dominates", "scheduler-order"}
    severities = [f.severity for f in diagnosis.findings]
    assert severities == sorted(severities, key=["error", "warning", "info"].index)


def test_rank_is_stable_within_a_rule():
    a = Finding("lr-stalled", "warning", "a")
    b = Finding("lr-stalled", "warning", "b")
    c = Finding("nonfinite-loss", "error", "c")
    assert rank([a, b, c]) == [c, a, b]


def test_to_dict_is_strict_json(make_run):
    spec = healthy().update("loss", lambda s, r: {**r, "total": math.nan} if s > 100 else r)
    payload = diagnose(make_run(spec), strict=True).to_dict()
    text = json.dumps(payload, allow_nan=False)
    back = json.loads(text)
    assert back["ok"] is False and back["counts"]["error"] >= 1
    assert set(back) == {"run", "ok", "counts", "findings", "unchecked", "checked", "thresholds"}
    first = back["findings"][0]
    assert set(first) == {"id", "severity", "title", "evidence", "fix"}


def test_thresholds_named_documented_overridable():
    th = Thresholds()
    docs = Thresholds.describe()
    assert all(entry["doc"] for entry in docs)
    assert {"min_moving_fraction", "min_loss_drop", "dominance_ratio", "conflict_cosine",
            "clip_saturation", "lr_stall_fraction"} <= set(Thresholds.names())
    changed = th.overrides(dominance_ratio="50")
    assert changed.dominance_ratio == 50.0 and th.dominance_ratio == 100.0
    assert Thresholds.from_dict({"min_term_samples": 5.0}).min_term_samples == 5
    with pytest.raises(RiswbError, match="unknown threshold"):
        Thresholds.from_dict({"dominance_ration": 3})
    with pytest.raises(RiswbError, match="is not a number"):
        th.overrides(conflict_cosine="low")


def test_diagnose_accepts_threshold_dict_and_rule_subset(make_run):
    spec = healthy().update("term_grad", lambda s, r: {**r, "gap": r["gap"] * 60})
    run = make_run(spec)
    assert diagnose(run).findings == []
    diagnosis = diagnose(run, {"dominance_ratio": 20}, rules=["term-dominates"])
    assert isinstance(diagnosis, Diagnosis) and [f.id for f in diagnosis.findings] == [
        "term-dominates"]
    assert diagnosis.checked == ["term-dominates"]
    with pytest.raises(RiswbError, match="unknown rule"):
        diagnose(run, rules=["no-such-rule"])


def test_a_failing_rule_is_isolated(make_run, monkeypatch):
    def broken(run, th):
        raise KeyError("surprise")

    monkeypatch.setitem(RULES, "clip-saturated", broken)
    run = make_run()
    diagnosis = diagnose(run)
    assert diagnosis.unchecked == {"clip-saturated": "rule failed: KeyError: 'surprise'"}
    with pytest.raises(KeyError):
        diagnose(run, strict=True)


def test_finding_rejects_unknown_severity():
    with pytest.raises(ValueError):
        Finding("x", "fatal", "t")


# The shared fixture other suites use (tests/conftest.py): its perturbations must map to
# the finding ids they are named after, and its healthy run must give no error.
SHARED = [
    ({}, None),
    ({"frozen": True}, ("params-not-moving", "error")),
    ({"flat_loss": True}, ("loss-not-dropping", "error")),
    ({"nan_loss_at": 300}, ("nonfinite-loss", "error")),
    ({"nonfinite_grads": True}, ("nonfinite-grads", "error")),
    ({"dead_term": "ortho"}, ("dead-loss-term", "error")),
    ({"dominant_term": "gap"}, ("term-dominates", "warning")),
    ({"conflict": True}, ("term-conflict", "warning")),
    ({"lr_zero": True}, ("lr-stalled", "error")),
    ({"per_epoch": True}, ("step-cadence", "error")),
    ({"missing_params": True}, ("optimizer-coverage", "error")),
    ({"swap_unrestored": True}, ("weights-swapped", "error")),
    ({"skipped_steps": True}, ("step-skipped", "warning")),
    ({"clip_saturated": True}, ("clip-saturated", "warning")),
    ({"dead_params": True}, ("dead-params", "error")),
    ({"spectrum_flat": True}, ("spectrum-mismatch", "warning")),
]


@pytest.mark.parametrize("perturbation,expected", SHARED,
                         ids=[next(iter(p), "healthy") for p, _ in SHARED])
def test_shared_synthetic_runs(tmp_path, synthetic_run, perturbation, expected):
    from riswb.runlog import read_run

    diagnosis = diagnose(read_run(synthetic_run(tmp_path, steps=600, **perturbation)),
                         strict=True)
    found = {(f.id, f.severity) for f in diagnosis.findings}
    if expected is None:
        assert diagnosis.errors == []
    else:
        assert expected in found, found


def test_one_finding_per_id_at_the_highest_severity(make_run):
    # a loss that falls, rebounds, and a frozen validation metric: error + warning → one
    spec = healthy()
    spec.update("loss", lambda s, r: {**r, "total": 1.0 + 0.01 * (s % 3)})
    spec.update("eval", lambda s, r: {**r, "val_loss": 0.7, "nmse": 0.5})
    diagnosis = diagnose(make_run(spec), strict=True)
    [finding] = diagnosis.by_id("loss-not-dropping")
    assert finding.severity == "error" and "frozen" in finding.title
    [also] = finding.evidence["also"]
    assert also["severity"] == "warning" and also["evidence"]["metric"] == "val_loss"
    assert all(len(diagnosis.by_id(i)) <= 1 for i in RULES)


def test_reference_runs_are_told_apart_from_foreign_loops(make_run):
    from riswb.diagnose.rules._util import is_reference_run

    from .conftest import as_reference

    assert not is_reference_run(make_run())
    assert is_reference_run(make_run(as_reference(healthy())))
