"""The loop zoo's records: what riswb saw on foreign loops it has never been told about."""

from __future__ import annotations

import warnings
from pathlib import Path

import pytest
import torch

import riswb
from riswb.instrument import scaler as scaler_hooks
from tests.loops.zoo import buggy_loops, healthy_loops

ALL = {**healthy_loops(), **buggy_loops()}


@pytest.fixture(scope="module")
def runs(tmp_path_factory):
    root = tmp_path_factory.mktemp("zoo")
    out, caught = {}, {}
    for name, loop in ALL.items():
        with warnings.catch_warnings(record=True) as record:
            warnings.simplefilter("always")
            out[name] = riswb.read_run(loop(root))
        caught[name] = list(record)
    return out, caught


def last(run, kind):
    return run.kind(kind).iloc[-1]


def total(run, kind, key):
    return run.kind(kind)[key].sum()


def events(run, name):
    frame = run.events
    return frame[frame["event"] == name].to_dict("records") if len(frame) else []


def test_every_loop_completes_without_riswb_warnings(runs):
    records, caught = runs
    for name, run in records.items():
        assert run.manifest["status"] == "completed", name
        assert run.manifest["warnings"] == [], name
        assert not any(Path(w.filename).parts[-2:-1] == ("riswb",) or "/riswb/" in w.filename
                       for w in caught[name]), (name, [str(w.message) for w in caught[name]])
    assert not scaler_hooks._WATCHES  # every Workbench let go of GradScaler


@pytest.mark.parametrize("name", list(healthy_loops()))
def test_healthy_loops_read_healthy(runs, name):
    run = runs[0][name]
    cadence = last(run, "cadence")
    assert cadence["grads_carried_steps"] == 0
    assert cadence["steps_without_backward"] == 0 and cadence["loss_without_backward"] == 0
    step = run.kind("grad_step")
    assert (step["zeroed"] == 0).all() and (step["replaced"] == 0).all()
    assert (step["altered"] == 0).all()
    assert not events(run, "term_no_grad") and not events(run, "grad_step_change")
    assert total(run, "nonfinite", "grad_elems") == 0 or name == "amp_grad_scaler"
    assert not events(run, "scheduler_order")


def test_one_backward_per_step_for_plain_loops(runs):
    for name in ("cnn_batchnorm_onecycle", "transformer_warmup_cosine_clip",
                 "sgd_momentum_steplr_epochs", "zero_grad_keep_tensors"):
        cadence = last(runs[0][name], "cadence")
        assert cadence["backward"] == cadence["loss"] == cadence["optimizer_step"], name
        assert cadence["backward_per_step_max"] == 1 and cadence["backward_accumulating"] == 0


def test_accumulation_is_recognised_without_a_hint(runs):
    run = runs[0]["accumulation_4_no_hint"]
    cadence = last(run, "cadence")
    assert (cadence["loss"], cadence["backward"], cadence["optimizer_step"]) == (40, 40, 10)
    assert cadence["backward_per_step_min"] == cadence["backward_per_step_max"] == 4
    assert cadence["backward_accumulating"] == 30 and cadence["grads_cleared_steps"] == 10
    assert run.manifest["intent"] == {"accumulation": 1}


def test_amp_recipe_unscaled_and_skips_counted_per_step(runs):
    records, caught = runs
    run = records["amp_grad_scaler"]
    skipped = events(run, "step_skipped")
    assert skipped and {e["reason"] for e in skipped} == {"scaler"}
    n_skipped = sum(e["count"] for e in skipped)
    cadence = last(run, "cadence")
    assert cadence["optimizer_step"] + n_skipped == cadence["step_attempts"] == 40
    assert total(run, "nonfinite", "attempts_skipped") == n_skipped
    assert total(run, "nonfinite", "attempts_nonfinite") == n_skipped
    assert (run.kind("grad_step")["unscaled"] == 1).all()
    norms = run.kind("grad_norm")["total"]
    finite = norms[norms.notna() & (norms < float("inf"))]
    assert len(finite) >= 3 and (finite < 100).all()  # unscaled: no 2**20 factor
    assert not events(run, "scheduler_order")
    # PyTorch's own order warning names the user's line, not riswb's wrapper
    order = [w for w in caught["amp_grad_scaler"] if "lr_scheduler.step()" in str(w.message)]
    assert order and all(Path(w.filename).name == "zoo.py" for w in order)


