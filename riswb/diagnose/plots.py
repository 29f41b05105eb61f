"""PNG plots of a run (matplotlib, Agg backend) written into RUN/plots/.

`write_plots(run)` draws every plot whose data the run holds and returns a `PlotResult`
with the files written and, for each plot it skipped, the reason. Long series are
downsampled with a min/max envelope per bucket (spikes survive) so that a 100k-step run
plots as fast as a short one.
"""

from __future__ import annotations

import os
import sys
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import pandas as pd

from riswb.diagnose.frames import col, latest_spectra, value_columns
from riswb.diagnose.text import fmt
from riswb.runlog import Run

MAX_POINTS = 2000
# groups often share a schedule: vary the dash so overlapping lines stay distinguishable
DASHES = ("-", "--", ":", "-.")
DPI = 100
PLOT_NAMES = ("loss", "grad_norms", "param_update", "lr", "spectra", "nonfinite")


@dataclass
class PlotResult:
    written: dict[str, Path] = field(default_factory=dict)
    skipped: dict[str, str] = field(default_factory=dict)


def _pyplot():
    import matplotlib

    matplotlib.use("Agg", force=True)
    import matplotlib.pyplot as plt

    return plt


def _subplots(nrows: int, height: float, width: float = 9.0, **kwargs):
    """A figure with `nrows` stacked axes and fixed margins in inches (no tight_layout)."""
    plt = _pyplot()
    fig, axes = plt.subplots(nrows, 1, figsize=(width, height), squeeze=False, **kwargs)
    panel = (height - 1.05) / nrows
    fig.subplots_adjust(
        left=0.9 / width,
        right=1 - 0.2 / width,
        top=1 - 0.45 / height,
        bottom=0.6 / height,
        hspace=0.75 / max(panel - 0.75, 0.5),
    )
    return fig, list(axes[:, 0])


