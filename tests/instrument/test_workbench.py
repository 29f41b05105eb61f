"""The public Workbench on loops it has never seen (docs/design.md §3)."""

import math
import warnings

import pandas as pd
import pytest
import torch

import riswb
from riswb.instrument.hooks import Event, Probe
from riswb.instrument.workbench import Workbench
from riswb.runlog import read_run


def mlp(seed=0):
    torch.manual_seed(seed)
    return torch.nn.Sequential(
        torch.nn.Linear(6, 16), torch.nn.ReLU(), torch.nn.Linear(16, 16), torch.nn.ReLU(),
        torch.nn.Linear(16, 2),
    )


def test_foreign_loop_produces_a_complete_run(tmp_path):
    """An MLP with its own AdamW + scheduler and no riswb trainer."""
    model = mlp()
    opt = torch.optim.AdamW(model.parameters(), lr=1e-2)
    sched = torch.optim.lr_scheduler.CosineAnnealingLR(opt, T_max=30)
    x, y = torch.randn(64, 6), torch.randn(64, 2)
    wb = riswb.Workbench(model, opt, sched, runs_dir=tmp_path, name="foreign",
                         config={"lr": 1e-2}, log_every=10)
    for step in range(30):
        idx = torch.arange(step % 4 * 16, step % 4 * 16 + 16)
        out = model(x[idx])
        loss = wb.loss({"mse": (out - y[idx]).square().mean(), "l1": out.abs().mean()},
                       {"mse": 1.0, "l1": 0.01})
        opt.zero_grad()
        loss.backward()
        opt.step()
        sched.step()
        if step % 10 == 9:
            with torch.no_grad():
                val = (model(x) - y).square().mean()
            wb.evaluate({"val_loss": val})
    wb.close()

    run = riswb.read_run(wb.path)
    assert wb.path.parent == tmp_path and run.manifest["status"] == "completed"
    assert run.manifest["loss_terms"] == ["mse", "l1"]
    assert run.manifest["intent"] == {"accumulation": 1}
    assert run.manifest["config"] == {"lr": 1e-2}
    assert run.warnings == [] and run.manifest["warnings"] == []
    names = [p["name"] for p in run.manifest["probes"]]
    assert {"cadence", "loss_terms", "coverage", "param_update", "weight_swap",
            "lr_trace"} <= set(names)
    for kind in ("loss", "loss_weight", "lr", "param_update", "cadence", "eval"):
        frame = run.kind(kind)
        assert isinstance(frame, pd.DataFrame) and len(frame), kind
    assert set(run.kind("loss").columns) == {"step", "mse", "l1", "total"}
    assert list(run.kind("eval")["step"]) == [9, 19, 29]
    assert len(run.kind("lr")) == 30
    cadence = run.kind("cadence").iloc[-1]
    assert cadence[["forward", "loss", "backward", "optimizer_step",
                    "scheduler_step", "eval"]].tolist() == [30, 30, 30, 30, 30, 3]
    events = list(run.events["event"])
    assert events[0] == "run_start" and events[-1] == "run_end"
    assert "coverage" in events and "probe_error" not in events
    assert not run.events_of("weights_swapped") and not run.events_of("scheduler_order")
    assert run.kind("param_update")["ratio"].gt(0).all()
    # hooks are gone after close: the loop runs untouched
    assert "step" not in vars(sched)
    out = model(x)
    assert wb.loss({"a": out.sum()}).requires_grad
    assert run.kind("loss")["step"].max() == 29


def test_loss_returns_weighted_sum_with_graph(tmp_path):
    model = mlp()
    opt = torch.optim.SGD(model.parameters(), lr=0.1)
    x = torch.randn(8, 6)
    with Workbench(model, opt, runs_dir=tmp_path, probes=None) as wb:
        out = model(x)
        a, b = out.square().mean(), out.abs().mean()
        total = wb.loss({"a": a, "b": b}, {"a": 2.0, "b": 0.5})
        expected = 2.0 * a + 0.5 * b
        assert torch.allclose(total, expected)
        (g1,) = torch.autograd.grad(total, [model[0].weight], retain_graph=True)
        (g2,) = torch.autograd.grad(expected, [model[0].weight])
        assert torch.allclose(g1, g2)
        # weights missing -> 1.0; tensor weights are accepted
        out = model(x)
        t = wb.loss({"a": out.sum(), "b": out.mean()}, {"a": torch.tensor(3.0)})
        assert torch.allclose(t, 3 * out.sum() + out.mean())
        with pytest.raises(ValueError):
            wb.loss({"total": out.sum()})


