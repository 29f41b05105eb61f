import struct

import numpy as np

from riswb.diagnose.plots import PLOT_NAMES, downsample, plot_overlay, write_plots
from riswb.runlog import RunWriter, read_run

PNG_MAGIC = b"\x89PNG\r\n\x1a\n"


def png_size(path):
    data = path.read_bytes()
    assert data[:8] == PNG_MAGIC
    width, height = struct.unpack(">II", data[16:24])
    return width, height, len(data)


def assert_real_png(path):
    width, height, size = png_size(path)
    assert width >= 400 and height >= 300
    assert size > 10_000  # axes, lines and text, not a blank canvas


def test_every_plot_written_for_a_full_run(tmp_path, synthetic_run):
    run = read_run(synthetic_run(tmp_path, steps=1000, nonfinite_grads=True))
    result = write_plots(run, workers=2)  # forked workers, as `riswb report` uses
    assert result.skipped == {}
    assert set(result.written) == set(PLOT_NAMES)
    for path in result.written.values():
        assert path.parent == run.path / "plots"
        assert_real_png(path)


def test_unhealthy_run_plots(tmp_path, synthetic_run):
    run = read_run(
        synthetic_run(
            tmp_path,
            steps=600,
            healthy=False,
            lr_zero=True,
            nan_loss_at=400,
            dead_term="gap",
            spectrum_flat=True,
        )
    )
    result = write_plots(run, tmp_path / "out", workers=0)  # inline
    assert set(result.written) == set(PLOT_NAMES)
    for path in result.written.values():
        assert path.parent == tmp_path / "out"
        assert_real_png(path)


def test_plots_without_data_are_skipped_with_a_reason(tmp_path):
    writer = RunWriter(tmp_path, "lossonly")
    for step in range(0, 100, 10):
        writer.scalars(step, "loss", {"a": 1.0 / (step + 1), "total": 1.0 / (step + 1)})
    writer.close()
    result = write_plots(read_run(writer.path))
    assert set(result.written) == {"loss"}
    assert set(result.skipped) == set(PLOT_NAMES) - {"loss"}
    assert "spectra" in result.skipped["spectra"]
    assert not (writer.path / "plots" / "lr.png").exists()


def test_unwritable_plot_dir_is_reported(tmp_path, synthetic_run):
    run = read_run(synthetic_run(tmp_path, steps=100))
    blocker = tmp_path / "file"
    blocker.write_text("x")
    result = write_plots(run, blocker / "plots")
    assert result.written == {} and all("cannot create" in r for r in result.skipped.values())


def test_downsample_keeps_spikes_and_bounds_points():
    x = np.arange(100_000, dtype=float)
    y = np.ones_like(x)
    y[54_321] = 1e6
    y[77_777] = np.nan
    dx, dy = downsample(x, y, 2000)
    assert len(dx) <= 2000
    assert 1e6 in dy and 54_321 in dx
    assert np.all(np.diff(dx) > 0)
    small_x, small_y = downsample(x[:10], y[:10], 2000)
    assert len(small_x) == 10


def test_overlay(tmp_path, synthetic_run):
    a = read_run(synthetic_run(tmp_path, steps=500))
    b = read_run(synthetic_run(tmp_path, steps=500, healthy=False))
    path = plot_overlay([a, b], tmp_path / "sub" / "overlay.png")
    assert_real_png(path)
