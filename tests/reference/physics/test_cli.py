import json

import pytest
from typer.testing import CliRunner

from riswb.cli import app

runner = CliRunner()
C_KEYS = {"phi_deg", "theta_deg", "r_m"}
ROW_KEYS = {"estimator", "rmse", "median", "gospa", "detection_rate", "false_alarm_rate",
            "k_accuracy", "seconds_per_scene"}


def _json(*args):
    res = runner.invoke(app, ["eval", *args, "--format", "json"])
    assert res.exit_code == 0, res.output
    return json.loads(res.stdout)


def test_eval_json_contract_keys_and_types():
    out = _json("--scenes", "6", "--snr", "20", "--k", "true", "--estimators", "prior,samp,true")
    assert out["snr_db"] == 20.0 and out["scenes"] == 6 and out["k_mode"] == "true"
    assert set(out["crb"]["mean"]) == C_KEYS and set(out["crb"]["median"]) == C_KEYS
    assert [r["estimator"] for r in out["rows"]] == ["prior", "samp", "true"]
    for row in out["rows"]:
        assert ROW_KEYS <= set(row)
        assert set(row["rmse"]) == C_KEYS and set(row["median"]) == C_KEYS
        for key in ("gospa", "detection_rate", "false_alarm_rate", "k_accuracy",
                    "seconds_per_scene"):
            assert isinstance(row[key], float)
        assert row["k_accuracy"] == 1.0  # K given to every row
    true = out["rows"][-1]  # the oracle floor: MUSIC on the noise-free R_true
    assert true["rmse"]["phi_deg"] < 0.1 and true["detection_rate"] == 1.0


def test_k_est_leaves_score_a_out_and_estimators_picks_rows():
    out = _json("--scenes", "4", "--snr", "10", "--k", "est", "--estimators", "prior,samp")
    assert [r["estimator"] for r in out["rows"]] == ["prior", "samp"]
    assert all(r["rmse"] is None and r["median"] is None for r in out["rows"])


def test_default_rows_are_every_baseline_without_a_run():
    out = _json("--scenes", "2", "--snr", "20")
    assert [r["estimator"] for r in out["rows"]] == [
        "prior", "random", "samp", "bartlett", "dml", "sparse", "true"]


def test_deprecated_cov_is_one_row_with_a_note():
    res = runner.invoke(app, ["eval", "--scenes", "3", "--cov", "samp", "--format", "json"])
    assert res.exit_code == 0, res.output
    assert [r["estimator"] for r in json.loads(res.stdout)["rows"]] == ["samp"]
    assert "--cov is deprecated" in res.stderr


def test_eval_json_is_strict_at_an_infinite_snr():
    """--snr 1e308 overflows to an infinite SNR inside (zero noise: a zero CRB, degenerate
    statistics); the JSON stays strict, never a bare Infinity/NaN token."""
    res = runner.invoke(app, ["eval", "--scenes", "3", "--snr", "1e308", "--estimators",
                              "prior,true", "--format", "json"])
    assert res.exit_code == 0, res.output

    def bare(name):
        raise AssertionError(f"bare {name} in --format json output")

    out = json.loads(res.stdout, parse_constant=bare)
    assert out["snr_db"] == 1e308 and [r["estimator"] for r in out["rows"]] == ["prior", "true"]


def test_eval_table_shows_both_scores_and_keeps_the_floor_apart():
    res = runner.invoke(app, ["eval", "--scenes", "5", "--snr", "0", "--estimators",
                              "prior,samp,true"])
    assert res.exit_code == 0, res.output
    out = res.stdout
    assert "√CRB" in out and "GOSPA" in out and "K accuracy" in out
    assert "uninformative" in out  # r at 0 dB: the bound exceeds the prior's spread
    table_a = out[out.index("(a)"):out.index("(b)")]
    assert "floor" not in table_a and "floor" in out


@pytest.mark.parametrize("args,reason", [
    (["eval", "--preset", "huge"], "unknown preset"),
    (["eval", "--scenes", "0"], "--scenes must be positive"),
    (["eval", "--cov", "pred"], "--cov must be one of true|samp"),
    (["eval", "--estimators", "prior,music"], "--estimators takes a comma list"),
    (["eval", "--estimators", "prior,aux"], "--estimators aux needs --run"),
    (["eval", "--estimators", "pred"], "--estimators pred needs --run"),
    (["eval", "--k", "maybe"], "--k must be one of"),
    (["eval", "--format", "yaml"], "unknown --format 'yaml'"),
    (["scene", "--plot", "x.png", "--cov", "nope"], "--cov must be one of"),
])
def test_bad_input_is_one_line_and_exit_2(args, reason):
    res = runner.invoke(app, args)
    assert res.exit_code == 2
    lines = res.stderr.strip().splitlines()
    assert len(lines) == 1 and reason in lines[0] and "Traceback" not in res.output


def test_scene_writes_a_png(tmp_path):
    path = tmp_path / "scene.png"
    res = runner.invoke(app, ["scene", "--seed", "3", "--plot", str(path)])
    assert res.exit_code == 0, res.output
    assert path.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n" and path.stat().st_size > 20_000
