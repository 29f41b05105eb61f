"""riswb.testing: assert_learns and the `riswb_workbench` fixture, run as a user's test suite
would (pytester: a fresh pytest in a subprocess that loads the plugin by its entry point)."""

from __future__ import annotations

import importlib.metadata

import pytest
import torch
from torch import nn

from riswb.runlog import read_run
from riswb.testing import assert_learns

pytest_plugins = ["pytester"]

USER_TESTS = '''
import time
import torch
from torch import nn
from riswb.testing import assert_learns

torch.set_num_threads(1)  # the suite's own setting (tests/conftest.py): 2 threads thrash here


def data():
    g = torch.Generator().manual_seed(0)
    x = torch.randn(128, 4, generator=g)
    y = x @ torch.tensor([[1.0], [-2.0], [0.5], [3.0]])
    return [(x[i:i + 16], y[i:i + 16]) for i in range(0, 128, 16)]


def mse(model, batch):
    x, y = batch
    return ((model(x) - y) ** 2).mean()


def test_healthy_mlp_learns():
    torch.manual_seed(0)
    model = nn.Sequential(nn.Linear(4, 32), nn.Tanh(), nn.Linear(32, 1))
    optimizer = torch.optim.Adam(model.parameters(), lr=1e-2)  # torch imports dynamo here
    start = time.perf_counter()
    assert_learns(model, optimizer, data(), mse, steps=60)
    assert time.perf_counter() - start < 5


def test_head_missing_from_the_optimizer():
    torch.manual_seed(0)
    model = nn.Sequential(nn.Linear(4, 32), nn.Tanh(), nn.Linear(32, 1))
    optimizer = torch.optim.Adam(model[0].parameters(), lr=1e-2)  # the head was left out
    assert_learns(model, optimizer, data(), mse, steps=60)


def test_fixture(riswb_workbench, tmp_path):
    model = nn.Linear(4, 1)
    wb = riswb_workbench(model, torch.optim.SGD(model.parameters(), lr=0.1))
    assert wb.path.parent == tmp_path / "riswb-runs"
    x, y = data()[0]
    wb.loss({"mse": ((model(x) - y) ** 2).mean()}).backward()
'''


def test_plugin_is_registered_by_entry_point():
    found = importlib.metadata.entry_points(group="pytest11")
    assert any(ep.name == "riswb" and ep.value == "riswb.testing" for ep in found)


def test_a_users_suite(pytester):
    pytester.makepyfile(test_user=USER_TESTS)
    result = pytester.runpytest_subprocess("-q", "-p", "no:cacheprovider")
    result.assert_outcomes(passed=2, failed=1)
    result.stdout.fnmatch_lines([
        "*test_head_missing_from_the_optimizer*",
        "*AssertionError: riswb: the model did not learn in 60 steps*",
        "*optimizer-coverage: 2 trainable parameter tensors are not in the optimizer*",
    ])
    assert "test_healthy_mlp_learns" not in result.stdout.str()
    # the fixture's Workbench was closed at teardown
    (run_dir,) = (pytester.path / "runpytest-0" / "test_fixture0" / "riswb-runs").iterdir()
    assert read_run(run_dir).status == "completed"


def test_plugin_is_inert_when_switched_off(pytester):
    pytester.makepyfile(test_plain="def test_nothing():\n    assert True\n")
    result = pytester.runpytest_subprocess("-q", "-p", "no:riswb", "-p", "no:cacheprovider")
    result.assert_outcomes(passed=1)


def test_assert_learns_returns_the_gate_and_keeps_the_run(tmp_path):
    torch.manual_seed(0)
    x = torch.randn(64, 3)
    y = x.sum(1, keepdim=True)
    model = nn.Linear(3, 1)
    result = assert_learns(model, torch.optim.SGD(model.parameters(), lr=0.1), [(x, y)],
                           lambda m, b: {"mse": ((m(b[0]) - b[1]) ** 2).mean()}, steps=40,
                           runs_dir=tmp_path, name="lin")
    assert result.passed
    (path,) = tmp_path.iterdir()
    run = read_run(path)
    assert run.status == "completed" and "mse" in run.kind("loss").columns


def test_assert_learns_rejects_a_one_shot_iterator():
    model = nn.Linear(3, 1)
    batches = iter([(torch.randn(4, 3), torch.randn(4, 1))])
    with pytest.raises(ValueError, match="batches ran out after 1 of 5 steps"):
        assert_learns(model, torch.optim.SGD(model.parameters(), lr=0.1), batches,
                      lambda m, b: ((m(b[0]) - b[1]) ** 2).mean(), steps=5)
