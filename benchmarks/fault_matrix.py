"""The fault matrix: run the bug zoo (riswb.reference.faults); how well do the rules name it?

    python benchmarks/fault_matrix.py                 # every training fault + the clean run
    python benchmarks/fault_matrix.py --faults step-gate,detached-term --format json
    python benchmarks/fault_matrix.py --samples 256   # as `riswb overfit --samples 256 --inject`

Each training fault (and the clean trainer) is trained with the zoo recipe
(`riswb.reference.faults.zoo_config`: small preset, 128 scenes, batch 32, 48 steps, every probe on),
then diagnosed (with --samples N: the `riswb overfit --samples N` recipe instead, default
epochs and default probes — 200 steps at 256). Printed: a markdown table fault → expected
finding(s) → what was found → detection latency, and the rules' recall and precision.

Detection latency, two numbers per expected finding:

* first evidence — the step of the first record or event the finding cites as evidence
  (its `first_step`, the start of its first step range, the coverage audit, ...);
* diagnosable at — the smallest logged step S such that `diagnose()` on the run cut at S
  (every record and event with step ≤ S) already names the finding: what an online
  monitor reading the log as it grows would see. It includes the evidence a rule needs
  before it speaks (e.g. step-cadence waits for 10 loss calls; dead-params judges a
  50-backward window, or the end of a shorter run).

Recall = expected findings named (error or warning) / expected findings, over the training
faults. Precision = (run, finding id) pairs at error or warning severity that are expected
or also-legitimate for the fault (`Fault.also`: symptoms the fault really causes, e.g.
params-not-moving when a group has lr 0) / all (run, id) pairs at error or warning
severity, over the faults and the clean run (where every error or warning is a false
alarm). Several findings with the same id in one run count once. "Strict" precision counts
only `expects` as correct.
"""

from __future__ import annotations

import argparse
import json
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

from riswb.commands.training import overfit_config
from riswb.diagnose.gate import gate
from riswb.diagnose.rules import diagnose
from riswb.reference.faults import FAULTS, build_trainer, run_fault
from riswb.runlog import Run, read_run

SEVERE = ("error", "warning")


# --------------------------------------------------------------------------- latency
def _first_in(value: Any) -> int | None:
    """The first step a piece of evidence names: an int, [first, last], a list of those."""
    if isinstance(value, bool):
        return None
    if isinstance(value, int):
        return value
    if isinstance(value, (list, tuple)) and value:
        if all(isinstance(v, int) and not isinstance(v, bool) for v in value):
            return min(value) if len(value) != 2 else value[0]
        found = [s for s in (_first_in(v) for v in value) if s is not None]
        return min(found) if found else None
    if isinstance(value, dict) and "step" in value:
        return _first_in(value["step"])
    return None


_SPECIFIC = ("first_step", "audit_step", "dead_since_step", "missed_steps", "event_steps",
             "input_steps", "no_grad_ranges", "still_ranges", "zero_ranges",
             "off_cadence_ranges", "empty_ranges", "first_steps")
_GENERIC = ("steps", "first_eval", "last_eval", "best_eval")
_NESTED = ("groups", "terms", "modules_with_zero_grad_norm")


def first_evidence_step(evidence: dict[str, Any]) -> int | None:
    """The earliest step a finding's evidence points at: the minimum over its specific
    step keys (first_step, step ranges, dead_since_step, ...) and nested entries; else its
    overall step span or evaluation; None when it names no step at all."""
    found = []
    for key in _SPECIFIC:
        value = evidence.get(key)
        if key == "dead_since_step" and isinstance(value, dict):
            found += [int(v) for v in value.values()]
        elif value is not None:
            found.append(_first_in(value))
    for key in _NESTED:
        value = evidence.get(key)
        items = value.values() if isinstance(value, dict) else value or []
        found += [first_evidence_step(v) for v in items if isinstance(v, dict)]
    found = [f for f in found if f is not None]
    if found:
        return min(found)
    for key in _GENERIC:
        step = _first_in(evidence.get(key))
        if step is not None:
            return step
    return None


def cut(run: Run, step: int) -> Run:
    """The run as it stood once every record up to `step` was written."""
    def keep(records: list[dict]) -> list[dict]:
        return [r for r in records if int(r.get("step", 0)) <= step]

    return Run(path=run.path, manifest=run.manifest, warnings=[],
               _scalar_records=keep(run._scalar_records),
               _spectra_records=keep(run._spectra_records),
               _event_records=keep(run._event_records))


def diagnosable_at(run: Run, rule_id: str) -> int | None:
    """The smallest logged step at which diagnose() on the cut run names `rule_id`."""
    steps = sorted({int(r.get("step", 0)) for stream in
                    (run._scalar_records, run._spectra_records, run._event_records)
                    for r in stream})
    for step in steps:
        found = diagnose(cut(run, step), rules=[rule_id]).findings
        if any(f.severity in SEVERE for f in found):
            return step
    return None


# --------------------------------------------------------------------------- the zoo
def evaluate(name: str | None, runs_dir: Path, samples: int | None = None) -> dict[str, Any]:
    started = time.perf_counter()
    if samples is None:
        result = run_fault(name, runs_dir)
    else:
        config = overfit_config(samples=samples, epochs=None, preset="small", seed=0,
                                inject=name, device="cpu")
        result = build_trainer(config, runs_dir=runs_dir).run()
    seconds = time.perf_counter() - started
    return judge(name, read_run(result.path), seconds, result.steps)


