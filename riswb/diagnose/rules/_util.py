"""Helpers shared by the rules: reading kinds tolerantly, step ranges, probe names.

Everything here is vectorized: a rule touches each frame a constant number of times, so a
100k-step run costs milliseconds per rule.
"""

from __future__ import annotations

import functools
import math
import re
import warnings
from collections.abc import Iterable
from typing import Any

import numpy as np
import pandas as pd

from riswb.diagnose.frames import col, value_columns
from riswb.probes import BUILTIN, default_probes
from riswb.probes.term_keys import split_pair_key


class Unchecked(Exception):  # noqa: N818  (a reason, not an error)
    """Raised by a rule when the run lacks the records it needs; `reason` says which."""

    def __init__(self, reason: str):
        super().__init__(reason)
        self.reason = reason


# -- reading -------------------------------------------------------------------------------


def frame_of(run, kind: str) -> pd.DataFrame:
    """Scalars of one kind (possibly empty: then only a `step` column)."""
    return run.kind(kind)


def need(run, kind: str, *, any_of: Iterable[str] = (), why: str = "") -> pd.DataFrame:
    """The frame of `kind`, or Unchecked when it is absent or lacks all of `any_of`."""
    frame = run.kind(kind)
    if frame.empty:
        raise Unchecked(f"no `{kind}` records" + (f" ({why})" if why else ""))
    wanted = list(any_of)
    if wanted and not any(col in frame.columns for col in wanted):
        raise Unchecked(f"`{kind}` records lack {', '.join(wanted)}")
    return frame


def steps_of(frame: pd.DataFrame) -> np.ndarray:
    return pd.to_numeric(frame["step"], errors="coerce").fillna(-1).to_numpy(dtype=np.int64)


def matrix(frame: pd.DataFrame, columns: list[str]) -> np.ndarray:
    """Columns as one float64 matrix (rows = records)."""
    if not columns:
        return np.empty((len(frame), 0))
    return frame[columns].apply(pd.to_numeric, errors="coerce").to_numpy(dtype=float)


def last_values(frame: pd.DataFrame, columns: list[str]) -> dict[str, float]:
    """The last non-missing value of each column (for kinds written only when they change)."""
    out = {}
    for name in columns:
        series = pd.to_numeric(frame[name], errors="coerce").dropna()
        if len(series):
            out[name] = float(series.iloc[-1])
    return out


def nanmedian(values: np.ndarray, axis: int | None = None):
    """np.nanmedian without the all-NaN RuntimeWarning (an all-NaN column gives NaN)."""
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", RuntimeWarning)
        return np.nanmedian(values, axis=axis)


def events(run, name: str) -> list[dict]:
    return run.events_of(name)


def intent_accumulation(run) -> tuple[int, bool]:
    """(optimizer steps expected per this many loss calls, whether the manifest said so)."""
    intent = run.manifest.get("intent")
    if isinstance(intent, dict) and intent.get("accumulation"):
        try:
            return max(1, int(intent["accumulation"])), True
        except (TypeError, ValueError):
            pass
    return 1, False


def scale_invariant_optimizers(run) -> list[str]:
    """Short class names of the run's optimizers when every one divides its update by a
    running gradient magnitude (manifest `optimizers`, riswb/instrument/optimizer_info.py:
    Adam-type, RMSprop, Adagrad, ...), else []: a constant gradient rescale barely moves
    such an update."""
    described = run.manifest.get("optimizers")
    if not isinstance(described, list) or not described or not all(
            isinstance(d, dict) and d.get("scale_invariant") is True for d in described):
        return []
    return list(dict.fromkeys(str(d.get("class", "?")).rsplit(".", 1)[-1] for d in described))


