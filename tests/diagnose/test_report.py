import json
import math

from riswb.diagnose.report import Report, build_report, summarize
from riswb.diagnose.rules import SEVERITY_RANK
from riswb.jsonsafe import dumps
from riswb.runlog import read_run

FINDING_FIELDS = {"id", "severity", "title", "evidence", "fix"}


def render_json(report: Report) -> str:
    return dumps(report.to_dict())


def strict_loads(text: str):
    return json.loads(text, parse_constant=lambda c: (_ for _ in ()).throw(ValueError(c)))


def test_healthy_report_model(tmp_path, synthetic_run):
    run = read_run(synthetic_run(tmp_path, steps=1000))
    report = build_report(run)
    assert isinstance(report, Report)
    summary = report.summary
    assert summary.status == "completed"
    assert summary.steps == 991 and summary.opt_steps == 991
    assert summary.final_loss < summary.best_loss * 1.5
    assert set(summary.final_terms) == {"nmse", "ortho", "gap", "K"}
    assert summary.warnings == []
    assert report.diagnosis.counts["error"] == 0
    names = {t.name for t in report.tables}
    assert {
        "loss_terms",
        "term_gradients",
        "param_update",
        "coverage",
        "nonfinite",
        "cadence",
        "weight_swaps",
        "lr",
        "eigenvalues",
        "spectrum",
        "eval",
    } <= names
    loss = report.table("loss_terms")
    by_term = {row[0]: row for row in loss.rows}
    assert by_term["ortho"][1] == "0.1"  # the weight actually used
    assert by_term["total"][3] < by_term["total"][2]  # last < first


def test_unhealthy_report_ranks_errors_first(tmp_path, synthetic_run):
    run = read_run(synthetic_run(tmp_path, steps=1000, healthy=False, swap_unrestored=True))
    report = build_report(run)
    ids = [f.id for f in report.findings]
    assert "params-not-moving" in ids and "weights-swapped" in ids
    ranks = [SEVERITY_RANK[f.severity] for f in report.findings]
    assert ranks == sorted(ranks)
    for finding in report.to_dict()["findings"]:
        assert FINDING_FIELDS <= set(finding)
    swaps = report.table("weight_swaps")
    assert "not restored" in swaps.note


def test_torn_last_line_is_a_warning_and_the_report_still_works(tmp_path, synthetic_run):
    run = read_run(synthetic_run(tmp_path, steps=500, torn=True))
    report = build_report(run)
    assert any("torn last line" in w for w in report.summary.warnings)
    assert report.summary.steps == 491
    data = strict_loads(render_json(report))
    assert any("torn" in w for w in data["summary"]["warnings"])


def test_killed_status_and_crashed(tmp_path, synthetic_run):
    killed = summarize(read_run(synthetic_run(tmp_path, steps=200, status="killed")))
    crashed = summarize(read_run(synthetic_run(tmp_path, steps=200, status="crashed")))
    assert killed.status == "killed"
    assert killed.duration_s is not None
    assert crashed.status == "crashed"


def test_nan_loss_is_valid_strict_json(tmp_path, synthetic_run):
    run = read_run(synthetic_run(tmp_path, steps=500, nan_loss_at=300))
    report = build_report(run)
    assert math.isnan(report.summary.final_loss)
    text = render_json(report)
    assert "NaN" in text
    data = strict_loads(text)
    assert data["summary"]["final_loss"] == "NaN"
    assert "nonfinite-loss" in [f["id"] for f in data["findings"]]
    nonfinite = data["tables"]["nonfinite"]["rows"]
    assert {r["counter"]: r["total"] for r in nonfinite}["loss"] > 0


def test_json_has_findings_unchecked_summary_tables(tmp_path, synthetic_run):
    run = read_run(synthetic_run(tmp_path, steps=300, dead_term="ortho"))
    data = strict_loads(render_json(build_report(run)))
    assert {"findings", "unchecked", "summary", "tables", "counts", "plots"} <= set(data)
    assert isinstance(data["findings"], list) and isinstance(data["unchecked"], dict)
    for finding in data["findings"]:
        assert FINDING_FIELDS <= set(finding)
    grads = {r["term"]: r for r in data["tables"]["term_gradients"]["rows"]}
    assert grads["ortho"]["median"] == 0


def test_summary_says_when_gradient_statistics_came_from_sampled_cycles(tmp_path):
    from tests.instrument.linear_loop import train_linear

    def run(name, **options):
        return summarize(read_run(train_linear(12, tmp_path, name, **options).path))

    strided, full = run("strided", observe_every=4), run("full")
    assert strided.observe_stride == 4 and full.observe_stride == 1
    labels = {label: text for label, text in strided.pairs()}
    assert "1 optimizer step in 4" in labels["observed"]
    assert "observed" not in dict(full.pairs())
