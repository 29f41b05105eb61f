"""The docs and the code agree: every citation of docs/failures.md #N and docs/design.md §N
resolves to a numbered item or section, no module cites a file outside the repository, and
every finding id has an entry in docs/findings.md.

Citations are read in the forms the code uses: "docs/failures.md #7", "#7, 18", "#10/11/14",
"#19-20" (a range), "#16-like", "docs/failures.md 7, 16" (the fault registry),
"docs/design.md §5, §6".
"""

from __future__ import annotations

import re
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
DOCS = ROOT / "docs"
SCANNED = ("riswb", "tests", "benchmarks", "probes")
SCANNED_FILES = ("README.md",)
SUFFIXES = {".py", ".md", ".toml", ".txt", ".rst"}

_LIST = r"\d+(?:[ \t]*(?:,|/|-|–|and)[ \t]*[#§]?\d+)*"
FAILURE_REF = re.compile(
    r"docs/failures\.md(?:[ \t]+(?:items?[ \t]+)?|[ \t]*)#?[ \t]*(" + _LIST + r")"
)
DESIGN_REF = re.compile(r"docs/design\.md[ \t]*§[ \t]*(" + _LIST + r")")
INTERNALS_REF = re.compile(r"internals\.md[ \t]*§[ \t]*(" + _LIST + r")")

FAILURE_ITEM = re.compile(r"^##[ \t]+(\d+)\.[ \t]+\S", re.M)
DESIGN_SECTION = re.compile(r"^##[ \t]+§(\d+)\b", re.M)
INTERNALS_SECTION = re.compile(r"^##[ \t]+(\d+)\.[ \t]+\S", re.M)
FINDING_ENTRY = re.compile(r"^##[ \t]+`?([a-z][a-z0-9-]*)`?[ \t]*$", re.M)

# A cited markdown file must exist in the repository (relative to its root, to docs/ or to
# the citing file); a path that climbs out of it, or a document cited by a bare upper-case
# name and a section or item number, cannot be opened by a user.
MD_PATH = re.compile(r"(?<![\w./-])((?:\.{1,2}/|/)?[\w./-]*[\w-]\.md)\b")
BARE_DOC = re.compile(r"\b[A-Z]{3,}[ \t]*(?:§|#)[ \t]*\d")


def outside(line: str, here: Path) -> list[str]:
    """The citations in `line` (of a file in folder `here`) that point outside the repo."""
    bad = BARE_DOC.findall(line)
    for cited in MD_PATH.findall(line):
        bases = (ROOT, DOCS, here)
        if cited.startswith(("../", "/")) or not any((b / cited).is_file() for b in bases):
            bad.append(cited)
    return bad


def numbers(spec: str) -> list[int]:
    """"7, 18" -> [7, 18]; "10/11/14" -> [10, 11, 14]; "19-20" -> [19, 20]; "§5, §6" -> [5, 6]."""
    out: list[int] = []
    for part in re.split(r"[ \t]*(?:,|/|and)[ \t]*", spec.replace("§", "").replace("#", "")):
        bounds = [int(b) for b in re.split(r"[ \t]*[-–][ \t]*", part.strip()) if b]
        if len(bounds) == 2 and bounds[0] <= bounds[1]:
            out.extend(range(bounds[0], bounds[1] + 1))
        else:
            out.extend(bounds)
    return out


def refs(pattern: re.Pattern, text: str) -> list[tuple[int, int]]:
    """(line, number) for every number cited by `pattern` in `text`."""
    found = []
    for match in pattern.finditer(text):
        line = text.count("\n", 0, match.start()) + 1
        found.extend((line, n) for n in numbers(match.group(1)))
    return found


def _files() -> list[Path]:
    files = [ROOT / name for name in SCANNED_FILES if (ROOT / name).is_file()]
    for folder in SCANNED:
        base = ROOT / folder
        if base.is_dir():
            files.extend(p for p in sorted(base.rglob("*"))
                         if p.is_file() and p.suffix in SUFFIXES and "__pycache__" not in p.parts)
    return files


def _rel(path: Path) -> str:
    return path.relative_to(ROOT).as_posix()


def _read(path: Path) -> str:
    return path.read_text(encoding="utf-8", errors="replace")


def _numbered(path: Path, pattern: re.Pattern) -> set[int]:
    return {int(n) for n in pattern.findall(_read(path))}


FAILURE_ITEMS = _numbered(DOCS / "failures.md", FAILURE_ITEM)
DESIGN_SECTIONS = _numbered(DOCS / "design.md", DESIGN_SECTION)
INTERNALS_SECTIONS = _numbered(DOCS / "internals.md", INTERNALS_SECTION)


