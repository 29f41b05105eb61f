"""DeadParamsProbe: unused head, clean loop, zero grads, partial death
(docs/failures.md #7, 18)."""

from __future__ import annotations

import pytest
import torch
from torch import nn

import riswb
from riswb.probes.dead_params import DeadParamsProbe
from riswb.runlog import read_run


class Heads(nn.Module):
    def __init__(self):
        super().__init__()
        self.body = nn.Linear(4, 6)
        self.head = nn.Linear(6, 2)
        self.extra = nn.Linear(6, 3)  # the head whose loss got lost
        self.vec = nn.Parameter(torch.ones(10))  # only its first 7 elements reach the loss

    def forward(self, x, use_extra=True, zero_extra=False):
        h = torch.relu(self.body(x))
        out = self.head(h).sum(-1) + (self.vec[:7] * x.sum(-1, keepdim=True)).sum(-1)
        if use_extra:
            e = self.extra(h).sum(-1)
            out = out + (0.0 * e if zero_extra else e)
        return out


def train(tmp_path, steps, probe, *, use_extra=lambda step: True, zero_extra=False,
          log_every=5, set_to_none=True, scale=lambda step: 1.0):
    """`scale(step)` multiplies the loss: 0 gives a backward with no gradient anywhere."""
    torch.manual_seed(0)
    model = Heads()
    opt = torch.optim.SGD(model.parameters(), lr=0.01)
    wb = riswb.Workbench(
        model, opt, runs_dir=tmp_path, probes=[probe], strict=True, log_every=log_every
    )
    with wb:
        for step in range(steps):
            out = model(torch.randn(8, 4), use_extra(step), zero_extra)
            loss = wb.loss({"mse": scale(step) * (out - 1).pow(2).mean()})
            opt.zero_grad(set_to_none=set_to_none)
            loss.backward()
            opt.step()
    return read_run(wb.path)


def test_unused_head_is_dead_and_named(tmp_path):
    # elements are judged on ≥ 3 sampled backwards: 4 per window here
    run = train(tmp_path, 20, DeadParamsProbe(window=10, elem_every=3),
                use_extra=lambda s: False)
    dead = run.kind("dead")
    assert list(dead["step"]) == [9, 19]
    assert (dead["n_dead"] == 2).all() and (dead["n_params"] == 7).all()
    assert (dead["steps"] == 10).all()
    events = run.events_of("dead_params")
    assert len(events) == 1  # only when the set changes
    assert events[0]["names"] == ["extra.weight", "extra.bias"] and events[0]["steps"] == 10
    assert events[0]["gated"] == []  # the whole head is dead: nothing stops it at one tensor
    # elements: extra (18+3) all dead, vec's last 3 elements dead, body/head alive
    total = 4 * 6 + 6 + 6 * 2 + 2 + 6 * 3 + 3 + 10
    assert dead["frac_dead_elems"].iloc[0] == pytest.approx((21 + 3) / total)
    assert dead["dead_frac/extra"].iloc[0] == 1.0
    assert dead["dead_frac/vec"].iloc[0] == pytest.approx(0.3)
    assert dead["zero_frac/vec"].iloc[0] == pytest.approx(0.3)
    assert dead["dead_frac/head"].iloc[0] == 0.0


def test_clean_loop_has_nothing_dead(tmp_path):
    run = train(tmp_path, 20, DeadParamsProbe(window=10, elem_every=3))
    dead = run.kind("dead")
    assert (dead["n_dead"] == 0).all()
    assert run.events_of("dead_params") == []
    assert dead["dead_frac/extra"].iloc[0] == 0.0


