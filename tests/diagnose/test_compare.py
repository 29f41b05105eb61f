import json

from riswb.diagnose.compare import CHANGE_ORDER, compare
from riswb.jsonsafe import dumps
from riswb.runlog import read_run


def test_metrics_side_by_side_and_findings_diff(tmp_path, synthetic_run):
    a = read_run(synthetic_run(tmp_path, steps=1000, name="a", swap_unrestored=True))
    b = read_run(synthetic_run(tmp_path, steps=1000, name="b", healthy=False))
    comparison = compare(a, b)
    metrics = {m.metric: m for m in comparison.metrics}
    for name in ("opt_steps", "final loss/total", "final loss/nmse", "final eval/val_loss"):
        assert name in metrics
    total = metrics["final loss/total"]
    assert total.b > total.a and abs(total.delta - (total.b - total.a)) < 1e-12
    changes = {f.id: f.change for f in comparison.findings}
    assert changes["params-not-moving"] == "new"
    assert changes["weights-swapped"] == "resolved"
    order = [f.change for f in comparison.findings]
    assert order == sorted(order, key=CHANGE_ORDER.get)


def test_same_findings_are_both(tmp_path, synthetic_run):
    a = read_run(synthetic_run(tmp_path, steps=600, name="a", healthy=False))
    b = read_run(synthetic_run(tmp_path, steps=600, name="b", healthy=False))
    comparison = compare(a, b)
    assert comparison.findings
    assert {f.change for f in comparison.findings} == {"both"}
    data = json.loads(dumps(comparison.to_dict()))
    assert data["run_a"] == a.id and data["run_b"] == b.id
    assert {"metric", "a", "b", "delta"} == set(data["metrics"][0])
    assert {"id", "change", "severity_a", "severity_b", "title"} == set(data["findings"][0])
