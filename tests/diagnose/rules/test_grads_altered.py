import pytest

from riswb.diagnose.rules import Unchecked

from .conftest import check, healthy, severities

ID = "grads-altered"


def _with(**change):
    return healthy().update("grad_step", lambda s, r: {**r, **change})


def test_untouched_gradients(make_run):
    assert check(make_run(), ID) == []


def test_zero_grad_between_backward_and_step_is_an_error(make_run):
    spec = _with(zeroed=1.0, replaced=1.0, ratio=0.0, norm_step=0.0)
    spec.event(9, "grad_step_change", change="zeroed", steps=10, first_step=0, optimizer=0)
    [finding] = check(make_run(spec), ID)
    assert finding.severity == "error" and "zeroed" in finding.title
    assert finding.evidence["zeroed_fraction"] == 1.0 and finding.evidence["first_step"] == 0
    assert "before backward" in finding.fix


def test_a_mask_on_some_steps_warns(make_run):
    spec = healthy().update("grad_step", lambda s, r: {**r, "altered": 0.5} if s < 50 else r)
    [finding] = check(make_run(spec), ID)
    assert finding.severity == "warning" and "masked" in finding.title
    assert finding.evidence["altered_ranges"] == [[0, 40]]


def test_scaler_unscale_and_clipping_are_not_alterations(make_run):
    assert check(make_run(_with(unscaled=1.0, rescaled=1.0, ratio=0.2)), ID) == []


def test_sanitized_nonfinite_is_left_to_nonfinite_grads(make_run):
    assert check(make_run(_with(altered=1.0, sanitized=12.0)), ID) == []


def test_distributed_all_reduce_is_info(make_run):
    spec = _with(replaced=1.0)
    spec.manifest["distributed"] = {"rank": 0, "world_size": 4, "local_rank": 0}
    [finding] = check(make_run(spec), ID)
    assert finding.severity == "info" and finding.evidence["world_size"] == 4


def test_unchecked_without_observed_steps(make_run):
    with pytest.raises(Unchecked):
        check(make_run(healthy().drop("grad_step")), ID)
    assert severities(check(make_run(_with(zeroed=1.0)), ID, grads_altered_error_fraction=1)) \
        == ["error"]


def test_a_value_clip_is_info(make_run):
    # clip_grad_value_: tensors only shrink and the elementwise samples see nothing zeroed
    spec = _with(altered=0.3, altered_down=0.3, frac_zeroed=0.0, elem_samples=1)
    [finding] = check(make_run(spec), ID)
    assert finding.severity == "info" and "clipped per element" in finding.title


def test_a_mask_that_only_shrinks_norms_still_warns(make_run):
    # a mask shrinks norms too, but zeroes elements: the samples see it
    spec = _with(altered=0.3, altered_down=0.3, frac_zeroed=0.4, elem_samples=1)
    assert severities(check(make_run(spec), ID)) == ["warning"]
    # without an elementwise sample there is no telling the two apart: warn
    assert severities(check(make_run(_with(altered=0.3, altered_down=0.3)), ID)) == ["warning"]


def test_noise_added_to_the_gradients_is_info(make_run):
    # gradient noise injection: norms grow, nothing zeroed, on every step
    spec = _with(altered=1.0, altered_down=0.0, frac_zeroed=0.0, elem_samples=1)
    [finding] = check(make_run(spec), ID)
    assert finding.severity == "info" and "changed per tensor or per element" in finding.title
    assert "noise" in finding.fix
