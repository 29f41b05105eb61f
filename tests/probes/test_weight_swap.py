"""Event `weights_swapped`: EMA swapped in for eval and restored vs never restored
(docs/failures.md #19), a swap-in that changed nothing (#20), undeclared changes between steps."""

import copy

import torch

from riswb.instrument.hooks import Event
from riswb.instrument.workbench import Workbench
from riswb.runlog import read_run


def make():
    torch.manual_seed(0)
    model = torch.nn.Sequential(torch.nn.Linear(4, 300), torch.nn.Tanh(), torch.nn.Linear(300, 1))
    opt = torch.optim.AdamW(model.parameters(), lr=1e-2)
    return model, opt


def train_step(wb, model, opt):
    loss = wb.loss({"a": model(torch.randn(8, 4)).square().mean()})
    opt.zero_grad()
    loss.backward()
    opt.step()


class Ema:
    def __init__(self, model, decay=0.9):
        self.shadow = copy.deepcopy(model.state_dict())
        self.decay = decay
        self.backup = None

    def update(self, model):
        for k, v in model.state_dict().items():
            self.shadow[k].mul_(self.decay).add_(v, alpha=1 - self.decay)

    def swap_in(self, model):
        self.backup = copy.deepcopy(model.state_dict())
        model.load_state_dict(self.shadow)

    def swap_out(self, model):
        model.load_state_dict(self.backup)


def run_ema(tmp_path, *, restore: bool, declare: bool):
    model, opt = make()
    ema = Ema(model)
    with Workbench(model, opt, runs_dir=tmp_path, probes=["weight_swap"], log_every=5,
                   strict=True) as wb:
        for step in range(12):
            train_step(wb, model, opt)
            ema.update(model)
            if step == 5:
                ema.swap_in(model)
                if declare:  # emitted right after the swap, so a no-op swap can be seen
                    wb.emit(Event.WEIGHTS_SWAP_IN, kind="ema")
                wb.evaluate({"val": 0.0})
                if restore:
                    ema.swap_out(model)
                if declare:
                    wb.emit(Event.WEIGHTS_SWAP_OUT, kind="ema")
    return read_run(wb.path).events_of("weights_swapped")


def test_ema_swapped_for_eval_and_restored(tmp_path):
    (event,) = run_ema(tmp_path, restore=True, declare=False)
    assert event["restored"] is True and event["noop"] is False
    assert event["params_changed"] == 4 and event["step"] == 5
    assert event["detected"] == "eval" and event["resolved"] == "optimizer_step"


def test_ema_never_restored(tmp_path):
    (event,) = run_ema(tmp_path, restore=False, declare=False)
    assert event["restored"] is False and event["params_changed"] == 4
    assert event["kind"] == "unknown" and event["step"] == 5


def test_declared_swap_restored_and_unrestored(tmp_path):
    (good,) = run_ema(tmp_path / "a", restore=True, declare=True)
    assert good["kind"] == "ema" and good["restored"] is True and good["noop"] is False
    assert good["resolved"] == "swap_out"
    (bad,) = run_ema(tmp_path / "b", restore=False, declare=True)
    assert bad["kind"] == "ema" and bad["restored"] is False
    assert bad["detected"] == "swap_in" and bad["resolved"] == "optimizer_step"


def test_swap_in_that_changes_nothing_is_a_noop(tmp_path):
    """docs/failures.md #20: SWA state dict with a `module.` prefix loaded with strict=False."""
    model, opt = make()
    swa = {f"module.{k}": v.clone() + 1 for k, v in model.state_dict().items()}
    with Workbench(model, opt, runs_dir=tmp_path, probes=["weight_swap"], strict=True) as wb:
        train_step(wb, model, opt)
        model.load_state_dict(swa, strict=False)  # loads nothing
        wb.emit(Event.WEIGHTS_SWAP_IN, kind="swa")
        wb.evaluate({"val": 0.0})
        wb.emit(Event.WEIGHTS_SWAP_OUT, kind="swa")
        train_step(wb, model, opt)
    (event,) = read_run(wb.path).events_of("weights_swapped")
    assert event["noop"] is True and event["kind"] == "swa" and event["params_changed"] == 0


def test_undeclared_change_between_steps_and_clean_run(tmp_path):
    model, opt = make()
    snapshot = copy.deepcopy(model.state_dict())
    with Workbench(model, opt, runs_dir=tmp_path / "a", probes=["weight_swap"], log_every=4,
                   strict=True) as wb:
        for step in range(20):
            train_step(wb, model, opt)
            if step in (4, 5):  # a reload nobody declared, seen before steps 5 and 6
                model.load_state_dict(snapshot)
    (event,) = read_run(wb.path).events_of("weights_swapped")
    assert event["restored"] is False and event["step"] == 5
    assert event["detected"] == "optimizer_step" and event["steps_changed"] == 2

    model, opt = make()
    with Workbench(model, opt, runs_dir=tmp_path / "b", probes=["weight_swap"], log_every=4,
                   strict=True) as wb:
        for step in range(10):
            train_step(wb, model, opt)
            if step % 3 == 0:
                wb.evaluate({"val": 0.0})
    assert read_run(wb.path).events_of("weights_swapped") == []


