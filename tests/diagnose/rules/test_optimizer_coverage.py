import pytest

from riswb.diagnose.rules import Unchecked

from .conftest import check, healthy, severities

ID = "optimizer-coverage"


def _coverage(spec, **payload):
    base = dict(missing=[], duplicated=[], zero_lr_groups=[], stale=[],
                groups={"backbone": {"backbone": 8}})
    return spec.drop_events("coverage").event(0, "coverage", **{**base, **payload})


def test_full_coverage_is_fine(make_run):
    assert check(make_run(), ID) == []


def test_missing_params_name_the_modules(make_run):
    spec = _coverage(healthy(), missing=["heads.range.weight", "heads.range.bias", "aux.w"])
    [finding] = check(make_run(spec), ID)
    assert finding.severity == "error"
    assert finding.evidence["missing"]["by_module"] == {"heads": 2, "aux": 1}
    assert "heads (2)" in finding.title
    assert "group list" in finding.fix


def test_duplicated_and_stale(make_run):
    spec = _coverage(healthy(), duplicated=["backbone.0.weight"], stale=["old.weight"])
    assert severities(check(make_run(spec), ID)) == ["error", "warning"]


def test_zero_lr_group_that_stays_zero_is_an_error(make_run):
    spec = _coverage(healthy(), zero_lr_groups=["heads"])
    spec.update("lr", lambda s, r: {**r, "group/heads": 0.0})
    [finding] = check(make_run(spec), ID)
    assert finding.severity == "error" and finding.evidence["zero_lr_groups"] == ["heads"]


def test_zero_lr_group_that_warms_up_is_info(make_run):
    spec = _coverage(healthy(), zero_lr_groups=["heads"])
    assert severities(check(make_run(spec), ID)) == ["info"]


def test_unchecked_without_audit(make_run):
    with pytest.raises(Unchecked, match="coverage"):
        check(make_run(healthy().drop_events("coverage")), ID)


def test_missing_tensors_that_never_got_a_gradient_are_info(make_run):
    # a KD teacher run under torch.no_grad with requires_grad left on, in no optimizer
    spec = _coverage(healthy(), missing=["teacher.0.weight", "teacher.0.bias"])
    spec.event(9, "coverage_grads", no_grad=["teacher.0.bias", "teacher.0.weight"],
               watched=2, backwards=10)
    [finding] = check(make_run(spec), ID)
    assert finding.severity == "info"
    assert finding.evidence["frozen_by_no_grad"]["by_module"] == {"teacher": 2}
    assert "requires_grad_(False)" in finding.fix


def test_missing_tensor_that_got_a_gradient_stays_an_error(make_run):
    spec = _coverage(healthy(), missing=["teacher.0.weight", "heads.range.weight"])
    spec.event(9, "coverage_grads", no_grad=["teacher.0.weight"], watched=2, backwards=10)
    assert severities(check(make_run(spec), ID)) == ["info", "error"]
    error = check(make_run(spec), ID)[1]
    assert error.evidence["missing"]["names"] == ["heads.range.weight"]


def test_missing_without_gradient_record_stays_an_error(make_run):
    # runs written before `coverage_grads` existed: nothing is known about gradients
    spec = _coverage(healthy(), missing=["teacher.0.weight"])
    assert severities(check(make_run(spec), ID)) == ["error"]


def _two_optimizers(spec, decoder_steps):
    """An encoder and a decoder optimizer; the decoder's stepped `decoder_steps` times."""
    spec = _coverage(spec, groups={"opt/0/0": {"encoder": 4}, "opt/1/0": {"decoder": 4}})
    return spec.update("cadence", lambda s, r: {
        **r, "opt/0/optimizer_step": r["optimizer_step"],
        "opt/1/optimizer_step": min(decoder_steps, r["optimizer_step"])})


def test_an_optimizer_that_never_stepped_is_an_error(make_run):
    [finding] = check(make_run(_two_optimizers(healthy(), 0)), ID)
    assert finding.severity == "error" and finding.evidence["optimizer"] == 1
    assert "Optimizer 1 (decoder (4)) never stepped" in finding.title
    assert finding.evidence["optimizer_steps"]["opt/1"] == 0


def test_optimizers_that_step_at_their_own_rates_are_fine(make_run):
    """A GAN's generator stepped once every five discriminator steps still steps."""
    assert check(make_run(_two_optimizers(healthy(), 5)), ID) == []


def test_a_never_stepped_optimizer_of_frozen_tensors_or_skipped_steps_is_left_alone(make_run):
    frozen = _two_optimizers(healthy(), 0)
    frozen = _coverage(frozen, groups={"opt/0/0": {"encoder": 4}, "opt/1/0": {"decoder": 2}},
                       frozen=["decoder.weight", "decoder.bias"])
    assert check(make_run(frozen), ID) == []
    skipped = _two_optimizers(healthy(), 0).event(10, "step_skipped", reason="scaler",
                                                  count=190, first_step=10, optimizer=1)
    assert check(make_run(skipped), ID) == []


def test_an_optimizer_not_stepped_yet_is_not_judged_mid_run(make_run):
    """Fail-fast checks read a run still in progress: a backbone optimizer may start in a
    later phase."""
    spec = _two_optimizers(healthy(), 0)
    spec.events = [e for e in spec.events if e[1] != "run_end"]
    run = make_run(spec)
    run.manifest["status"] = "running"
    assert check(run, ID) == []
