"""The one resume module: which checkpoint a training run continues from, and why.

SFT, the reward model and GRPO all train with a Hugging Face `Trainer` that writes `checkpoint-N` folders into
`<out>/checkpoints`. A run killed at any point must resume without losing or repeating steps, and a run must never
continue (or export) checkpoints that belong to another experiment, or return more training than it was asked for.
So every run goes through `prepare_resume`:

1. `plan_resume` (read-only) compares the run's *settings* (everything that changes what a checkpoint means: model,
   data fingerprint, starting adapter and reward-model digests, non-resumable hyperparameters) with the stamp file
   written beside the checkpoints by the run that made them. Another experiment's checkpoints are *stale*. Among the
   checkpoints of this experiment it picks the newest one at or below the requested number of steps; one exactly at
   it means the run is already *done* (export it, train nothing). Checkpoints beyond the requested steps hold more
   training than asked for.
2. On the main process only, stale checkpoints and those beyond the requested steps are deleted
   (`discard_checkpoints`) and the settings are stamped; then every process waits at a barrier and reads the plan
   again, so no rank lists checkpoints while rank 0 deletes them.

`ResumePlan.message` says, in one line, what the run does; the trainers log it and the notebooks print it.
"""

from __future__ import annotations

import json
import logging
import os
import re
import shutil
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

log = logging.getLogger(__name__)

STAMP_FILE = "globe_run_settings.json"
_CHECKPOINT = re.compile(r"^checkpoint-(\d+)$")
# Trainer bookkeeping in a checkpoint; everything else (adapter or weights, processor files) is the model.
TRAINING_STATE = ("optimizer.pt", "scheduler.pt", "trainer_state.json", "training_args.bin", "rng_state", "scaler.pt")


def data_fingerprint(path: str | os.PathLike | None) -> str | None:
    """The `datasets` fingerprints of a dataset saved on disk (one per split): they change when its content does."""
    if not path or not Path(path).exists():
        return None
    states = sorted(Path(path).glob("**/state.json"))
    if not states:
        return None
    return ",".join(json.loads(p.read_text()).get("_fingerprint", "?") for p in states)


def length_sets_schedule(lr_scheduler_type: str, warmup: float | int = 0) -> bool:
    """Whether the learning-rate schedule depends on the run's total length (then the length is part of the
    experiment: a checkpoint of a 300-step cosine run is not the start of a 100-step one)."""
    share = isinstance(warmup, float) and 0 < warmup < 1
    return lr_scheduler_type not in ("constant", "constant_with_warmup") or share


def run_settings(config: Mapping[str, Any], resumable: Iterable[str], **extra: Any) -> dict:
    """The settings that name an experiment: `config` without the keys a run may change and still resume (length,
    bookkeeping, output paths), plus `extra` (data fingerprint, digests of starting weights), as plain JSON."""
    skip = set(resumable)
    settings = {k: v for k, v in config.items() if k not in skip}
    settings.update(extra)
    return json.loads(json.dumps(settings, default=str))


def experiment_settings(cfg, length_keys: Iterable[str], **extra: Any) -> dict:
    """What names a training experiment: a typed config (with `resumable` keys, `lr_scheduler_type` and
    `warmup_steps`) without the keys a run may change and still resume, plus `extra`. The run's length
    (`length_keys`) is part of the experiment when the learning-rate schedule depends on it."""
    resumable = set(type(cfg).resumable)
    if length_sets_schedule(cfg.lr_scheduler_type, cfg.warmup_steps):
        resumable -= set(length_keys)
    return run_settings(cfg.to_dict(), resumable, **extra)


def checkpoint_step(checkpoint: str | os.PathLike) -> int:
    """The global step a checkpoint holds (its trainer_state.json; the folder name only as a fallback)."""
    state = Path(checkpoint) / "trainer_state.json"
    if state.is_file():
        return int(json.loads(state.read_text(encoding="utf-8"))["global_step"])
    m = _CHECKPOINT.match(Path(checkpoint).name)
    if m is None:
        raise ValueError(f"{checkpoint} is not a checkpoint-N folder")
    return int(m.group(1))


def list_checkpoints(checkpoint_dir: str | os.PathLike) -> list[tuple[int, Path]]:
    """Complete checkpoints (those with a trainer_state.json) as (step, path), oldest first."""
    root = Path(checkpoint_dir)
    if not root.is_dir():
        return []
    found = []
    for p in root.iterdir():
        if p.is_dir() and _CHECKPOINT.match(p.name) and (p / "trainer_state.json").is_file():
            found.append((checkpoint_step(p), p))
    return sorted(found)


def read_stamp(checkpoint_dir: str | os.PathLike) -> dict | None:
    p = Path(checkpoint_dir) / STAMP_FILE
    if not p.is_file():
        return None
    try:
        return json.loads(p.read_text(encoding="utf-8"))
    except ValueError:
        return None


