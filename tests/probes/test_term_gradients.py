"""TermGradientsProbe against a brute-force oracle: one torch.autograd.grad per term."""

from __future__ import annotations

import math

import pytest
import torch
from torch import nn

import riswb
from riswb.probes.term_gradients import FRONT, TermGradientsProbe
from riswb.runlog import read_run


class TwoHeads(nn.Module):
    def __init__(self):
        super().__init__()
        self.body = nn.Sequential(nn.Linear(6, 12), nn.Tanh())
        self.a = nn.Linear(12, 3)
        self.b = nn.Linear(12, 2)

    def forward(self, x):
        h = self.body(x)
        return self.a(h), self.b(h)


class NanGrad(torch.autograd.Function):
    """Identity forward; backward puts NaN in element [0, 0] and inf in [0, 1]."""

    @staticmethod
    def forward(ctx, x):
        return x.view_as(x)

    @staticmethod
    def backward(ctx, g):
        g = g.clone()
        g[..., 0, 0] = float("nan")
        g[..., 0, 1] = float("inf")
        return g


class HostBranch(torch.autograd.Function):
    """Identity whose backward branches on a tensor value: vmap cannot batch it."""

    @staticmethod
    def forward(ctx, x):
        return x.view_as(x)

    @staticmethod
    def backward(ctx, g):
        return g * 2 if bool(g.sum() > -1e30) else g


WEIGHTS = {"fit": 1.0, "reg": 0.3, "side": 2.0, "const": 1.0, "detached": 0.5}


def make_terms(model, x, y, *, nan=False, branch=False):
    pa, pb = model(x)
    if nan:
        pa = NanGrad.apply(pa)
    if branch:
        pb = HostBranch.apply(pb)
    return {
        "fit": ((pa - y) ** 2).mean(),
        "reg": pa.abs().mean() - 0.5 * pb.pow(2).mean(),
        "side": pb.mean(),
        "const": torch.tensor(0.7),  # no graph at all
        "detached": pa.detach().mean(),  # a graph cut: must record 0, not be skipped
    }


def oracle(terms, weights, params):
    grads = {}
    for name, term in terms.items():
        out = weights.get(name, 1.0) * term
        if not out.requires_grad:
            grads[name] = torch.zeros(sum(p.numel() for p in params), dtype=torch.float64)
            continue
        gs = torch.autograd.grad(out, params, retain_graph=True, allow_unused=True)
        grads[name] = torch.cat(
            [
                (torch.zeros_like(p) if g is None else g).reshape(-1).double()
                for g, p in zip(gs, params, strict=True)
            ]
        )
    return grads


def run_loop(tmp_path, probe, steps=7, *, nan_steps=(), branch=False, log_every=3):
    torch.manual_seed(0)
    model = TwoHeads()
    params = list(model.parameters())
    opt = torch.optim.SGD(params, lr=0.05)
    expected = {}
    wb = riswb.Workbench(
        model, opt, runs_dir=tmp_path, probes=[probe], strict=True, log_every=log_every
    )
    with wb:
        for step in range(steps):
            x, y = torch.randn(5, 6), torch.randn(5, 3)
            terms = make_terms(model, x, y, nan=step in nan_steps, branch=branch)
            if step % probe.interval == 0 or step in FRONT:
                expected[step] = oracle(terms, WEIGHTS, params)
            loss = wb.loss(terms, WEIGHTS)
            opt.zero_grad()
            loss.backward()
            wb.sanitize_()  # keep the parameters finite after an injected NaN
            opt.step()
    return read_run(wb.path), expected, wb


def check_against_oracle(run, expected):
    names = list(WEIGHTS)
    grad = run.kind("term_grad").set_index("step")
    cos = run.kind("term_cosine").set_index("step")
    bad = run.kind("term_nonfinite").set_index("step")
    assert sorted(grad.index) == sorted(expected)
    for step, grads in expected.items():
        for name in names:
            g = grads[name]
            finite = g[torch.isfinite(g)]
            if torch.isfinite(g).all():
                assert grad.loc[step, name] == pytest.approx(float(g.norm()), rel=1e-5, abs=1e-9)
            assert bad.loc[step, name] == int((~torch.isfinite(g)).sum())
            assert finite.numel() == g.numel() or math.isnan(grad.loc[step, name])
        for i, a in enumerate(names):
            for b in names[i + 1 :]:
                ga, gb = grads[a], grads[b]
                value = cos.loc[step, f"{a}|{b}"]
                na, nb = float(ga.norm()), float(gb.norm())
                if na == 0 or nb == 0 or not (math.isfinite(na) and math.isfinite(nb)):
                    assert math.isnan(value)
                else:
                    assert value == pytest.approx(float(ga @ gb) / (na * nb), abs=1e-5)


@pytest.mark.parametrize("batched", [None, False])
def test_norms_and_cosines_match_per_term_autograd(tmp_path, batched):
    probe = TermGradientsProbe(every=2, batched=batched)
    run, expected, _ = run_loop(tmp_path, probe)
    check_against_oracle(run, expected)
    assert probe.fallback_reason is None
    grad = run.kind("term_grad")
    # dead terms are recorded as exactly zero, never skipped
    assert (grad["const"] == 0).all() and (grad["detached"] == 0).all()
    assert (grad["fit"] > 0).all() and (grad["side"] > 0).all()
    assert sorted(run.kind("term_cosine").columns) == sorted(
        ["step"] + [f"{a}|{b}" for i, a in enumerate(WEIGHTS) for b in list(WEIGHTS)[i + 1 :]]
    )


