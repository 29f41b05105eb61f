import pytest

from riswb.diagnose.rules import Unchecked

from .conftest import as_reference, check, healthy

ID = "term-dominates"


def test_balanced_terms(make_run):
    assert check(make_run(), ID) == []


def test_dominant_term_named_with_ratio(make_run):
    spec = healthy().update("term_grad", lambda s, r: {**r, "gap": r["gap"] * 1e4})
    [finding] = check(make_run(spec), ID)
    assert finding.severity == "warning" and finding.evidence["term"] == "gap"
    assert finding.evidence["ratio_to_second"] > 1000
    assert set(finding.evidence["drowned_terms"]) == {"nmse", "ortho"}
    assert finding.evidence["top_on_fraction_of_steps"] == 1.0


def test_dwarfed_term_that_is_minimized_is_not_drowned(make_run):
    # a regularizer driven to ~0 has a tiny gradient because it is satisfied
    spec = healthy().update("term_grad", lambda s, r: {**r, "gap": r["gap"] * 1e4})
    spec.update("loss", lambda s, r: {**r, "nmse": r["nmse"] * 10.0 ** (-s / 20),
                                      "ortho": r["ortho"] * 10.0 ** (-s / 20)})
    assert check(make_run(spec), ID) == []


def test_threshold_override(make_run):
    run = make_run()
    assert check(run, ID, dominance_ratio=1.5)  # nmse's norm is ~2× the next


def test_needs_two_live_terms(make_run):
    spec = healthy().update("term_grad", lambda s, r: {"nmse": r["nmse"], "gap": 0.0})
    spec.drop("term_grad_out")
    with pytest.raises(Unchecked):
        check(make_run(spec), ID)


def test_parameter_penalty_outweighing_the_data_terms(make_run):
    # gap does not depend on the outputs (zero output gradient), yet pulls ~8× harder
    spec = healthy().update("term_grad", lambda s, r: {**r, "gap": 8 * r["nmse"]})
    spec.update("term_grad_out", lambda s, r: {**r, "gap": 0.0})
    [finding] = check(make_run(spec), ID)
    assert finding.evidence["view"] == "penalty" and finding.evidence["term"] == "gap"
    assert "parameter penalty" in finding.title and "weight_decay" in finding.fix
    assert check(make_run(spec), ID, regularizer_dominance_ratio=20) == []


def test_dominance_at_the_outputs_decides_from_the_first_samples(make_run):
    spec = healthy().drop("term_grad").update(
        "term_grad_out", lambda s, r: {**r, "ortho": r["nmse"] * 1e3} if s < 30 else None)
    [finding] = check(make_run(spec), ID)
    assert finding.evidence["view"] == "outputs" and finding.evidence["term"] == "ortho"
    assert finding.evidence["steps"] == [0, 20]


def test_reference_scale_story_only_on_reference_runs(make_run):
    spec = healthy().update("term_grad", lambda s, r: {**r, "gap": r["gap"] * 1e4})
    [finding] = check(make_run(spec), ID)
    assert "R_samp" not in finding.fix
    [finding] = check(make_run(as_reference(spec)), ID)
    assert "R_samp" in finding.fix


def _weighted(spec, weights):
    """Set the loss weights the run used (kind `loss_weight`)."""
    spec.scalars["loss_weight"] = [(0, dict(weights))]
    return spec


def test_a_term_weighted_down_on_purpose_is_not_drowned(make_run):
    # ortho at weight 0.001 of gap's 1.0: the 1000x comes from the weights the loop chose
    spec = healthy().update("term_grad", lambda s, r: {**r, "gap": r["gap"] * 1e3,
                                                        "nmse": r["nmse"] * 1e3})
    assert check(make_run(_weighted(spec, {"nmse": 1.0, "gap": 1.0, "ortho": 1e-3})), ID) == []


def test_dominance_beyond_what_the_weights_explain_still_warns(make_run):
    spec = healthy().update("term_grad", lambda s, r: {**r, "gap": r["gap"] * 1e4})
    [finding] = check(make_run(_weighted(spec, {"nmse": 0.5, "gap": 1.0, "ortho": 0.5})), ID)
    assert finding.severity == "warning" and finding.evidence["term"] == "gap"
