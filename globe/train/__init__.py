"""TRL trainers for the policy: supervised fine-tuning on distilled reasoning (`train_sft`) and GRPO (`train_grpo`).

Import-light on purpose: each trainer module imports torch / transformers / TRL inside its functions, and the names
below are resolved lazily, so `import globe.train` costs nothing (and the unsloth backend can still be imported
before transformers when it is chosen).
"""

from __future__ import annotations

import json
import logging
import shutil
from pathlib import Path
from typing import Any

log = logging.getLogger(__name__)

FINGERPRINT_FILE = "globe_run_settings.json"

_LAZY = {
    "train_sft": "globe.train.sft",
    "SFTConfigParams": "globe.train.sft",
    "train_grpo": "globe.train.grpo",
}

__all__ = sorted([*_LAZY, "data_fingerprint", "resume_checkpoint"])


def __getattr__(name: str) -> Any:
    if name in _LAZY:
        import importlib

        return getattr(importlib.import_module(_LAZY[name]), name)
    raise AttributeError(f"module 'globe.train' has no attribute {name!r}")


def data_fingerprint(path: str | Path) -> str | None:
    """The `datasets` fingerprints of a dataset saved on disk (one per split): they change when its content does."""
    states = sorted(Path(path).glob("**/state.json"))
    if not states:
        return None
    return ",".join(json.loads(p.read_text()).get("_fingerprint", "?") for p in states)


def resume_checkpoint(checkpoint_dir: str | Path, settings: dict, resume: bool = True,
                      stamp_name: str = FINGERPRINT_FILE) -> str | None:
    """The checkpoint a Trainer should resume from: the newest one in `checkpoint_dir`, if it was written by a run with
    the same `settings` (training settings and data fingerprint, JSON-able).

    A run killed mid-way resumes; a run whose settings or data changed since (another experiment) starts over, saying
    so, rather than continuing from checkpoints that belong to another experiment; `resume=False` always starts over.
    The settings are stamped beside the checkpoints before training starts.
    """
    from transformers.trainer_utils import get_last_checkpoint

    ckpt = Path(checkpoint_dir)
    stamp = ckpt / stamp_name
    now = json.loads(json.dumps(settings))
    if ckpt.is_dir() and not resume:
        log.info("resume is off: removing old checkpoints in %s", ckpt)
        shutil.rmtree(ckpt)
    last = get_last_checkpoint(str(ckpt)) if ckpt.is_dir() else None
    if last is not None:
        before = json.loads(stamp.read_text()) if stamp.is_file() else None
        if before != now:
            changed = sorted(k for k in now if (before or {}).get(k) != now[k])
            log.warning("%s holds checkpoints of a run with other settings or data (%s): starting over", ckpt,
                        ", ".join(changed) or "no record")
            shutil.rmtree(ckpt)
            last = None
    ckpt.mkdir(parents=True, exist_ok=True)
    stamp.write_text(json.dumps(now, indent=2) + "\n")
    return last
