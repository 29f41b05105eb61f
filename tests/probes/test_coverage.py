"""Event `coverage`: missing head, duplicate, lr=0 group, stale tensors; re-audit on change."""

import pytest
import torch

from riswb.instrument.workbench import Workbench
from riswb.probes.params import audit_coverage
from riswb.runlog import read_run


class Net(torch.nn.Module):
    def __init__(self):
        super().__init__()
        torch.manual_seed(0)
        self.backbone = torch.nn.Sequential(torch.nn.Linear(4, 8), torch.nn.ReLU())
        self.head_k = torch.nn.Linear(8, 3)
        self.head_r = torch.nn.Linear(8, 1)
        self.frozen = torch.nn.Linear(2, 2).requires_grad_(False)

    def forward(self, x):
        h = self.backbone(x)
        return self.head_k(h).sum() + self.head_r(h).sum()


def coverage_events(tmp_path, model, opt, steps=2, after=None):
    with Workbench(model, opt, runs_dir=tmp_path, probes=["coverage"], strict=True) as wb:
        for step in range(steps):
            wb.loss({"a": model(torch.randn(2, 4))}).backward()
            opt.step()
            opt.zero_grad()
            if after is not None and step == 0:
                after(opt)
    return read_run(wb.path).events_of("coverage")


def test_clean_optimizer_has_no_findings(tmp_path):
    model = Net()
    opt = torch.optim.AdamW(
        [{"params": model.backbone.parameters(), "name": "backbone"},
         {"params": [*model.head_k.parameters(), *model.head_r.parameters()], "name": "heads"}],
        lr=1e-3,
    )
    (event,) = coverage_events(tmp_path, model, opt)
    assert event["missing"] == [] and event["duplicated"] == [] and event["stale"] == []
    assert event["zero_lr_groups"] == [] and event["frozen"] == []
    assert event["groups"] == {"backbone": {"backbone": 2}, "heads": {"head_k": 2, "head_r": 2}}
    assert event["group_lr"] == {"backbone": 1e-3, "heads": 1e-3}
    assert event["reason"] == "start" and event["step"] == 0


def test_missing_head_duplicate_and_zero_lr(tmp_path):
    model = Net()
    opt = torch.optim.SGD(
        [{"params": model.backbone.parameters()},
         {"params": [model.head_k.weight], "lr": 0.0}],  # head_r and head_k.bias missing
        lr=0.1,
    )
    opt.param_groups[0]["params"].append(model.head_k.weight)  # duplicated, behind torch's back
    stale = torch.nn.Parameter(torch.zeros(5))
    opt.param_groups[1]["params"].append(stale)  # e.g. a head replaced after the optimizer
    opt.param_groups[1]["params"].append(model.frozen.weight)
    (event, *_) = coverage_events(tmp_path, model, opt, steps=1)
    assert event["missing"] == ["head_k.bias", "head_r.weight", "head_r.bias"]
    assert event["duplicated"] == ["head_k.weight"]
    assert event["zero_lr_groups"] == ["1"]
    assert event["stale"] == ["1:1 (5,)"]
    assert event["frozen"] == ["frozen.weight"]
    assert event["groups"] == {"0": {"backbone": 2, "head_k": 1},
                               "1": {"head_k": 1, "<stale>": 1, "frozen": 1}}


def test_warmup_from_zero_is_not_a_zero_lr_group():
    model = Net()
    opt = torch.optim.SGD(model.parameters(), lr=0.1)
    torch.optim.lr_scheduler.LambdaLR(opt, lambda s: s / 10)  # lr is 0 now, initial_lr 0.1
    assert opt.param_groups[0]["lr"] == 0.0
    assert audit_coverage(model, opt).zero_lr_groups == []


def test_reaudit_when_param_groups_change(tmp_path):
    model = Net()
    opt = torch.optim.SGD(model.backbone.parameters(), lr=0.1)
    events = coverage_events(
        tmp_path, model, opt, steps=3,
        after=lambda o: o.add_param_group({"params": model.head_k.parameters(), "name": "k"}),
    )
    assert [e["reason"] for e in events] == ["start", "param_groups_changed"]
    assert len(events[0]["missing"]) == 4 and events[1]["missing"] == ["head_r.weight",
                                                                        "head_r.bias"]
    assert events[1]["step"] == 1 and events[1]["groups"]["k"] == {"head_k": 2}


def test_tensors_unfrozen_later_are_audited_once(tmp_path):
    """Gradual unfreezing: a backbone frozen at the start is audited again when it becomes
    trainable — missing if the optimizer was built from the trainable tensors only; a GAN-
    style requires_grad toggle every step does not re-audit every step."""
    model = Net()
    model.backbone.requires_grad_(False)
    opt = torch.optim.SGD([p for p in model.parameters() if p.requires_grad], lr=0.1)

    def unfreeze(opt):
        model.backbone.requires_grad_(True)

    start, later = coverage_events(tmp_path / "a", model, opt, steps=3, after=unfreeze)
    assert start["missing"] == [] and later["reason"] == "trainable_changed"
    assert later["missing"] == ["backbone.0.weight", "backbone.0.bias"]

    model = Net()
    opt = torch.optim.SGD(model.parameters(), lr=0.1)
    with Workbench(model, opt, runs_dir=tmp_path / "b", probes=["coverage"], strict=True) as wb:
        for step in range(6):
            model.head_r.requires_grad_(step % 2 == 0)
            wb.loss({"a": model(torch.randn(2, 4))}).backward()
            opt.step()
            opt.zero_grad()
    assert len(read_run(wb.path).events_of("coverage")) == 1