def test_loss_weight_records_written_at_start_and_on_change(tmp_path):
    model = mlp()
    opt = torch.optim.SGD(model.parameters(), lr=0.01)
    with Workbench(model, opt, runs_dir=tmp_path, probes=None) as wb:
        for step in range(6):
            out = model(torch.randn(4, 6))
            w = {"a": 1.0, "b": 0.1 if step < 3 else 0.2}
            wb.loss({"a": out.square().mean(), "b": out.abs().mean()}, w)
    frame = read_run(wb.path).kind("loss_weight")
    assert frame.to_dict("list") == {"step": [0, 3], "a": [1.0, 1.0], "b": [0.1, 0.2]}


class GradSpy(Probe):
    """Sees the gradient at AFTER_BACKWARD: raw, before the user's sanitize."""

    def __init__(self):
        super().__init__()
        self.seen = []

    def on_after_backward(self, ctx):
        g = ctx.wb.params[0].grad
        self.seen.append((ctx.payload["backward"], bool(torch.isnan(g).any()), g.clone()))


def test_after_backward_once_per_backward_before_sanitize(tmp_path):
    model = mlp()
    opt = torch.optim.SGD(model.parameters(), lr=0.01)
    spy = GradSpy()
    wb = Workbench(model, opt, runs_dir=tmp_path, probes=[spy])
    out = model(torch.randn(4, 6))
    bad = out.sum() * torch.tensor(float("nan"))
    loss = wb.loss({"a": bad})
    opt.zero_grad()
    loss.backward()
    assert [s[:2] for s in spy.seen] == [(1, True)]
    expected = sum(int((~torch.isfinite(p.grad)).sum()) for p in model.parameters())
    count = wb.sanitize_()
    assert int(count) == expected == int(wb.sanitized) > 0
    assert all(torch.isfinite(p.grad).all() for p in model.parameters())
    # two backward passes in one step (retain_graph): two events, grads accumulated
    out = model(torch.randn(4, 6))
    loss = wb.loss({"a": out.square().mean()})
    opt.zero_grad()
    loss.backward(retain_graph=True)
    loss.backward()
    assert [s[0] for s in spy.seen] == [1, 2, 3]
    assert torch.allclose(spy.seen[2][2], 2 * spy.seen[1][2])
    # torch.autograd.grad does not accumulate: no event
    out = model(torch.randn(4, 6))
    torch.autograd.grad(out.sum(), list(model.parameters()))
    assert wb.n_backward == 3
    wb.close()


def test_clip_grad_norm_logs_and_returns_norm(tmp_path):
    model = mlp()
    opt = torch.optim.SGD(model.parameters(), lr=0.01)
    wb = Workbench(model, opt, runs_dir=tmp_path, probes=None)
    out = model(torch.randn(4, 6))
    wb.loss({"a": out.square().sum() * 100}).backward()
    raw = torch.linalg.vector_norm(torch.stack([p.grad.norm() for p in model.parameters()]))
    norm = wb.clip_grad_norm_(max_norm=1.0)
    assert torch.allclose(norm, raw)
    assert len(wb.clip_log) == 1
    logged, limit = wb.clip_log[0]
    assert torch.allclose(logged, raw) and float(limit) == 1.0
    clipped = torch.linalg.vector_norm(torch.stack([p.grad.norm() for p in model.parameters()]))
    assert clipped == pytest.approx(1.0, rel=1e-4)
    wb.close()


