"""What `wb.loss` and `wb.evaluate` accept: scalar tensors, Python numbers as constant terms,
and never a key or shape that would forge or silently average a record."""

import math

import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st

import riswb
from riswb.diagnose.rules import diagnose
from riswb.instrument.loss_weights import RESERVED_METRICS, RESERVED_TERMS


@pytest.fixture
def loop(tmp_path):
    torch.manual_seed(0)
    model = torch.nn.Linear(3, 1)
    opt = torch.optim.SGD(model.parameters(), lr=0.1)
    wb = riswb.Workbench(model, opt, runs_dir=tmp_path, log_every=2)
    yield wb, model, opt
    wb.close()


@pytest.mark.parametrize("name", sorted(RESERVED_TERMS))
def test_reserved_term_names_are_refused(loop, name):
    wb, model, _ = loop
    with pytest.raises(ValueError, match="reserved"):
        wb.loss({name: model(torch.randn(4, 3)).mean()})


@pytest.mark.parametrize("key", sorted(RESERVED_METRICS))
def test_reserved_metric_keys_are_refused_and_forge_nothing(loop, key):
    wb, _, _ = loop
    with pytest.raises(ValueError, match="reserved"):
        wb.evaluate({key: "loss", "val": 1.0})
    wb.close()
    assert not (riswb.read_run(wb.path).scalars["kind"] == "eval").any()


def test_a_non_scalar_term_is_refused_with_its_shape(loop):
    wb, model, _ = loop
    with pytest.raises(ValueError, match=r"'mse' has shape \(4, 1\)"):
        wb.loss({"mse": model(torch.randn(4, 3))})


def test_python_numbers_are_constant_terms_that_break_no_probe(loop):
    wb, model, opt = loop
    for _ in range(6):
        loss = wb.loss({"mse": model(torch.randn(4, 3)).square().mean(), "prior": 0.25})
        opt.zero_grad()
        loss.backward()
        opt.step()
    wb.close()
    run = riswb.read_run(wb.path)
    loss_rows = run.scalars[run.scalars["kind"] == "loss"]
    assert (loss_rows["prior"] == 0.25).all()
    assert not run.manifest["warnings"], run.manifest["warnings"]
    assert not [e for e in run.event_records if e["event"] == "term_no_grad"]
    ids = {f.id for f in diagnose(run).findings}
    assert "dead-loss-term" not in ids


@settings(max_examples=40, deadline=None)
@given(st.one_of(st.none(), st.text(max_size=3), st.booleans(), st.lists(st.floats(), max_size=2),
                 st.complex_numbers()))
def test_anything_else_is_one_clear_error(tmp_path_factory, value):
    model = torch.nn.Linear(2, 1)
    wb = riswb.Workbench(model, torch.optim.SGD(model.parameters(), lr=0.1),
                         runs_dir=tmp_path_factory.mktemp("r"), probes=None)
    try:
        with pytest.raises(ValueError, match="loss term 'x'"):
            wb.loss({"x": value})
    finally:
        wb.close()


def test_a_one_element_tensor_counts_as_a_scalar(loop):
    wb, model, _ = loop
    total = wb.loss({"mse": model(torch.randn(1, 3)).reshape(1)})
    assert total.dim() == 0 and math.isfinite(float(total))


def test_a_one_element_tensor_weight_still_gives_a_scalar_total(tmp_path):
    """A learnable weight of shape (1,) broadcasts the scalar term: the total stays 0-dim,
    as Σ weight·term of scalars reads, and its values reach the probes."""
    model = torch.nn.Linear(2, 1)
    opt = torch.optim.SGD(model.parameters(), lr=0.1)
    weight = torch.full((1,), 0.5, requires_grad=True)
    with riswb.Workbench(model, opt, runs_dir=tmp_path, probes=["loss_terms"],
                         strict=True) as wb:
        term = model(torch.ones(1, 2)).sum()
        total = wb.loss({"a": term}, {"a": weight})
        assert total.shape == () and torch.equal(total, (term * weight).reshape(()))
        total.backward()
    assert riswb.read_run(wb.path).kind("loss")["total"].iloc[0] == pytest.approx(float(total))
