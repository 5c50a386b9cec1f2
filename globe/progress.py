"""Progress a person can read while a stage runs: plain lines on stdout, which `globe run` streams to the terminal.

Hugging Face's own progress output is a tqdm bar (a widget in a notebook, invisible in the terminal) plus the raw log
dict of every step. Every globe trainer replaces both with `StepLine`; distillation and evaluation count with
`Progress`:

    grpo  step   3/8   reward 0.412 ± 0.205  format 0.50  kl 0.0012   1.9 s/step
    sft   step  50/300 loss 2.310  eval 2.904  lr 4.9e-03              0.6 s/step
    eval  sample/grpo   32/57 images  6.1 images/s
"""

from __future__ import annotations

import sys
import time
from typing import Any

# What a step's log says about time, not about training (kept out of tracked result files).
TIMING_KEYS = ("step_time", "train_runtime", "train_samples_per_second", "train_steps_per_second", "total_flos",
               "eval_runtime", "eval_samples_per_second", "eval_steps_per_second")


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
    tail = f"{seconds_per_step:.2f} s/step" if seconds_per_step is not None else ""
    return "  ".join([head, *fields, tail]).rstrip()


def step_logger(name: str):
    """A TrainerCallback printing `step_line` for each logged step (main process only)."""
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
            if not state.is_world_process_zero or not logs or any(k in logs for k in ("train_runtime",)):
                return
            done = state.global_step - self._step0
            per = (time.perf_counter() - self._t0) / done if self._t0 is not None and done > 0 else None
            print(step_line(name, state.global_step, state.max_steps, logs, per), file=sys.stdout, flush=True)

    return StepLine()


def plain_progress(trainer, name: str) -> None:
    """Replace the trainer's tqdm bar and raw dict printing with `step_logger(name)`."""
    from transformers.trainer_callback import PrinterCallback, ProgressCallback

    trainer.remove_callback(ProgressCallback)
    trainer.remove_callback(PrinterCallback)
    trainer.add_callback(step_logger(name))


class Progress:
    """Counts done items and prints a line every `every_s` seconds (and at the end): `label done/total unit rate`."""

    def __init__(self, label: str, total: int, unit: str = "images", done: int = 0, every_s: float = 10.0,
                 enabled: bool = True):
        self.label, self.total, self.unit, self.done = label, total, unit, done
        self.every_s, self.enabled = every_s, enabled
        self._start_done, self._t0 = done, time.perf_counter()
        self._last = self._t0

    def update(self, n: int) -> None:
        self.done += n
        now = time.perf_counter()
        if self.enabled and (now - self._last >= self.every_s or self.done >= self.total):
            self._last = now
            self._print(now)

    def _print(self, now: float) -> None:
        new = self.done - self._start_done
        rate = f"  {new / (now - self._t0):.2f} {self.unit}/s" if new and now > self._t0 else ""
        print(f"{self.label}  {self.done}/{self.total} {self.unit}{rate}", file=sys.stdout, flush=True)
