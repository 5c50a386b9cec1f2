"""Running one pipeline stage: its notebook through papermill, with its parameters checked first and a lock held.

`dvc.yaml` runs every stage as `globe run STAGE`, which
1. takes the stage's parameters from params.yaml (`globe.config.stage_params`) and validates them with the stage's
   typed config, so a wrong type or value fails in a second with a message naming the key, before a kernel starts;
2. takes an exclusive lock for the stage (`.globe/locks/<stage>.lock`), so two runs of one stage (say a second
   `dvc repro` started while the first one's notebook is still writing after `dvc` itself was killed) never write the
   same outputs and caches at once: the second one stops at once, naming the live writer's pid;
3. executes the notebook with papermill into `results/notebooks/`, streaming the notebook's own output (progress
   lines, logs) to the terminal as it runs, in a kernel whose string hashing is seeded (`PYTHONHASHSEED`: set
   iteration order, hence e.g. the tag order of a saved model card, repeats) and whose CPU numerics are pinned
   (`globe.config.environment.reproducible_cpu_env`);
4. scrubs what differs between two runs of the same commit from the executed notebook (`scrub_notebook`:
   execution timestamps, the injected cell's random id, wall-clock tokens in the streamed output), so that it, a DVC
   output, is the same file on every rerun; then prints the stage's wall times (`.globe/runs/<group>/timing.json`).

`papermill notebooks/04_grpo.ipynb out.ipynb -p steps 2000` still works for one-off runs; `globe run` adds the checks.
"""

from __future__ import annotations

import contextlib
import fcntl
import json
import logging
import os
import time
from collections.abc import Iterator, Mapping
from pathlib import Path
from typing import Any

from globe.config import config_class, notebook_of, project_root, stage_of, stage_params
from globe.config.environment import reproducible_cpu_env

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

    from globe.progress import record_timing, runs_dir

    root = project_root(Path(params_path).parent if params_path else None)
    name, group = notebook_of(stage), stage_of(stage).group
    params = {**stage_params(name, params_path), **dict(overrides or {})}
    config_class(name).from_params(params)  # raises ParamsError naming the key, before any kernel starts
    output = Path(output) if output else root / "results" / "notebooks" / f"{name}.ipynb"
    output.parent.mkdir(parents=True, exist_ok=True)
    with stage_lock(name, root):
        timing = runs_dir(root) / group / "timing.json"
        timing.unlink(missing_ok=True)  # this run's figures only
        log.info("running %s -> %s", name, output)
        # For the kernel papermill starts (it inherits the environment): seeded string hashing, and CPU numerics
        # that repeat across machines (globe.config.environment.REPRODUCIBLE_CPU_ENV).
        kernel_env = {"PYTHONHASHSEED": str(params.get("seed", 0)), **reproducible_cpu_env()}
        t0 = time.perf_counter()
        with _environ(kernel_env):
            papermill.execute_notebook(str(root / "notebooks" / f"{name}.ipynb"), str(output), parameters=params,
                                       log_output=log_output, progress_bar=False, cwd=str(root))
        scrub_notebook(output)
        record_timing(group, {"notebook_s": round(time.perf_counter() - t0, 2)}, root)
        print(f"{name} done: " + json.dumps(json.loads(timing.read_text(encoding="utf-8"))), flush=True)
    return output


@contextlib.contextmanager
def _environ(extra: Mapping[str, str]) -> Iterator[None]:
    """os.environ with `extra` set, restored afterwards."""
    saved = {k: os.environ.get(k) for k in extra}
    os.environ.update(extra)
    try:
        yield
    finally:
        for k, v in saved.items():
            if v is None:
                os.environ.pop(k, None)
            else:
                os.environ[k] = v


def scrub_notebook(path: str | os.PathLike) -> None:
    """Remove from an executed notebook what two runs of the same commit do not share: papermill's and nbclient's
    timestamps and durations, the absolute input and output paths, the random id of the injected-parameters cell,
    the wall-clock tokens (`globe.progress.strip_timing`) in streamed output, and where the kernel happened to cut a
    stream into messages. What ran (parameters, outputs, errors) stays."""
    import nbformat

    from globe.progress import strip_timing

    nb = nbformat.read(str(path), as_version=4)
    meta = nb.metadata.get("papermill", {})
    nb.metadata["papermill"] = {k: meta[k] for k in ("parameters", "version", "environment_variables") if k in meta}
    for cell in nb.cells:
        cell.metadata.pop("execution", None)
        if "papermill" in cell.metadata:
            cell.metadata["papermill"] = {k: v for k, v in cell.metadata["papermill"].items()
                                          if k in ("status", "exception")}
        if "injected-parameters" in (cell.metadata.get("tags") or []):
            cell["id"] = "injected-parameters"
        outputs = []
        for out in cell.get("outputs", []):
            if out.get("output_type") == "stream":
                out["text"] = strip_timing(out["text"])
                # one print can arrive as two messages (the kernel flushes on a timer): merge a stream's runs
                if outputs and outputs[-1].get("output_type") == "stream" and outputs[-1]["name"] == out["name"]:
                    outputs[-1]["text"] += out["text"]
                    continue
            outputs.append(out)
        if "outputs" in cell:
            cell["outputs"] = outputs
    nbformat.write(nb, str(path))
