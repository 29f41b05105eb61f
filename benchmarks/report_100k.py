"""Budget check (docs/design.md §10): `riswb report` on a 100k-step run in ≤ 3 s.

Synthesizes a realistic run in a temp dir with the test suite's builder (tests/conftest.py:
every kind of internals.md §3 logged every 10 steps as the probes do, term gradients on
sampled steps, evaluations with spectra, coverage/checkpoint/swap events), then times
`riswb report RUN` end to end in-process (read_run + diagnose + tables + plots + render)
through the real CLI, and prints the time with a per-stage breakdown.

    python benchmarks/report_100k.py [--steps 100000] [--every 10] [--budget 3] [--keep DIR]

Exit status 1 when over budget.
"""

from __future__ import annotations

import argparse
import importlib.util
import shutil
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]


def _builder():
    spec = importlib.util.spec_from_file_location("riswb_test_conftest", ROOT / "tests/conftest.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module.build_synthetic_run


def _stages(path: Path) -> dict[str, float]:
    """Time each stage on its own (a second, warm pass: imports already done)."""
    from riswb.diagnose.plots import write_plots
    from riswb.diagnose.report import summarize
    from riswb.diagnose.rules import Thresholds, diagnose
    from riswb.diagnose.tables import build_tables
    from riswb.runlog import read_run

    out = {}
    start = time.perf_counter()
    run = read_run(path)
    run._by_kind  # noqa: B018  (group the scalars: part of reading)
    out["read_run"] = time.perf_counter() - start
    start = time.perf_counter()
    diagnose(run)
    out["diagnose"] = time.perf_counter() - start
    start = time.perf_counter()
    summarize(run)
    build_tables(run, Thresholds())
    out["tables"] = time.perf_counter() - start
    start = time.perf_counter()
    write_plots(run)
    out["plots"] = time.perf_counter() - start
    return out


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--steps", type=int, default=100_000)
    parser.add_argument("--every", type=int, default=10)
    parser.add_argument("--budget", type=float, default=3.0)
    parser.add_argument("--keep", type=Path, default=None, help="write the run here and keep it")
    args = parser.parse_args(argv)

    sys.path.insert(0, str(ROOT))
    root = args.keep or Path(tempfile.mkdtemp(prefix="riswb-bench-"))
    try:
        start = time.perf_counter()
        path = _builder()(root, steps=args.steps, every=args.every, name="bench100k")
        size = sum(f.stat().st_size for f in path.glob("*.jsonl")) / 1e6
        lines = sum(1 for _ in open(path / "scalars.jsonl", encoding="utf-8"))
        print(
            f"synthesized {args.steps} steps ({lines} scalar records, {size:.1f} MB) "
            f"in {time.perf_counter() - start:.1f}s: {path}"
        )

        import os
        import resource

        from typer.testing import CliRunner

        from riswb.cli import app

        def cpu() -> float:
            own = resource.getrusage(resource.RUSAGE_SELF)
            kids = resource.getrusage(resource.RUSAGE_CHILDREN)
            return own.ru_utime + own.ru_stime + kids.ru_utime + kids.ru_stime

        cpu_start, start = cpu(), time.perf_counter()
        result = CliRunner().invoke(app, ["report", str(path)])
        elapsed = time.perf_counter() - start
        cpu_used = cpu() - cpu_start
        if result.exit_code != 0:
            print(result.output)
            print(f"riswb report failed with exit code {result.exit_code}")
            return 2
        plots = sorted(p.name for p in (path / "plots").glob("*.png"))
        print(f"riswb report {path.name}: {elapsed:.2f}s end to end (budget {args.budget:.1f}s)")
        load = os.getloadavg()[0]
        print(f"  cpu time {cpu_used:.2f}s (this process + plot workers); load average {load:.1f}")
        print(f"  plots: {', '.join(plots)}")
        stages = _stages(path)
        print("  warm stages: " + ", ".join(f"{k} {v:.2f}s" for k, v in stages.items()))
        over = elapsed > args.budget
        print("OVER BUDGET" if over else "within budget")
        return 1 if over else 0
    finally:
        if args.keep is None:
            shutil.rmtree(root, ignore_errors=True)


if __name__ == "__main__":
    sys.exit(main())