def test_storage_replacement_is_seen(tmp_path):
    model, opt = make()
    with Workbench(model, opt, runs_dir=tmp_path, probes=["weight_swap"], strict=True) as wb:
        train_step(wb, model, opt)
        original = model[0].weight.data
        model[0].weight.data = torch.zeros_like(original)  # swap by assignment
        wb.evaluate({"val": 0.0})
        model[0].weight.data = original  # restored by assignment
        train_step(wb, model, opt)
    (event,) = read_run(wb.path).events_of("weights_swapped")
    assert event["restored"] is True and event["params_changed"] == 1


def test_fingerprint_counts_changed_tensors_like_a_full_comparison():
    """Oracle: which tensors differ, element by element, from a deep copy. Covers a
    non-contiguous parameter, mixed dtypes and a NaN weight (equal to itself, bitwise)."""
    from riswb.probes.weight_swap import WeightSwapProbe

    torch.manual_seed(0)
    params = [
        torch.nn.Parameter(torch.randn(40, 30).t()),  # non-contiguous
        torch.nn.Parameter(torch.randn(1000)),
        torch.nn.Parameter(torch.randn(7, dtype=torch.float64)),
        torch.nn.Parameter(torch.full((3,), float("nan"))),
    ]
    # one bit width, two float dtypes: values must not be read through one of them
    halves = [torch.nn.Parameter(torch.randn(5).half()),
              torch.nn.Parameter(torch.randn(5).bfloat16())]
    probe = WeightSwapProbe()
    probe._build(halves)
    probe._rebase()
    assert torch.equal(probe._ref_vals, torch.cat([h.detach().double() for h in halves]))
    probe = WeightSwapProbe(max_elems=16)
    probe._build(params)
    probe._rebase()
    assert int(probe._compare(probe._fingerprint())[0].sum()) == 0
    before = [p.detach().clone() for p in params]
    with torch.no_grad():
        params[0].add_(1.0)
        params[2].mul_(2.0)
    changed = sum(not torch.equal(p.detach(), b) for p, b in zip(params, before, strict=True)
                  if not torch.isnan(b).any())
    assert changed == 2
    assert int(probe._compare(probe._fingerprint())[0].sum()) == changed
    assert all(v.numel() <= 16 for v in probe._views)


def test_storage_replaced_by_a_different_size_mid_run(tmp_path):
    """`p.data = bigger` changes the sample layout between a step and the flush: the
    pending comparisons must still be counted with the layout they were made in."""
    class Model(torch.nn.Module):
        def __init__(self):
            super().__init__()
            self.lin = torch.nn.Linear(4, 1)
            self.v = torch.nn.Parameter(torch.ones(10))

        def forward(self, x):
            return self.lin(x) + self.v.sum()

    torch.manual_seed(0)
    model = Model()
    opt = torch.optim.SGD(model.parameters(), lr=1e-2)
    with Workbench(model, opt, runs_dir=tmp_path, probes=["weight_swap"], log_every=5,
                   strict=True) as wb:
        for step in range(12):
            train_step(wb, model, opt)  # (its graph dies with it: a live one would pin v's
            if step == 2:               # AccumulateGrad node to the old shape)
                model.v.data = torch.ones(20)
            if step == 7:
                wb.evaluate({"val": 0.0})
    events = read_run(wb.path).events_of("weights_swapped")
    assert [(e["kind"], e["step"], e["restored"]) for e in events] == [("storage", 4, False)]


def test_storage_replaced_then_evaluated_at_once(tmp_path):
    """The rebuild at `wb.evaluate` happens with comparisons still pending."""
    torch.manual_seed(0)
    model = torch.nn.Linear(4, 3)
    opt = torch.optim.SGD(model.parameters(), lr=1e-2)
    with Workbench(model, opt, runs_dir=tmp_path, probes=["weight_swap"], log_every=5,
                   strict=True) as wb:
        for step in range(12):
            train_step(wb, model, opt)
            if step == 1:
                model.bias.data = torch.zeros(3)
                wb.evaluate({"val": 0.0})
    events = read_run(wb.path).events_of("weights_swapped")
    assert len(events) == 1 and events[0]["detected"] == "eval" and not events[0]["restored"]


def run_edits(tmp_path, edit, *, steps=30, evaluate_at=()):
    """`edit(step, model)` changes the weights after each optimizer step."""
    model, opt = make()
    with Workbench(model, opt, runs_dir=tmp_path, probes=["weight_swap"], log_every=5,
                   strict=True) as wb:
        for step in range(steps):
            train_step(wb, model, opt)
            with torch.no_grad():
                edit(step, model)
            if step in evaluate_at:
                wb.evaluate({"val": 0.0})
    return read_run(wb.path).events_of("weights_swapped")