class KD(torch.nn.Module):
    """A teacher in the same root as the student, run under no_grad (requires_grad on)."""

    def __init__(self, teacher_grad=False):
        super().__init__()
        torch.manual_seed(0)
        self.teacher = torch.nn.Linear(4, 3)
        self.student = torch.nn.Linear(4, 3)
        self.teacher_grad = teacher_grad

    def forward(self, x):
        with torch.set_grad_enabled(self.teacher_grad):
            t = self.teacher(x)
        return (self.student(x) - t).pow(2).mean()


def grads_events(tmp_path, model, *, stale=False, steps=3):
    if stale:  # a gradient left on the teacher by a loop before the workbench
        model.teacher(torch.randn(2, 4)).sum().backward()
    opt = torch.optim.SGD(model.student.parameters(), 0.1)
    with Workbench(model, opt, runs_dir=tmp_path, probes=["coverage"], strict=True) as wb:
        for _ in range(steps):
            opt.zero_grad()
            wb.loss({"a": model(torch.randn(2, 4))}).backward()
            opt.step()
    return read_run(wb.path).events_of("coverage_grads")


def test_teacher_under_no_grad_never_gets_a_gradient(tmp_path):
    (event,) = grads_events(tmp_path, KD())
    assert event["no_grad"] == ["teacher.bias", "teacher.weight"]
    assert event["watched"] == 2 and event["backwards"] == 3


def test_a_stale_gradient_from_an_earlier_loop_does_not_count(tmp_path):
    (event,) = grads_events(tmp_path, KD(), stale=True)
    assert event["no_grad"] == ["teacher.bias", "teacher.weight"]


def test_a_teacher_that_gets_gradients_leaves_the_no_grad_set(tmp_path):
    # accumulated into the stale .grad in place: the version counter tells
    events = grads_events(tmp_path, KD(teacher_grad=True), stale=True)
    assert events[-1]["no_grad"] == []


def test_no_missing_tensor_writes_no_gradient_event(tmp_path):
    model = KD()
    opt = torch.optim.SGD(model.parameters(), 0.1)
    with Workbench(model, opt, runs_dir=tmp_path, probes=["coverage"], strict=True) as wb:
        wb.loss({"a": model(torch.randn(2, 4))}).backward()
        opt.step()
    assert read_run(wb.path).events_of("coverage_grads") == []


def test_an_optimizer_that_sets_its_own_lr_is_audited(tmp_path):
    """Adafactor with relative_step keeps lr=None in its groups (T5 recipes): no probe may
    fail on it, and a head left out of it is still found."""
    adafactor = pytest.importorskip("transformers.optimization").Adafactor
    import riswb
    from riswb.runlog import read_run

    torch.manual_seed(0)
    model = torch.nn.Sequential(torch.nn.Linear(4, 8), torch.nn.ReLU(), torch.nn.Linear(8, 1))
    opt = adafactor(model[0].parameters(), lr=None, relative_step=True, scale_parameter=True)
    with riswb.Workbench(model, opt, runs_dir=tmp_path, strict=True, log_every=5) as wb:
        for _ in range(10):
            loss = wb.loss({"mse": model(torch.randn(8, 4)).square().mean()})
            opt.zero_grad()
            loss.backward()
            opt.step()
    run = read_run(wb.path)
    [audit] = run.events_of("coverage")[:1]
    assert audit["missing"] == ["2.weight", "2.bias"] and audit["zero_lr_groups"] == []
    assert run.kind("lr")["group/0"].isna().all()  # set inside the optimizer: unknown


def test_a_head_replaced_after_the_optimizer_was_built_is_audited_at_the_flush(tmp_path):
    model = Net()
    opt = torch.optim.SGD(model.parameters(), lr=0.1)
    with Workbench(model, opt, runs_dir=tmp_path, probes=["coverage"], strict=True,
                   log_every=2) as wb:
        for step in range(4):
            if step == 1:
                model.head_k = torch.nn.Linear(8, 5)  # the optimizer still holds the old one
            wb.loss({"a": model(torch.randn(2, 4))}).backward()
            opt.step()
            opt.zero_grad()
    audits = read_run(wb.path).events_of("coverage")
    assert [a["reason"] for a in audits] == ["start", "model_changed"]
    assert sorted(audits[-1]["missing"]) == ["head_k.bias", "head_k.weight"]
    assert len(audits[-1]["stale"]) == 2
