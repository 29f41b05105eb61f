"""GradStepProbe against oracles: torch's clip_grad_norm_ return value, the norm of the
summed micro-batch gradients, hand-made masking and sanitizing."""

from __future__ import annotations

import pytest
import torch
from torch import nn

import riswb
from riswb.runlog import read_run


def net():
    torch.manual_seed(0)
    return nn.Sequential(nn.Linear(5, 8), nn.Tanh(), nn.Linear(8, 2))


def batch(i):
    gen = torch.Generator().manual_seed(i)
    return torch.randn(6, 5, generator=gen), torch.randn(6, 2, generator=gen)


def run(tmp_path, between, steps=4, micro=1, probes=("grad_step", "clip", "nonfinite")):
    model = net()
    opt = torch.optim.SGD(model.parameters(), lr=0.0)  # lr 0: every step sees the same θ
    seen = []
    with riswb.Workbench(model, opt, runs_dir=tmp_path, probes=list(probes),
                         log_every=steps * micro,
                         strict=True) as wb:
        for step in range(steps):
            opt.zero_grad()
            for m in range(micro):
                x, y = batch(step * micro + m)
                wb.loss({"mse": (model(x) - y).square().mean()}).backward()
            seen.append(between(model))
            opt.step()
    return read_run(wb.path), seen


def test_torch_clip_ratio_equals_its_return_value(tmp_path):
    def clip(model):
        pre = torch.nn.utils.clip_grad_norm_(model.parameters(), 0.05)
        post = torch.linalg.vector_norm(torch.cat([p.grad.flatten() for p in model.parameters()]))
        return float(pre), float(post)

    record, seen = run(tmp_path, clip)
    step, clip_rec = record.kind("grad_step").iloc[-1], record.kind("clip").iloc[-1]
    pre = torch.tensor([s[0] for s in seen], dtype=torch.float64)
    post = torch.tensor([s[1] for s in seen], dtype=torch.float64)
    assert step["rescaled"] == 1 and step["altered"] == 0 and step["zeroed"] == 0
    assert step["norm_backward"] == pytest.approx(float(pre.square().mean().sqrt()), rel=1e-5)
    assert step["ratio"] == pytest.approx(float((post / pre).mean()), rel=1e-5)
    assert clip_rec["observed"] == 1 and clip_rec["clipped"] == 1 and clip_rec["calls"] == 4
    assert clip_rec["norm"] == pytest.approx(float(pre.mean()), rel=1e-5)
    assert clip_rec["max_norm"] == pytest.approx(0.05, rel=1e-5)


def test_accumulated_gradient_is_the_one_stepped(tmp_path):
    model = net()

    def norm_of_sum(step):
        total = [torch.zeros_like(p) for p in model.parameters()]
        for m in range(3):
            model.zero_grad()
            x, y = batch(step * 3 + m)
            (model(x) - y).square().mean().backward()
            for t, p in zip(total, model.parameters(), strict=True):
                t += p.grad
        return torch.cat([t.flatten() for t in total]).norm()

    expected = torch.stack([norm_of_sum(s) for s in range(4)]).double()
    record, _ = run(tmp_path, lambda m: None, micro=3)
    step = record.kind("grad_step").iloc[-1]
    assert step["steps"] == 4 and step["ratio"] == 1 and step["rescaled"] == 0
    assert step["norm_backward"] == pytest.approx(float(expected.square().mean().sqrt()), rel=1e-5)


def test_masking_is_an_alteration_and_counts_elements(tmp_path):
    def mask(model):
        with torch.no_grad():
            model[0].weight.grad[:, :2] = 0  # one tensor only: not a uniform rescale
        return model[0].weight.grad.numel()

    record, _ = run(tmp_path, mask)
    step = record.kind("grad_step").iloc[-1]
    assert step["altered"] == 1 and step["rescaled"] == 0 and step["elem_samples"] == 3
    total = sum(p.numel() for p in net().parameters())
    assert step["frac_zeroed"] == pytest.approx(16 / total, rel=1e-6)
    assert step["frac_changed"] == pytest.approx(16 / total, rel=1e-6)
    assert step["altered_down"] == 1  # a mask shrinks norms too: frac_zeroed tells it apart


def test_value_clipping_shrinks_tensors_and_zeroes_nothing(tmp_path):
    def clip(model):
        before = [p.grad.clone() for p in model.parameters()]
        torch.nn.utils.clip_grad_value_(model.parameters(), 0.05)
        return sum(int((b != p.grad).sum()) for b, p in zip(before, model.parameters(),
                                                           strict=True))

    record, seen = run(tmp_path, clip)
    step = record.kind("grad_step").iloc[-1]
    total = sum(p.numel() for p in net().parameters())
    assert min(seen) > 0 and step["altered"] == 1 and step["altered_down"] == 1
    assert step["frac_zeroed"] == 0
    assert step["frac_changed"] == pytest.approx(sum(seen[:3]) / (3 * total), rel=1e-6)


def test_nan_to_num_in_the_loop_is_counted_as_sanitized(tmp_path):
    model = net()
    opt = torch.optim.SGD(model.parameters(), lr=0.0)
    with riswb.Workbench(model, opt, runs_dir=tmp_path, probes=["nonfinite", "grad_step"],
                         log_every=3, strict=True) as wb:
        for step in range(3):
            x, y = batch(step)
            out = model(x)
            if step == 1:
                out = out + torch.tensor([float("nan"), 0.0]) * (out[:, :1] * 0)
            opt.zero_grad()
            wb.loss({"mse": (out - y).square().mean()}).backward()
            for p in model.parameters():
                torch.nan_to_num_(p.grad, nan=0.0)  # the loop's own sanitizing
            opt.step()
    record = read_run(wb.path)
    nonfinite, step = record.kind("nonfinite").iloc[-1], record.kind("grad_step").iloc[-1]
    assert nonfinite["grad_elems"] > 0 and nonfinite["sanitized"] == nonfinite["grad_elems"]
    assert step["nonfinite_backward"] == step["sanitized"] == nonfinite["grad_elems"]
    assert nonfinite["step_attempts"] == 3 and nonfinite["attempts_nonfinite"] == 1


@pytest.mark.parametrize("replace, counted", [
    (lambda p: torch.nan_to_num(p.grad), False),  # nothing to replace: the same values
    (lambda p: p.grad.clone(), False),
    (lambda p: None, True),  # the gradient is gone: the update is lost
    (lambda p: torch.zeros_like(p.grad), True),
])
def test_a_replaced_grad_counts_when_its_values_changed(tmp_path, replace, counted):
    def between(model):
        first = next(model.parameters())
        first.grad = replace(first)

    record, _ = run(tmp_path, between)
    step = record.kind("grad_step").iloc[-1]
    changes = {e["change"] for e in record.events_of("grad_step_change")}
    assert step["replaced"] == (1.0 if counted else 0.0)
    assert ("replaced" in changes) == counted
