"""describe_optimizer: what each optimizer's state says about its update's scale."""

import pytest
import torch

from riswb.instrument.optimizer_info import describe_optimizer
from tests.instrument.lion import Lion

ADAPTIVE = [torch.optim.Adam, torch.optim.AdamW, torch.optim.NAdam, torch.optim.RAdam,
            torch.optim.Adamax, torch.optim.RMSprop, torch.optim.Adagrad, torch.optim.Adadelta]


def _stepped(cls, **kwargs):
    model = torch.nn.Linear(3, 1)
    opt = cls(model.parameters(), **kwargs)
    model(torch.randn(4, 3)).square().mean().backward()
    opt.step()
    return opt, describe_optimizer(opt, stepped=True)


@pytest.mark.parametrize("cls", ADAPTIVE, ids=lambda c: c.__name__)
def test_second_moment_optimizers_are_scale_invariant(cls):
    _, described = _stepped(cls)
    assert described["scale_invariant"] is True
    assert described["class"] == f"{cls.__module__}.{cls.__qualname__}"


def test_the_claim_holds_numerically_for_adam():
    # the oracle: Adam's first update is the same for g and 1000·g (up to ε)
    updates = []
    for scale in (1.0, 1000.0):
        p = torch.nn.Parameter(torch.ones(5))
        opt = torch.optim.Adam([p], lr=0.1)
        p.grad = torch.arange(1.0, 6.0) * scale
        opt.step()
        updates.append(p.detach() - 1)
    torch.testing.assert_close(updates[0], updates[1])
    assert describe_optimizer(opt, stepped=True)["scale_invariant"] is True


@pytest.mark.parametrize("kwargs", [{"lr": 0.1}, {"lr": 0.1, "momentum": 0.9}])
def test_sgd_is_not(kwargs):
    _, described = _stepped(torch.optim.SGD, **kwargs)
    assert described["scale_invariant"] is False  # plain SGD keeps no state at all


def test_unknown_before_the_first_step():
    opt = torch.optim.Adam(torch.nn.Linear(2, 1).parameters())
    assert describe_optimizer(opt, stepped=False) == {
        "class": "torch.optim.adam.Adam", "state": None, "scale_invariant": None}


def test_the_workbench_writes_them_to_the_manifest(tmp_path):
    import riswb
    from riswb.runlog import read_run

    model = torch.nn.Linear(3, 1)
    opt = torch.optim.AdamW(model.parameters())
    with riswb.Workbench(model, opt, runs_dir=tmp_path, name="opt-info") as wb:
        for _ in range(3):
            loss = wb.loss({"mse": model(torch.randn(4, 3)).square().mean()})
            opt.zero_grad()
            loss.backward()
            opt.step()
    [described] = read_run(wb.path).manifest["optimizers"]
    assert described["class"] == "torch.optim.adamw.AdamW" and described["scale_invariant"]


@pytest.mark.parametrize("cls", [Lion, torch.optim.Muon], ids=lambda c: c.__name__)
def test_normalizing_optimizers_are_known_by_name_and_the_claim_holds(cls):
    """Oracle: the first update is the same for g and 1000·g (Muon's Newton–Schulz
    iteration runs in reduced precision: to a few percent of the update's size), though the
    state holds only a momentum, as SGD's does."""
    grad = torch.randn(4, 3, generator=torch.Generator().manual_seed(0))
    updates = []
    for scale in (1.0, 1000.0):
        p = torch.nn.Parameter(torch.ones(4, 3))
        opt = cls([p], lr=0.1)
        p.grad = grad * scale
        opt.step()
        updates.append(p.detach() - 1)
    size = updates[0].abs().max()
    assert (updates[0] - updates[1]).abs().max() <= 0.05 * size
    assert describe_optimizer(opt, stepped=True)["scale_invariant"] is True
