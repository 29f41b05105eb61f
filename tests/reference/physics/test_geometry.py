import math

import pytest
import torch

from riswb.errors import RiswbError
from riswb.reference.physics.geometry import (
    aperture_diagonal,
    direction,
    fraunhofer_distance,
    fresnel_limit,
    ris_positions,
)
from riswb.reference.physics.presets import PRESETS, get_preset


def test_positions_are_a_centred_half_wavelength_grid():
    p = get_preset("small")
    pos = ris_positions(p, dtype=torch.float64)
    assert pos.shape == (64, 3)
    assert torch.allclose(pos.mean(0), torch.zeros(3, dtype=torch.float64), atol=1e-12)
    assert torch.all(pos[:, 2] == 0)
    d = p.wavelength / 2
    assert torch.allclose(pos[1] - pos[0], torch.tensor([d, 0, 0], dtype=torch.float64))
    assert torch.allclose(pos[8] - pos[0], torch.tensor([0, d, 0], dtype=torch.float64))
    assert torch.equal(ris_positions(8, 8, p.wavelength, dtype=torch.float64), pos)


def test_near_field_limits_small_preset():
    p = get_preset("small")
    assert aperture_diagonal(p) == pytest.approx(math.sqrt(2) * 8 * p.wavelength / 2)
    assert fresnel_limit(p) == pytest.approx(2.50, abs=0.01)
    assert fraunhofer_distance(p) == pytest.approx(19.19, abs=0.01)


@pytest.mark.parametrize("name", sorted(PRESETS))
def test_preset_ranges_are_in_the_radiating_near_field(name):
    p = get_preset(name)
    assert fresnel_limit(p) <= p.r_range[0] < p.r_range[1] <= fraunhofer_distance(p)


def test_unknown_preset_is_a_usage_error():
    with pytest.raises(RiswbError, match="unknown preset"):
        get_preset("huge")


def test_direction_is_unit_and_boresight_is_z():
    u = direction(torch.tensor([0.0, 0.3]), torch.tensor([0.0, -0.2]))
    assert torch.allclose(u.norm(dim=-1), torch.ones(2))
    assert torch.allclose(u[0], torch.tensor([0.0, 0.0, 1.0]))
