"""NonFiniteProbe: raw non-finite grad elements counted before sanitization
(docs/failures.md #12)."""

from __future__ import annotations

import pytest
import torch
from torch import nn

import riswb
from riswb.probes.nonfinite import NonFiniteProbe, count_nonfinite
from riswb.runlog import read_run

INJECT = {2: (3, 1), 3: (0, 2), 7: (5, 0)}  # step -> (NaN elements, inf elements)


def run_loop(tmp_path, *, steps=12, log_every=4, nan_loss_step=None, sanitize=True,
             observe_every=None):
    """Without sanitize the optimizer is not stepped (NaN would spread into the weights)."""
    torch.manual_seed(0)
    model = nn.Sequential(nn.Linear(5, 8), nn.ReLU(), nn.Linear(8, 2))
    opt = torch.optim.SGD(model.parameters(), lr=0.01)
    state = {"step": -1}

    def poison(grad):  # runs inside backward, before accumulation: a *raw* bad gradient
        nan, inf = INJECT.get(state["step"], (0, 0))
        if nan or inf:
            grad = grad.clone().reshape(-1)
            grad[:nan] = float("nan")
            grad[nan : nan + inf] = float("inf")
            grad = grad.reshape(model[0].weight.shape)
        return grad

    model[0].weight.register_hook(poison)
    oracle = []  # per step: (raw non-finite elements, set of affected tensor indices)
    wb = riswb.Workbench(
        model, opt, runs_dir=tmp_path, probes=[NonFiniteProbe()], strict=True,
        log_every=log_every, observe_every=observe_every,
    )
    with wb:
        for step in range(steps):
            state["step"] = step
            out = model(torch.randn(4, 5))
            term = out.pow(2).mean()
            if step == nan_loss_step:
                term = term * float("nan")
            loss = wb.loss({"mse": term})
            opt.zero_grad()
            loss.backward()
            grads = [p.grad for p in model.parameters()]
            bad = [int((~torch.isfinite(g)).sum()) for g in grads]
            oracle.append((sum(bad), {i for i, b in enumerate(bad) if b}))
            if sanitize:
                wb.sanitize_()
                opt.step()
    return read_run(wb.path), oracle


@pytest.mark.parametrize("observe_every", [None, 3])  # 3: cycles unobserved in between
def test_raw_counts_match_manual_counts_and_sanitized_matches(tmp_path, observe_every):
    run, oracle = run_loop(tmp_path, observe_every=observe_every)
    records = run.kind("nonfinite")
    assert list(records["step"]) == [3, 7, 11]
    for _, row in records.iterrows():
        window = oracle[int(row.step) - 3 : int(row.step) + 1]
        assert row.grad_elems == sum(n for n, _ in window)
        assert row.params == len(set().union(*(s for _, s in window)))
        # everything counted raw was then replaced by wb.sanitize_
        assert row.sanitized == row.grad_elems
        assert row.loss == 0
    assert records["grad_elems"].sum() == sum(n + i for n, i in INJECT.values()) == 11


def test_counted_even_without_sanitize_and_loss_flag(tmp_path):
    run, oracle = run_loop(tmp_path, steps=8, nan_loss_step=5, sanitize=False)
    records = run.kind("nonfinite").set_index("step")
    assert records.loc[3, "loss"] == 0 and records.loc[7, "loss"] == 1
    assert records.loc[3, "grad_elems"] == oracle[2][0] + oracle[3][0]
    assert records["sanitized"].sum() == 0
    # a NaN loss poisons every gradient element of the graph; the raw count says so
    assert records.loc[7, "grad_elems"] == sum(n for n, _ in oracle[4:8])
    assert records.loc[7, "params"] == 4


@pytest.mark.parametrize("branch", [True, False])
def test_count_nonfinite_both_paths(branch):
    grads = [
        torch.tensor([1.0, float("nan"), float("inf")]),
        None,
        torch.zeros(4),
        torch.tensor([[float("-inf"), 2.0], [3.0, 1e38]]),
    ]
    norms = torch.stack(
        [torch.zeros(()) if g is None else torch.linalg.vector_norm(g) for g in grads]
    )
    counts = count_nonfinite(grads, norms, branch=branch)
    assert counts.tolist() == [2.0, 0.0, 0.0, 1.0]
    clean = [torch.ones(3), torch.full((2,), 1e30)]  # the norm overflows; no element is bad
    norms = torch.stack([torch.linalg.vector_norm(g) for g in clean])
    assert count_nonfinite(clean, norms, branch=branch).tolist() == [0.0, 0.0]
    finite = [torch.ones(2), None]
    norms = torch.tensor([1.0, 0.0])
    if branch:  # the CPU fast path: nothing to count, nothing allocated
        assert count_nonfinite(finite, norms, branch=True) is None
    else:
        assert count_nonfinite(finite, norms, branch=False).tolist() == [0.0, 0.0]


@pytest.mark.parametrize("dtype", [torch.float32, torch.float64, torch.bfloat16, torch.float16])
def test_branchless_counts_match_brute_force(dtype):
    """Oracle: (~isfinite(g)).sum() per tensor, for every dtype the fused path and the
    per-tensor path take — 70 000 non-finite elements would round in a half-precision sum."""
    torch.manual_seed(0)
    grads = []
    for numel, bad in ((100_000, 70_000), (37, 3), (5, 0)):
        g = torch.randn(numel).to(dtype)
        where = torch.randperm(numel)[:bad]
        g[where] = torch.tensor([float("nan"), float("inf"), -float("inf")]).to(dtype)[
            torch.arange(bad) % 3]
        grads.append(g)
    norms = torch.stack([torch.linalg.vector_norm(g.float()) for g in grads])
    counts = count_nonfinite(grads, norms, branch=False)
    assert counts.tolist() == [float((~torch.isfinite(g)).sum()) for g in grads]