def pair_columns(frame: pd.DataFrame) -> list[tuple[str, str, str]]:
    """(key, a, b) for every term-pair column of a `term_cosine*` frame. Keys are escaped
    (docs/internals.md §3: a `|` inside a name is `\\|`), so they are split by the probes'
    own inverse, never at the first `|`."""
    out = []
    for key in frame.columns:
        if key == "step" or "|" not in key:
            continue
        try:
            a, b = split_pair_key(key)
        except ValueError:
            continue
        out.append((key, a, b))
    return out


def totals(frame: pd.DataFrame, columns: Iterable[str], *, cumulative: bool) -> dict[str, float]:
    """Run totals of count columns: the last value of cumulative counts (`cadence`), else
    the sum of per-interval counts (`mode`, `nonfinite`, `grad_step`); absent columns read 0."""
    out = {}
    for name in columns:
        if name not in frame.columns:
            out[name] = 0.0
            continue
        series = pd.to_numeric(frame[name], errors="coerce").dropna()
        if not len(series):
            out[name] = 0.0
        else:
            out[name] = float(series.iloc[-1] if cumulative else series.sum())
    return out


def is_reference_run(run) -> bool:
    """Whether the run is the reference RIS pipeline's (`riswb overfit` / `riswb train`): its
    TrainConfig is the manifest's config (preset, scene count, loss weights). Fix texts cite
    that pipeline's own history (R_samp, eigh, lam_cov) only there; foreign loops get
    generic advice."""
    config = run.manifest.get("config")
    return isinstance(config, dict) and {"preset", "train_scenes", "weights"} <= set(config)


def hint(run, text: str) -> str:
    """`text` (a pipeline-specific example, with its leading space) on reference runs."""
    return text if is_reference_run(run) else ""


def world_size(run) -> int:
    """Processes in the run's distributed job (manifest `distributed.world_size`), 1 if none."""
    info = run.manifest.get("distributed")
    try:
        return max(1, int(info.get("world_size", 1))) if isinstance(info, dict) else 1
    except (TypeError, ValueError):
        return 1


def scaler_calibration(run, th) -> int:
    """GradScaler skips that count as scale calibration: up to `scaler_calibration_skips`,
    but none when the skipping lasted into the run's last interval with step attempts (NaN
    on every step is not calibration)."""
    nf = run.kind("nonfinite")
    if nf.empty or "step_attempts" not in nf.columns or "attempts_skipped" not in nf.columns:
        return 0
    attempts = pd.to_numeric(nf["step_attempts"], errors="coerce").fillna(0).to_numpy()
    skipped = pd.to_numeric(nf["attempts_skipped"], errors="coerce").fillna(0).to_numpy()
    active = np.flatnonzero(attempts > 0)
    if not len(active) or skipped[active[-1]] >= attempts[active[-1]]:
        return 0
    return int(th.scaler_calibration_skips)


# -- evidence ------------------------------------------------------------------------------


def step_ranges(steps: np.ndarray, mask: np.ndarray, limit: int = 10) -> list[list[int]]:
    """Runs of consecutive records where `mask` holds, as [first_step, last_step] pairs."""
    mask = np.asarray(mask, dtype=bool)
    if not mask.any():
        return []
    idx = np.flatnonzero(mask)
    breaks = np.flatnonzero(np.diff(idx) > 1)
    starts = np.concatenate(([idx[0]], idx[breaks + 1]))
    ends = np.concatenate((idx[breaks], [idx[-1]]))
    steps = np.asarray(steps)
    pairs = zip(starts[:limit], ends[:limit], strict=True)
    return [[int(steps[s]), int(steps[e])] for s, e in pairs]


def n_ranges(mask: np.ndarray) -> int:
    mask = np.asarray(mask, dtype=bool)
    if not mask.any():
        return 0
    return int(np.count_nonzero(np.diff(np.flatnonzero(mask)) > 1)) + 1


def span(steps: np.ndarray) -> list[int]:
    steps = np.asarray(steps)
    return [int(steps.min()), int(steps.max())] if len(steps) else []


