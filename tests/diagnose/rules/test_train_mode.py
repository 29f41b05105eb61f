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


def _dropout_only(holders: dict, modules: list[str]):
    """A net whose only mode-dependent modules are parameter-free (trainable 0), with the
    eval-mode layers that hold parameters of their own (`eval_holders`)."""
    spec = healthy().update("mode", lambda s, r: {**r, "forwards_eval_mode": 10})
    return spec.event(9, "mode_mismatch", phase="train", modules=modules, trainable=0,
                      params={}, eval_holders=holders, first_step=0)


def test_model_eval_left_on_a_dropout_net_is_named(make_run):
    # Sequential(Linear, ReLU, Dropout, Linear): the Dropout sits beside trained Linears
    holders = {"0": ["0.weight", "0.bias"], "3": ["3.weight", "3.bias"]}
    [finding] = check(make_run(_dropout_only(holders, ["2"])), ID)
    assert finding.severity == "error" and finding.evidence["modules"] == ["2"]
    assert finding.evidence["trained_params"]["count"] == 4


def test_linear_probe_on_an_eval_mode_backbone_is_deliberate(make_run):
    # model.eval() on a frozen backbone, only a separate head trained: the backbone's
    # BatchNorm (frozen, trainable 0) has no trained neighbour, and the head is not beside it
    holders = {"head": ["head.weight", "head.bias"]}
    assert check(make_run(_dropout_only(holders, ["backbone.bn1", "backbone.drop"])), ID) == []


def _kd(params, *, missing=(), no_grad=None):
    spec = healthy().update("mode", lambda s, r: {**r, "forwards_eval_mode": 10})
    spec.drop_events("coverage").event(0, "coverage", missing=list(missing), duplicated=[],
                                       zero_lr_groups=[], stale=[], groups={})
    if no_grad is not None:
        spec.event(9, "coverage_grads", no_grad=list(no_grad), watched=len(missing),
                   backwards=10)
    return spec.event(9, "mode_mismatch", phase="train", modules=["teacher.1", "teacher.3"],
                      trainable=1, params=params, first_step=0)


TEACHER_BN = {"teacher.1": ["teacher.1.weight", "teacher.1.bias"]}


def test_gradient_free_teacher_in_eval_mode_is_deliberate(make_run):
    spec = _kd(TEACHER_BN, missing=TEACHER_BN["teacher.1"], no_grad=TEACHER_BN["teacher.1"])
    assert check(make_run(spec), ID) == []


def test_teacher_out_of_the_optimizer_is_coverage_business(make_run):
    # gets gradients but is in no optimizer: optimizer-coverage's error, not trained here
    spec = _kd(TEACHER_BN, missing=TEACHER_BN["teacher.1"], no_grad=[])
    assert check(make_run(spec), ID) == []


def test_teacher_stepped_in_eval_mode_is_named_with_its_params(make_run):
    [finding] = check(make_run(_kd(TEACHER_BN)), ID)
    assert finding.severity == "error"
    assert finding.evidence["modules"] == ["teacher.1", "teacher.3"]
    assert finding.evidence["trained_params"]["names"] == TEACHER_BN["teacher.1"]
    assert "2 parameter tensors trained in eval mode" in finding.title


def test_frozen_teacher_does_not_hide_a_student_trained_in_eval_mode(make_run):
    params = {**TEACHER_BN, "student.1": ["student.1.weight", "student.1.bias"]}
    spec = _kd(params, missing=TEACHER_BN["teacher.1"], no_grad=TEACHER_BN["teacher.1"])
    spec.drop_events("mode_mismatch").event(
        9, "mode_mismatch", phase="train", modules=["student.1", "teacher.1", "teacher.3"],
        trainable=2, params=params, first_step=0)
    [finding] = check(make_run(spec), ID)
    assert finding.severity == "error" and finding.evidence["modules"] == ["student.1"]


def test_batchnorm_alone_in_eval_mode_while_the_rest_trains_is_info(make_run):
    """norm_eval: only the BatchNorm layers in eval mode, their affine weights stepped, every
    Linear and Conv layer in train mode (the event's `selective`)."""
    spec = healthy().update("mode", lambda s, r: {**r, "forwards_eval_mode": 10})
    spec.event(9, "mode_mismatch", phase="train", modules=["body.1", "body.4"], trainable=2,
               params={"body.1": ["body.1.weight"], "body.4": ["body.4.weight"]},
               eval_holders={"body.1": ["body.1.weight"], "body.4": ["body.4.weight"]},
               selective=True, first_step=0)
    [finding] = check(make_run(spec), ID)
    assert finding.severity == "info" and finding.evidence["modules"] == ["body.1", "body.4"]
    assert "norm_eval" in finding.fix