def test_backwards_without_any_gradient_do_not_judge_elements(tmp_path):
    """A margin loss satisfied by most batches: their backwards carry no gradient at all and
    say nothing about which elements can get one. Elements are judged once 3 sampled
    backwards carried a gradient, the windows between adding up."""
    informative = {0, 30, 50}  # the sampled backwards (every 5th) that carry a gradient
    run = train(tmp_path, 60, DeadParamsProbe(window=20, elem_every=5),
                scale=lambda s: float(s in informative))
    dead = run.kind("dead")
    assert list(dead["step"]) == [19, 39, 59]
    judged = dead["frac_dead_elems"].notna().tolist()
    assert judged == [False, False, True]  # 1, then 2, then 3 informative samples


def test_zero_gradients_count_as_dead(tmp_path):
    """A head multiplied by 0 gets a grad of exact zeros (not None): still dead."""
    run = train(tmp_path, 10, DeadParamsProbe(window=10), zero_extra=True, set_to_none=False)
    assert run.kind("dead")["n_dead"].tolist() == [2]
    assert run.events_of("dead_params")[0]["names"] == ["extra.weight", "extra.bias"]


def test_set_changes_emit_events_and_short_final_window_is_dropped(tmp_path):
    probe = DeadParamsProbe(window=10, elem_every=3)
    run = train(tmp_path, 35, probe, use_extra=lambda step: step < 10)
    dead = run.kind("dead")
    assert list(dead["step"]) == [9, 19, 29]  # steps 30-34 (5 < window) are not evaluated
    assert dead["n_dead"].tolist() == [0, 2, 2]
    events = run.events_of("dead_params")
    assert [e["step"] for e in events] == [19]
    assert events[0]["names"] == ["extra.weight", "extra.bias"]


def test_run_shorter_than_the_window_is_evaluated_at_the_end(tmp_path):
    run = train(tmp_path, 7, DeadParamsProbe(window=50), use_extra=lambda s: False)
    dead = run.kind("dead")
    assert dead["n_dead"].tolist() == [2] and dead["steps"].tolist() == [7]
    assert len(run.events_of("dead_params")) == 1


def test_element_fractions_match_brute_force(tmp_path):
    """Oracle: per element, zero (±0.0) on every sampled backward; sampled = 0, 2, 4. (A
    bare parameter: an nn.Linear weight is judged by whole rows, see the test below.)"""
    torch.manual_seed(1)
    model = nn.Module()
    model.weight = nn.Parameter(torch.zeros(1, 60))
    opt = torch.optim.SGD(model.parameters(), lr=0.0)
    grads = []
    for _ in range(6):
        g = torch.randn(60) * (torch.rand(60) < 0.5)
        g[torch.rand(60) < 0.2] = -0.0  # negative zeros are zeros too
        grads.append(g)
    probe = DeadParamsProbe(window=6, elem_every=2)
    with riswb.Workbench(model, opt, runs_dir=tmp_path, probes=[probe], strict=True,
                         log_every=6) as wb:
        for g in grads:
            loss = wb.loss({"a": (model.weight[0] * g).sum()})
            opt.zero_grad()
            loss.backward()
            opt.step()
    dead = read_run(wb.path).kind("dead").iloc[0]
    sampled = torch.stack(grads[0::2]) == 0
    assert dead["frac_dead_elems"] == pytest.approx(float(sampled.all(0).float().mean()))
    assert dead["zero_frac/weight"] == pytest.approx(float(sampled.float().mean()))


def test_complex_parameter_counts_complex_elements(tmp_path):
    """Oracle: 7 of 10 complex elements reach the loss, so 3 (0.3) are dead."""
    class Complex(nn.Module):
        def __init__(self):
            super().__init__()
            self.c = nn.Parameter(torch.ones(10, dtype=torch.cfloat))

    model = Complex()
    opt = torch.optim.SGD(model.parameters(), lr=0.01)
    with riswb.Workbench(model, opt, runs_dir=tmp_path, strict=True, log_every=6,
                         probes=[DeadParamsProbe(window=6, elem_every=2)]) as wb:
        for _ in range(6):
            loss = wb.loss({"a": model.c[:7].real.sum() + model.c[:7].imag.sum()})
            opt.zero_grad()
            loss.backward()
            opt.step()
    dead = read_run(wb.path).kind("dead").iloc[0]
    assert dead["dead_frac/c"] == pytest.approx(0.3)
    assert dead["frac_dead_elems"] == pytest.approx(0.3)


