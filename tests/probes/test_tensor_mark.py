"""A tensor marked by identity and version: same object unmodified, or changed."""

import torch

from riswb.probes.tensor_mark import mark, unchanged


def test_an_in_place_op_or_another_object_reads_as_changed_and_nothing_is_kept_alive():
    t = torch.zeros(3)
    seen = mark(t)
    assert unchanged(seen, t)
    assert not unchanged(seen, t.clone())  # equal values, another object
    t.add_(0)  # an in-place op, even one that changes no value
    assert not unchanged(seen, t)
    seen = mark(t)
    t.data.add_(1)  # through .data: no version bump, not seen
    assert unchanged(seen, t)
    seen = mark(torch.ones(2))
    assert seen[0]() is None  # the mark does not hold the tensor
