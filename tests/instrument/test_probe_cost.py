"""A probe that costs more than its share of the step is named once; cheap probes never."""

import time
import warnings

import torch

import riswb
from riswb.instrument import probe_cost


class Sleepy(riswb.Probe):
    def on_after_backward(self, ctx):
        time.sleep(0.005)


def _train(tmp_path, probes, steps):
    model = torch.nn.Linear(4, 1)
    opt = torch.optim.SGD(model.parameters(), lr=0.01)
    with riswb.Workbench(model, opt, runs_dir=tmp_path, probes=probes) as wb:
        for _ in range(steps):
            loss = wb.loss({"mse": model(torch.randn(8, 4)).square().mean()})
            opt.zero_grad()
            loss.backward()
            opt.step()
    return riswb.read_run(wb.path)


def test_a_slow_probe_is_named_once(tmp_path):
    steps = probe_cost.OFFSET + 3 * probe_cost.EVERY + 2
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        run = _train(tmp_path, ["default", Sleepy()], steps)
    named = [w for w in caught if "probe sleepy took" in str(w.message)]
    assert len(named) == 1 and issubclass(named[0].category, RuntimeWarning)
    assert sum("probe sleepy took" in m for m in run.manifest["warnings"]) == 1


def test_timed_steps_never_fall_on_a_probes_scheduled_samples():
    # probes sample on steps that are multiples of "nice" intervals, or front-loaded ones
    from riswb.probes.term_gradients import _NICE, FRONT

    timed = [n for n in range(5000) if n % probe_cost.EVERY == probe_cost.OFFSET]
    assert not [n for n in timed if n in FRONT or any(n % every == 0 for every in _NICE)]


def test_the_default_probes_on_a_small_loop_draw_no_cost_warning(tmp_path):
    steps = probe_cost.OFFSET + 3 * probe_cost.EVERY + 2
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        run = _train(tmp_path, "default", steps)
    assert not [w for w in caught if "riswb: probe" in str(w.message)]
    assert not [m for m in run.manifest["warnings"] if " took " in m]