@pytest.mark.parametrize("tamper", ["none", "in_place", "through_data", "replaced"])
def test_clip_matches_torch_after_the_loop_changes_gradients(tmp_path, tamper):
    """Oracle: torch.nn.utils.clip_grad_norm_ on a twin model with the same gradients. The
    grad probes measured the gradients at the end of backward; whatever the loop did to them
    since (even through `.data`, which bumps no version counter) must be what is clipped."""
    model, twin = mlp(), mlp()
    opt = torch.optim.SGD(model.parameters(), lr=0.01)
    wb = Workbench(model, opt, runs_dir=tmp_path, probes=["grad_norms", "nonfinite"],
                   strict=True)
    x = torch.randn(4, 6)
    wb.loss({"a": model(x).square().sum() * 100}).backward()
    twin(x).square().sum().mul(100).backward()
    for net in (model, twin):
        grads = [p.grad for p in net.parameters()]
        if tamper == "in_place":
            grads[0].mul_(3.0)
        elif tamper == "through_data":
            grads[0].data.clamp_(-0.01, 0.01)
        elif tamper == "replaced":
            net[0].bias.grad = net[0].bias.grad * 2.0
    expected = torch.nn.utils.clip_grad_norm_(list(twin.parameters()), 1.0)
    norm = wb.clip_grad_norm_(max_norm=1.0)
    assert torch.allclose(norm, expected)
    for p, q in zip(model.parameters(), twin.parameters(), strict=True):
        torch.testing.assert_close(p.grad, q.grad)
    wb.close()


def test_context_manager_records_crashed_and_reraises(tmp_path):
    model = mlp()
    opt = torch.optim.SGD(model.parameters(), lr=0.01)
    with pytest.raises(KeyError):
        with Workbench(model, opt, runs_dir=tmp_path) as wb:
            out = model(torch.randn(4, 6))
            wb.loss({"a": out.sum()}).backward()
            opt.step()
            raise KeyError("user bug")
    run = read_run(wb.path)
    assert run.manifest["status"] == "crashed" and run.status == "crashed"
    assert run.events_of("run_end")[-1]["status"] == "crashed"
    assert len(run.kind("loss")) == 1  # flushed on the way out


def test_runs_dir_defaults_to_env(tmp_path, monkeypatch):
    monkeypatch.setenv("RISWB_RUNS_DIR", str(tmp_path / "env-runs"))
    model = mlp()
    wb = Workbench(model, torch.optim.SGD(model.parameters(), lr=0.1), probes=None, name="x y")
    wb.close()
    assert wb.path.parent == tmp_path / "env-runs" and wb.path.name.endswith("-x-y")


def test_evaluate_writes_metrics_and_emits_eval(tmp_path):
    seen = []

    class EvalSpy(Probe):
        def on_eval(self, ctx):
            seen.append(dict(ctx.payload))

    model = mlp()
    opt = torch.optim.SGD(model.parameters(), lr=0.1)
    R = torch.eye(3)
    with Workbench(model, opt, runs_dir=tmp_path, probes=[EvalSpy()]) as wb:
        wb.evaluate({"val_loss": torch.tensor(0.5), "nmse": 0.25}, R_pred=R, R_true=R, K=2)
    run = read_run(wb.path)
    assert run.kind("eval").to_dict("records") == [{"step": 0, "val_loss": 0.5, "nmse": 0.25}]
    assert seen[0]["R_pred"] is R and seen[0]["K"] == 2
    assert float(seen[0]["metrics"]["val_loss"]) == 0.5


def test_emit_checkpoint_and_batch_start(tmp_path):
    steps = []

    class BatchSpy(Probe):
        def on_batch_start(self, ctx):
            steps.append(ctx.step)

    model = mlp()
    opt = torch.optim.SGD(model.parameters(), lr=0.1)
    with Workbench(model, opt, runs_dir=tmp_path, probes=[BatchSpy()]) as wb:
        for _ in range(3):
            wb.emit(Event.BATCH_START)
            wb.loss({"a": model(torch.randn(2, 6)).sum()})
        wb.emit("checkpoint", kind="best", path="checkpoints/best.pt", metric="val_loss",
                value=0.1)
    assert steps == [0, 1, 2]  # the index the batch's wb.loss call gets
    (ckpt,) = read_run(wb.path).events_of("checkpoint")
    assert ckpt["kind"] == "best" and ckpt["step"] == 2 and ckpt["value"] == 0.1


