"""A tensor remembered by identity and in-place version, without keeping it alive.

"Is this still the same, unmodified tensor?" — the same batch re-fed (cadence), a gradient
that arrived since it was first watched (coverage) — is one weakref and one int compare:
a new tensor object, or an in-place op on the old one (which bumps `_version`), reads as
changed. Edits through `.data` bump no counter and are not seen.
"""

from __future__ import annotations

import weakref

import torch

TensorMark = tuple[weakref.ref, int]


def mark(tensor: torch.Tensor) -> TensorMark:
    return weakref.ref(tensor), tensor._version


def unchanged(seen: TensorMark, tensor: torch.Tensor) -> bool:
    """Whether `tensor` is the very object `seen` marked, with no in-place op since."""
    return seen[0]() is tensor and seen[1] == tensor._version
