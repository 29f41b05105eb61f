"""Real knowledge-distillation loops: the frozen teacher lives in the same root module as the
student, is kept in eval mode (BatchNorm/Dropout deliberately off) and is run under
torch.no_grad(), with requires_grad left on and the teacher in no optimizer (a common
recipe). optimizer-coverage and train-mode must read it as healthy — the teacher's tensors
never receive a gradient, so leaving them out of the optimizer loses nothing and its eval
mode is deliberate — and still name the bugs of the same shape: a student trained in eval
mode, a teacher put in the optimizer and trained by the KL term while in eval mode, a
student head that gets gradients but is missing from the optimizer.
"""

from __future__ import annotations

from pathlib import Path

import pytest
import torch
import torch.nn.functional as F
from torch import nn

import riswb
from tests.loops.zoo import diagnose_loop

LOG_EVERY = 10
T = 4.0


def _data(gen: torch.Generator, n: int = 64):
    x = torch.randn(n, 8, generator=gen)
    return x, (x[:, :3].sum(1) > 0).long() + (x[:, 3] > 0.5).long()


class KD(nn.Module):
    def __init__(self, *, teacher_grad: bool = False):
        super().__init__()
        torch.manual_seed(0)
        self.teacher_grad = teacher_grad
        self.teacher = nn.Sequential(nn.Linear(8, 64), nn.BatchNorm1d(64), nn.ReLU(),
                                     nn.Dropout(0.2), nn.Linear(64, 3))
        self.student = nn.Sequential(nn.Linear(8, 16), nn.BatchNorm1d(16), nn.ReLU())
        self.head = nn.Linear(16, 3)

    def forward(self, x):
        if self.teacher_grad:
            t = self.teacher(x)
        else:
            with torch.no_grad():
                t = self.teacher(x)
        return self.head(self.student(x)), t


def _pretrain_teacher(model: KD, steps: int = 30) -> None:
    """Outside the workbench; leaves the teacher's last (stale) gradient in its .grad."""
    gen = torch.Generator().manual_seed(1)
    opt = torch.optim.Adam(model.teacher.parameters(), 1e-2)
    for _ in range(steps):
        x, y = _data(gen)
        opt.zero_grad()
        F.cross_entropy(model.teacher(x), y).backward()
        opt.step()


def _distill(runs_dir: Path, name: str, model: KD, params, *, student_mode: bool = True,
             steps: int = 60) -> Path:
    model.teacher.eval()
    opt = torch.optim.SGD(params, lr=0.05, momentum=0.9)
    gen = torch.Generator().manual_seed(0)
    with riswb.Workbench(model, opt, runs_dir=runs_dir, name=name, log_every=LOG_EVERY) as wb:
        for step in range(steps):
            model.student.train(student_mode)
            model.head.train(student_mode)
            x, y = _data(gen)
            s, t = model(x)
            kl = F.kl_div(F.log_softmax(s / T, -1), F.log_softmax(t / T, -1),
                          log_target=True, reduction="batchmean") * T * T
            loss = wb.loss({"kd": kl, "ce": F.cross_entropy(s, y)}, {"kd": 0.7, "ce": 0.3})
            opt.zero_grad()
            loss.backward()
            opt.step()
            if (step + 1) % 20 == 0:
                model.student.eval()
                model.head.eval()
                with torch.no_grad():
                    x, y = _data(gen, 256)
                    acc = (model(x)[0].argmax(1) == y).float().mean().item()
                wb.evaluate({"val_acc": acc})
    return wb.path


def _student(model: KD):
    return [*model.student.parameters(), *model.head.parameters()]


def teacher_no_grad_pretrained(runs_dir: Path) -> Path:
    """The scout's h14: teacher pre-trained in the same process (stale .grad left on it)."""
    model = KD()
    _pretrain_teacher(model)
    return _distill(runs_dir, "kd_nograd_pretrained", model, _student(model))


def teacher_no_grad_loaded(runs_dir: Path) -> Path:
    """Teacher weights loaded (no .grad at all), run under no_grad, requires_grad left on."""
    model = KD()
    return _distill(runs_dir, "kd_nograd_loaded", model, _student(model))


def student_trained_in_eval_mode(runs_dir: Path) -> Path:
    model = KD()
    _pretrain_teacher(model)
    return _distill(runs_dir, "kd_student_eval", model, _student(model), student_mode=False)


def teacher_in_optimizer(runs_dir: Path) -> Path:
    """The scout's b06: the teacher in the optimizer, not detached: KL trains it, in eval mode."""
    model = KD(teacher_grad=True)
    _pretrain_teacher(model)
    return _distill(runs_dir, "kd_teacher_trained", model, model.parameters())


def head_missing_from_optimizer(runs_dir: Path) -> Path:
    model = KD()
    _pretrain_teacher(model)
    return _distill(runs_dir, "kd_head_missing", model, model.student.parameters())


HEALTHY = [teacher_no_grad_pretrained, teacher_no_grad_loaded]
BUGGY = {student_trained_in_eval_mode: ("train-mode", "error"),
         teacher_in_optimizer: ("train-mode", "error"),
         head_missing_from_optimizer: ("optimizer-coverage", "error")}


@pytest.mark.parametrize("loop", HEALTHY, ids=lambda f: f.__name__)
def test_healthy_distillation_draws_no_warning_and_coverage_info(loop, tmp_path):
    findings = diagnose_loop(loop, tmp_path).findings
    loud = {f.id: f.severity for f in findings if f.severity in ("error", "warning")}
    assert not loud, loud
    coverage = [f for f in findings if f.id == "optimizer-coverage"]
    assert [f.severity for f in coverage] == ["info"]
    assert coverage[0].evidence["frozen_by_no_grad"]["by_module"] == {"teacher": 6}


@pytest.mark.parametrize("loop", list(BUGGY), ids=lambda f: f.__name__)
def test_buggy_distillation_is_named(loop, tmp_path):
    rule, severity = BUGGY[loop]
    found = {f.id: f.severity for f in diagnose_loop(loop, tmp_path).findings}
    assert found.get(rule) == severity, found


def test_trained_teacher_in_eval_mode_names_its_stepped_params(tmp_path):
    (finding,) = [f for f in diagnose_loop(teacher_in_optimizer, tmp_path).findings
                  if f.id == "train-mode"]
    assert {"teacher.1", "teacher.3"} <= set(finding.evidence["modules"])
    assert finding.evidence["trained_params"]["names"] == ["teacher.1.weight", "teacher.1.bias"]
    assert "trained" in finding.title


def test_student_in_eval_mode_is_named_without_the_frozen_teacher(tmp_path):
    (finding,) = [f for f in diagnose_loop(student_trained_in_eval_mode, tmp_path).findings
                  if f.id == "train-mode"]
    assert set(finding.evidence["modules"]) == {"student.1"}
