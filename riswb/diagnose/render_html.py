"""The report as one self-contained HTML page (`render_html`), and two runs side by side
(`render_comparison_html`).

One file that opens anywhere, offline, later: CSS inline, plots embedded as base64 PNG
data URIs, no script, and no network address anywhere in the file (no doctype or namespace
URL; a "://" in a run's own text is written "&#58;//", which reads the same). A
Content-Security-Policy meta tag forbids scripts and remote loads as a second line of
defence. Every string taken from a run (ids, loss-term names, evidence, notes) goes through
`_esc`, so a term named `<script>` reads as text.

The order is the report's: findings first (ranked, with severity badge, evidence and fix),
then what could not be checked, then the run summary and the evidence tables, each with the
plot that explains it beside it (PLOT_PLACES). Both pages read the models the other
renderers read (`Report`, `Comparison`).
"""

from __future__ import annotations

import base64
import html
import numbers
from collections.abc import Iterable, Mapping
from pathlib import Path
from typing import Any

from riswb import __version__
from riswb.diagnose.compare import Comparison
from riswb.diagnose.render import MAX_ROWS, extra_rows_note
from riswb.diagnose.report import Report
from riswb.diagnose.tables import Table
from riswb.diagnose.text import fmt, fmt_duration

# plot -> the tables it explains, in order of preference: it sits beside the first present
PLOT_PLACES: dict[str, tuple[str, ...]] = {
    "loss": ("loss_terms",),
    "grad_norms": ("term_gradients", "grad_norms"),
    "param_update": ("param_update",),
    "lr": ("lr",),
    "spectra": ("eigenvalues", "spectrum"),
    "nonfinite": ("nonfinite",),
}
EVIDENCE_DEPTH = 2  # nested evidence dicts (lr-stalled's per-group entries) as nested tables
CSP = "default-src 'none'; img-src data:; style-src 'unsafe-inline'"
CSS = """
body{font:14px/1.45 system-ui,-apple-system,"Segoe UI",sans-serif;color:#1f2328;margin:0 auto;
  max-width:1400px;padding:1rem 1.5rem 3rem}
h1{font-size:1.5rem;margin:.2rem 0}h2{font-size:1.2rem;margin:1.6rem 0 .5rem;
  border-bottom:1px solid #d0d7de}h3{font-size:1rem;margin:1.2rem 0 .4rem}
code{font:12.5px ui-monospace,SFMono-Regular,Menlo,monospace}
.meta,.note,footer{color:#57606a}.note{margin:.3rem 0;font-size:12.5px}
.badge{display:inline-block;padding:0 .45rem;border-radius:.7rem;font-size:11.5px;
  font-weight:700;letter-spacing:.03em;color:#fff;background:#57606a;vertical-align:1px}
.error,.new,.crashed,.killed,.failed{background:#cf222e}.warning,.both,.running{background:#bf8700}
.info{background:#0969da}.completed,.resolved{background:#1a7f37}
ol.findings{padding-left:1.6rem}li.finding{margin:.2rem 0 1rem}
li.finding .title{font-weight:600}.fix{margin:.35rem 0;padding:.35rem .6rem;
  background:#f0fff4;border-left:3px solid #1a7f37}.ok{color:#1a7f37;font-weight:600}
table{border-collapse:collapse;margin:.3rem 0;font-size:13px}
th,td{border:1px solid #d0d7de;padding:.15rem .5rem;text-align:left;vertical-align:top}
thead th{background:#f6f8fa}td.num{text-align:right;font-variant-numeric:tabular-nums}
table.kv th{background:#f6f8fa;font-weight:600;white-space:nowrap}
table.kv table.kv{margin:0}
.pair{display:flex;flex-wrap:wrap;gap:1rem 2rem;align-items:flex-start}
.pair>.data{flex:0 1 auto;min-width:280px;overflow-x:auto}
figure{margin:0;flex:1 1 560px;max-width:900px}figure img{width:100%;height:auto;
  border:1px solid #d0d7de}figcaption{color:#57606a;font-size:12px}
"""


def _esc(value: Any) -> str:
    """HTML-escaped text with no literal URL scheme separator (see the module docstring)."""
    return html.escape(str(value)).replace("://", "&#58;//")


