"""Event `grad_into_inputs`: forward arguments that carry gradient, positional or keyword."""

import torch

from riswb.instrument.workbench import Workbench
from riswb.probes.inputs import InputsProbe
from riswb.runlog import read_run


class KeywordModel(torch.nn.Module):
    """Called as Hugging Face models are: `model(input_ids=..., labels=...)`."""

    def __init__(self):
        super().__init__()
        self.linear = torch.nn.Linear(4, 1)

    def forward(self, x, *, features, labels=None):
        out = self.linear(x + features)
        return out if labels is None else (out - labels).square().mean()


def grad_into_inputs(tmp_path, features_grad: str | None) -> list[dict]:
    """features_grad: None (plain data), "leaf" (requires grad), "derived" (computed from
    such a leaf, as a physics-informed net's inputs are), "graph" (computed from the
    model's own output: the leak)."""
    model = KeywordModel()
    opt = torch.optim.SGD(model.parameters(), lr=0.1)
    scale = torch.ones(1, requires_grad=True)
    with Workbench(model, opt, runs_dir=tmp_path, probes=[InputsProbe()], log_every=2,
                   strict=True) as wb:
        for _ in range(4):
            features = torch.randn(3, 4, requires_grad=features_grad == "leaf")
            if features_grad == "derived":
                features = features * scale
            elif features_grad == "graph":
                features = features + model.linear(features)
            loss = model(torch.randn(3, 4), features=features, labels=torch.zeros(3, 1))
            opt.zero_grad()
            wb.loss({"mse": loss}).backward()
            opt.step()
    return read_run(wb.path).events_of("grad_into_inputs")


def test_keyword_input_on_a_graph_is_named(tmp_path):
    found = grad_into_inputs(tmp_path, features_grad="graph")
    assert found and all(e["tensors"] == ["forward.features"] for e in found)
    assert sum(e["count"] for e in found) == 4 and found[0]["first_step"] == 0
    assert all(e["leaf_tensors"] == [] for e in found)


def test_a_leaf_input_requiring_grad_is_told_apart(tmp_path):
    # adversarial examples and input-gradient penalties make such leaves on purpose
    found = grad_into_inputs(tmp_path, features_grad="leaf")
    assert found and all(e["tensors"] == [] for e in found)
    assert all(e["leaf_tensors"] == ["forward.features"] for e in found)
    assert sum(e["leaf_count"] for e in found) == 4


def test_an_input_computed_from_leaves_only_is_told_apart(tmp_path):
    # torch.cat of coordinates that require grad: its graph reaches no model parameter
    found = grad_into_inputs(tmp_path, features_grad="derived")
    assert found and all(e["tensors"] == [] for e in found)
    assert all(e["leaf_tensors"] == ["forward.features"] for e in found)


def test_keyword_inputs_without_grad_are_quiet(tmp_path):
    assert grad_into_inputs(tmp_path, features_grad=None) == []