# ------------------------------------------------------------------ the parser itself
@pytest.mark.parametrize(("text", "expected"), [
    ("(docs/failures.md #7, 18).", [7, 18]),
    ("docs/failures.md #10/11/14):", [10, 11, 14]),
    ("(docs/failures.md #19-20). Here", [19, 20]),
    ("docs/failures.md #16-like: peak", [16]),
    ("(docs/failures.md #7, 8, 10, 16)", [7, 8, 10, 16]),
    ('f"{_F} 7, 16"'.replace("{_F}", "docs/failures.md"), [7, 16]),
    ("docs/failures.md item it reproduces", []),
    ("the docs/failures.md #1 bug: backward", [1]),
])
def test_failure_references_are_parsed(text, expected):
    assert [n for _, n in refs(FAILURE_REF, text)] == expected


def test_design_references_are_parsed():
    text = "(docs/design.md §5, §6) and docs/design.md §10: budgets; docs/design.md §2, §9):"
    assert [n for _, n in refs(DESIGN_REF, text)] == [5, 6, 10, 2, 9]


# ------------------------------------------------------------------ the docs are numbered
def test_failure_catalogue_is_numbered_without_gaps():
    assert FAILURE_ITEMS, "docs/failures.md has no '## N. title' items"
    assert FAILURE_ITEMS == set(range(1, max(FAILURE_ITEMS) + 1))
    assert max(FAILURE_ITEMS) >= 25


def test_design_has_sections_1_to_10():
    assert DESIGN_SECTIONS >= set(range(1, 11)), sorted(DESIGN_SECTIONS)


# ------------------------------------------------------------------ every citation resolves
def _unresolved(pattern: re.Pattern, known: set[int]) -> list[str]:
    bad = []
    for path in _files():
        for line, n in refs(pattern, _read(path)):
            if n not in known:
                bad.append(f"{_rel(path)}:{line}: #{n}")
    return bad


def test_failure_citations_resolve():
    assert not _unresolved(FAILURE_REF, FAILURE_ITEMS)


def test_design_citations_resolve():
    assert not _unresolved(DESIGN_REF, DESIGN_SECTIONS)


def test_internals_citations_resolve():
    assert not _unresolved(INTERNALS_REF, INTERNALS_SECTIONS)


def test_citations_inside_the_docs_resolve():
    """The docs cite each other too (findings.md → failures.md, design.md → internals.md)."""
    bad = []
    for path in sorted(DOCS.glob("*.md")):
        text = _read(path)
        for pattern, known in ((FAILURE_REF, FAILURE_ITEMS), (DESIGN_REF, DESIGN_SECTIONS),
                               (INTERNALS_REF, INTERNALS_SECTIONS)):
            bad += [f"{_rel(path)}:{line}: {n}" for line, n in refs(pattern, text)
                    if n not in known]
    assert not bad


def test_fault_registry_cites_existing_items():
    from riswb.reference.faults import FAULTS

    bad = []
    for fault in FAULTS.values():
        cited = refs(FAILURE_REF, fault.failure) + refs(DESIGN_REF, fault.failure)
        assert cited, f"fault {fault.name}: failure {fault.failure!r} cites nothing"
        if "design.md" in fault.failure:
            bad += [f"{fault.name}: §{n}" for _, n in cited if n not in DESIGN_SECTIONS]
        else:
            bad += [f"{fault.name}: #{n}" for _, n in cited if n not in FAILURE_ITEMS]
    assert not bad


def test_every_fault_is_in_the_catalogue():
    from riswb.reference.faults import FAULTS

    text = _read(DOCS / "failures.md") + _read(DOCS / "findings.md")
    assert not [name for name in FAULTS if f"`{name}`" not in text]


# ------------------------------------------------------------------ nothing points outside
@pytest.mark.parametrize("folder", ["riswb", "benchmarks", "probes", "docs"])
def test_no_citation_outside_the_repository(folder):
    bad = []
    for path in sorted((ROOT / folder).rglob("*")):
        if not path.is_file() or path.suffix not in SUFFIXES:
            continue
        for line_no, line in enumerate(_read(path).splitlines(), 1):
            if outside(line, path.parent):
                bad.append(f"{_rel(path)}:{line_no}: {line.strip()[:80]}")
    assert not bad


# ------------------------------------------------------------------ findings
def test_every_finding_id_has_an_entry():
    from riswb.diagnose.rules import RULES

    entries = set(FINDING_ENTRY.findall(_read(DOCS / "findings.md")))
    assert not sorted(set(RULES) - entries)


def test_outside_citations_are_seen():
    here = ROOT / "riswb"
    for text in ("see ../notes/PLAN.md", "NOTES.md #3", "(PLAN §5)", "NOTES #12"):
        assert outside(text, here), text
    assert not outside("docs/failures.md #3, docs/design.md §5 and README.md", here)
