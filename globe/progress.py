"""Progress a person can read while a stage runs: plain lines on stdout, which `globe run` streams to the terminal.

Hugging Face's own progress output is a tqdm bar (a widget in a notebook, invisible in the terminal) plus the raw log
dict of every step. Every globe trainer replaces both with `StepLine`; distillation and evaluation count with
`Progress`:

    grpo  step   3/8   reward 0.412 ± 0.205  format 0.50  kl 0.0012  [1.90 s/step]
    sft   step  50/300 loss 2.310  eval 2.904  lr 4.9e-03  [0.60 s/step]
    eval  sample/grpo   32/57 images  [6.10 images/s]

Wall-clock figures are the one thing two runs of the same commit do not share. They are always written as a
bracketed token (`rate`, `seconds`), which `globe run` strips from the executed notebook it keeps (`strip_timing`),
so that the notebook, a DVC output, is the same file on every rerun; the terminal shows them. Stages record their
wall times with `record_timing` under `.globe/runs/<stage>/` (untracked, not a DVC output) and `globe run` prints
them when the stage ends.
"""

from __future__ import annotations

import json
import os
import re
import sys
import time
from collections.abc import Mapping
from pathlib import Path
from typing import Any

# What a step's log says about time, not about training (kept out of tracked result files).
TIMING_KEYS = ("step_time", "train_runtime", "train_samples_per_second", "train_steps_per_second", "total_flos",
               "eval_runtime", "eval_samples_per_second", "eval_steps_per_second")


RUNS_DIR = Path(".globe") / "runs"  # per-stage wall times (relative to the project root, where stages run)


def runs_dir(root: str | os.PathLike | None = None) -> Path:
    """Where stages record wall times: `$GLOBE_RUNS_DIR` when set (the tests point it at a temporary folder), else
    `<root>/.globe/runs` (root: the working directory)."""
    env = os.environ.get("GLOBE_RUNS_DIR")
    return Path(env) if env else Path(root or ".") / RUNS_DIR


_TIMING_TOKEN = re.compile(r" *\[[-+0-9.eE]+ (?:s|s/step|[A-Za-z]+/s)\]")


def rate(value: float, unit: str) -> str:
    """A throughput as a timing token: `[6.10 images/s]`, `[1.90 s/step]`."""
    return f"[{value:.2f} {unit}]"


def seconds(value: float) -> str:
    """A duration as a timing token: `[12.30 s]`."""
    return f"[{value:.2f} s]"


def strip_timing(text: str) -> str:
    """`text` without its timing tokens (see the module docstring)."""
    return _TIMING_TOKEN.sub("", text)


def record_timing(stage: str, figures: Mapping[str, Any], root: str | os.PathLike | None = None) -> Path:
    """Merge wall-clock `figures` into `.globe/runs/<stage>/timing.json` (kept out of every tracked file)."""
    path = runs_dir(root) / stage / "timing.json"
    path.parent.mkdir(parents=True, exist_ok=True)
    old = json.loads(path.read_text(encoding="utf-8")) if path.is_file() else {}
    path.write_text(json.dumps({**old, **dict(figures)}, indent=2) + "\n", encoding="utf-8")
    return path


def _fmt(v: Any) -> str:
    if isinstance(v, float):
        return f"{v:.2e}" if v != 0 and (abs(v) < 1e-3 or abs(v) >= 1e4) else f"{v:.3f}"
    return str(v)


