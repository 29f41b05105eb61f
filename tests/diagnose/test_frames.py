import math

import pandas as pd

from riswb.diagnose.frames import col, latest_spectra, value_columns
from riswb.runlog import read_run


def test_value_columns_skip_the_axes_and_filter_by_prefix():
    frame = pd.DataFrame(columns=["step", "opt_step", "time", "ratio", "group/a/ratio"])
    assert value_columns(frame) == ["ratio", "group/a/ratio"]
    assert value_columns(frame, "group/") == ["group/a/ratio"]
    assert value_columns(frame, exclude={"ratio"}) == ["group/a/ratio"]


def test_col_is_float_with_nan_for_missing_or_text():
    frame = pd.DataFrame({"step": [0, 1], "x": [1, "oops"]})
    values = col(frame, "x")
    assert values[0] == 1.0 and math.isnan(values[1])
    assert math.isnan(col(frame, "absent")[0])


def test_latest_spectra_reads_the_last_evaluation(tmp_path, synthetic_run):
    step, spectra = latest_spectra(read_run(synthetic_run(tmp_path, steps=300)))
    assert step == 270 and set(spectra) == {"R_pred", "R_true", "R_samp"}