def judge(name: str | None, run: Run, seconds: float, steps: int) -> dict[str, Any]:
    """Diagnose a zoo run of fault `name` (None: clean) and score it."""
    diagnosis = diagnose(run)
    verdict = gate(run, diagnosis=diagnosis)
    fault = FAULTS[name] if name else None
    expects = fault.expects if fault else ()
    also = fault.also if fault else ()
    severe: dict[str, Any] = {}
    for finding in diagnosis.findings:  # ranked: the first of an id is its worst
        if finding.severity in SEVERE and finding.id not in severe:
            severe[finding.id] = finding
    latency = {}
    for rule_id in expects:
        finding = severe.get(rule_id)
        first = first_evidence_step(finding.evidence) if finding else None
        diag = diagnosable_at(run, rule_id) if finding else None
        latency[rule_id] = {
            # evidence that names no step (e.g. "every weight is 0"): the first record that
            # lets the rule speak is the first evidence
            "first_evidence": first if first is not None else diag,
            "diagnosable_at": diag,
            "severity": finding.severity if finding else None,
        }
    return {
        "fault": name or "(clean)",
        "failure": fault.failure if fault else "",
        "run": str(run.path),
        "seconds": round(seconds, 1),
        "steps": steps,
        "gate_passed": verdict.passed,
        "gate_should_fail": bool(fault and fault.gate_fails),
        "expects": list(expects),
        "found": {i: f.severity for i, f in severe.items()},
        "expected_found": [i for i in expects if i in severe],
        "also_found": [i for i in severe if i in also and i not in expects],
        "unexpected": [i for i in severe if i not in expects and i not in also],
        "latency": latency,
    }


def summary(rows: list[dict[str, Any]]) -> dict[str, Any]:
    expected = sum(len(r["expects"]) for r in rows)
    named = sum(len(r["expected_found"]) for r in rows)
    flagged = sum(len(r["found"]) for r in rows)
    legit = sum(len(r["expected_found"]) + len(r["also_found"]) for r in rows)
    strict = sum(len(r["expected_found"]) for r in rows)
    gate_ok = sum((not r["gate_passed"]) == r["gate_should_fail"] for r in rows)
    return {
        "recall": named / expected if expected else None,
        "recall_counts": [named, expected],
        "precision": legit / flagged if flagged else None,
        "precision_counts": [legit, flagged],
        "strict_precision": strict / flagged if flagged else None,
        "gate_as_intended": [gate_ok, len(rows)],
    }


def _step(value: int | None) -> str:
    return "—" if value is None else str(value)


def markdown(rows: list[dict[str, Any]], stats: dict[str, Any]) -> str:
    lines = [
        "| fault | failures | expected finding(s) | found (severity) | first evidence at step "
        "| diagnosable at step | other findings | gate |",
        "|---|---|---|---|---|---|---|---|",
    ]
    for r in rows:
        expected = ", ".join(f"`{i}`" for i in r["expects"]) or "—"
        found = ", ".join(f"{i} ({r['found'][i]})" for i in r["expected_found"]) or (
            "**none**" if r["expects"] else "—")
        first = ", ".join(_step(r["latency"][i]["first_evidence"]) for i in r["expects"]) or "—"
        diag = ", ".join(_step(r["latency"][i]["diagnosable_at"]) for i in r["expects"]) or "—"
        other = ", ".join([*(f"{i}*" for i in r["also_found"]),
                           *(f"{i} ({r['found'][i]})" for i in r["unexpected"])]) or "—"
        gate_cell = "pass" if r["gate_passed"] else "FAIL"
        lines.append(f"| `{r['fault']}` | {r['failure'].replace('docs/failures.md ', '') or '—'} "
                     f"| {expected} | {found} | {first} | {diag} | {other} | {gate_cell} |")
    rc, ec = stats["recall_counts"]
    pc, fc = stats["precision_counts"]
    lines += [
        "",
        f"Recall: {rc}/{ec} expected findings named = {stats['recall']:.2f}. "
        f"Precision: {pc}/{fc} error/warning findings (per run and id) expected or "
        f"also-legitimate (marked *) = {stats['precision']:.2f} "
        f"(strict, expected only: {stats['strict_precision']:.2f}). "
        f"Gate verdict as intended on {stats['gate_as_intended'][0]}/"
        f"{stats['gate_as_intended'][1]} runs.",
    ]
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--faults", help="comma-separated fault names (default: all training "
                        "faults)")
    parser.add_argument("--no-clean", action="store_true", help="skip the clean run")
    parser.add_argument("--runs-dir", type=Path, help="keep the runs here (default: a "
                        "temporary directory)")
    parser.add_argument("--samples", type=int, help="train as `riswb overfit --samples N` "
                        "(default epochs and probes) instead of the 48-step zoo recipe")
    parser.add_argument("--format", choices=("markdown", "json"), default="markdown")
    args = parser.parse_args(argv)
    names = ([n.strip() for n in args.faults.split(",") if n.strip()] if args.faults
             else [n for n, f in FAULTS.items() if f.trains])
    unknown = [n for n in names if n not in FAULTS]
    if unknown:
        parser.error(f"unknown fault(s): {', '.join(unknown)}")
    order: list[str | None] = ([] if args.no_clean else [None]) + names
    with tempfile.TemporaryDirectory(prefix="riswb-zoo-") as tmp:
        runs_dir = args.runs_dir or Path(tmp)
        rows = []
        for name in order:
            print(f"running {name or '(clean)'} ...", file=sys.stderr, flush=True)
            rows.append(evaluate(name, runs_dir, args.samples))
    stats = summary(rows)
    if args.format == "json":
        print(json.dumps({"rows": rows, "summary": stats}, indent=2))
    else:
        print(markdown(rows, stats))
        litmus = [f for f in FAULTS.values() if not f.trains]
        if litmus:
            print("\nCrash signatures (litmus, not trained): " + "; ".join(
                f"`{f.name}` → {', '.join(f.litmus)}" for f in litmus))
    return 0


if __name__ == "__main__":
    sys.exit(main())
