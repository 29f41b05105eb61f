"""Finding.to_dict: strict JSON, non-finite numbers spelled as in the report's JSON."""

import json
import math

import numpy as np
import pytest

from riswb.diagnose.rules import Thresholds
from riswb.diagnose.rules._base import Finding
from riswb.errors import RiswbError
from riswb.jsonsafe import strict_json


def test_evidence_non_finite_numbers_match_the_report_encoding():
    evidence = {"nmse": float("nan"), "norm": np.float32("inf"), "low": -math.inf,
                "steps": [[1, 2]], "ratio": 0.123456789}
    out = Finding("nonfinite-loss", "error", "t", evidence, "f").to_dict()["evidence"]
    assert out == {"nmse": "NaN", "norm": "Infinity", "low": "-Infinity", "steps": [[1, 2]],
                   "ratio": 0.123457}
    assert [out[k] for k in ("nmse", "norm", "low")] == [
        strict_json(v) for v in (float("nan"), math.inf, -math.inf)]
    json.dumps(out, allow_nan=False)  # strict JSON: no bare NaN/Infinity tokens


def test_thresholds_parse_the_cli_form():
    th = Thresholds.parse(["min_loss_drop=0.1", " min_term_samples = 5"])
    assert th.min_loss_drop == 0.1 and th.min_term_samples == 5
    assert Thresholds.parse(None) == Thresholds()
    Thresholds().overrides(**Thresholds().to_dict())  # every default lies in its range


@pytest.mark.parametrize(
    ("item", "needle"),
    [
        ("min_loss_drop", "NAME=VALUE"),
        ("min_loss_dorp=0.1", "unknown threshold"),
        ("min_loss_drop=abc", "is not a number"),
        ("min_loss_drop=nan", r"finite number in \[0, 1\]"),
        ("min_loss_drop=-0.1", r"finite number in \[0, 1\]"),
        ("conflict_cosine=-2", r"finite number in \[-1, 1\]"),
        ("huge_loss=inf", r"finite number in \[0, inf\]"),
        ("min_term_samples=0", r"finite number in \[1, inf\]"),
    ],
)
def test_thresholds_reject_bad_values_in_one_line(item, needle):
    with pytest.raises(RiswbError, match=needle) as raised:
        Thresholds.parse([item])
    assert "\n" not in str(raised.value)
