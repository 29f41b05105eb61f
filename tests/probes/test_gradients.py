"""The shared raw-gradient statistics (riswb/probes/gradients.py) against torch.isfinite."""

from __future__ import annotations

import pytest
import torch

from riswb.probes.gradients import GradStats, all_finite_on_cpu


def _oracle(grads) -> bool:
    return all(bool(torch.isfinite(g.to_dense() if g.is_sparse else g).all())
               for g in grads if g is not None)


def _grads(dtype, bad, *, sparse=False, none=False):
    gen = torch.Generator().manual_seed(0)
    grads = [torch.randn(5, 3, generator=gen).to(dtype), torch.randn(7, generator=gen).to(dtype)]
    if bad is not None:
        grads[1][3] = bad
    if sparse:
        grads.append(torch.sparse_coo_tensor([[0, 2]], [1.0, bad if bad is not None else 2.0],
                                             (4,), check_invariants=True))
    if none:
        grads.insert(1, None)
    return grads


@pytest.mark.parametrize("dtype", [torch.float32, torch.float64, torch.bfloat16, torch.float16,
                                   torch.complex64])
@pytest.mark.parametrize("bad", [None, float("nan"), float("inf"), float("-inf")])
@pytest.mark.parametrize("sparse", [False, True])
def test_host_finite_agrees_with_isfinite(dtype, bad, sparse):
    grads = _grads(dtype, bad, sparse=sparse, none=True)
    stats = GradStats(grads, torch.device("cpu"), None)
    assert stats.host_finite() == _oracle(grads)


def test_the_fused_check_leaves_values_and_versions_alone():
    grads = _grads(torch.float32, float("nan"))
    before = [(g.clone(), g._version) for g in grads]
    assert all_finite_on_cpu(grads) is False
    assert all_finite_on_cpu(grads[:1]) is True  # the flag of the call before is not kept
    for g, (copy, version) in zip(grads, before, strict=True):
        assert torch.equal(g.nan_to_num(), copy.nan_to_num()) and g._version == version


def test_the_fused_check_declines_what_it_cannot_read():
    assert all_finite_on_cpu(_grads(torch.complex64, None)) is None
    assert all_finite_on_cpu(_grads(torch.float32, None, sparse=True)) is None
    assert all_finite_on_cpu([torch.ones(3), torch.tensor([float("nan")])]) is False


def test_norms_taken_before_the_check_are_reused():
    grads = _grads(torch.float32, float("inf"))
    stats = GradStats(grads, torch.device("cpu"), None)
    expected = torch.stack([torch.linalg.vector_norm(g) for g in grads])
    assert torch.equal(stats.norms, expected)
    assert stats.host_finite() is False