def test_projection_after_every_step_is_not_a_swap(tmp_path):
    """Weight clipping and row normalization move θ no farther than the step did (the
    previous iterate met the constraint): not swaps, also when evaluated right after."""
    def clip(step, model):
        for p in model.parameters():
            p.clamp_(-0.05, 0.05)

    def renorm(step, model):
        w = model[0].weight
        w.div_(w.norm(dim=1, keepdim=True))

    assert run_edits(tmp_path / "a", clip, evaluate_at=(9, 19)) == []
    assert run_edits(tmp_path / "b", renorm, evaluate_at=(9, 19)) == []


def test_rounding_left_by_an_add_sub_restore_is_not_a_change(tmp_path):
    """SAM restores w by p.sub_(e) after p.add_(e): equal up to float rounding."""
    def perturb_and_restore(step, model):
        for p in model.parameters():
            e = 0.05 * torch.randn_like(p)
            p.add_(e)
            p.sub_(e)

    assert run_edits(tmp_path, perturb_and_restore, evaluate_at=(9,)) == []


def test_big_edit_on_every_step_is_a_constraint(tmp_path):
    """A tensor updated by hand outside the optimizer on every step (big against its zero
    optimizer update) recurs on every step: the loop's own rule, not a forgotten swap."""
    def manual_update(step, model):
        model[2].bias.add_(0.01)

    assert run_edits(tmp_path, manual_update, evaluate_at=(9, 19)) == []


def test_checkpoint_loaded_before_the_first_step_is_the_start(tmp_path):
    model, opt = make()
    checkpoint = {k: v + 1 for k, v in model.state_dict().items()}
    with Workbench(model, opt, runs_dir=tmp_path, probes=["weight_swap"], log_every=5,
                   strict=True) as wb:
        model.load_state_dict(checkpoint)
        wb.evaluate({"val": 0.0})
        model[0].weight.data = model[0].weight.data.clone()
        for _ in range(10):
            train_step(wb, model, opt)
    assert read_run(wb.path).events_of("weights_swapped") == []


def test_swap_in_a_clipped_loop_is_still_seen(tmp_path):
    """A snapshot loaded at an eval and never restored is big against both the step and
    the routine clipping, so clipping does not hide it."""
    snapshot = {}

    def clip_then_swap(step, model):
        for p in model.parameters():
            p.clamp_(-0.2, 0.2)
        if step == 2:
            snapshot.update({k: v.clone() for k, v in model.state_dict().items()})
        if step == 19:
            model.load_state_dict(snapshot)

    (event,) = run_edits(tmp_path, clip_then_swap, evaluate_at=(19,))
    assert event["restored"] is False and event["detected"] == "eval"


def test_declared_ema_swap_restored_in_a_clipped_loop(tmp_path):
    """Restored means back up to the loop's routine edit: the clipping done after the step
    (before the swap-in) is no leftover of the swap."""
    model, opt = make()
    ema = Ema(model)
    with Workbench(model, opt, runs_dir=tmp_path, probes=["weight_swap"], log_every=5,
                   strict=True) as wb:
        for step in range(20):
            train_step(wb, model, opt)
            with torch.no_grad():
                for p in model.parameters():
                    p.clamp_(-0.2, 0.2)
            ema.update(model)
            if step in (9, 15):
                ema.swap_in(model)
                wb.emit(Event.WEIGHTS_SWAP_IN, kind="ema")
                wb.evaluate({"val": 0.0})
                ema.swap_out(model)
                wb.emit(Event.WEIGHTS_SWAP_OUT, kind="ema")
    events = read_run(wb.path).events_of("weights_swapped")
    assert [(e["kind"], e["restored"]) for e in events] == [("ema", True), ("ema", True)]


def test_memory_moved_under_the_same_tensors_is_storage_not_a_swap(tmp_path):
    """`share_memory()` mid-run moves every parameter's memory; the weights are unchanged.
    The CPU fingerprint reads numpy views, which must follow the move (a stale one read freed
    memory: a crash on a big model, a false undeclared swap on a small one)."""
    torch.manual_seed(0)
    model = torch.nn.Sequential(torch.nn.Linear(256, 256), torch.nn.Tanh(), torch.nn.Linear(256, 1))
    opt = torch.optim.SGD(model.parameters(), lr=1e-3)
    with Workbench(model, opt, runs_dir=tmp_path, probes=["weight_swap"], log_every=5) as wb:
        for step in range(20):
            loss = wb.loss({"a": model(torch.randn(8, 256)).square().mean()})
            opt.zero_grad()
            loss.backward()
            opt.step()
            if step == 10:
                model.share_memory()
    events = read_run(wb.path).events_of("weights_swapped")
    assert [(e["kind"], e["detected"]) for e in events] == [("storage", "flush")]