def test_gan_two_optimizers(runs):
    run = runs[0]["gan_two_optimizers"]
    cadence = last(run, "cadence")
    assert cadence["opt/0/optimizer_step"] == cadence["opt/1/optimizer_step"] == 30
    assert cadence["opt/0/grads_cleared_steps"] == cadence["opt/1/grads_cleared_steps"] == 30
    coverage = events(run, "coverage")[0]
    assert coverage["missing"] == [] and coverage["duplicated"] == []
    assert set(coverage["groups"]) == {"opt/0/0", "opt/1/0"}
    lr = run.kind("lr")
    assert set(lr["optimizer"]) == {0, 1} and lr["optimizer_step"].max() == 30
    assert set(run.kind("param_update")["optimizer"]) == {0, 1}


def test_reentrant_checkpointing_counts_one_backward_per_step(runs):
    run = runs[0]["reentrant_checkpointing"]
    cadence = last(run, "cadence")
    assert cadence["backward"] == cadence["optimizer_step"] == 20
    assert not events(run, "dead_params")
    (probe,) = [p for p in run.manifest["probes"] if p["name"] == "term_gradients"]
    assert probe["unavailable"] == "reentrant activation checkpointing"
    assert len(run.kind("term_grad_out")) >= 2


def test_frozen_backbone_eval_mode_is_recorded_without_trainable_modules(runs):
    run = runs[0]["frozen_backbone_finetune"]
    (event,) = events(run, "mode_mismatch")
    assert event["phase"] == "train" and event["trainable"] == 0


def test_cnn_eval_under_model_eval(runs):
    mode = runs[0]["cnn_batchnorm_onecycle"].kind("mode")
    assert mode["forwards_eval_mode"].sum() == 0 and mode["nograd_forwards"].sum() == 4
    assert mode["nograd_forwards_train_mode"].sum() == 0 and mode["modules"].iloc[0] == 2


def test_torch_clip_at_tiny_max_norm_is_measured(runs):
    run = runs[0]["clip_tiny_max_norm"]
    clip = run.kind("clip")
    assert (clip["observed"] == 1).all() and (clip["clipped"] == 1).all()
    assert clip["max_norm"].iloc[-1] == pytest.approx(1e-4, rel=1e-3)
    assert (run.kind("grad_step")["rescaled"] == 1).all()


def test_zero_grad_never_reads_carried(runs):
    cadence = last(runs[0]["zero_grad_never"], "cadence")
    assert cadence["grads_carried_steps"] == 39 and cadence["grads_cleared_steps"] == 1


def test_eval_mode_training(runs):
    run = runs[0]["eval_mode_training"]
    mode = run.kind("mode")
    assert (mode["forwards_eval_mode"] == mode["forwards"]).all()
    (event,) = events(run, "mode_mismatch")
    assert event["phase"] == "train" and event["trainable"] == 1  # the BatchNorm


def test_zero_grad_between_backward_and_step(runs):
    run = runs[0]["zero_grad_between_backward_and_step"]
    step = run.kind("grad_step")
    assert (step["zeroed"] == 1).all() and (step["norm_step"] == 0).all()
    changes = {e["change"] for e in events(run, "grad_step_change")}
    assert changes == {"zeroed", "replaced"}


def test_missing_head_and_dominant_and_detached_terms(runs):
    records = runs[0]
    coverage = events(records["head_missing_from_optimizer"], "coverage")[0]
    assert coverage["missing"] == ["aux.weight", "aux.bias"]
    grads = records["l2_penalty_dominates"].kind("term_grad")
    assert (grads["l2"] > 4 * grads["fit"]).all()
    assert (records["l2_penalty_dominates"].kind("term_grad_out")["l2"] == 0).all()
    detached = records["detached_term"]
    (event,) = events(detached, "term_no_grad")
    assert event["names"] == ["smooth"] and event["first_step"] == 0
    assert (detached.kind("term_grad")["smooth"] == 0).all()
    assert (detached.kind("term_grad_out")["smooth"] == 0).all()
    assert len(detached.kind("term_grad")) >= 9  # front-loaded: 0,1,2,3,5,8,13,21,34 of 40


def test_zoo_is_fast_enough(runs):
    assert len(runs[0]) == len(ALL) >= 16
    assert torch.get_num_threads() >= 1
