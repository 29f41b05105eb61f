import pytest

from riswb.diagnose.rules import Unchecked

from .conftest import check, healthy, severities

ID = "step-cadence"


def test_one_step_per_batch(make_run):
    assert check(make_run(), ID) == []


def test_one_step_per_epoch(make_run):
    spec = healthy(steps=500).update(
        "cadence", lambda s, r: {**r, "optimizer_step": s // 100, "step_attempts": s // 100,
                                 "backward": s // 100})
    [finding] = check(make_run(spec), ID)
    assert finding.severity == "error"
    ev = finding.evidence
    assert ev["loss_calls"] == 491 and ev["optimizer_steps"] == 4 and ev["ratio"] < 0.01
    assert ev["off_cadence_ranges"]
    assert "indentation" in finding.fix and "backward ran 4 times" in finding.title


def test_accumulation_intent_is_respected(make_run):
    # one step per 4 batches whose backwards add up, but with carried gradients between the
    # steps (so the counts alone do not read as accumulation): the declaration decides
    spec = healthy().update("cadence", lambda s, r: {
        **r, "optimizer_step": (s + 1) // 4, "step_attempts": (s + 1) // 4,
        "backward_accumulating": s + 1 - (s + 1) // 4, "grads_carried_steps": (s + 1) // 4})
    run_without = make_run(spec)
    assert severities(check(run_without, ID)) == ["error"]
    spec.manifest["intent"] = {"accumulation": 4}
    assert check(make_run(spec), ID) == []


def test_declared_accumulation_whose_backwards_do_not_add_up_is_an_error(make_run):
    # the cadence is right (one step per 4 batches) but every backward started from zero
    spec = _accumulating(4, accumulate=False)
    spec.manifest["intent"] = {"accumulation": 4}
    [finding] = check(make_run(spec), ID)
    assert finding.severity == "error" and "only its last batch" in finding.title
    assert finding.evidence["not_accumulated_fraction"] == 1.0


def test_two_steps_per_batch(make_run):
    spec = healthy().update("cadence", lambda s, r: {**r, "optimizer_step": 3 * (s + 1),
                                                     "step_attempts": 3 * (s + 1)})
    [finding] = check(make_run(spec), ID)
    assert finding.severity == "error" and "second step()" in finding.fix


def test_slightly_off_warns(make_run):
    spec = healthy().update("cadence", lambda s, r: {**r, "optimizer_step": int(0.7 * (s + 1)),
                                                     "step_attempts": int(0.7 * (s + 1))})
    assert severities(check(make_run(spec), ID)) == ["warning"]


def test_unchecked(make_run):
    with pytest.raises(Unchecked):
        check(make_run(healthy().drop("cadence")), ID)
    short = healthy().update("cadence", lambda s, r: r if s == 0 else None)
    with pytest.raises(Unchecked, match="loss calls"):
        check(make_run(short), ID)


def _accumulating(k: int, cleared: bool = True, accumulate: bool = True):
    """k backwards per optimizer step; the micro-batches add up unless `accumulate` is off
    (zero_grad before every backward: only the last one is stepped)."""
    def rewrite(s, r):
        n, steps = s + 1, (s + 1) // k
        return {**r, "optimizer_step": steps, "step_attempts": steps,
                "grads_cleared_steps": steps if cleared else 1,
                "grads_carried_steps": 0 if cleared else max(0, steps - 1),
                "backward_accumulating": n - steps if accumulate else 0,
                "backward_per_step_min": k, "backward_per_step_max": k}
    return healthy().update("cadence", rewrite)


def test_accumulation_is_recognised_from_the_counts(make_run):
    assert check(make_run(_accumulating(4)), ID) == []


def test_every_batch_backward_but_one_step_per_epoch_is_an_error(make_run):
    [finding] = check(make_run(_accumulating(50, accumulate=False)), ID)
    assert finding.severity == "error" and finding.evidence["accumulation_inferred"] is None
    assert "only its last batch" in finding.title


def test_losses_never_backpropagated_are_not_accumulation(make_run):
    spec = healthy(steps=500).update("cadence", lambda s, r: {
        **r, "optimizer_step": s // 100, "step_attempts": s // 100, "backward": s // 100,
        "loss_without_backward": s + 1 - s // 100})
    assert severities(check(make_run(spec), ID)) == ["error"]


def test_declared_accumulation_that_did_not_happen_is_named(make_run):
    spec = healthy()
    spec.manifest["intent"] = {"accumulation": 4}
    [finding] = check(make_run(spec), ID)
    assert finding.severity == "error" and finding.evidence["ratio"] == 4.0


def test_losses_of_one_batch_in_one_step_are_one_batch(make_run):
    # LBFGS line search / SAM / a backward per head: 3 loss calls and backwards per step,
    # cleared before each, all on one batch (riswb.probes.cadence `same_batch_loss`)
    spec = healthy().update("cadence", lambda s, r: {
        **r, "loss": 3 * (s + 1), "backward": 3 * (s + 1), "same_batch_loss": 2 * (s + 1),
        "same_batch_backward": 2 * (s + 1), "closure_steps": s + 1})
    assert check(make_run(spec), ID) == []


def test_same_counts_without_same_batch_evidence_are_still_an_error(make_run):
    spec = healthy().update("cadence", lambda s, r: {
        **r, "loss": 4 * (s + 1), "backward": 4 * (s + 1)})
    [finding] = check(make_run(spec), ID)
    assert finding.severity == "error" and "only its last batch" in finding.title


def test_optimizers_sharing_one_backward_are_one_update(make_run):
    # SparseAdam + Adam, each stepped once per batch on the same backward
    spec = healthy().update("cadence", lambda s, r: {
        **r, "optimizer_step": 2 * (s + 1), "step_attempts": 2 * (s + 1),
        "shared_backward_steps": s + 1, "opt/0/optimizer_step": s + 1,
        "opt/1/optimizer_step": s + 1})
    assert check(make_run(spec), ID) == []


def test_one_optimizer_stepping_thrice_per_backward_is_still_an_error(make_run):
    spec = healthy().update("cadence", lambda s, r: {
        **r, "optimizer_step": 3 * (s + 1), "step_attempts": 3 * (s + 1),
        "shared_backward_steps": 0, "steps_without_backward": 2 * (s + 1)})
    [finding] = check(make_run(spec), ID)
    assert finding.severity == "error" and "second step()" in finding.fix
