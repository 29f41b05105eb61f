"""Kind `mode` / event `mode_mismatch`: eval-mode modules at training forwards, with the
trainable parameters of the listed modules (`params`)."""

import torch
from torch import nn

from riswb.instrument.workbench import Workbench
from riswb.runlog import read_run


class KD(nn.Module):
    def __init__(self):
        super().__init__()
        torch.manual_seed(0)
        self.teacher = nn.Sequential(nn.Linear(4, 8), nn.BatchNorm1d(8), nn.Dropout(0.1))
        self.student = nn.Sequential(nn.Linear(4, 8), nn.BatchNorm1d(8))

    def forward(self, x):
        with torch.no_grad():
            t = self.teacher(x)
        return (self.student(x) - t).pow(2).mean()


def test_mismatch_event_lists_the_trainable_params_of_eval_mode_modules(tmp_path):
    model = KD()
    model.teacher.eval()
    opt = torch.optim.SGD(model.student.parameters(), 0.1)
    with Workbench(model, opt, runs_dir=tmp_path, probes=["mode"], strict=True) as wb:
        for _ in range(3):
            opt.zero_grad()
            wb.loss({"a": model(torch.randn(4, 4))}).backward()
            opt.step()
    run = read_run(wb.path)
    (event,) = run.events_of("mode_mismatch")
    assert event["phase"] == "train" and event["modules"] == ["teacher.1", "teacher.2"]
    assert event["trainable"] == 1
    assert event["params"] == {"teacher.1": ["teacher.1.weight", "teacher.1.bias"]}
    assert run.kind("mode")["forwards_eval_mode"].sum() == 3


def test_frozen_params_are_not_listed(tmp_path):
    model = KD()
    model.teacher.eval().requires_grad_(False)
    opt = torch.optim.SGD(model.student.parameters(), 0.1)
    with Workbench(model, opt, runs_dir=tmp_path, probes=["mode"], strict=True) as wb:
        opt.zero_grad()
        wb.loss({"a": model(torch.randn(4, 4))}).backward()
        opt.step()
    (event,) = read_run(wb.path).events_of("mode_mismatch")
    assert event["trainable"] == 0 and event["params"] == {}


def _train_and_evaluate(tmp_path, evaluate_watched: bool):
    """A BatchNorm model trained; at each evaluation either the watched model (left in train
    mode: the bug) or a separate SWA copy in eval mode runs the validation forward."""
    torch.manual_seed(0)
    model = nn.Sequential(nn.Linear(4, 8), nn.BatchNorm1d(8), nn.Linear(8, 1))
    swa = torch.optim.swa_utils.AveragedModel(model)
    opt = torch.optim.SGD(model.parameters(), 0.1)
    with Workbench(model, opt, runs_dir=tmp_path, probes=["mode"], strict=True) as wb:
        for step in range(20):
            loss = model(torch.randn(16, 4)).square().mean()
            opt.zero_grad()
            wb.loss({"mse": loss}).backward()
            opt.step()
            swa.update_parameters(model)
            if step % 5 == 4:
                swa.eval()
                with torch.no_grad():
                    out = (model if evaluate_watched else swa)(torch.randn(16, 4))
                wb.evaluate({"val": float(out.square().mean())})
    return read_run(wb.path).kind("mode").sum()


def test_evaluating_a_separate_copy_does_not_judge_the_watched_models_mode(tmp_path):
    counts = _train_and_evaluate(tmp_path / "swa", evaluate_watched=False)
    assert counts["evals"] == 4 and counts["evals_train_mode"] == 0
    counts = _train_and_evaluate(tmp_path / "own", evaluate_watched=True)
    assert counts["evals_train_mode"] == 4 and counts["nograd_forwards_train_mode"] == 4


def _validate_then_log(tmp_path, validation_mode: str, grad: bool = False):
    """Train a BatchNorm model; every 5 steps validate with the model in `validation_mode`,
    switch back to model.train(), then log the metric with wb.evaluate."""
    torch.manual_seed(0)
    model = nn.Sequential(nn.Linear(4, 8), nn.BatchNorm1d(8), nn.Linear(8, 1))
    opt = torch.optim.SGD(model.parameters(), 0.1)
    with Workbench(model, opt, runs_dir=tmp_path, probes=["mode"], strict=True) as wb:
        for step in range(20):
            opt.zero_grad()
            wb.loss({"mse": model(torch.randn(16, 4)).square().mean()}).backward()
            opt.step()
            if step % 5 == 4:
                model.train(validation_mode == "train")
                with torch.set_grad_enabled(grad):
                    val = model(torch.randn(16, 4)).square().mean().item()
                model.train()
                wb.evaluate({"val": val})
    return read_run(wb.path).kind("mode").sum()


def test_an_evaluation_is_judged_by_the_mode_its_forwards_ran_in(tmp_path):
    # model.train() before wb.evaluate: the validation itself ran in eval mode
    counts = _validate_then_log(tmp_path / "eval", "eval")
    assert counts["evals"] == 4 and counts["evals_train_mode"] == 0
    assert counts["nograd_forwards_train_mode"] == 0
    counts = _validate_then_log(tmp_path / "train", "train")
    assert counts["evals_train_mode"] == 4 and counts["nograd_forwards_train_mode"] == 4
    # validation without torch.no_grad, in train mode: the grad-enabled forwards tell
    counts = _validate_then_log(tmp_path / "grad", "train", grad=True)
    assert counts["evals_train_mode"] == 4


class _BatchNormNet(nn.Module):
    def __init__(self):
        super().__init__()
        torch.manual_seed(0)
        self.fc1, self.bn, self.drop, self.fc2 = (nn.Linear(4, 8), nn.BatchNorm1d(8),
                                                  nn.Dropout(0.3), nn.Linear(8, 1))

    def forward(self, x):
        return self.fc2(self.drop(torch.relu(self.bn(self.fc1(x))))).pow(2).mean()


def _norm_eval_then(tmp_path, forget_train_at: int | None):
    """BatchNorm held in eval mode on purpose; `model.eval()` (for a validation) at step
    `forget_train_at` with no `model.train()` after it."""
    model = _BatchNormNet()
    opt = torch.optim.SGD(model.parameters(), 0.01)
    with Workbench(model, opt, runs_dir=tmp_path, probes=["mode"], strict=True,
                   log_every=10) as wb:
        model.train()
        model.bn.eval()
        for step in range(40):
            if step == forget_train_at:
                model.eval()
            opt.zero_grad()
            wb.loss({"a": model(torch.randn(16, 4))}).backward()
            opt.step()
    return read_run(wb.path).events_of("mode_mismatch")


def test_batchnorm_alone_in_eval_mode_is_selective(tmp_path):
    [event] = _norm_eval_then(tmp_path, None)
    assert event["modules"] == ["bn"] and event["selective"] is True


def test_model_eval_left_on_later_in_the_interval_is_not_selective(tmp_path):
    """The holders in eval mode are read again when more modules go to eval mode within
    the interval: the Linear layers and the Dropout then say `model.eval()`."""
    first, later = _norm_eval_then(tmp_path, 15)
    assert first["selective"] is True
    assert later["modules"] == ["bn", "drop"] and later["selective"] is False
    assert {"fc1", "fc2"} <= set(later["eval_holders"])