def names_summary(names: Iterable[Any], limit: int = 20) -> dict[str, Any]:
    """Parameter names grouped by top-level module, with the first `limit` listed."""
    names = [str(n) for n in names]
    by_module: dict[str, int] = {}
    for name in names:
        top = name.split(".", 1)[0]
        by_module[top] = by_module.get(top, 0) + 1
    out: dict[str, Any] = {"count": len(names), "by_module": by_module, "names": names[:limit]}
    if len(names) > limit:
        out["names_truncated"] = True
    return out


def as_names(value: Any) -> list[str]:
    """A payload field that may be a list, a dict (names as keys), a count or None."""
    if value is None or isinstance(value, (bool, int, float)):
        return []
    if isinstance(value, dict):
        return [str(k) for k in value]
    if isinstance(value, str):
        return [value]
    return [str(v) for v in value]


def count_of(value: Any) -> int:
    if isinstance(value, bool):
        return int(value)
    if isinstance(value, (int, float)) and math.isfinite(value):
        return int(value)
    return len(as_names(value))


@functools.cache
def _builtin_names() -> dict[str, str]:
    """riswb.probes.BUILTIN module name -> the name its probe records in the manifest."""
    pairs = zip(BUILTIN, default_probes(), strict=True)
    return {module: probe.name for (module, _), probe in pairs}


def probe_name(module: str) -> str:
    """The manifest name of the built-in probe defined in riswb/probes/<module>.py."""
    return _builtin_names()[module]


def _listed(run) -> list[dict]:
    """The manifest's probe entries; a bare name (a hand-written manifest) as {"name": ...}."""
    return [p if isinstance(p, dict) else {"name": p} for p in run.manifest.get("probes") or []]


def probe_listed(run, module: str) -> bool | None:
    """Whether the manifest lists the built-in probe of `module` as running to the end.

    None when the manifest does not list probes at all (then silence proves nothing).
    """
    probes = _listed(run)
    if not probes:
        return None
    name = probe_name(module)
    # a probe disabled mid-run: its silence proves nothing
    return any(p.get("name") == name and not p.get("disabled") for p in probes)


def disabled_probes(run) -> dict[str, str]:
    """Probes that failed and were disabled during the run: manifest name -> error."""
    out: dict[str, str] = {}
    for probe in _listed(run):
        if probe.get("disabled"):
            out[str(probe.get("name"))] = str(probe["disabled"])
    for record in run.events_of("probe_error"):
        out.setdefault(str(record.get("probe")), str(record.get("error", "")))
    return out


# -- closure optimizers (appended: step-skipped; params-not-moving may share it) ----------

# an empty closure step is "after convergence" when no later loss record is lower by more
# than this fraction of the loss at the empty step
CONVERGED_FALL = 0.01


def converged_closure_steps(run, ustep: np.ndarray, empty: np.ndarray) -> np.ndarray:
    """Of the steps `ustep` marked `empty` (changed no parameter), those an optimizer stepped
    with a closure (LBFGS) took after the loss had converged: such an optimizer runs its own
    termination test (gradient or loss change below tolerance) and returns without moving.
    Requires every step of the run to have had a closure (`cadence` `closure_steps`) and no
    later `loss` record (`total`) lower by more than CONVERGED_FALL of the loss then."""
    none = np.zeros(len(ustep), dtype=bool)
    cadence = frame_of(run, "cadence")
    if not empty.any() or "closure_steps" not in cadence.columns:
        return none
    closure, steps = col(cadence, "closure_steps"), col(cadence, "optimizer_step")
    last = np.flatnonzero(np.isfinite(closure) & np.isfinite(steps))
    if not len(last) or closure[last[-1]] < steps[last[-1]] or steps[last[-1]] < 1:
        return none  # some steps ran without a closure: no termination test of its own
    losses = frame_of(run, "loss")
    if "total" not in losses.columns:
        return none
    lstep, total = steps_of(losses), col(losses, "total")
    keep = np.isfinite(total)
    lstep, total = lstep[keep], total[keep]
    out = none.copy()
    for j in np.flatnonzero(empty):
        at = np.flatnonzero(lstep <= ustep[j])
        if not len(at):
            continue
        now = total[at[-1]]
        later = total[lstep > ustep[j]]
        out[j] = not len(later) or later.min() >= now - CONVERGED_FALL * abs(now)
    return out


