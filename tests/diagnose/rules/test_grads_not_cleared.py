import pytest

from riswb.diagnose.rules import Unchecked

from .conftest import check, healthy, severities

ID = "grads-not-cleared"


def test_cleared_every_step(make_run):
    assert check(make_run(), ID) == []


def test_zero_grad_never_called_is_an_error(make_run):
    # the first step starts from None gradients; every later one carries them
    spec = healthy().update("cadence", lambda s, r: {
        **r, "grads_cleared_steps": 1, "grads_carried_steps": s, "backward_accumulating": s})
    [finding] = check(make_run(spec), ID)
    assert finding.severity == "error" and finding.evidence["carried_steps"] == 190
    assert "zero_grad" in finding.fix


def test_accumulation_within_a_step_is_not_carrying(make_run):
    spec = healthy().update("cadence", lambda s, r: {
        **r, "optimizer_step": (s + 1) // 4, "grads_cleared_steps": (s + 1) // 4,
        "backward_accumulating": 3 * ((s + 1) // 4)})
    assert check(make_run(spec), ID) == []


def test_a_few_carried_steps_warn(make_run):
    spec = healthy().update("cadence", lambda s, r: {**r, "grads_carried_steps": 3,
                                                     "grads_cleared_steps": s - 2})
    assert severities(check(make_run(spec), ID)) == ["warning"]


def test_declared_carrying_is_info(make_run):
    spec = healthy().update("cadence", lambda s, r: {**r, "grads_cleared_steps": 1,
                                                     "grads_carried_steps": s})
    spec.manifest["intent"] = {"accumulation": 1, "carry_grads": True}
    assert severities(check(make_run(spec), ID)) == ["info"]


def test_names_the_optimizer_that_carries(make_run):
    spec = healthy().update("cadence", lambda s, r: {
        **r, "grads_carried_steps": s, "grads_cleared_steps": s + 1,
        "opt/0/grads_carried_steps": 0, "opt/0/grads_cleared_steps": s + 1,
        "opt/1/grads_carried_steps": s, "opt/1/grads_cleared_steps": 1})
    [finding] = check(make_run(spec), ID)
    assert set(finding.evidence["per_optimizer"]) == {"1"} and "optimizer 1" in finding.title


def test_unchecked_without_clearing_counts(make_run):
    spec = healthy().update("cadence", lambda s, r: {
        k: v for k, v in r.items() if not k.startswith("grads_")})
    with pytest.raises(Unchecked):
        check(make_run(spec), ID)


def test_fraction_is_per_optimizer(make_run):
    # a GAN: the generator (optimizer 0) never clears; the discriminator always does.
    # 99 of all 200 steps, but 99 of the generator's own 100: an error
    spec = healthy().update("cadence", lambda s, r: {
        **r, "optimizer_step": 2 * (s + 1),
        "grads_carried_steps": s, "grads_cleared_steps": s + 2,
        "opt/0/grads_carried_steps": s, "opt/0/grads_cleared_steps": 1,
        "opt/1/grads_carried_steps": 0, "opt/1/grads_cleared_steps": s + 1})
    [finding] = check(make_run(spec), ID)
    assert finding.severity == "error" and "optimizer 0" in finding.title
    assert finding.evidence["carried_fraction"] > 0.9
    assert finding.evidence["worst_optimizer"] == "0"
