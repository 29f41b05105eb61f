"""Scene datasets: seeded, cached (identical tensors on a hit), batch order from (seed, epoch)."""

from dataclasses import fields

import pytest
import torch

from riswb.reference import data
from riswb.reference.data import batch_indices, scene_dataset


@pytest.fixture(autouse=True)
def _cache(tmp_path, monkeypatch):
    monkeypatch.setenv("RISWB_CACHE_DIR", str(tmp_path / "cache"))
    return tmp_path / "cache"


def _equal(a, b) -> bool:
    return all(torch.equal(getattr(a, f.name), getattr(b, f.name))
               for f in fields(a) if isinstance(getattr(a, f.name), torch.Tensor))


def test_same_seed_same_scenes_other_seed_other_scenes():
    a = scene_dataset("small", 16, seed=3, use_cache=False)
    b = scene_dataset("small", 16, seed=3, use_cache=False)
    c = scene_dataset("small", 16, seed=4, use_cache=False)
    assert _equal(a, b)
    assert not torch.equal(a.phi, c.phi)


def test_cache_hit_returns_identical_tensors(_cache, monkeypatch):
    fresh = scene_dataset("small", 16, seed=1, snr_db=(0.0, 20.0))
    files = list(_cache.glob("scenes-small-n16-seed1-*.pt"))
    assert len(files) == 1 and not list(_cache.glob("*.tmp"))

    def boom(*args, **kwargs):
        raise AssertionError("a cache hit must not simulate")

    monkeypatch.setattr(data, "simulate_scenes", boom)
    cached = scene_dataset("small", 16, seed=1, snr_db=(0.0, 20.0))
    assert _equal(fresh, cached)
    assert float(cached.snr_db.min()) >= 0 and float(cached.snr_db.max()) <= 20


def test_cache_key_separates_snr_and_stale_simulators(_cache):
    fixed = scene_dataset("small", 8, seed=0, snr_db=10.0)
    ranged = scene_dataset("small", 8, seed=0, snr_db=[0, 20])  # ints and a list: same key
    assert torch.all(fixed.snr_db == 10.0) and not torch.all(ranged.snr_db == 10.0)
    assert len(list(_cache.glob("*.pt"))) == 2
    assert scene_dataset("small", 8, seed=0, snr_db=(0.0, 20.0)).snr_db.equal(ranged.snr_db)
    assert len(list(_cache.glob("*.pt"))) == 2
    assert all(data.simulator_fingerprint() in p.name for p in _cache.glob("*.pt"))


def test_corrupt_cache_entry_is_regenerated(_cache):
    first = scene_dataset("small", 8, seed=2)
    (path,) = _cache.glob("*.pt")
    path.write_bytes(b"not a torch file")
    again = scene_dataset("small", 8, seed=2)
    assert _equal(first, again)


def test_batch_order_depends_only_on_seed_and_epoch():
    def order(seed, epoch, consume_rng=False):
        if consume_rng:  # the global RNG must not matter (resume restores it differently)
            torch.manual_seed(123)
            torch.rand(100)
        return torch.cat(list(batch_indices(100, 32, seed=seed, epoch=epoch)))

    base = order(0, 3)
    assert torch.equal(base, order(0, 3, consume_rng=True))
    assert torch.equal(base.sort().values, torch.arange(100))  # a permutation
    assert not torch.equal(base, order(0, 4))
    assert not torch.equal(base, order(1, 3))
    sizes = [len(b) for b in batch_indices(100, 32, seed=0, epoch=0)]
    assert sizes == [32, 32, 32, 4]
    assert torch.equal(torch.cat(list(batch_indices(10, 4, seed=0, epoch=0, shuffle=False))),
                       torch.arange(10))