def test_unusual_loops_do_not_break(tmp_path):
    """Step without loss, LBFGS closure, param groups, one scheduler per epoch, no params."""
    model = mlp()
    opt = torch.optim.LBFGS(model.parameters(), lr=0.1, max_iter=3)
    x, y = torch.randn(16, 6), torch.randn(16, 2)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        with Workbench(model, opt, runs_dir=tmp_path, strict=True, log_every=2) as wb:
            for _ in range(5):
                def closure():
                    opt.zero_grad()
                    loss = (model(x) - y).square().mean()  # no wb.loss at all
                    loss.backward()
                    return loss
                opt.step(closure)
    run = read_run(wb.path)
    assert run.manifest["status"] == "completed"
    last = run.kind("cadence").iloc[-1]
    assert last["optimizer_step"] == 5 and last["loss"] == 0 and last["backward"] >= 5
    assert len(run.kind("lr")) == 5 and len(run.kind("param_update")) == 5
    assert not run.events_of("weights_swapped")

    empty = torch.nn.Module()
    with Workbench(empty, torch.optim.SGD([torch.zeros(1, requires_grad=True)], lr=0.1),
                   runs_dir=tmp_path, strict=True) as wb:
        wb.evaluate({"x": 1})
    assert read_run(wb.path).manifest["status"] == "completed"


def test_nan_loss_stays_visible(tmp_path):
    model = mlp()
    opt = torch.optim.SGD(model.parameters(), lr=0.0)
    with Workbench(model, opt, runs_dir=tmp_path, log_every=5) as wb:
        for step in range(10):
            out = model(torch.randn(4, 6))
            term = out.square().mean() * (float("nan") if step == 2 else 1.0)
            loss = wb.loss({"a": term})
            opt.zero_grad()
            loss.backward()
            wb.sanitize_()
            opt.step()
    loss = read_run(wb.path).kind("loss")
    assert math.isnan(loss["total"][0]) and math.isnan(loss["a"][0])
    assert math.isfinite(loss["total"][1])


def test_scheduler_state_dict_stays_picklable_while_attached(tmp_path):
    import io

    model = torch.nn.Linear(3, 1)
    opt = torch.optim.SGD(model.parameters(), lr=0.1)
    sched = torch.optim.lr_scheduler.StepLR(opt, step_size=1)
    wb = Workbench(model, opt, sched, runs_dir=tmp_path, probes=[])
    loss = wb.loss({"l": model(torch.ones(2, 3)).sum()})
    loss.backward()
    opt.step()
    sched.step()
    torch.save(sched.state_dict(), io.BytesIO())  # the wrapped step must not leak into it
    assert wb.n_scheduler == 1
    wb.close()
    assert "step" not in vars(sched) and "state_dict" not in vars(sched)


def test_first_step_offsets_every_record_but_not_the_counts(tmp_path):
    """A resumed run continues its predecessor's step axis; cadence counts stay its own."""
    model = mlp()
    opt = torch.optim.SGD(model.parameters(), lr=0.01)
    with Workbench(model, opt, runs_dir=tmp_path, probes=["loss_terms", "cadence"],
                   log_every=2, first_step=100) as wb:
        assert wb.step == 100 and wb.next_step == 100
        for _ in range(4):
            loss = wb.loss({"a": model(torch.randn(4, 6)).square().mean()})
            opt.zero_grad()
            loss.backward()
            opt.step()
        assert wb.step == 103 and wb.next_step == 104
    run = read_run(wb.path)
    assert run.manifest["first_step"] == 100
    assert list(run.kind("loss")["step"]) == [101, 103]
    assert run.kind("cadence")["loss"].iloc[-1] == 4
    with pytest.raises(ValueError, match="first_step"):
        Workbench(model, opt, runs_dir=tmp_path, probes=None, first_step=-1)
