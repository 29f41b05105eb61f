from rich.console import Console

from riswb.diagnose.render import render_markdown, render_table
from riswb.diagnose.report import build_report
from riswb.runlog import read_run


def test_markdown_has_sections_and_tables(tmp_path, synthetic_run):
    run = read_run(synthetic_run(tmp_path, steps=300, healthy=False))
    text = render_markdown(build_report(run))
    assert text.startswith("# riswb report: ")
    assert "## Findings" in text and "`params-not-moving`" in text
    assert "| term | weight |" in text


def test_table_shows_findings_evidence_and_fix(tmp_path, synthetic_run):
    report = build_report(read_run(synthetic_run(tmp_path, steps=300, healthy=False)))
    console = Console(record=True, width=120)
    render_table(report, console)
    text = console.export_text()
    assert "riswb report" in text and "[ERROR] params-not-moving" in text
    assert "evidence: " in text and "fix: " in text
