"""warmup_cosine: never 0 during warm-up, reaches its floor, rejects a warm-up from 0."""

import math

import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st

from riswb.reference.schedule import warmup_cosine, warmup_cosine_factor


@settings(max_examples=200, deadline=None)
@given(start=st.floats(min_value=1e-6, max_value=1.0), warmup=st.integers(0, 500),
       extra=st.integers(0, 500), floor=st.floats(0.0, 1.0), step=st.integers(0, 2000))
def test_factor_is_positive_and_bounded(start, warmup, extra, floor, step):
    total = warmup + extra
    f = warmup_cosine_factor(step, warmup_steps=warmup, total_steps=total, start_factor=start,
                             floor=floor)
    assert f <= 1.0 + 1e-12
    if step < warmup:  # the warm-up never yields 0
        assert f >= start * (1 - 1e-12) > 0
    else:  # the cosine never goes below its floor (0 only where the floor is 0)
        assert f >= floor - 1e-12
    assert f > 0 or floor == 0


@settings(max_examples=50, deadline=None)
@given(start=st.floats(min_value=1e-4, max_value=1.0), warmup=st.integers(1, 50),
       extra=st.integers(1, 50))
def test_lr_of_a_real_optimizer_is_never_zero_while_warming_up(start, warmup, extra):
    param = torch.nn.Parameter(torch.zeros(1))
    opt = torch.optim.SGD([param], lr=0.1)
    sched = warmup_cosine(opt, warmup_steps=warmup, total_steps=warmup + extra,
                          start_factor=start, floor=0.05)
    lrs = []
    for _ in range(warmup + extra):
        lrs.append(opt.param_groups[0]["lr"])
        opt.step()
        sched.step()
    assert min(lrs[:warmup]) > 0
    assert lrs[0] == pytest.approx(0.1 * start)
    assert max(lrs) == pytest.approx(0.1)  # warm-up ends at the base lr
    assert all(b >= a - 1e-15 for a, b in zip(lrs[:warmup], lrs[1:warmup + 1], strict=False))


@pytest.mark.parametrize("floor", [0.0, 0.05, 0.5])
def test_cosine_reaches_the_floor_and_stays(floor):
    kw = {"warmup_steps": 10, "total_steps": 110, "start_factor": 0.1, "floor": floor}
    assert warmup_cosine_factor(10, **kw) == pytest.approx(1.0)
    assert warmup_cosine_factor(60, **kw) == pytest.approx(floor + (1 - floor) * 0.5)
    assert warmup_cosine_factor(110, **kw) == pytest.approx(floor)
    assert warmup_cosine_factor(1000, **kw) == pytest.approx(floor)
    decay = [warmup_cosine_factor(s, **kw) for s in range(10, 111)]
    assert all(b <= a + 1e-12 for a, b in zip(decay, decay[1:], strict=False))


def test_no_warmup_starts_at_the_base_lr():
    assert warmup_cosine_factor(0, warmup_steps=0, total_steps=10, start_factor=0.1,
                                floor=0.0) == pytest.approx(1.0)


@pytest.mark.parametrize("start", [0.0, -0.1, 1.5, math.nan])
def test_bad_start_factor_is_rejected(start):
    opt = torch.optim.SGD([torch.nn.Parameter(torch.zeros(1))], lr=0.1)
    with pytest.raises(ValueError, match="start_factor"):
        warmup_cosine(opt, warmup_steps=5, total_steps=10, start_factor=start)


@pytest.mark.parametrize("floor", [-0.1, 1.1])
def test_bad_floor_is_rejected(floor):
    opt = torch.optim.SGD([torch.nn.Parameter(torch.zeros(1))], lr=0.1)
    with pytest.raises(ValueError, match="floor"):
        warmup_cosine(opt, warmup_steps=5, total_steps=10, floor=floor)