class TwoPasses(nn.Module):
    """A head per backward: `main` in the first, `aux` only in the second of each step."""

    def __init__(self):
        super().__init__()
        self.body = nn.Linear(4, 6)
        self.main = nn.Linear(6, 1)
        self.aux = nn.Linear(6, 1)


def test_a_head_reached_in_the_second_backward_of_each_step_is_alive(tmp_path):
    torch.manual_seed(0)
    model = TwoPasses()
    opt = torch.optim.SGD(model.parameters(), lr=0.01)
    with riswb.Workbench(model, opt, runs_dir=tmp_path, probes=[DeadParamsProbe()],
                         strict=True, log_every=10) as wb:
        for _ in range(100):
            h = torch.relu(model.body(torch.randn(8, 4)))
            opt.zero_grad()
            wb.loss({"main": model.main(h).square().mean()}).backward(retain_graph=True)
            wb.loss({"aux": (model.aux(h) - 1).square().mean()}).backward()
            opt.step()
    dead = read_run(wb.path).kind("dead")
    # every sampled phase is covered: aux reads as alive (a ReLU unit that died may leave
    # one of its 7 elements at zero), where sampling only first backwards read it all dead
    assert (dead["n_dead"] == 0).all() and (dead["dead_frac/aux"] < 0.2).all()


class Recommender(nn.Module):
    def __init__(self, sparse):
        super().__init__()
        self.items = nn.Embedding(500, 4, sparse=sparse)
        self.unused = nn.Embedding(50, 1, sparse=sparse)  # in the optimizer, never looked up
        self.out = nn.Linear(4, 1)


@pytest.mark.parametrize("sparse", [False, True])
def test_lookup_rows_not_looked_up_are_not_dead_but_an_unused_table_is(tmp_path, sparse):
    torch.manual_seed(0)
    model = Recommender(sparse)
    tables = list(model.items.parameters()) + list(model.unused.parameters())
    opts = ([torch.optim.SparseAdam(tables, lr=1e-2), torch.optim.Adam(model.out.parameters())]
            if sparse else [torch.optim.Adam(model.parameters())])
    with riswb.Workbench(model, optimizers=opts, runs_dir=tmp_path / str(sparse),
                         probes=[DeadParamsProbe()], strict=True, log_every=10) as wb:
        for _ in range(60):
            pred = model.out(model.items(torch.randint(0, 500, (16,)))).squeeze(-1)
            loss = wb.loss({"mse": (pred - 1).square().mean()})
            for opt in opts:
                opt.zero_grad()
            loss.backward()
            for opt in opts:
                opt.step()
    run = read_run(wb.path)
    dead = run.kind("dead").iloc[0]
    assert dead["n_dead"] == 1 and dead["dead_frac/items"] == 0  # rows unseen: not dead
    assert dead["dead_frac/out"] == 0
    assert run.events_of("dead_params")[0]["names"] == ["unused.weight"]


def test_inputs_never_set_are_not_dead_but_a_dead_unit_is(tmp_path):
    """One-hot states 0-3 only (of 7): the first layer's columns 4-6 get no gradient because
    those inputs were zero, not because the layer is dead; a unit whose ReLU never fires
    leaves its own row of the first layer dead."""
    torch.manual_seed(0)
    first, second = nn.Linear(7, 8), nn.Linear(8, 1)
    with torch.no_grad():
        first.weight.fill_(0.5)  # units 1-7 fire on every state
        first.bias.fill_(0.1)
        first.weight[0].fill_(-1.0)  # unit 0: pre-activation always < 0
        first.bias[0] = -1.0
    model = nn.Sequential(first, nn.ReLU(), second)
    opt = torch.optim.SGD(model.parameters(), lr=0.0)  # lr 0: the dead unit stays dead
    with riswb.Workbench(model, opt, runs_dir=tmp_path, probes=[DeadParamsProbe()],
                         strict=True, log_every=10) as wb:
        for _ in range(50):
            state = torch.nn.functional.one_hot(torch.arange(8) % 4, 7).float()
            loss = wb.loss({"mse": (model(state) - 1).square().mean()})
            opt.zero_grad()
            loss.backward()
            opt.step()
    dead = read_run(wb.path).kind("dead").iloc[0]
    # first layer: unit 0's row where inputs were ever set (4 weights) and its bias are
    # dead; columns 4-6 (inputs never set) are not. The second layer's one output row gets
    # a gradient: its weight from the dead unit is an input that was always 0, which the
    # first layer already names
    assert dead["dead_frac/0"] == pytest.approx(5 / (7 * 8 + 8))
    assert dead["dead_frac/2"] == 0


