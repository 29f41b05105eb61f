"""TermOutputProbe against torch.autograd.grad by hand; term_no_grad; pair keys; mode."""

from __future__ import annotations

import dataclasses

import pytest
import torch
from torch import nn

import riswb
from riswb.probes.term_keys import pair_key, split_pair_key
from riswb.probes.term_output import TermOutputProbe
from riswb.runlog import read_run


@dataclasses.dataclass
class Out:
    main: torch.Tensor
    extra: dict


class Net(nn.Module):
    def __init__(self):
        super().__init__()
        torch.manual_seed(0)
        self.body = nn.Linear(4, 6)
        self.a = nn.Linear(6, 2)
        self.b = nn.Linear(6, 1)

    def forward(self, x):
        h = self.body(x)
        return Out(self.a(h), {"b": (self.b(h),)})


def terms_of(out, y, weight_term):
    return {"fit|a": (out.main - y).square().mean(), "b\\side": out.extra["b"][0].abs().mean(),
            "wd": weight_term, "const": torch.tensor(1.0)}


def test_output_gradients_match_autograd_by_hand(tmp_path):
    model = Net()
    opt = torch.optim.SGD(model.parameters(), lr=0.05)
    weights = {"fit|a": 1.0, "b\\side": 0.5, "wd": 1e-3, "const": 1.0}
    expected = {}
    probe = TermOutputProbe(budget=1e9)  # every interval, however slow the tiny step
    with riswb.Workbench(model, opt, runs_dir=tmp_path, probes=[probe], log_every=4,
                         strict=True) as wb:
        for step in range(9):
            gen = torch.Generator().manual_seed(step)
            x, y = torch.randn(5, 4, generator=gen), torch.randn(5, 2, generator=gen)
            out = model(x)
            terms = terms_of(out, y, model.a.weight.square().sum())
            if step in (0, 1, 2, 4, 8):  # the first 3 calls, then each interval's first
                outs = [out.main, out.extra["b"][0]]
                grads = {}
                for name, term in terms.items():
                    if not term.requires_grad:
                        grads[name] = torch.zeros(12)
                        continue
                    parts = torch.autograd.grad(weights[name] * term, outs, retain_graph=True,
                                                allow_unused=True)
                    grads[name] = torch.cat([
                        torch.zeros(o.numel()) if g is None else g.flatten()
                        for g, o in zip(parts, outs, strict=True)]).double()
                expected[step] = grads
            loss = wb.loss(terms, weights)
            opt.zero_grad()
            loss.backward()
            opt.step()
    run = read_run(wb.path)
    norms = run.kind("term_grad_out").set_index("step")
    cosines = run.kind("term_cosine_out").set_index("step")
    assert sorted(norms.index) == sorted(expected)
    for step, grads in expected.items():
        for name, g in grads.items():
            assert norms.loc[step, name] == pytest.approx(float(g.norm()), rel=1e-6, abs=1e-12)
        a, b = grads["fit|a"], grads["b\\side"]
        assert cosines.loc[step, pair_key("fit|a", "b\\side")] == pytest.approx(
            float(a @ b / (a.norm() * b.norm())), abs=1e-6)
    assert (norms["wd"] == 0).all() and (norms["const"] == 0).all()
    (event,) = [e for e in run.events.to_dict("records") if e["event"] == "term_no_grad"]
    assert event["names"] == ["const"] and event["first_step"] == 0


@pytest.mark.parametrize("a, b", [("fit|a", "b\\side"), ("x", "y"), ("|", "\\"), ("a\\|", "")])
def test_pair_keys_are_unambiguous(a, b):
    assert split_pair_key(pair_key(a, b)) == (a, b)
    assert pair_key("fit", "reg") == "fit|reg"


def test_validation_without_model_eval_is_counted(tmp_path):
    torch.manual_seed(0)
    model = nn.Sequential(nn.Linear(4, 8), nn.Dropout(0.5), nn.Linear(8, 1))
    opt = torch.optim.SGD(model.parameters(), lr=0.05)
    with riswb.Workbench(model, opt, runs_dir=tmp_path, probes=["mode"], log_every=5) as wb:
        for step in range(10):
            loss = wb.loss({"mse": model(torch.randn(4, 4)).square().mean()})
            opt.zero_grad()
            loss.backward()
            opt.step()
            if step % 5 == 4:
                with torch.no_grad():  # forgot model.eval()
                    val = model(torch.randn(4, 4)).square().mean()
                wb.evaluate({"val": val})
    mode = read_run(wb.path).kind("mode")
    assert mode["nograd_forwards_train_mode"].sum() == 2 and mode["evals_train_mode"].sum() == 2
    assert mode["forwards_eval_mode"].sum() == 0
    events = read_run(wb.path).events
    (event,) = events[events["event"] == "mode_mismatch"].to_dict("records")
    assert event["phase"] == "eval" and event["modules"] == ["1"] and event["trainable"] == 0


class _SlowHead(torch.autograd.Function):
    """Identity whose backward takes `SLOW` seconds: a loss head as costly as the reference
    model's eigendecompositions, on a tiny network."""

    @staticmethod
    def forward(ctx, x):
        return x.clone()

    @staticmethod
    def backward(ctx, grad):
        import time

        time.sleep(SLOW)
        return grad


SLOW = 2e-3


def test_a_costly_loss_head_spaces_the_samples_to_the_budget(tmp_path):
    """Two terms through a 2 ms backward: a sample (two autograd.grad) costs ~4 ms against a
    ~2 ms call, so 1% of the busy time allows one sample in ≥ 10 intervals of 4 calls."""
    model = nn.Linear(4, 2)
    opt = torch.optim.SGD(model.parameters(), lr=0.01)
    probe = TermOutputProbe()
    with riswb.Workbench(model, opt, runs_dir=tmp_path, probes=[probe], log_every=4) as wb:
        for _ in range(160):
            out = _SlowHead.apply(model(torch.randn(8, 4)))
            loss = wb.loss({"a": out[:, 0].square().mean(), "b": out[:, 1].abs().mean()})
            opt.zero_grad()
            loss.backward()
            opt.step()
    assert probe.stride >= 10
    sampled = read_run(wb.path).kind("term_grad_out")["step"].tolist()
    # the first three calls, then one interval in `stride` (its first call); not every 4th
    assert sampled[:3] == [0, 1, 2] and 4 <= len(sampled) <= 8
    later = sampled[2:]
    assert all(b - a >= 40 for a, b in zip(later, later[1:], strict=False))


def test_every_n_samples_every_nth_call_after_the_first_ones(tmp_path):
    """`every=5`: calls 0, 1, 2 (front), then every 5th, whatever the cost (the registry's
    handler schedule would have dropped the forwards of most due calls)."""
    torch.manual_seed(0)
    model = nn.Linear(4, 2)
    opt = torch.optim.SGD(model.parameters(), lr=0.01)
    probe = TermOutputProbe(every=5)
    with riswb.Workbench(model, opt, runs_dir=tmp_path, probes=[probe], log_every=4) as wb:
        for _ in range(30):
            out = model(torch.randn(8, 4))
            loss = wb.loss({"a": out[:, 0].square().mean(), "b": out[:, 1].abs().mean()})
            opt.zero_grad()
            loss.backward()
            opt.step()
    sampled = read_run(wb.path).kind("term_grad_out")["step"].tolist()
    assert sampled == [0, 1, 2, 5, 10, 15, 20, 25]
    assert probe.describe()["sample_every"] == 5
