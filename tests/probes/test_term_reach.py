"""Event `term_reach`: the terms the loop's own backward did not go through."""

from __future__ import annotations

import pytest
import torch
from torch import nn

import riswb
from riswb.probes.term_gradients import TermGradientsProbe
from riswb.runlog import read_run


class TwoHeads(nn.Module):
    def __init__(self):
        super().__init__()
        torch.manual_seed(0)
        self.main, self.aux = nn.Linear(4, 1), nn.Linear(4, 1)

    def forward(self, x):
        return self.main(x), self.aux(x)


def _run(tmp_path, backward: str) -> list[dict]:
    model = TwoHeads()
    opt = torch.optim.SGD(model.parameters(), lr=0.01)
    with riswb.Workbench(model, opt, runs_dir=tmp_path, probes=[TermGradientsProbe()],
                         strict=True, log_every=10) as wb:
        for _ in range(30):
            main, aux = model(torch.randn(8, 4))
            terms = {"fit": main.square().mean(), "aux": aux.abs().mean()}
            total = wb.loss(terms)
            opt.zero_grad()
            if backward == "total":
                total.backward()
            elif backward == "own_sum":  # the loop's own sum of the same term tensors
                (terms["fit"] + terms["aux"]).backward()
            elif backward == "one_per_term":
                terms["fit"].backward()
                terms["aux"].backward()
            else:  # the bug: backward on one term
                terms["fit"].backward()
            opt.step()
    return read_run(wb.path).events_of("term_reach")


@pytest.mark.parametrize("backward", ["total", "own_sum", "one_per_term"])
def test_every_term_is_reached_whatever_the_loop_backpropagates(tmp_path, backward):
    assert _run(tmp_path, backward) == []


@pytest.mark.parametrize("use_first", [True, False])
def test_a_loss_call_superseded_before_any_backward_is_not_judged(tmp_path, use_first):
    """Two wb.loss calls per step, then one backward: on their sum (accumulated in one
    graph), or on the second only (the first batch dropped: step-cadence's business)."""
    model = TwoHeads()
    opt = torch.optim.SGD(model.parameters(), lr=0.01)
    with riswb.Workbench(model, opt, runs_dir=tmp_path, probes=[TermGradientsProbe()],
                         strict=True, log_every=10) as wb:
        for _ in range(30):
            totals = []
            for _ in range(2):
                main, aux = model(torch.randn(8, 4))
                totals.append(wb.loss({"fit": main.square().mean(), "aux": aux.abs().mean()}))
            opt.zero_grad()
            (totals[0] + totals[1] if use_first else totals[1]).backward()
            opt.step()
    assert read_run(wb.path).events_of("term_reach") == []


def test_a_term_left_out_of_the_backward_is_missed_on_every_checked_step(tmp_path):
    events = _run(tmp_path, "fit_only")
    assert 1 <= len(events) <= 4  # log-spaced: the counts, not every flush
    event = events[-1]
    assert event["missed"] == {"aux": event["checked"]["aux"]}
    assert event["checked"]["aux"] >= 5 and event["first_step"] == 0
