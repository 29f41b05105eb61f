"""TrainConfig: TOML round trip, [loss.weights], unknown keys and bad values as RiswbError."""

import pytest

from riswb.errors import RiswbError
from riswb.reference.config import TrainConfig


def _write(tmp_path, text):
    path = tmp_path / "cfg.toml"
    path.write_text(text, encoding="utf-8")
    return path


def test_toml_round_trip(tmp_path):
    cfg = TrainConfig(name="rt", train_scenes=96, val_scenes=0, snr_db=[0.0, 20.0],
                      head_lr=3e-4, clip_norm=None, swa_start_epoch=2, ema_decay=0.9,
                      weights={"nmse": 2.0, "gap": 0.0}, inject="step-per-epoch")
    again = TrainConfig.from_toml(_write(tmp_path, cfg.to_toml()))
    assert again == cfg
    assert TrainConfig.from_toml(_write(tmp_path, TrainConfig().to_toml())) == TrainConfig()


def test_shipped_config_loads():
    from pathlib import Path

    cfg = TrainConfig.from_toml(Path(__file__).parents[2] / "configs" / "train_small.toml")
    assert cfg.preset == "small" and cfg.val_scenes > 0 and cfg.ema_decay > 0
    assert cfg.snr_db == [0.0, 20.0] and cfg.train_scenes >= 2000


def test_shipped_steering_config_loads():
    from pathlib import Path

    path = Path(__file__).parents[2] / "configs" / "train_localize_steering.toml"
    cfg = TrainConfig.from_toml(path)
    assert cfg.head == "steering" and cfg.refine_steps > 0 and cfg.resample_scenes
    assert "head" in cfg.trajectory() and "refine_steps" not in cfg.trajectory()


def test_loss_weights_override_only_the_named_terms(tmp_path):
    cfg = TrainConfig.from_toml(_write(tmp_path, 'epochs = 3\n[loss.weights]\nnmse = 2.5\nK = 0\n'))
    assert cfg.epochs == 3 and cfg.weights == {"nmse": 2.5, "K": 0}
    assert cfg.lr == TrainConfig().lr  # the rest keeps its defaults


@pytest.mark.parametrize("text,needle", [
    ("epoch = 3\n", "unknown config key(s): epoch"),
    ("[loss]\nweight = 1\n", "unknown config key(s) in [loss]: weight"),
    ("[optim]\nlr = 1\n", "unknown config key(s): optim"),
    ("epochs = 0\n", "epochs must be an integer >= 1 (got 0)"),
    ("epochs = 'ten'\n", "epochs must be an integer >= 1 (got 'ten')"),
    ("lr = -1.0\n", "lr must be a finite number > 0"),
    ("warmup_start = 0.0\n", "warmup_start must be a finite number in (0, 1]"),
    ("ema_decay = 1.0\n", "ema_decay must be a finite number in [0, 1)"),
    ("device = 'tpu'\n", "device must be one of auto, cpu, cuda"),
    ("snr_db = [20.0, 0.0]\n", "snr_db must be a finite number or [lo, hi] with lo <= hi"),
    ("snr_db = 'high'\n", "snr_db must be a finite number"),
    ("sanitize = 1\n", "sanitize must be true or false"),
    ("batch_size = true\n", "batch_size must be an integer >= 1 (got True)"),
    ("[loss.weights]\nnmse = 'big'\n", "weights must be a table of term names to finite"),
    ("[loss.weights]\nnmse = -1.0\n", "term names to finite numbers >= 0 (got {'nmse': -1.0})"),
    ("eval_every = 0\n", "eval_every must be an integer >= 1"),
    ("lr = inf\n", "lr must be a finite number > 0 (got inf)"),
    ("weight_decay = nan\n", "weight_decay must be a finite number >= 0 (got nan)"),
    ("threads = 2.5\n", "threads must be an integer in [0, 1024]"),
    ("batch_size = -64\n", "batch_size must be an integer >= 1 (got -64)"),
    ("seed = -1\n", "seed must be an integer in [0, 4294967295] (got -1)"),
    ("seed = 4294967296\n", "seed must be an integer in [0, 4294967295]"),
    ("clip_norm = -inf\n", "clip_norm must be a finite number >= 0 (0: no clipping)"),
    ("head_lr = 0\n", "head_lr must be a finite number > 0, or absent (got 0)"),
    ("snr_db = [nan, 10.0]\n", "snr_db must be a finite number or [lo, hi]"),
    ("lr = true\n", "lr must be a finite number > 0 (got True)"),
    ("[loss.weights]\nnmse = inf\n", "weights must be a table of term names to finite"),
    ("epochs = [\n", "is not valid TOML"),
    ("head = 'grid'\n", "head must be one of factor, steering (got 'grid')"),
    ("refine_steps = -1\n", "refine_steps must be an integer in [0, 100]"),
    ("refine_steps = 1.5\n", "refine_steps must be an integer in [0, 100]"),
])
def test_bad_configs_raise_one_riswb_error(tmp_path, text, needle):
    with pytest.raises(RiswbError) as info:
        TrainConfig.from_toml(_write(tmp_path, text))
    assert needle in str(info.value)
    assert "\n" not in str(info.value).strip() or "TOML" in str(info.value)


def test_missing_file_is_a_riswb_error(tmp_path):
    with pytest.raises(RiswbError, match="no config file"):
        TrainConfig.from_toml(tmp_path / "nope.toml")


def test_replace_keeps_validation():
    assert TrainConfig().replace(epochs=2, lr=None).epochs == 2
    with pytest.raises(RiswbError):
        TrainConfig().replace(batch_size=0)