def step_line(name: str, step: int, total: int | None, logs: dict, seconds_per_step: float | None) -> str:
    """The line for one logged step (see the module docstring)."""
    width = len(str(total)) if total else 3
    head = f"{name:<5} step {step:>{width}}/{total if total else '?'}"
    fields = []
    if "reward" in logs:
        std = logs.get("reward_std")
        fields.append(f"reward {_fmt(logs['reward'])}" + (f" ± {_fmt(std)}" if std is not None else ""))
        for key, value in logs.items():
            if key.startswith("rewards/") and key.endswith("/mean"):
                fields.append(f"{key[len('rewards/'):-len('/mean')]} {_fmt(value)}")
        if "kl" in logs:
            fields.append(f"kl {_fmt(logs['kl'])}")
        if "completions/mean_length" in logs:
            fields.append(f"len {logs['completions/mean_length']:.0f}")
    for key, label in (("loss", "loss"), ("eval_loss", "eval"), ("learning_rate", "lr")):
        if key in logs and "reward" not in logs:
            fields.append(f"{label} {_fmt(logs[key])}")
    tail = rate(seconds_per_step, "s/step") if seconds_per_step is not None else ""
    return "  ".join([head, *fields, tail]).rstrip()


def step_logger(name: str, stage: str | None = None):
    """A TrainerCallback printing `step_line` for each logged step (main process only); the trainer's wall times go
    to `record_timing(stage)` (default: `name`), not to trainer_state.json."""
    stage = stage or name
    from transformers import TrainerCallback

    class StepLine(TrainerCallback):
        def __init__(self):
            self._t0: float | None = None
            self._step0 = 0

        def on_train_begin(self, args, state, control, **kw):
            self._t0, self._step0 = time.perf_counter(), state.global_step
            if state.is_world_process_zero:
                start = f" (resuming at step {state.global_step})" if state.global_step else ""
                print(f"{name:<5} training {state.max_steps} steps{start}", flush=True)

        def on_log(self, args, state, control, logs=None, **kw):
            # Wall times stay out of trainer_state.json (inside the DVC-tracked checkpoints): a rerun writes the
            # same file. They are recorded under .globe/runs/ instead.
            if state.log_history:
                times = {k: state.log_history[-1].pop(k) for k in TIMING_KEYS if k in state.log_history[-1]}
                if state.is_world_process_zero and "train_runtime" in times:
                    record_timing(stage, {"trainer": times})
            if not state.is_world_process_zero or not logs or any(k in logs for k in ("train_runtime",)):
                return
            done = state.global_step - self._step0
            per = (time.perf_counter() - self._t0) / done if self._t0 is not None and done > 0 else None
            print(step_line(name, state.global_step, state.max_steps, logs, per), file=sys.stdout, flush=True)

    return StepLine()


def plain_progress(trainer, name: str, stage: str | None = None) -> None:
    """Replace the trainer's progress bar (tqdm, or the HTML table in a notebook) and raw dict printing with
    `step_logger(name)`."""
    from transformers.trainer_callback import PrinterCallback, ProgressCallback
    from transformers.utils.notebook import NotebookProgressCallback

    for cls in (ProgressCallback, PrinterCallback, NotebookProgressCallback):
        trainer.remove_callback(cls)
    trainer.add_callback(step_logger(name, stage))


class Progress:
    """Counts done items and prints `label done/total unit [rate]` each time another `1/lines` of the total is done
    (and at the end): the same lines on every run, whatever the speed."""

    def __init__(self, label: str, total: int, unit: str = "images", done: int = 0, lines: int = 10,
                 enabled: bool = True):
        self.label, self.total, self.unit, self.done = label, total, unit, done
        self.enabled = enabled
        self._every = max(1, -(-total // max(1, lines)))
        self._start_done, self._t0 = done, time.perf_counter()
        self._next = (done // self._every + 1) * self._every

    def update(self, n: int) -> None:
        self.done += n
        if self.enabled and (self.done >= self._next or self.done >= self.total):
            self._next = (self.done // self._every + 1) * self._every
            self._print(time.perf_counter())

    def _print(self, now: float) -> None:
        new = self.done - self._start_done
        speed = "  " + rate(new / (now - self._t0), f"{self.unit}/s") if new and now > self._t0 else ""
        print(f"{self.label}  {self.done}/{self.total} {self.unit}{speed}", file=sys.stdout, flush=True)
