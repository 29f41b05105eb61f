from riswb.diagnose.rules import Thresholds
from riswb.diagnose.tables import build_tables
from riswb.runlog import RunWriter, read_run


def test_absent_data_is_named_not_an_error(tmp_path):
    writer = RunWriter(tmp_path, "bare")
    writer.scalars(0, "loss", {"total": 1.0})
    writer.close()
    tables, absent = build_tables(read_run(writer.path), Thresholds())
    assert "term_gradients" in absent and "eigenvalues" in absent
    (loss,) = [t for t in tables if t.name == "loss_terms"]
    assert "no loss_weight records" in loss.note


def test_steps_moving_uses_the_rules_threshold(tmp_path, synthetic_run):
    run = read_run(synthetic_run(tmp_path, steps=300))
    by_name = {t.name: t for t in build_tables(run, Thresholds())[0]}
    assert by_name["param_update"].rows[0][3] == "100.0%"
    strict = Thresholds().overrides(min_update_ratio=1.0)
    by_name = {t.name: t for t in build_tables(run, strict)[0]}
    assert by_name["param_update"].rows[0][3] == "0.0%"
