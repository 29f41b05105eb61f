"""Scene datasets for training: generated from the physics simulator, seeded, cached.

A dataset is one `SceneBatch` held in memory (the small preset's 512 scenes take a few MB).
Generation is deterministic in (preset, n, seed, snr_db), so the cache key is exactly
that tuple plus a fingerprint of the simulator's source; the cache lives in
$RISWB_CACHE_DIR (default ~/.cache/riswb) and is written atomically, so a killed run never
leaves a half-written file behind.
"""

from __future__ import annotations

import functools
import hashlib
import os
from collections.abc import Iterator
from dataclasses import fields
from pathlib import Path

import torch

from riswb.reference.physics.presets import get_preset
from riswb.reference.physics.scenes import SceneBatch, simulate_scenes


def cache_dir() -> Path:
    return Path(os.environ.get("RISWB_CACHE_DIR") or Path.home() / ".cache" / "riswb")


@functools.lru_cache(maxsize=1)
def simulator_fingerprint() -> str:
    """A short hash of the simulator's source (reference/physics/*.py): a cache entry written by
    an older simulator is never served to a newer one (stale scenes are silent)."""
    digest = hashlib.sha1()
    for source in sorted((Path(__file__).parent / "physics").glob("*.py")):
        digest.update(source.name.encode() + b"\0" + source.read_bytes())
    return digest.hexdigest()[:10]


def _cache_path(preset: str, n: int, seed: int, snr_db) -> Path:
    values = [] if snr_db is None else [float(v) for v in torch.tensor(snr_db).flatten().tolist()]
    snr = "-".join(str(v) for v in values) or "default"
    return cache_dir() / f"scenes-{preset}-n{n}-seed{seed}-snr{snr}-{simulator_fingerprint()}.pt"


def scene_dataset(
    preset: str, n: int, seed: int, snr_db: float | tuple[float, float] | None = None,
    *, use_cache: bool = True,
) -> SceneBatch:
    """`n` scenes of `preset` drawn with `seed` (loaded from the cache when present)."""
    preset_name = get_preset(preset).name
    path = _cache_path(preset_name, n, seed, snr_db)
    if use_cache and path.exists():
        try:
            stored = torch.load(path, weights_only=True)
            return SceneBatch(**stored)
        except Exception:  # a corrupt or outdated cache entry is regenerated
            path.unlink(missing_ok=True)
    batch = simulate_scenes(preset_name, n, seed=seed, snr_db=snr_db)
    if use_cache:
        path.parent.mkdir(parents=True, exist_ok=True)
        tmp = path.with_suffix(f".{os.getpid()}.tmp")
        torch.save({f.name: getattr(batch, f.name) for f in fields(batch)}, tmp)
        os.replace(tmp, path)
    return batch


def epoch_seed(seed: int, epoch: int) -> int:
    """The scene seed of epoch `epoch` ≥ 1 when training scenes are redrawn every epoch
    (epoch 0 uses `seed` itself); never seed + 1 or seed + 2 (validation, `riswb eval`)."""
    return seed * 1_000_003 + 1_000 + epoch


def batch_indices(
    n: int, batch_size: int, *, seed: int, epoch: int, shuffle: bool = True
) -> Iterator[torch.Tensor]:
    """Index tensors for one epoch. The order depends only on (seed, epoch), so a resumed
    run sees exactly the batches an uninterrupted run would have seen."""
    if shuffle:
        order = torch.randperm(n, generator=torch.Generator().manual_seed(seed * 100_003 + epoch))
    else:
        order = torch.arange(n)
    yield from order.split(batch_size)
