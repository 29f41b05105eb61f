import pytest

from riswb.diagnose.rules import Unchecked

from .conftest import as_reference, check, healthy, severities

ID = "dead-loss-term"


def test_all_terms_alive(make_run):
    assert check(make_run(), ID) == []


def test_detached_term_is_an_error(make_run):
    spec = healthy().update("term_grad", lambda s, r: {**r, "ortho": 0.0})
    [finding] = check(make_run(spec), ID)
    assert finding.severity == "error" and finding.evidence["term"] == "ortho"
    assert finding.evidence["no_grad_ranges"] == [[0, 190]]
    assert "detached" in finding.fix


def test_term_whose_value_is_zero_points_at_units(make_run):
    spec = healthy().update("term_grad", lambda s, r: {**r, "gap": 0.0})
    spec.update("loss", lambda s, r: {**r, "gap": 0.0})
    [finding] = check(make_run(spec), ID)
    assert "units" in finding.fix and "deg2rad" not in finding.fix  # a foreign loop
    [finding] = check(make_run(as_reference(spec)), ID)
    assert "deg2rad" in finding.fix  # the reference pipeline's own history


def test_term_without_a_path_is_named_at_wb_loss_time(make_run):
    spec = healthy().event(0, "term_no_grad", names=["gap"], first_step=0)
    [finding] = check(make_run(spec), ID)
    assert finding.severity == "error" and finding.evidence == {
        "term": "gap", "first_step": 0, "weight": 0.5}


def test_a_term_the_backward_never_went_through_is_an_error(make_run):
    spec = healthy().event(99, "term_reach", checked={"nmse": 12, "gap": 12},
                           missed={"gap": 12}, first_step=0)
    [finding] = check(make_run(spec), ID)
    assert finding.severity == "error" and "'gap' was not in the loop's backward" in finding.title
    assert finding.evidence["missed"] == finding.evidence["checked"] == 12


def test_a_term_missed_on_a_few_checks_is_not_named(make_run):
    spec = healthy().event(99, "term_reach", checked={"gap": 12}, missed={"gap": 2},
                           first_step=40)
    assert check(make_run(spec), ID) == []


def test_few_parameter_samples_settled_by_zero_output_gradients(make_run):
    # two parameter samples only (too few alone), zero like every output sample
    spec = healthy().update("term_grad", lambda s, r: {**r, "gap": 0.0} if s < 20 else None)
    spec.drop("term_grad_out")
    for step in range(0, 60, 10):
        spec.add(step, "term_grad_out", nmse=0.3, ortho=0.1, gap=0.0)
    [finding] = check(make_run(spec), ID)
    assert finding.severity == "error" and finding.evidence["term"] == "gap"
    # a weight penalty: zero at the outputs but a parameter gradient: alive
    spec.update("term_grad", lambda s, r: {**r, "gap": 0.2})
    assert check(make_run(spec), ID) == []


def test_mostly_dead_term_warns(make_run):
    spec = healthy().update("term_grad", lambda s, r: {**r, "gap": 0.0} if s != 50 else r)
    assert severities(check(make_run(spec), ID)) == ["warning"]


def test_weight_zero_differs_from_config(make_run):
    spec = healthy().drop("loss_weight").add(0, "loss_weight", nmse=0.0, ortho=0.1, gap=0.5)
    spec.update("term_grad", lambda s, r: {**r, "nmse": 0.0})
    [finding] = check(make_run(spec), ID)
    assert finding.severity == "error"
    assert finding.evidence["terms"] == {"nmse": {"configured": 1.0, "used": 0.0}}
    assert "hard-codes" in finding.fix


def test_weight_zero_without_config_warns(make_run):
    spec = healthy().drop("loss_weight").add(0, "loss_weight", nmse=1.0, ortho=0.0, gap=0.5)
    spec.manifest["config"] = {}
    spec.update("term_grad", lambda s, r: {**r, "ortho": 0.0})
    [finding] = check(make_run(spec), ID)
    assert finding.severity == "warning" and finding.evidence["terms"] == ["ortho"]


def test_all_weights_zero(make_run):
    spec = healthy().drop("loss_weight").add(0, "loss_weight", nmse=0.0, ortho=0.0, gap=0.0)
    [finding] = check(make_run(spec), ID)
    assert finding.severity == "error" and "lam_cov" not in finding.fix
    [finding] = check(make_run(as_reference(spec)), ID)
    assert "lam_cov" in finding.fix


def test_declared_term_never_logged(make_run):
    spec = healthy()
    spec.manifest["loss_terms"] = ["nmse", "ortho", "gap", "peak"]
    [finding] = check(make_run(spec), ID)
    assert finding.evidence["terms"] == ["peak"]


def test_unchecked_without_records(make_run):
    with pytest.raises(Unchecked):
        check(make_run(healthy().drop("loss_weight", "term_grad", "loss")), ID)


def test_a_detached_loss_in_a_run_without_backward_is_monitoring(make_run):
    # DP-SGD through torch.func: per-sample gradients by hand, the loss only logged
    spec = healthy().event(0, "term_no_grad", names=["gap"], first_step=0)
    spec.update("cadence", lambda s, r: {**r, "backward": 0})
    [finding] = [f for f in check(make_run(spec), ID) if f.evidence.get("term") == "gap"]
    assert finding.severity == "info" and finding.evidence["backward_calls"] == 0
    assert "loss.item()" in finding.fix