def _is_number(value: Any) -> bool:
    return isinstance(value, numbers.Number) and not isinstance(value, bool)


def _td(value: Any) -> str:
    align = ' class="num"' if _is_number(value) else ""
    return f"<td{align}>{_esc(fmt(value))}</td>"


def _table(columns: Iterable[Any], rows: Iterable[Iterable[Any]]) -> str:
    head = "".join(f"<th>{_esc(c)}</th>" for c in columns)
    body = "".join("<tr>" + "".join(_td(c) for c in row) + "</tr>" for row in rows)
    return f"<table><thead><tr>{head}</tr></thead><tbody>{body}</tbody></table>"


def _key_values(pairs: Iterable[tuple[Any, Any]], depth: int = 0) -> str:
    """A two-column table; dict values become nested tables up to EVIDENCE_DEPTH."""
    rows = []
    for key, value in pairs:
        if isinstance(value, Mapping) and value and depth < EVIDENCE_DEPTH:
            shown = _key_values(value.items(), depth + 1)
        else:
            shown = _esc(fmt(value))
        rows.append(f"<tr><th>{_esc(key)}</th><td>{shown}</td></tr>")
    return f'<table class="kv">{"".join(rows)}</table>'


def _badge(text: str, kind: str) -> str:
    return f'<span class="badge {_esc(kind)}">{_esc(text)}</span>'


def _figure(png: bytes, name: str, caption: str) -> str:
    uri = "data:image/png;base64," + base64.b64encode(png).decode("ascii")
    return (
        f'<figure><img src="{uri}" alt="{_esc(name)} plot">'
        f"<figcaption>{_esc(caption)}</figcaption></figure>"
    )


def _page(title: str, body: str) -> str:
    return (
        "<!DOCTYPE html>\n"
        '<html lang="en"><head><meta charset="utf-8">'
        f'<meta http-equiv="Content-Security-Policy" content="{CSP}">'
        '<meta name="viewport" content="width=device-width, initial-scale=1">'
        f"<title>{_esc(title)}</title><style>{CSS}</style></head>\n<body>\n{body}\n"
        f"<footer>written by riswb {_esc(__version__)}</footer>\n</body></html>\n"
    )


def _findings(report: Report) -> str:
    items = []
    for finding in report.findings:
        severity = finding.severity
        items.append(
            f'<li class="finding"><div>{_badge(severity.upper(), severity)} '
            f'<code>{_esc(finding.id)}</code> — <span class="title">{_esc(finding.title)}'
            "</span></div>"
            + (_key_values(finding.evidence.items()) if finding.evidence else "")
            + (f'<p class="fix"><b>Fix.</b> {_esc(finding.fix)}</p>' if finding.fix else "")
            + "</li>"
        )
    listing = (
        f'<ol class="findings">{"".join(items)}</ol>'
        if items
        else '<p class="ok">No findings: nothing wrong that the rules can see.</p>'
    )
    return (
        f'<section id="findings"><h2>Findings</h2><p class="headline">'
        f"{_esc(report.headline())}</p>{listing}</section>"
    )


def _unchecked(report: Report) -> str:
    unchecked = report.diagnosis.unchecked
    if not unchecked:
        body = "<p>Every rule had the records it needs.</p>"
    else:
        body = "<ul>" + "".join(
            f"<li><code>{_esc(rule)}</code>: {_esc(reason)}</li>"
            for rule, reason in unchecked.items()
        ) + "</ul>"
    return f'<section id="unchecked"><h2>Not checked</h2>{body}</section>'


def _load_plots(report: Report) -> tuple[dict[str, bytes], dict[str, str]]:
    """The report's PNGs as bytes, and the reason for each one that cannot be read."""
    images, unreadable = {}, {}
    for name, path in report.plots.items():
        try:
            images[name] = Path(path).read_bytes()
        except OSError as error:
            unreadable[name] = f"cannot read {path}: {error}"
    return images, unreadable


def _placement(tables: list[Table], plots: Iterable[str]) -> dict[str | None, list[str]]:
    """table name -> the plots shown beside it; None -> plots with no table to sit by."""
    present = {table.name for table in tables}
    placed: dict[str | None, list[str]] = {}
    for name in plots:
        target = next((t for t in PLOT_PLACES.get(name, ()) if t in present), None)
        placed.setdefault(target, []).append(name)
    return placed