def downsample(x: np.ndarray, y: np.ndarray, max_points: int = MAX_POINTS):
    """At most ~max_points points: per bucket, the min and the max of y (NaN-safe)."""
    x = np.asarray(x, dtype=float)
    y = np.asarray(y, dtype=float)
    n = len(x)
    if n <= max_points:
        return x, y
    buckets = max(1, max_points // 2)
    size = int(np.ceil(n / buckets))
    pad = buckets * size - n
    finite = np.isfinite(y)
    low = np.where(finite, y, np.inf)
    high = np.where(finite, y, -np.inf)
    if pad:
        low = np.concatenate([low, np.full(pad, np.inf)])
        high = np.concatenate([high, np.full(pad, -np.inf)])
    base = np.arange(buckets) * size
    i_low = base + low.reshape(buckets, size).argmin(axis=1)
    i_high = base + high.reshape(buckets, size).argmax(axis=1)
    index = np.unique(np.concatenate([i_low, i_high]))
    index = index[index < n]
    return x[index], y[index]


def _series(frame: pd.DataFrame, column: str):
    return downsample(col(frame, "step"), col(frame, column))


def _positive(y: np.ndarray) -> np.ndarray:
    return np.where(y > 0, y, np.nan)


def _tick_label(value: float, _pos: int | None = None) -> str:
    """Plain tick labels ("0.05", "1.00e-05"): mathtext labels (10⁻⁵) cost a parser run each."""
    return fmt(value, digits=3)


def _log_y(ax) -> None:
    """Log y axis with plain labels; minor ticks only where they help (< 2 decades)."""
    from matplotlib.ticker import FuncFormatter, NullFormatter, NullLocator

    ax.set_yscale("log")
    low, high = ax.get_ylim()
    plain = FuncFormatter(_tick_label)
    ax.yaxis.set_major_formatter(plain)
    if low > 0 and high / low < 10:
        ax.yaxis.set_minor_formatter(plain)  # the minor ticks are the only labels
    elif low > 0 and high / low < 100:
        ax.yaxis.set_minor_formatter(NullFormatter())
    else:
        ax.yaxis.set_minor_locator(NullLocator())


def _finish(fig, ax_list, path):
    """Grid, legends, save to `path` (a file path or a binary file object), close."""
    for ax in ax_list:
        ax.grid(True, which="major", alpha=0.3)
        handles, _ = ax.get_legend_handles_labels()
        if handles:
            ax.legend(fontsize=8, loc="best", ncol=2 if len(handles) > 6 else 1)
    # fixed margins (set in _figure): tight_layout would draw every figure twice
    fig.savefig(path, dpi=DPI)
    import matplotlib.pyplot as plt

    plt.close(fig)
    return path


def _has_positive(frame: pd.DataFrame, columns: list[str]) -> bool:
    return any((col(frame, c) > 0).any() for c in columns)


def plot_loss(run: Run, path: Path) -> Path | str:
    loss = run.kind("loss")
    terms = value_columns(loss)
    if not len(loss) or not terms:
        return "no loss records"
    if not _has_positive(loss, terms):
        return "no positive loss values to show on a log axis"
    fig, (ax,) = _subplots(1, 5)
    for term in [t for t in terms if t != "total"]:
        x, y = _series(loss, term)
        ax.plot(x, _positive(y), linewidth=1, label=term)
    if "total" in loss:
        x, y = _series(loss, "total")
        ax.plot(x, _positive(y), color="black", linewidth=2, label="total (weighted)")
        bad = ~np.isfinite(y)
        if bad.any():
            ax.axvline(x[bad][0], color="red", linestyle="--", label="total non-finite from")
    _log_y(ax)
    ax.set_xlabel("step (training batch)")
    ax.set_ylabel("loss (unweighted terms)")
    ax.set_title(f"Loss per term — {run.id}")
    return _finish(fig, [ax], path)


def plot_grad_norms(run: Run, path: Path) -> Path | str:
    grads = run.kind("term_grad")
    norms = run.kind("grad_norm")
    terms = value_columns(grads)
    modules = value_columns(norms)
    if not (len(grads) and terms) and not (len(norms) and modules):
        return "no term_grad or grad_norm records"
    if not (terms and _has_positive(grads, terms)) and not (
        modules and _has_positive(norms, modules)
    ):
        return "every gradient norm is zero or missing"
    panels = int(bool(terms)) + int(bool(modules))
    fig, axes = _subplots(panels, 3.6 * panels, sharex=True)
    ax_i = 0
    if terms:
        ax = axes[ax_i]
        ax_i += 1
        for term in terms:
            x, y = _series(grads, term)
            zero = bool((y == 0).all())
            ax.plot(x, _positive(y), linewidth=1, label=term + (" (always 0)" if zero else ""))
        _log_y(ax)
        ax.set_ylabel("‖∂(w·term)/∂θ‖")
        ax.set_title(f"Gradient norm per loss term — {run.id}")
    if modules:
        ax = axes[ax_i]
        for name in modules:
            x, y = _series(norms, name)
            style = {"color": "black", "linewidth": 2} if name == "total" else {"linewidth": 1}
            ax.plot(x, _positive(y), label=name.removeprefix("module/"), **style)
        _log_y(ax)
        ax.set_ylabel("raw grad norm")
        ax.set_title("Gradient norm by module (before clipping)")
    axes[-1].set_xlabel("step (training batch)")
    return _finish(fig, axes, path)


def plot_param_update(run: Run, path: Path) -> Path | str:
    update = run.kind("param_update")
    if not len(update) or "ratio" not in update:
        return "no param_update records"
    fig, (ax1, ax2) = _subplots(2, 6.5, sharex=True, gridspec_kw={"height_ratios": [2, 1]})
    x, y = _series(update, "ratio")
    positive = (y > 0).any()
    ax1.plot(x, _positive(y), color="black", linewidth=1.5, label="all params", zorder=3)
    for i, column in enumerate(value_columns(update, "group/")):
        gx, gy = _series(update, column)
        positive = positive or (gy > 0).any()
        label = "group " + column.removeprefix("group/").removesuffix("/ratio")
        ax1.plot(gx, _positive(gy), linewidth=1.2, linestyle=DASHES[(i + 1) % 4], label=label)
    if positive:
        _log_y(ax1)
    else:
        ax1.text(
            0.5,
            0.5,
            "Δparam = 0 on every logged step",
            transform=ax1.transAxes,
            ha="center",
            va="center",
            color="red",
            fontsize=13,
        )
        ax1.set_ylim(0, 1)
    ax1.set_ylabel("‖Δθ‖ / ‖θ‖")
    ax1.set_title(f"Parameter update ratio per optimizer step — {run.id}")
    if "frac_moving" in update:
        fx, fy = _series(update, "frac_moving")
        ax2.plot(fx, fy, color="tab:green", linewidth=1, label="fraction of tensors moving")
        ax2.set_ylim(-0.05, 1.05)
    else:
        ax2.text(0.5, 0.5, "no frac_moving values", transform=ax2.transAxes, ha="center")
    ax2.set_ylabel("frac moving")
    ax2.set_xlabel("step (training batch)")
    return _finish(fig, [ax1, ax2], path)


def plot_lr(run: Run, path: Path) -> Path | str:
    lr = run.kind("lr")
    groups = value_columns(lr, "group/")
    if not len(lr) or not groups:
        return "no lr records"
    fig, (ax,) = _subplots(1, 4)
    for i, column in enumerate(groups):
        x, y = _series(lr, column)
        ax.plot(x, y, linewidth=1.5, linestyle=DASHES[i % 4], label=column.removeprefix("group/"))
    values = lr[groups].to_numpy(dtype=float)
    if np.isfinite(values).any() and np.nanmax(values) == 0:
        ax.text(
            0.5,
            0.5,
            "learning rate is 0 throughout",
            transform=ax.transAxes,
            ha="center",
            va="center",
            color="red",
            fontsize=13,
        )
    ax.ticklabel_format(axis="y", style="sci", scilimits=(-3, 3))
    ax.set_ylim(bottom=0)
    ax.set_xlabel("step (training batch)")
    ax.set_ylabel("learning rate")
    ax.set_title(f"Learning rate per parameter group — {run.id}")
    return _finish(fig, [ax], path)


def plot_spectra(run: Run, path: Path) -> Path | str:
    step, spectra = latest_spectra(run)
    if not spectra:
        return "no spectra.jsonl records (no evaluation with R_pred/R_true)"
    fig, (ax,) = _subplots(1, 4.5, width=8)
    styles = {
        "R_true": {"color": "black", "marker": "o", "linewidth": 2},
        "R_pred": {"color": "tab:red", "marker": "s", "linewidth": 1.5},
        "R_samp": {"color": "tab:blue", "marker": "^", "linewidth": 1, "linestyle": "--"},
    }
    order = {"R_true": 0, "R_pred": 1, "R_samp": 2}
    for name in sorted(spectra, key=lambda n: order.get(n, 3)):
        values = np.asarray(spectra[name], dtype=float)
        index = np.arange(1, len(values) + 1)
        ax.plot(index, _positive(values), label=name, **styles.get(name, {"linewidth": 1}))
    _log_y(ax)
    ax.set_xlabel("eigenvalue index (descending)")
    ax.set_ylabel("mean eigenvalue")
    ax.set_title(f"Eigen-spectra at the latest evaluation (step {step}) — {run.id}")
    longest = max(len(v) for v in spectra.values())
    ax.set_xticks(np.arange(1, longest + 1, max(1, longest // 16)))
    return _finish(fig, [ax], path)


def plot_nonfinite(run: Run, path: Path) -> Path | str:
    frame = run.kind("nonfinite")
    keys = value_columns(frame)
    if not len(frame) or not keys:
        return "no nonfinite records"
    fig, (ax,) = _subplots(1, 4)
    any_hit = False
    for key in keys:
        x, y = _series(frame, key)
        y = np.nan_to_num(y, nan=0.0)
        any_hit = any_hit or bool((y > 0).any())
        ax.plot(x, y, linewidth=1, drawstyle="steps-mid", label=key)
    if not any_hit:
        ax.text(
            0.5,
            0.5,
            f"no non-finite values in {len(frame)} records",
            transform=ax.transAxes,
            ha="center",
            va="center",
            color="green",
            fontsize=13,
        )
        ax.set_ylim(-0.05, 1)
    else:
        from matplotlib.ticker import FuncFormatter, NullLocator

        ax.set_yscale("symlog", linthresh=1)
        ax.yaxis.set_major_formatter(FuncFormatter(_tick_label))
        ax.yaxis.set_minor_locator(NullLocator())
    ax.set_xlabel("step (training batch)")
    ax.set_ylabel("count per record")
    ax.set_title(f"Non-finite counts (raw grads before sanitization; loss) — {run.id}")
    return _finish(fig, [ax], path)


PLOTTERS: dict[str, Callable[[Run, Path], Path | str]] = {
    "loss": plot_loss,
    "grad_norms": plot_grad_norms,
    "param_update": plot_param_update,
    "lr": plot_lr,
    "spectra": plot_spectra,
    "nonfinite": plot_nonfinite,
}


def _plot_one(run: Run, name: str, target: Path) -> tuple[str, str, bool]:
    """(name, path or reason, written?); a plot that fails is reported, never raised."""
    path = target / f"{name}.png"
    try:
        outcome = PLOTTERS[name](run, path)
    except OSError as error:
        return name, f"could not write {path}: {error}", False
    except Exception as error:  # a broken plot must not take the report down
        return name, f"failed: {type(error).__name__}: {error}", False
    if isinstance(outcome, Path):
        return name, str(outcome), True
    return name, outcome, False


_JOB: tuple[Run, Path] | None = None  # what forked workers plot (inherited, not pickled)


def _worker(name: str) -> tuple[str, str, bool]:
    assert _JOB is not None
    return _plot_one(_JOB[0], name, _JOB[1])


def _collect(outcomes: list[tuple[str, str, bool]]) -> PlotResult:
    result = PlotResult()
    for name, value, written in outcomes:
        if written:
            result.written[name] = Path(value)
        else:
            result.skipped[name] = value
    return result


def plot_workers() -> int:
    """Worker processes for plotting: $RISWB_PLOT_WORKERS, else min(cores, 3); 0/1 = inline.
    Only on Linux, where fork is cheap and safe for the Agg backend."""
    if not sys.platform.startswith("linux"):
        return 0
    value = os.environ.get("RISWB_PLOT_WORKERS")
    if value is not None:
        try:
            return max(0, int(value))
        except ValueError:
            return 0
    return min(os.cpu_count() or 1, 3)


def start_plots(
    run: Run, out_dir: str | os.PathLike | None = None, workers: int | None = None
) -> Callable[[], PlotResult]:
    """Begin writing the plots; call the returned function for the `PlotResult`.

    With workers > 1 the plots are drawn by forked processes while the caller goes on
    (the report diagnoses the run meanwhile); otherwise they are drawn when collected.
    """
    global _JOB
    target = Path(out_dir) if out_dir is not None else Path(run.path) / "plots"
    try:
        target.mkdir(parents=True, exist_ok=True)
    except OSError as error:
        reason = f"cannot create {target}: {error}"
        return lambda: PlotResult(skipped={name: reason for name in PLOTTERS})
    workers = plot_workers() if workers is None else workers
    if workers <= 1:
        return lambda: _collect([_plot_one(run, name, target) for name in PLOTTERS])
    import multiprocessing
    import warnings

    _pyplot()  # import matplotlib once, before the fork
    _JOB = (run, target)
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", DeprecationWarning)  # fork with threads (3.12+)
            pool = multiprocessing.get_context("fork").Pool(min(workers, len(PLOTTERS)))
    except (OSError, ValueError):  # no fork here (limits, sandbox): draw inline
        _JOB = None
        return lambda: _collect([_plot_one(run, name, target) for name in PLOTTERS])
    # the slowest plots first so that no worker is left with a long one at the end
    slow = ("grad_norms", "param_update", "loss")
    order = [n for n in slow if n in PLOTTERS] + [n for n in PLOTTERS if n not in slow]
    pending = pool.map_async(_worker, order, chunksize=1)
    pool.close()

    def collect() -> PlotResult:
        global _JOB
        try:
            outcomes = pending.get()
        finally:
            pool.join()
            _JOB = None
        by_name = {o[0]: o for o in outcomes}
        return _collect([by_name[name] for name in PLOTTERS])

    return collect


def write_plots(
    run: Run, out_dir: str | os.PathLike | None = None, workers: int | None = 0
) -> PlotResult:
    """Write every plot the run has data for into `out_dir` (default RUN/plots/); a plot
    without data is skipped with the reason. workers=None picks `plot_workers()`."""
    return start_plots(run, out_dir, workers)()


def _overlay(runs: list[Run], target, column: str):
    """Draw one loss column of several runs on a log axis into `target` (a path or a file)."""
    fig, (ax,) = _subplots(1, 5)
    drawn = 0
    for run in runs:
        loss = run.kind("loss")
        if column not in loss or not len(loss):
            continue
        x, y = _series(loss, column)
        ax.plot(x, _positive(y), linewidth=1.5, label=run.id)
        drawn += 1
    if drawn:
        _log_y(ax)
    else:
        ax.text(0.5, 0.5, f"no run has loss '{column}'", transform=ax.transAxes, ha="center")
    ax.set_xlabel("step (training batch)")
    ax.set_ylabel(f"loss {column}")
    ax.set_title(f"Loss ({column}) compared")
    return _finish(fig, [ax], target)


def plot_overlay(runs: list[Run], path: str | os.PathLike, column: str = "total") -> Path:
    """Overlay one loss column (default the weighted total) of several runs on a log axis."""
    out = Path(path)
    out.parent.mkdir(parents=True, exist_ok=True)
    return _overlay(runs, out, column)


def overlay_png(runs: list[Run], column: str = "total") -> bytes:
    """The overlay of `plot_overlay` as PNG bytes, for a page that embeds it (no file)."""
    import io

    buffer = io.BytesIO()
    _overlay(runs, buffer, column)
    return buffer.getvalue()
