"""Kind `loss`: unweighted terms and weighted total, averaged per interval; NaN stays NaN."""

import math

import pytest
import torch

from riswb.instrument.workbench import Workbench
from riswb.probes.loss_terms import LossTermsProbe
from riswb.runlog import read_run


def run_terms(tmp_path, values, *, log_every=4, mode="mean", weights=None):
    """Feed fixed term values (a leaf parameter keeps the graph) and return the records."""
    param = torch.nn.Parameter(torch.ones(()))
    model = torch.nn.Module()
    model.p = param
    opt = torch.optim.SGD([param], lr=0.0)
    with Workbench(model, opt, runs_dir=tmp_path, probes=[LossTermsProbe(mode=mode)],
                   log_every=log_every, strict=True) as wb:
        for row in values:
            terms = {name: param * v for name, v in row.items()}
            wb.loss(terms, weights).backward()  # no step: a NaN must not reach the weights
    return read_run(wb.path).kind("loss")


def test_interval_mean_matches_oracle(tmp_path):
    rows = [{"a": float(i), "b": 10.0 + i} for i in range(10)]
    weights = {"a": 2.0, "b": 0.5}
    frame = run_terms(tmp_path, rows, weights=weights)
    assert list(frame["step"]) == [3, 7, 9]  # last loss step of each interval
    chunks = (rows[:4], rows[4:8], rows[8:])
    for record, chunk in zip(frame.to_dict("records"), chunks, strict=True):
        for name in ("a", "b"):
            assert record[name] == pytest.approx(sum(r[name] for r in chunk) / len(chunk))
        totals = [2.0 * r["a"] + 0.5 * r["b"] for r in chunk]
        assert record["total"] == pytest.approx(sum(totals) / len(totals))


def test_mode_last_samples_the_interval_end(tmp_path):
    rows = [{"a": float(i)} for i in range(8)]
    frame = run_terms(tmp_path, rows, mode="last")
    assert list(frame["a"]) == [3.0, 7.0] and list(frame["total"]) == [3.0, 7.0]


def test_nonfinite_is_never_averaged_away(tmp_path):
    rows = [{"a": 1.0, "b": 1.0} for _ in range(12)]
    rows[1]["a"] = float("nan")
    rows[6]["b"] = float("inf")
    frame = run_terms(tmp_path, rows)
    first, second, third = frame.to_dict("records")
    assert math.isnan(first["a"]) and math.isnan(first["total"]) and first["b"] == 1.0
    assert second["b"] == math.inf and second["total"] == math.inf and second["a"] == 1.0
    assert third == {"step": 11, "a": 1.0, "b": 1.0, "total": 2.0}


def test_changing_term_set_writes_the_interval_so_far(tmp_path):
    rows = [{"a": 1.0}, {"a": 3.0}, {"a": 5.0, "c": 1.0}, {"a": 7.0, "c": 3.0}]
    frame = run_terms(tmp_path, rows, log_every=10)
    records = frame.to_dict("records")
    assert records[0] == {"step": 1, "a": 2.0, "total": 2.0, "c": pytest.approx(math.nan,
                                                                             nan_ok=True)}
    assert records[1]["step"] == 3 and records[1]["a"] == 6.0 and records[1]["c"] == 2.0
