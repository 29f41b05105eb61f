"""Helpers the rules share (riswb/diagnose/rules/_util.py)."""

import pytest

from riswb.diagnose.rules._util import metric_direction


@pytest.mark.parametrize(("name", "direction"), [
    ("val_loss", "lower"), ("nmse", "lower"), ("val/acc@1", "higher"), ("avg_return", "higher"),
    ("episode_reward", "higher"), ("confidence", None), ("loss_map", None), ("widgets", None),
    ("fid", "lower"), ("val_fidelity", None), ("return_std", None)])
def test_a_metrics_direction_is_read_from_the_words_of_its_name(name, direction):
    assert metric_direction(name) == direction