def test_probe_leaves_training_untouched(tmp_path):
    """Same parameters after training with and without the probe; backward counted once."""
    run, _, wb = run_loop(tmp_path / "with", TermGradientsProbe(every=1))
    with_probe = [p.detach().clone() for p in wb.model.parameters()]
    assert wb.n_backward == 7 and wb.n_loss == 7

    torch.manual_seed(0)
    model = TwoHeads()
    opt = torch.optim.SGD(model.parameters(), lr=0.05)
    for _ in range(7):
        x, y = torch.randn(5, 6), torch.randn(5, 3)
        terms = make_terms(model, x, y)
        loss = sum(WEIGHTS[n] * t for n, t in terms.items())
        opt.zero_grad()
        loss.backward()
        opt.step()
    for a, b in zip(with_probe, model.parameters(), strict=True):
        torch.testing.assert_close(a, b.detach())


@pytest.mark.parametrize("batched", [True, False])
def test_nonfinite_term_gradient_is_attributed(tmp_path, batched):
    """Batched mode must not blame `side` for NaN made in head `a`'s branch (recomputed)."""
    probe = TermGradientsProbe(every=1, batched=batched)
    run, expected, _ = run_loop(tmp_path, probe, steps=4, nan_steps=(2,))
    bad = run.kind("term_nonfinite").set_index("step")
    # NaN/inf enter through head `a`'s output: terms that read it carry them, `side` does not
    assert bad.loc[2, "fit"] > 0 and bad.loc[2, "reg"] > 0
    assert bad.loc[2, "side"] == 0 and bad.loc[2, "const"] == 0
    assert (bad.drop(index=2).to_numpy() == 0).all()
    check_against_oracle(run, expected)


def test_falls_back_to_loop_when_vmap_cannot_batch(tmp_path):
    probe = TermGradientsProbe(every=2, batched=None)
    run, expected, _ = run_loop(tmp_path, probe, branch=True)
    assert probe.batched is False and probe.fallback_reason
    check_against_oracle(run, expected)
    assert probe.describe()["mode"] == "loop"


def test_fixed_schedule_and_single_term(tmp_path):
    model = nn.Linear(3, 1)
    opt = torch.optim.SGD(model.parameters(), lr=0.1)
    with riswb.Workbench(
        model, opt, runs_dir=tmp_path, probes=[TermGradientsProbe(every=4)], strict=True
    ) as wb:
        for _ in range(9):
            loss = wb.loss({"only": model(torch.randn(2, 3)).pow(2).mean()})
            opt.zero_grad()
            loss.backward()
            opt.step()
    run = read_run(wb.path)
    # the front-loaded steps, then multiples of 4
    assert list(run.kind("term_grad")["step"]) == [0, 1, 2, 3, 4, 5, 8]
    assert "term_cosine" not in run.kinds()


def test_budget_schedule_front_loads_then_fixes_an_interval(tmp_path):
    probe = TermGradientsProbe(calibrate=4)
    assert probe.describe()["every"] == "auto"
    model = nn.Linear(3, 2)
    opt = torch.optim.SGD(model.parameters(), lr=0.1)
    with riswb.Workbench(model, opt, runs_dir=tmp_path, probes=[probe], strict=True) as wb:
        for _ in range(200):
            out = model(torch.randn(4, 3))
            loss = wb.loss({"a": out.pow(2).mean(), "b": out.mean()})
            opt.zero_grad()
            loss.backward()
            opt.step()
    assert probe.interval in (10, 20, 30, 50, 75, 100, 150, 200, 300, 500, 750, 1000)
    steps = list(read_run(wb.path).kind("term_grad")["step"])
    # every front-loaded step (≥ 10 samples in 200 steps), then multiples of the interval
    # from the step the interval was fixed (after 4 ordinary and 3 sampled periods: step 9)
    assert sorted(FRONT) == [s for s in steps if s in FRONT] and len(steps) >= 12
    assert set(steps) - FRONT == {s for s in range(10, 200) if s % probe.interval == 0} - FRONT
    assert read_run(wb.path).manifest["probes"][0]["every"] == probe.interval


def test_nice_interval():
    from riswb.probes.term_gradients import nice_interval

    assert nice_interval(0.5) == 10 and nice_interval(10) == 10 and nice_interval(11) == 20
    assert nice_interval(400) == 500 and nice_interval(1e9) == 1000


def test_tensors_frozen_for_a_phase_are_left_out_not_a_crash(tmp_path):
    """A GAN freezes its discriminator (requires_grad_(False)) for the generator's step: the
    sample covers the tensors that take a gradient now and matches the autograd oracle."""
    torch.manual_seed(0)
    model = TwoHeads()
    opt = torch.optim.SGD(model.parameters(), lr=0.05)
    probe = TermGradientsProbe(every=1)
    with riswb.Workbench(model, opt, runs_dir=tmp_path, name="frozen-phase", probes=[probe],
                         strict=True) as wb:
        model.b.requires_grad_(False)
        x = torch.randn(5, 6)
        pa, pb = model(x)
        fit, side = pa.square().mean(), pb.square().mean()  # side reaches only frozen b + body
        loss = wb.loss({"fit": fit, "side": side})
        live = [p for p in model.parameters() if p.requires_grad]
        oracle = [torch.cat([torch.zeros(p.numel()) if g is None else g.reshape(-1)
                             for p, g in zip(live, torch.autograd.grad(
                                 t, live, retain_graph=True, allow_unused=True), strict=True)])
                  for t in (fit, side)]
        opt.zero_grad()
        loss.backward()
        opt.step()
        model.b.requires_grad_(True)
    grad = read_run(wb.path).kind("term_grad").iloc[0]
    assert grad["fit"] == pytest.approx(float(oracle[0].norm()), rel=1e-5)
    assert grad["side"] == pytest.approx(float(oracle[1].norm()), rel=1e-5)
