"""Fail fast: a Workbench loop with the lr stuck at 0 stops at lr-stalled long before its end;
a healthy one runs to the end; "warn" and a callable report once per id and train on."""

from __future__ import annotations

import time
import warnings

import pytest
import torch

import riswb
from riswb.instrument.fail_fast import FailFastProbe, FindingError, FindingWarning

STEPS = 200


def train(tmp_path, probe: FailFastProbe, *, stalled: bool, steps: int = STEPS,
          loading: float = 0.0):
    """An MLP loop, `stalled`: a warm-up stuck at 0 (docs/failures.md #2), `loading`
    seconds of "data loading" before each step; (wb, steps run)."""
    torch.manual_seed(0)
    model = torch.nn.Sequential(torch.nn.Linear(8, 32), torch.nn.Tanh(), torch.nn.Linear(32, 1))
    optimizer = torch.optim.SGD(model.parameters(), lr=0.05)
    warmup = (lambda step: 0.0) if stalled else (lambda step: min(1.0, (step + 1) / 10))
    scheduler = torch.optim.lr_scheduler.LambdaLR(optimizer, warmup)
    x = torch.randn(128, 8)
    y = x.sum(dim=1, keepdim=True)
    done = 0
    with riswb.Workbench(model, optimizer, scheduler, runs_dir=tmp_path, probes=["default", probe],
                         log_every=10) as wb:
        for _ in range(steps):
            time.sleep(loading)
            loss = wb.loss({"mse": ((model(x) - y) ** 2).mean()})
            optimizer.zero_grad()
            loss.backward()
            optimizer.step()
            scheduler.step()
            done += 1
    return wb, done


def fail_fast_events(wb) -> list[dict]:
    return riswb.read_run(wb.path).events_of("fail_fast")


def test_stalled_lr_stops_the_loop_early(tmp_path):
    probe = FailFastProbe(check_every=20, max_overhead=None)
    with pytest.raises(FindingError) as stop:
        train(tmp_path, probe, stalled=True)
    error = stop.value
    assert error.finding.id == "lr-stalled" and error.finding.severity == "error"
    assert error.step < STEPS // 2
    assert str(error).startswith(f"lr-stalled (error) at step {error.step}: lr of group")
    run = riswb.read_run(error.run)
    assert run.status == "crashed"
    assert [e["id"] for e in run.events_of("fail_fast")] == ["lr-stalled"]
    assert not run.events_of("probe_error")  # raised on purpose: never contained


def test_healthy_loop_runs_to_the_end(tmp_path):
    probe = FailFastProbe(check_every=20, max_overhead=None)
    wb, done = train(tmp_path, probe, stalled=False)
    assert done == STEPS and probe.checks >= 5
    assert not probe.reported and not fail_fast_events(wb)
    assert riswb.read_run(wb.path).status == "completed"


def test_warn_once_per_id_and_train_on(tmp_path):
    probe = FailFastProbe(check_every=20, on_finding="warn", max_overhead=None)
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        wb, done = train(tmp_path, probe, stalled=True)
    assert done == STEPS
    messages = [str(w.message) for w in caught if issubclass(w.category, FindingWarning)]
    ids = [message.split()[2] for message in messages]  # "riswb fail-fast: <id> (error) ..."
    assert "lr-stalled" in ids and len(ids) == len(set(ids))
    assert {e["id"] for e in fail_fast_events(wb)} == set(ids)


def test_callable_gets_each_new_error_once(tmp_path):
    seen = []
    probe = FailFastProbe(check_every=20, on_finding=seen.append, max_overhead=None)
    _, done = train(tmp_path, probe, stalled=True)
    assert done == STEPS
    assert "lr-stalled" in [f.id for f in seen]
    assert len(seen) == len({f.id for f in seen}) and probe.checks >= 5


def test_the_overhead_cap_skips_checks(tmp_path):
    probe = FailFastProbe(check_every=10, on_finding="warn", max_overhead=1e-9)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", FindingWarning)
        train(tmp_path, probe, stalled=False, steps=100)
    assert probe.checks == 1  # the first check spends the whole (tiny) budget


def test_the_overhead_cap_weighs_the_loops_busy_time_not_its_data_loading(tmp_path):
    """20 ms of loading per ~1 ms step: against wall time 20% would buy a check at every flush
    steps; against the loop's own time, one or two in 60 steps."""
    uncapped = FailFastProbe(check_every=5, on_finding="warn", max_overhead=None)
    capped = FailFastProbe(check_every=5, on_finding="warn", max_overhead=0.2)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", FindingWarning)
        train(tmp_path / "uncapped", uncapped, stalled=False, steps=60)
        train(tmp_path / "capped", capped, stalled=False, steps=60, loading=0.02)
    assert uncapped.checks >= 4
    assert 1 <= capped.checks <= 2


@pytest.mark.parametrize("kwargs", [{"check_every": 0}, {"on_finding": "stop"},
                                    {"max_overhead": 0}])
def test_bad_arguments(kwargs):
    with pytest.raises(ValueError):
        FailFastProbe(**kwargs)


def test_manifest_describes_the_probe(tmp_path):
    wb, _ = train(tmp_path, FailFastProbe(check_every=25, on_finding="warn"), stalled=False,
                  steps=5)
    (entry,) = [p for p in riswb.read_run(wb.path).manifest["probes"] if p["name"] == "fail_fast"]
    assert entry["check_every"] == 25 and entry["on_finding"] == "warn"
