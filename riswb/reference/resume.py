"""Resuming a run of the reference trainer: what is checked before anything is built.

`load_resume_state` runs first in `Trainer.__init__` (riswb/reference/trainer.py), before
any scene is generated and before the new run's directory exists, so a refusal costs
nothing and leaves nothing behind. In order: the run has a state.pt; temporary files that a
killed writer left in its checkpoints folder are removed; best.pt (carried over into the
new run) and state.pt match their checksums (riswb/reference/checkpoints.py); state.pt
holds what a resume restores; and the config's trajectory fields
(riswb/reference/config.py, TRAJECTORY_FIELDS) equal those the run was trained with —
stored in state.pt, or for checkpoints older than that in the run's manifest. A changed
batch size or seed would otherwise continue a different trajectory under the old one's
name; `force=True` (`riswb train --resume RUN --force`) resumes anyway and the changes
are returned so the new run can record them. Corruption is never forced.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

from riswb.errors import RiswbError
from riswb.reference import checkpoints
from riswb.reference.checkpoints import BEST_FILE, STATE_FILE
from riswb.reference.config import TrainConfig

STATE_KEYS = frozenset({"epoch", "model", "optimizer", "scheduler", "ema", "swa", "scaler",
                        "best_value", "history", "rng"})


def load_resume_state(run: Path, config: TrainConfig, *,
                      force: bool = False) -> tuple[dict[str, Any], list[str]]:
    """(state.pt's contents, the trajectory changes forced through); RiswbError otherwise."""
    folder = run / "checkpoints"
    path = folder / STATE_FILE
    if not path.is_file():
        raise RiswbError(f"cannot resume: no {STATE_FILE} in {folder}")
    checkpoints.clean_temporary(folder)
    if (folder / BEST_FILE).is_file():
        checkpoints.read_verified(folder / BEST_FILE)
    state = checkpoints.load(path)
    missing = sorted(STATE_KEYS - set(state)) if isinstance(state, dict) else ["everything"]
    if missing:
        raise RiswbError(f"cannot resume: {path} is not a riswb training state "
                         f"(missing {', '.join(missing)})")
    stored = state.get("trajectory") or _manifest_config(run)
    changes = (config.trajectory_changes(stored) if stored is not None
               else ["unknown (the run records no config)"])
    if changes and not force:
        raise RiswbError(f"cannot resume {run}: the config's trajectory differs from the "
                         f"run's: {'; '.join(changes)} (--force resumes anyway)")
    return state, changes


def _manifest_config(run: Path) -> dict[str, Any] | None:
    try:
        config = json.loads((run / "manifest.json").read_text(encoding="utf-8"))["config"]
    except (OSError, ValueError, KeyError, TypeError):
        return None
    return config if isinstance(config, dict) and config else None
