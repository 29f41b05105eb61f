import pytest

from riswb.diagnose.rules import Unchecked

from .conftest import check, healthy, severities

ID = "params-not-moving"


def test_healthy_run_moves(make_run):
    assert check(make_run(), ID) == []


def test_frozen_params_are_an_error_with_step_ranges(make_run):
    spec = healthy().update(
        "param_update", lambda s, r: {**r, "ratio": 0.0, "frac_moving": 0.0} if s >= 20 else r)
    [finding] = check(make_run(spec), ID)
    assert finding.severity == "error"
    assert finding.evidence["still_ranges"] == [[20, 199]]
    assert finding.evidence["still_updates"] == 180
    assert "lr" in finding.fix and "warm-up" in finding.fix


def test_a_few_still_steps_warn(make_run):
    spec = healthy().update("param_update", lambda s, r: {**r, "ratio": 0.0} if s % 4 == 0 else r)
    assert severities(check(make_run(spec), ID)) == ["warning"]


def test_one_frozen_group_is_named(make_run):
    spec = healthy().update("param_update", lambda s, r: {**r, "group/heads/ratio": 0.0})
    [finding] = check(make_run(spec), ID)
    assert finding.severity == "error" and finding.evidence["group"] == "heads"
    assert "optimizer-coverage" in finding.fix


def test_partly_frozen_model_warns(make_run):
    spec = healthy().update("param_update", lambda s, r: {**r, "frac_moving": 0.5})
    spec.event(10, "dead_params", names=["heads.k.weight"], steps=10)
    [finding] = check(make_run(spec), ID)
    assert finding.severity == "warning" and finding.evidence["median_frac_moving"] == 0.5
    assert finding.evidence["explained_by"] == ["dead_params"]


def test_tensors_with_tiny_gradients_are_info(make_run):
    # every tensor in the optimizer, none dead: a bias before BatchNorm, cancelled by it
    spec = healthy().update("param_update", lambda s, r: {**r, "frac_moving": 5 / 6})
    [finding] = check(make_run(spec), ID)
    assert finding.severity == "info" and "BatchNorm" in finding.fix


def test_threshold_is_overridable(make_run):
    spec = healthy().update("param_update", lambda s, r: {**r, "ratio": 1e-7})
    run = make_run(spec)
    assert check(run, ID) == []
    assert severities(check(run, ID, min_update_ratio=1e-6)) == ["error"]


def test_unchecked_without_param_update(make_run):
    with pytest.raises(Unchecked, match="param_update"):
        check(make_run(healthy().drop("param_update")), ID)


def test_group_unmeasured_while_frozen_then_moving_is_healthy(make_run):
    """Gradual unfreezing: the probe writes NaN for a group with no trainable tensor; the
    steps before unfreezing are not counted as steps the group did not move."""
    spec = healthy().update(
        "param_update", lambda s, r: {**r, "group/heads/ratio": float("nan")} if s < 100 else r)
    assert check(make_run(spec), ID) == []


def test_no_backward_reaching_the_model_is_named_as_the_cause(make_run):
    """backward() on torch.tensor(loss.item(), requires_grad=True): the optimizer steps,
    no backward ever reaches a trainable tensor."""
    spec = healthy().update("param_update", lambda s, r: {**r, "ratio": 0.0, "frac_moving": 0.0})
    spec.update("cadence", lambda s, r: {**r, "backward": 0})
    [finding] = check(make_run(spec), ID)
    assert finding.severity == "error" and "no backward reached the model" in finding.title
    assert finding.evidence["cadence"]["backward"] == 0 and ".item()" in finding.fix