def _evidence_tables(report: Report, images: dict[str, bytes]) -> str:
    placed = _placement(report.tables, images)
    figures = {
        name: _figure(images[name], name, Path(report.plots[name]).name) for name in images
    }
    out = ['<section id="evidence"><h2>Evidence</h2>']
    for table in report.tables:
        note = extra_rows_note(table)
        out.append(
            f'<section class="table" id="table-{_esc(table.name)}"><h3>{_esc(table.title)}</h3>'
            f'<div class="pair"><div class="data">{_table(table.columns, table.rows[:MAX_ROWS])}'
            + (f'<p class="note">{_esc(note)}</p>' if note else "")
            + "</div>"
            + "".join(figures[name] for name in placed.get(table.name, []))
            + "</div></section>"
        )
    if None in placed:
        out.append('<h3>Other plots</h3><div class="pair">')
        out += [figures[name] for name in placed[None]]
        out.append("</div>")
    out.append("</section>")
    return "".join(out)


def _left_out(report: Report, unreadable: dict[str, str]) -> str:
    lines = [f"table {name}: {reason}" for name, reason in report.absent.items()]
    skipped = {**report.plots_skipped, **unreadable}
    lines += [f"plot {name}: {reason}" for name, reason in skipped.items()]
    if not lines:
        return ""
    items = "".join(f"<li>{_esc(line)}</li>" for line in lines)
    return f'<section id="absent"><h2>Not shown</h2><ul class="note">{items}</ul></section>'


def render_html(report: Report) -> str:
    """The report as one self-contained page; its plots are read from `report.plots`."""
    summary = report.summary
    images, unreadable = _load_plots(report)
    pairs: list[tuple[str, Any]] = list(summary.pairs())
    pairs += [("warning", warning) for warning in summary.warnings]
    body = (
        f"<header><h1>riswb report: {_esc(summary.id)}</h1>"
        f'<p class="meta">{_badge(summary.status, summary.status)} '
        f"{_esc(fmt(summary.steps))} steps · {_esc(fmt_duration(summary.duration_s))}</p>"
        "</header>\n"
        + _findings(report)
        + "\n"
        + _unchecked(report)
        + f'\n<section id="summary"><h2>Run</h2>{_key_values(pairs)}</section>\n'
        + _evidence_tables(report, images)
        + "\n"
        + _left_out(report, unreadable)
    )
    return _page(f"riswb report: {summary.id}", body)


def render_comparison_html(comparison: Comparison, overlay: bytes | None) -> str:
    """Two runs on one page: findings new/resolved/both, metrics side by side, the overlay."""
    if comparison.findings:
        rows = "".join(
            f"<tr><td>{_badge(row.change, row.change)}</td><td><code>{_esc(row.id)}</code></td>"
            f"<td>{_esc(fmt(row.severity_a))}</td><td>{_esc(fmt(row.severity_b))}</td>"
            f"<td>{_esc(row.title)}</td></tr>"
            for row in comparison.findings
        )
        head = "".join(f"<th>{c}</th>" for c in ("change", "id", "A", "B", "title"))
        findings = f"<table><thead><tr>{head}</tr></thead><tbody>{rows}</tbody></table>"
    else:
        findings = '<p class="ok">No findings in either run.</p>'
    metrics = _table(
        ("metric", "A", "B", "B − A"),
        ([m.metric, m.a, m.b, m.delta] for m in comparison.metrics),
    )
    figure = _figure(overlay, "overlay", "total loss, both runs") if overlay else ""
    body = (
        "<header><h1>riswb compare</h1>"
        f'<p class="meta">A = <code>{_esc(comparison.run_a)}</code> (baseline) · '
        f"B = <code>{_esc(comparison.run_b)}</code> (candidate)</p></header>\n"
        f'<section id="findings"><h2>Findings (A → B)</h2>{findings}</section>\n'
        f'<section id="metrics"><h2>Metrics</h2><div class="pair"><div class="data">{metrics}'
        f"</div>{figure}</div></section>"
    )
    return _page(f"riswb compare: {comparison.run_a} vs {comparison.run_b}", body)
