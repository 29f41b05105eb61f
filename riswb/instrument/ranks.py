"""Which process of a distributed job this is, and what its run is called.

torchrun (and Lightning's / accelerate's launchers) export RANK, WORLD_SIZE and LOCAL_RANK;
an initialized default process group is the authority when there is one, since a script may
init it with explicit ranks and no environment. Each rank writes its own run: one process per
run directory keeps every stream single-writer. The directory name carries the rank
(`<stamp>-<name>-rank<r>`), so ranks never claim the same folder and which run belongs to
which rank does not depend on who called mkdir first.
"""

from __future__ import annotations

import os
from typing import Any

import torch


def rank_info() -> dict[str, Any]:
    """{"rank", "world_size", "local_rank", "source"} of this process; rank 0 of 1 when
    it is not part of a distributed job (source "single")."""
    env_rank = os.environ.get("RANK")
    local = int(os.environ.get("LOCAL_RANK", "0") or 0)
    dist = torch.distributed
    if dist.is_available() and dist.is_initialized():
        rank, world = dist.get_rank(), dist.get_world_size()
        return {"rank": rank, "world_size": world, "local_rank": local,
                "source": "torch.distributed"}
    if env_rank is not None:
        return {"rank": int(env_rank), "world_size": int(os.environ.get("WORLD_SIZE", "1")),
                "local_rank": local, "source": "env"}
    return {"rank": 0, "world_size": 1, "local_rank": 0, "source": "single"}


def run_name_for_rank(name: str | None, info: dict[str, Any] | None = None) -> str:
    """`name` unchanged in a single process; `<name>-rank<r>` in a job of several."""
    info = info or rank_info()
    base = name or "run"
    return f"{base}-rank{info['rank']}" if info["world_size"] > 1 else base