def stamp_settings(checkpoint_dir: str | os.PathLike, settings: Mapping[str, Any]) -> None:
    root = Path(checkpoint_dir)
    root.mkdir(parents=True, exist_ok=True)
    tmp = root / (STAMP_FILE + ".tmp")
    plain = json.loads(json.dumps(dict(settings), default=str))
    tmp.write_text(json.dumps(plain, indent=2, sort_keys=True) + "\n", encoding="utf-8")
    os.replace(tmp, root / STAMP_FILE)


@dataclass
class ResumePlan:
    """What a training run does with the checkpoints it finds (see the module docstring)."""

    checkpoint: str | None = None  # resume from this checkpoint (None: start from step 0)
    step: int = 0  # the step of `checkpoint`
    done: bool = False  # `checkpoint` is exactly at the requested steps: export it, train nothing
    stale: list[str] = field(default_factory=list)  # checkpoints of another experiment (deleted by the main process)
    beyond: list[str] = field(default_factory=list)  # checkpoints past the requested steps (deleted too)
    changed: list[str] = field(default_factory=list)  # the settings that differ from the stamp's
    max_steps: int | None = None
    message: str = ""


def plan_resume(checkpoint_dir: str | os.PathLike, settings: Mapping[str, Any], *, max_steps: int | None = None,
                resume: bool = True) -> ResumePlan:
    """Decide what to do with `checkpoint_dir`'s checkpoints, without touching them (see the module docstring)."""
    now = json.loads(json.dumps(dict(settings), default=str))
    found = list_checkpoints(checkpoint_dir)
    plan = ResumePlan(max_steps=max_steps)
    if not found:
        plan.message = "no checkpoint to resume: training from step 0"
        return plan
    if not resume:
        plan.stale = [str(p) for _, p in found]
        plan.message = f"resume is off: {len(found)} old checkpoint(s) discarded, training from step 0"
        return plan
    before = read_stamp(checkpoint_dir)
    if before != now:
        keys = sorted(set(now) | set(before or {}))
        plan.changed = [k for k in keys if (before or {}).get(k) != now.get(k)] if before is not None else ["(no record)"]
        plan.stale = [str(p) for _, p in found]
        plan.message = (f"{Path(checkpoint_dir)} holds checkpoints of another experiment (changed: "
                        f"{', '.join(plan.changed)}): discarded, training from step 0")
        return plan
    usable = [(s, p) for s, p in found if max_steps is None or s <= max_steps]
    plan.beyond = [str(p) for s, p in found if max_steps is not None and s > max_steps]
    beyond_note = f"; {len(plan.beyond)} checkpoint(s) past steps={max_steps} discarded" if plan.beyond else ""
    if not usable:
        plan.message = f"no checkpoint at or below steps={max_steps}{beyond_note}: training from step 0"
        return plan
    plan.step, path = usable[-1]
    plan.checkpoint = str(path)
    plan.done = max_steps is not None and plan.step == max_steps
    if plan.done:
        plan.message = f"{path.name} already reached steps={max_steps}: exported, nothing trained{beyond_note}"
    else:
        target = f" of {max_steps}" if max_steps is not None else ""
        plan.message = f"resuming {path.name} (step {plan.step}{target}){beyond_note}"
    return plan


def discard_checkpoints(paths: Iterable[str | os.PathLike]) -> None:
    for p in paths:
        shutil.rmtree(p, ignore_errors=True)


def _is_main_process() -> bool:
    return int(os.environ.get("RANK", "0")) == 0


def _barrier() -> None:
    """Wait for every process of a distributed launch (no-op in a single process)."""
    if int(os.environ.get("WORLD_SIZE", "1")) <= 1:
        return
    from accelerate import PartialState

    PartialState().wait_for_everyone()


def prepare_resume(checkpoint_dir: str | os.PathLike, settings: Mapping[str, Any], *, max_steps: int | None = None,
                   resume: bool = True, is_main: bool | None = None,
                   barrier: Callable[[], None] | None = None) -> ResumePlan:
    """Plan, clean up (main process only), stamp, synchronise, and return the plan every process follows."""
    is_main = _is_main_process() if is_main is None else is_main
    barrier = barrier or _barrier
    if is_main:
        plan = plan_resume(checkpoint_dir, settings, max_steps=max_steps, resume=resume)
        discard_checkpoints(plan.stale + plan.beyond)
        stamp_settings(checkpoint_dir, settings)
        log.info("%s", plan.message)
    barrier()
    if not is_main:  # only after rank 0's clean-up, so no rank lists checkpoints while they are deleted
        plan = plan_resume(checkpoint_dir, settings, max_steps=max_steps, resume=True)
    return plan


def export_checkpoint(checkpoint: str | os.PathLike, out: str | os.PathLike) -> Path:
    """Copy a checkpoint's model files (adapter or weights, processor) to `out`, as `trainer.save_model` would."""
    out = Path(out)
    out.mkdir(parents=True, exist_ok=True)
    for f in Path(checkpoint).iterdir():
        if f.is_file() and not f.name.startswith(TRAINING_STATE):
            shutil.copy2(f, out / f.name)
        elif f.is_dir():  # extra adapters (TRL's frozen "ref", a shared reward model) live in subfolders
            shutil.copytree(f, out / f.name, dirs_exist_ok=True)
    return out
