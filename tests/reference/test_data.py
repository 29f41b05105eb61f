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


def test_epoch_seeds_never_draw_the_validation_or_eval_scenes():
    for seed in (0, 1, 7, 2**32 - 1):
        seeds = {data.epoch_seed(seed, epoch) for epoch in range(1, 200)}
        assert len(seeds) == 199 and not seeds & {seed, seed + 1, seed + 2}


def test_resample_scenes_draws_fresh_seeded_scenes_every_epoch(tmp_path):
    """Each epoch trains on epoch_seed's scenes (epoch 0: the seed's own), so a resumed run
    sees the same ones; validation stays the fixed seed + 1 set."""
    from riswb.reference.config import TrainConfig
    from riswb.reference.trainer import Trainer

    seen = []

    class Recording(Trainer):
        def train_epoch(self):
            seen.append(self.train_set.phi.clone())

    cfg = TrainConfig(train_scenes=8, val_scenes=4, batch_size=8, epochs=3, warmup_steps=0,
                      device="cpu", resample_scenes=True)
    trainer = Recording(cfg, runs_dir=tmp_path / "runs", probes=[])
    val = trainer.val_set.phi.clone()
    trainer.run()
    expect = [scene_dataset("small", 8, s, use_cache=False).phi
              for s in (0, data.epoch_seed(0, 1), data.epoch_seed(0, 2))]
    assert all(torch.equal(a, b) for a, b in zip(seen, expect, strict=True))
    assert torch.equal(trainer.val_set.phi, val)
