"""The package's layering, read from the imports themselves (docs/design.md §1).

Only reference/, commands/, cli.py and bench.py may import riswb.reference (the RIS
pipeline is a user of the workbench, never a dependency of it); diagnose/ judges run
directories and never imports the instrumentation; no module grows past 500 lines.
"""

from __future__ import annotations

import ast
from pathlib import Path

import pytest

PACKAGE = Path(__file__).resolve().parents[1] / "riswb"
MAX_LINES = 500


def _modules() -> list[Path]:
    return sorted(PACKAGE.rglob("*.py"))


def _relative(path: Path) -> str:
    return path.relative_to(PACKAGE).as_posix()


def _imported(source: str, package: list[str]) -> set[str]:
    """Absolute module names `source` imports (relative imports resolved against `package`)."""
    names: set[str] = set()
    for node in ast.walk(ast.parse(source)):
        if isinstance(node, ast.Import):
            names.update(alias.name for alias in node.names)
        elif isinstance(node, ast.ImportFrom):
            base = node.module or ""
            if node.level:
                base = ".".join(package[: len(package) - node.level + 1] + ([base] if base else []))
            names.add(base)
            names.update(f"{base}.{alias.name}" for alias in node.names)
    return names


def _imports_under(path: Path, prefix: str) -> list[str]:
    package = ["riswb", *path.relative_to(PACKAGE).parent.parts]
    names = _imported(path.read_text(), package)
    return sorted(n for n in names if n == prefix or n.startswith(prefix + "."))


MAY_IMPORT_REFERENCE = ("reference/", "commands/", "cli.py", "bench.py")


@pytest.mark.parametrize("path", _modules(), ids=_relative)
def test_only_the_pipeline_side_imports_reference(path):
    if _relative(path).startswith(MAY_IMPORT_REFERENCE):
        return
    assert not _imports_under(path, "riswb.reference"), f"{_relative(path)} imports the pipeline"


@pytest.mark.parametrize(
    "path", [p for p in _modules() if _relative(p).startswith("diagnose/")], ids=_relative
)
def test_diagnose_never_imports_the_instrumentation(path):
    assert not _imports_under(path, "riswb.instrument"), f"{_relative(path)} reads a live run"


@pytest.mark.parametrize("path", _modules(), ids=_relative)
def test_no_module_over_the_line_budget(path):
    lines = len(path.read_text().splitlines())
    assert lines <= MAX_LINES, f"{_relative(path)} has {lines} lines (budget {MAX_LINES})"


def test_the_import_reader_resolves_every_form():
    """The rule is not vacuous: absolute, from- and relative imports are all seen."""
    source = (
        "import riswb.instrument.workbench\n"
        "from riswb.reference import model\n"
        "from ..probes import x\n"
    )
    names = _imported(source, ["riswb", "diagnose"])
    assert {"riswb.instrument.workbench", "riswb.reference.model", "riswb.probes.x"} <= names
