import json

import pytest
from typer.testing import CliRunner

from riswb.cli import app

runner = CliRunner()


def test_eval_json_on_r_true_is_within_the_oracle_bounds():
    res = runner.invoke(app, ["eval", "--preset", "small", "--scenes", "20", "--cov", "true",
                              "--snr", "20", "--format", "json"])
    assert res.exit_code == 0, res.output
    out = json.loads(res.stdout)
    for key in ("scenes", "cov", "snr_db", "rmse", "crb", "k_accuracy", "nmse"):
        assert key in out
    assert out["scenes"] == 20 and out["cov"] == "true" and out["snr_db"] == 20.0
    assert out["rmse"]["phi_deg"] <= 1 and out["rmse"]["theta_deg"] <= 1
    assert out["rmse"]["r_m"] <= 0.5
    assert out["k_accuracy"] == 1.0 and out["n_missed"] == 0 and out["nmse"] < 1e-6
    assert all(v > 0 for v in out["crb"].values())


def test_eval_json_is_strict_at_an_infinite_snr():
    """--snr 1e308 overflows to an infinite SNR: the JSON spells it "Infinity" (a string),
    never as a bare Infinity/NaN token."""
    res = runner.invoke(app, ["eval", "--scenes", "3", "--snr", "1e308", "--format", "json"])
    assert res.exit_code == 0, res.output

    def bare(name):
        raise AssertionError(f"bare {name} in --format json output")

    out = json.loads(res.stdout, parse_constant=bare)
    assert out["snr_db"] == "Infinity"


def test_eval_table_samp():
    res = runner.invoke(app, ["eval", "--scenes", "5", "--cov", "samp", "--snr", "0"])
    assert res.exit_code == 0, res.output
    assert "√CRB" in res.stdout and "K accuracy" in res.stdout


@pytest.mark.parametrize("args,reason", [
    (["eval", "--preset", "huge"], "unknown preset"),
    (["eval", "--scenes", "0"], "--scenes must be positive"),
    (["eval", "--cov", "pred"], "--cov must be one of true|samp"),
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
