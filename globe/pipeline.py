"""Running one pipeline stage: its notebook through papermill, with its parameters checked first and a lock held.

`dvc.yaml` runs every stage as `globe run STAGE`, which
1. takes the stage's parameters from params.yaml (`globe.config.stage_params`) and validates them with the stage's
   typed config, so a wrong type or value fails in a second with a message naming the key, before a kernel starts;
2. takes an exclusive lock for the stage (`.globe/locks/<stage>.lock`), so two runs of one stage (say a second
   `dvc repro` started while the first one's notebook is still writing after `dvc` itself was killed) never write the
   same outputs and caches at once: the second one stops at once, naming the live writer's pid;
3. executes the notebook with papermill into `results/notebooks/`, streaming the notebook's own output (progress
   lines, logs) to the terminal as it runs.

`papermill notebooks/04_grpo.ipynb out.ipynb -p steps 2000` still works for one-off runs; `globe run` adds the checks.
"""

from __future__ import annotations

import contextlib
import fcntl
import logging
import os
from collections.abc import Iterator, Mapping
from pathlib import Path
from typing import Any

from globe.config import config_class, notebook_of, project_root, stage_params

log = logging.getLogger(__name__)

LOCK_DIR = Path(".globe") / "locks"


class StageBusy(RuntimeError):
    """Another process is running this stage."""


@contextlib.contextmanager
def stage_lock(stage: str, root: str | os.PathLike | None = None) -> Iterator[Path]:
    """Hold `.globe/locks/<stage>.lock` exclusively (released when the holder exits, however it exits)."""
    path = Path(root or project_root()) / LOCK_DIR / f"{notebook_of(stage)}.lock"
    path.parent.mkdir(parents=True, exist_ok=True)
    fd = os.open(path, os.O_RDWR | os.O_CREAT, 0o644)
    try:
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            holder = os.pread(fd, 64, 0).decode(errors="replace").strip() or "unknown"
            raise StageBusy(f"stage {notebook_of(stage)} is already running (pid {holder}); wait for it or stop it "
                            f"before running it again") from None
        os.ftruncate(fd, 0)
        os.pwrite(fd, str(os.getpid()).encode(), 0)
        yield path
    finally:
        os.close(fd)  # closing the descriptor releases the lock


def run_stage(stage: str, *, params_path: str | os.PathLike | None = None, output: str | os.PathLike | None = None,
              overrides: Mapping[str, Any] | None = None, log_output: bool = True) -> Path:
    """Validate, lock and execute one stage's notebook; returns the executed notebook's path."""
    import papermill

    root = project_root(Path(params_path).parent if params_path else None)
    name = notebook_of(stage)
    params = {**stage_params(name, params_path), **dict(overrides or {})}
    config_class(name).from_params(params)  # raises ParamsError naming the key, before any kernel starts
    output = Path(output) if output else root / "results" / "notebooks" / f"{name}.ipynb"
    output.parent.mkdir(parents=True, exist_ok=True)
    with stage_lock(name, root):
        log.info("running %s -> %s", name, output)
        papermill.execute_notebook(str(root / "notebooks" / f"{name}.ipynb"), str(output), parameters=params,
                                   log_output=log_output, progress_bar=False, cwd=str(root))
    return output
