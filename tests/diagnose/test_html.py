"""The HTML report and comparison pages: order, escaping, embedded plots, no URL, the CLI."""

from __future__ import annotations

import base64
import json
import re
import struct

import pytest
from typer.testing import CliRunner

from riswb.cli import app
from riswb.diagnose.compare import compare, overlay_bytes
from riswb.diagnose.plots import write_plots
from riswb.diagnose.render_html import render_comparison_html, render_html
from riswb.diagnose.report import build_report
from riswb.runlog import read_run

EVIL = "<script>alert(1)</script>"
DATA_URI = re.compile(r'<img src="data:image/png;base64,([A-Za-z0-9+/=]+)"')


def png_size(data: bytes) -> tuple[int, int]:
    """(width, height) from a PNG's IHDR; fails on anything that is not a PNG."""
    assert data[:8] == b"\x89PNG\r\n\x1a\n" and data[12:16] == b"IHDR"
    return struct.unpack(">II", data[16:24])


def embedded_pngs(page: str) -> list[bytes]:
    return [base64.b64decode(match, validate=True) for match in DATA_URI.findall(page)]


def assert_offline(page: str) -> None:
    assert "http://" not in page and "https://" not in page
    assert "<script" not in page.lower()


def invoke(*args):
    return CliRunner().invoke(app, [str(a) for a in args])


def usage_error(result) -> str:
    """The CLI's one-line error (exit 2), returned for a look at its wording."""
    assert result.exit_code == 2 and "Traceback" not in result.output, result.output
    (line,) = [line for line in result.output.splitlines() if line.strip()]
    assert line.startswith("riswb: error:")
    return line


@pytest.fixture
def report_with_plots(tmp_path, synthetic_run):
    run = read_run(synthetic_run(tmp_path, steps=400, healthy=False, terms=("nmse", EVIL)))
    report = build_report(run)
    plots = write_plots(run)
    report.plots = {name: str(path) for name, path in plots.written.items()}
    report.plots_skipped = plots.skipped
    return report


def test_page_order_findings_unchecked_then_tables_with_plots(report_with_plots):
    page = render_html(report_with_plots)
    assert page.startswith("<!DOCTYPE html>")
    positions = [page.index(f'id="{anchor}"') for anchor in
                 ("findings", "unchecked", "summary", "evidence")]
    assert positions == sorted(positions)
    findings = page[positions[0]:positions[1]]
    assert 'class="badge error">ERROR<' in findings and "params-not-moving" in findings
    assert "Fix." in findings and 'class="kv"' in findings  # evidence as a table
    # each plot sits in the section of the table it explains
    loss = page[page.index('id="table-loss_terms"'):page.index('id="table-term_gradients"')]
    assert len(DATA_URI.findall(loss)) == 1
    lr = page[page.index('id="table-lr"'):]
    assert DATA_URI.search(lr[: lr.index("</section>")])


def test_plots_are_embedded_pngs_and_nothing_is_remote(report_with_plots):
    page = render_html(report_with_plots)
    images = embedded_pngs(page)
    assert len(images) == len(report_with_plots.plots) >= 4
    assert all(width > 0 and height > 0 for width, height in map(png_size, images))
    assert_offline(page)
    assert "Content-Security-Policy" in page


def test_run_text_is_escaped(report_with_plots):
    report = report_with_plots
    report.summary.warnings.append(f"see https://example.invalid/{EVIL}")
    page = render_html(report)
    assert_offline(page)
    assert "&lt;script&gt;alert(1)&lt;/script&gt;" in page
    assert "https&#58;//example.invalid" in page  # reads as the address, is not one


def test_without_plots_and_with_an_unreadable_plot(tmp_path, synthetic_run):
    report = build_report(read_run(synthetic_run(tmp_path, steps=200)))
    report.plots = {"loss": str(tmp_path / "gone.png")}
    page = render_html(report)
    assert not DATA_URI.search(page)
    assert "plot loss: cannot read" in page
    assert "No findings" in page or "<ol" in page


def test_comparison_page(tmp_path, synthetic_run):
    a = read_run(synthetic_run(tmp_path, steps=400, name="a", swap_unrestored=True))
    b = read_run(synthetic_run(tmp_path, steps=400, name="b", healthy=False))
    page = render_comparison_html(compare(a, b), overlay_bytes(a, b))
    assert_offline(page)
    assert 'class="badge new">new<' in page and 'class="badge resolved">resolved<' in page
    assert "final loss/total" in page and a.id in page and b.id in page
    (overlay,) = embedded_pngs(page)
    assert png_size(overlay)[0] > 0


def test_cli_report_html_default_path_and_stdout(tmp_path, synthetic_run):
    run = synthetic_run(tmp_path, steps=300, healthy=False)
    result = invoke("report", run, "--format", "html")
    assert result.exit_code == 0, result.output
    assert result.output.strip() == str(run / "report.html")
    page = (run / "report.html").read_text()
    assert len(embedded_pngs(page)) >= 4
    assert_offline(page)
    piped = invoke("report", run, "--format", "html", "--no-plots", "--out", "-")
    assert piped.exit_code == 0 and piped.output.startswith("<!DOCTYPE html>")
    assert not DATA_URI.search(piped.output)


def test_cli_out_for_documents_and_not_for_tables(tmp_path, synthetic_run):
    run = synthetic_run(tmp_path, steps=300)
    target = tmp_path / "out" / "report.json"
    result = invoke("report", run, "--format", "json", "--no-plots", "--out", target)
    assert result.exit_code == 0 and result.output.strip() == str(target)
    assert json.loads(target.read_text())["run"] == run.name
    assert "--out" in usage_error(invoke("report", run, "--out", tmp_path / "x.txt"))
    assert "html" in usage_error(invoke("report", run, "--format", "pdf"))


def test_cli_compare_html(tmp_path, synthetic_run):
    healthy = synthetic_run(tmp_path, steps=400, name="a-healthy")
    broken = synthetic_run(tmp_path, steps=400, name="b-broken", healthy=False)
    result = invoke("compare", healthy, broken, "--format", "html")
    assert result.exit_code == 0, result.output
    written = broken / f"compare-{healthy.name}.html"
    assert result.output.strip() == str(written)
    page = written.read_text()
    assert_offline(page)
    assert len(embedded_pngs(page)) == 1
    plot = tmp_path / "overlay.png"
    out = tmp_path / "page.html"
    result = invoke("compare", healthy, broken, "-f", "html", "--plot", plot, "--out", out)
    assert result.exit_code == 0 and plot.is_file()
    assert embedded_pngs(out.read_text()) == [plot.read_bytes()]
