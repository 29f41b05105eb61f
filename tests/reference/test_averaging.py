"""WeightAverage: EMA/SWA arithmetic against a manual loop, and the restoring swap."""

import pytest
import torch

from riswb.instrument.hooks import Event
from riswb.reference.averaging import WeightAverage


def _params(seed=0):
    gen = torch.Generator().manual_seed(seed)
    return [torch.nn.Parameter(torch.randn(4, 3, generator=gen)),
            torch.nn.Parameter(torch.randn(5, generator=gen))]


def _train_steps(params, n, seed=1):
    """n fake optimizer steps; yields after each."""
    gen = torch.Generator().manual_seed(seed)
    for _ in range(n):
        with torch.no_grad():
            for p in params:
                p.add_(torch.randn(p.shape, generator=gen))
        yield


def test_ema_matches_a_manual_loop():
    params = _params()
    ema = WeightAverage(params, kind="ema", decay=0.9)
    manual = [p.detach().double().clone() for p in params]
    for _ in _train_steps(params, 25):
        ema.update()
        manual = [0.9 * s + 0.1 * p.detach().double() for s, p in zip(manual, params, strict=True)]
    assert ema.count == 25
    for shadow, expected in zip(ema.shadow, manual, strict=True):
        torch.testing.assert_close(shadow.double(), expected, rtol=1e-5, atol=1e-5)


def test_swa_is_the_running_mean_of_the_updates():
    params = _params()
    swa = WeightAverage(params, kind="swa")
    seen = []
    for _ in _train_steps(params, 7):
        swa.update()
        seen.append([p.detach().clone() for p in params])
    for i, shadow in enumerate(swa.shadow):
        torch.testing.assert_close(shadow, torch.stack([s[i] for s in seen]).mean(0))


@pytest.mark.parametrize("kwargs", [{"kind": "mean"}, {"kind": "ema", "decay": 1.0},
                                    {"kind": "ema", "decay": -0.1}])
def test_bad_settings_are_rejected(kwargs):
    with pytest.raises(ValueError):
        WeightAverage(_params(), **kwargs)


def test_swapped_in_shows_the_average_and_restores_bit_for_bit():
    params = _params()
    ema = WeightAverage(params, kind="ema", decay=0.5)
    for _ in _train_steps(params, 3):
        ema.update()
    before = [p.detach().clone() for p in params]
    storage = [p.data_ptr() for p in params]
    events = []
    with ema.swapped_in(lambda event, **payload: events.append((event, payload))):
        for p, s in zip(params, ema.shadow, strict=True):
            assert torch.equal(p, s)
        assert not torch.equal(params[0], before[0])
        assert events == [(Event.WEIGHTS_SWAP_IN, {"kind": "ema"})]
    assert events[-1] == (Event.WEIGHTS_SWAP_OUT, {"kind": "ema"})
    for p, b in zip(params, before, strict=True):
        assert torch.equal(p, b)  # bit for bit
    assert [p.data_ptr() for p in params] == storage  # same storage: the optimizer's params


def test_swapped_in_restores_when_the_body_raises():
    params = _params()
    swa = WeightAverage(params, kind="swa")
    for _ in _train_steps(params, 2):
        swa.update()
    before = [p.detach().clone() for p in params]
    events = []
    with pytest.raises(RuntimeError, match="eval crashed"):
        with swa.swapped_in(lambda event, **payload: events.append(event)):
            raise RuntimeError("eval crashed")
    assert all(torch.equal(p, b) for p, b in zip(params, before, strict=True))
    assert events == [Event.WEIGHTS_SWAP_IN, Event.WEIGHTS_SWAP_OUT]


def test_swapped_in_restores_when_the_swap_in_listener_raises():
    params = _params()
    ema = WeightAverage(params, kind="ema", decay=0.5)
    for _ in _train_steps(params, 2):
        ema.update()
    before = [p.detach().clone() for p in params]

    def emit(event, **payload):
        if event is Event.WEIGHTS_SWAP_IN:
            raise RuntimeError("listener failed")

    with pytest.raises(RuntimeError, match="listener failed"):
        with ema.swapped_in(emit):
            pass
    assert all(torch.equal(p, b) for p, b in zip(params, before, strict=True))


def test_state_dict_round_trip_continues_the_same_average():
    params = _params()
    ema = WeightAverage(params, kind="ema", decay=0.8)
    for _ in _train_steps(params, 3):
        ema.update()
    other = WeightAverage(_params(seed=5), kind="ema", decay=0.8)
    other.load_state_dict(ema.state_dict())
    assert other.count == 3
    assert all(torch.equal(a, b) for a, b in zip(other.shadow, ema.shadow, strict=True))
