"""Finding.to_dict: strict JSON, non-finite numbers spelled as in the report's JSON."""

import json
import math

import numpy as np

from riswb.diagnose.report import strict_json
from riswb.diagnose.rules._base import Finding


def test_evidence_non_finite_numbers_match_the_report_encoding():
    evidence = {"nmse": float("nan"), "norm": np.float32("inf"), "low": -math.inf,
                "steps": [[1, 2]], "ratio": 0.123456789}
    out = Finding("nonfinite-loss", "error", "t", evidence, "f").to_dict()["evidence"]
    assert out == {"nmse": "NaN", "norm": "Infinity", "low": "-Infinity", "steps": [[1, 2]],
                   "ratio": 0.123457}
    assert [out[k] for k in ("nmse", "norm", "low")] == [
        strict_json(v) for v in (float("nan"), math.inf, -math.inf)]
    json.dumps(out, allow_nan=False)  # strict JSON: no bare NaN/Infinity tokens
