import pytest

from riswb.diagnose.rules import Unchecked

from .conftest import check, healthy, severities

ID = "train-mode"


def test_modes_right(make_run):
    assert check(make_run(), ID) == []


def _eval_mode_training(trainable: int, eval_forwards=lambda s: 10):
    spec = healthy().update("mode", lambda s, r: {**r, "forwards_eval_mode": eval_forwards(s)})
    return spec.event(9, "mode_mismatch", phase="train", modules=["bn", "drop"],
                      trainable=trainable, first_step=0)


def test_model_eval_before_training_is_an_error(make_run):
    [finding] = check(make_run(_eval_mode_training(1)), ID)
    assert finding.severity == "error" and finding.evidence["modules"] == ["bn", "drop"]
    assert finding.evidence["fraction"] == 1.0 and "model.train()" in finding.fix


def test_frozen_eval_mode_backbone_is_deliberate(make_run):
    assert check(make_run(_eval_mode_training(0)), ID) == []


def test_forgot_train_after_a_late_validation_warns(make_run):
    spec = _eval_mode_training(1, lambda s: 10 if s >= 150 else 0)
    assert severities(check(make_run(spec), ID)) == ["warning"]


def test_grad_enabled_validation_forwards_are_not_training(make_run):
    # 2 eval-mode forwards per record that no backward followed: validation without no_grad
    spec = healthy().update("mode", lambda s, r: {**r, "forwards": 12, "forwards_eval_mode": 2})
    spec.update("cadence", lambda s, r: {**r, "forward": 1.2 * (s + 1)})
    spec.event(9, "mode_mismatch", phase="train", modules=["bn"], trainable=1, first_step=9)
    assert check(make_run(spec), ID) == []


def test_validation_in_train_mode_warns(make_run):
    spec = healthy().update("mode", lambda s, r: {**r, "nograd_forwards": 1,
                                                  "nograd_forwards_train_mode": 1})
    spec.event(49, "mode_mismatch", phase="eval", modules=["bn"], trainable=1, first_step=49)
    [finding] = check(make_run(spec), ID)
    assert finding.severity == "warning" and finding.evidence["phase"] == "eval"


def test_unchecked_without_mode_dependent_modules(make_run):
    with pytest.raises(Unchecked, match="no mode-dependent"):
        check(make_run(healthy().update("mode", lambda s, r: {**r, "modules": 0})), ID)
