"""The zoo's plain loops run long on their sub-millisecond steps, where the Workbench
observes one optimizer-step cycle in several for its sampled probes (grad_step,
grad_norms, dead_params, inputs) and grows the log interval: every bug is still named, and
a healthy loop still draws no error and no warning — with the stride the Workbench measures
and with a fixed stride of 6."""

from __future__ import annotations

import pytest
import torch

from riswb.instrument.log_interval import FRONT as LOG_FRONT
from riswb.instrument.observation import CALIBRATE, FRONT
from tests.loops import zoo

STEPS = LOG_FRONT + 400  # past the front cycles, the calibration and the plain log cadence
assert STEPS > FRONT + 2 * CALIBRATE

BUGGY = {
    "clip_tiny_max_norm": "clip-saturated",  # seen by grad_step on observed cycles only
    "zero_grad_between_backward_and_step": "grads-altered",  # likewise
    "zero_grad_never": "grads-not-cleared",
    "eval_mode_training": "train-mode",
    "head_missing_from_optimizer": "optimizer-coverage",
    "detached_term": "dead-loss-term",
}
# not here: l2_penalty_dominates — over 600 steps its penalty drives the first layer to zero,
# after which neither term's gradient dominates the run's recent window; its evidence comes
# from term_gradients, which sees every step whatever the stride (the 40-step run names it)


def plain_adam(runs_dir):
    """The everyday loop: an MLP, Adam, zero_grad / backward / step."""
    model = zoo._mlp()
    return zoo._plain_steps(runs_dir, "plain-adam", model,
                            torch.optim.Adam(model.parameters(), lr=1e-3))


def sgd_clipped_cosine(runs_dir):
    """SGD + momentum with torch's clipping at a sane max_norm and a cosine schedule."""
    model = zoo._mlp()
    opt = torch.optim.SGD(model.parameters(), lr=0.02, momentum=0.9)
    sched = torch.optim.lr_scheduler.CosineAnnealingLR(opt, T_max=STEPS)
    return zoo._plain_steps(runs_dir, "sgd-cosine", model, opt, sched, clip=5.0)


HEALTHY = {"frozen_backbone_finetune": zoo.frozen_backbone_finetune,
           "reentrant_checkpointing": zoo.reentrant_checkpointing,
           "plain_adam": plain_adam, "sgd_clipped_cosine": sgd_clipped_cosine}
STRIDES = {"measured": {}, "fixed-6": {"observe_every": 6}}


@pytest.fixture(params=list(STRIDES))
def long_runs(request, monkeypatch):
    monkeypatch.setattr(zoo, "RUN", {"steps": STEPS, "workbench": STRIDES[request.param]})
    return request.param


@pytest.mark.parametrize("name", sorted(BUGGY))
def test_every_bug_is_still_named_on_a_long_host_bound_run(name, long_runs, tmp_path):
    found = zoo.diagnose_loop(getattr(zoo, name), tmp_path)
    assert BUGGY[name] in {f.id for f in found.findings}, (long_runs, found.findings)


@pytest.mark.parametrize("name", sorted(HEALTHY))
def test_a_healthy_loop_stays_silent_on_a_long_host_bound_run(name, long_runs, tmp_path):
    found = zoo.diagnose_loop(HEALTHY[name], tmp_path)
    severe = [f for f in found.findings if f.severity in ("error", "warning")]
    assert not severe, (long_runs, severe)