# -- gradient-free tensors outside the optimizer (appended: optimizer-coverage, train-mode;
# params-not-moving and dead-params may share it) -----------------------------------------


def never_gradient(run) -> set[str] | None:
    """Names of the tensors that require grad, are in no optimizer (`coverage` `missing`) and
    never received a gradient in the run (the last `coverage_grads` event's `no_grad`, see
    riswb/probes/coverage.py): effectively frozen, e.g. a KD teacher run only under
    torch.no_grad. None when the run has no `coverage_grads` record (then nothing is known)."""
    records = run.events_of("coverage_grads")
    if not records:
        return None
    return set(as_names(records[-1].get("no_grad")))


# -- alternating objectives (loss-not-dropping, term-conflict and the gate share it) -------


def alternating_objectives(frame: pd.DataFrame, finite: np.ndarray) -> list[str]:
    """The term sets of loss calls that alternate between objectives (at least two sets,
    each on a fifth of the records or more; a GAN's discriminator and generator): [] for one
    objective. `frame` is kind `loss`, `finite` its rows with a finite total."""
    terms = [c for c in value_columns(frame) if c != "total"]
    present = frame.loc[finite, terms].notna().to_numpy() if terms else np.zeros((0, 0))
    if not len(present):
        return []
    sets, counts = np.unique(present, axis=0, return_counts=True)
    common = sets[counts >= 0.2 * len(present)]
    if len(common) < 2:
        return []
    return [", ".join(t for t, on in zip(terms, row, strict=True) if on) for row in common]


def zero_gradient_updates(updates: pd.DataFrame) -> np.ndarray:
    """Per `param_update` record: whether the step's gradient was exactly 0 (`grad_norm`; a
    satisfied hinge or margin loss, a batch without a positive pair). An empty update there
    had nothing to apply; it is no skip. All False for runs without the column."""
    if "grad_norm" not in updates.columns:
        return np.zeros(len(updates), dtype=bool)
    return pd.to_numeric(updates["grad_norm"], errors="coerce").to_numpy(dtype=float) == 0


# what a metric's name says about its direction: the stems that words of its name (split
# at anything not a letter or digit) start with, for metrics that fall as a model learns
# and for those that rise
_LOWER_IS_BETTER = ("loss", "err", "mse", "nmse", "rmse", "mae", "nll", "perplexity", "ppl",
                    "wer", "cer", "distance", "regret")
# whole words: FID (not "fidelity"); and words of a spread, whose metric has no direction
_LOWER_IS_BETTER_WORDS = frozenset({"fid"})
_SPREAD_WORDS = frozenset({"std", "sd", "stddev", "var", "variance", "iqr", "spread"})
_HIGHER_IS_BETTER = ("acc", "return", "reward", "score", "f1", "auc", "map", "iou", "bleu",
                     "rouge", "precision", "recall", "dice", "r2", "success", "psnr", "ssim")


def metric_direction(name: str) -> str | None:
    """"lower", "higher" or None (no stem, or stems of both kinds) for a metric's name: read
    by loss-not-dropping (did an evaluation improve?) and stale-checkpoint (the direction of
    a best checkpoint's metric, when the loop did not say)."""
    words = [w for w in re.split(r"[^a-z0-9]+", name.lower()) if w]
    if _SPREAD_WORDS.intersection(words):
        return None  # the spread of a return is no return
    lower = any(w.startswith(_LOWER_IS_BETTER) or w in _LOWER_IS_BETTER_WORDS for w in words)
    higher = any(w.startswith(_HIGHER_IS_BETTER) for w in words)
    return None if lower == higher else "lower" if lower else "higher"