def test_units_and_inputs_never_active_together_are_not_dead(tmp_path):
    """One-hot states and ReLU units that each fire on some states only: most (unit, input)
    pairs never meet, so their weights never get a gradient, yet every unit and every input
    is alive (a DQN's first layer): nothing is dead."""
    torch.manual_seed(0)
    first = nn.Linear(4, 4)
    with torch.no_grad():
        first.weight.copy_(torch.eye(4) * 2 - 1)  # unit j fires on state j only
        first.bias.zero_()
    model = nn.Sequential(first, nn.ReLU(), nn.Linear(4, 1))
    opt = torch.optim.SGD(model.parameters(), lr=0.0)
    with riswb.Workbench(model, opt, runs_dir=tmp_path, probes=[DeadParamsProbe()],
                         strict=True, log_every=10) as wb:
        for _ in range(50):
            state = torch.nn.functional.one_hot(torch.arange(4), 4).float()
            loss = wb.loss({"mse": (model(state) - 1).square().mean()})
            opt.zero_grad()
            loss.backward()
            opt.step()
    dead = read_run(wb.path).kind("dead").iloc[0]
    assert dead["dead_frac/0"] == 0 and dead["frac_dead_elems"] == 0


def test_elements_a_pruning_mask_zeroes_are_not_dead(tmp_path):
    """torch.nn.utils.prune at 50% mid-run: the masked weights get zero gradients by design."""
    from torch.nn.utils import prune

    torch.manual_seed(0)
    model = nn.Sequential(nn.Linear(6, 16), nn.Tanh(), nn.Linear(16, 1))
    opt = torch.optim.Adam(model.parameters(), lr=1e-3)
    with riswb.Workbench(model, opt, runs_dir=tmp_path, probes=[DeadParamsProbe()],
                         strict=True, log_every=10) as wb:
        for step in range(100):
            if step == 10:
                prune.l1_unstructured(model[0], "weight", amount=0.5)
            loss = wb.loss({"mse": (model(torch.randn(8, 6)) - 1).square().mean()})
            opt.zero_grad()
            loss.backward()
            opt.step()
    dead = read_run(wb.path).kind("dead")
    assert (dead["dead_frac/0"] == 0).all() and (dead["n_dead"] == 0).all()


def test_a_weight_whose_gradient_a_hook_zeroes_is_gated_beside_its_live_bias(tmp_path):
    torch.manual_seed(0)
    model = Heads()
    model.head.weight.register_hook(torch.zeros_like)  # a mask that is all zero
    opt = torch.optim.SGD(model.parameters(), lr=0.01)
    with riswb.Workbench(model, opt, runs_dir=tmp_path, probes=[DeadParamsProbe(window=10)],
                         strict=True, log_every=5) as wb:
        for _ in range(10):
            loss = wb.loss({"mse": (model(torch.randn(8, 4)) - 1).pow(2).mean()})
            opt.zero_grad()
            loss.backward()
            opt.step()
    [event] = read_run(wb.path).events_of("dead_params")
    assert event["names"] == ["head.weight"] and event["gated"] == ["head.weight"]
