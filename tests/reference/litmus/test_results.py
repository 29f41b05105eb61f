"""Litmus results (riswb/reference/litmus/results.py) serialize as strict JSON."""

from __future__ import annotations

import json
import math

import torch

from riswb.reference.litmus.results import CheckResult, LitmusResult, first_line


def test_evidence_is_strict_json():
    check = CheckResult("x", False, "d", {"norm": math.nan, "g": torch.tensor([math.inf, 1.0]),
                                          "n": {1: -math.inf}})
    result = LitmusResult("small", None, 0, [check, CheckResult("y", True, "ok")])
    data = json.loads(json.dumps(result.to_dict(), allow_nan=False))
    assert data["checks"][0]["evidence"] == {"norm": "NaN", "g": ["Infinity", 1.0],
                                             "n": {"1": "-Infinity"}}
    assert data["failed"] == ["x"] and not result.passed and result["y"].passed


def test_first_line_is_one_short_line():
    line = first_line(RuntimeError("boom\nsecond line" + "x" * 500))
    assert line == "RuntimeError: boom"
