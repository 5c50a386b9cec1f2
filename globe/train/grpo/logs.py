"""What a GRPO run writes for a researcher: one CSV row per step (`results/grpo_log.csv`, wall times apart), the
sampled completions with their image ids and rewards (`results/grpo_samples.jsonl`), and their readers.

A resumed run cuts both files back to the step it resumes from, so nothing is lost or duplicated.
"""

from __future__ import annotations

import csv
import json
import math
import os
import time
from pathlib import Path


class SampleRecorder:
    """Wraps reward functions to keep the completions of every `every`-th step with their image ids and rewards.

    A reward function sees the completions, the dataset columns (`id`, `country`, `city`, ...) and TRL's
    `trainer_state`, so it is the one place that has all of them; the records are written by `GRPOLogCallback`.
    Each process keeps its own slice of the batch; only the main process writes.
    """

    def __init__(self, every: int = 1, weights: dict[str, float] | None = None):
        self.every = every
        self.weights = weights or {}
        self.pending: dict[int, dict] = {}

    def wrap(self, funcs: list) -> list:
        return [self._wrap(fn) for fn in funcs]

    def _wrap(self, fn):
        name = fn.__name__

        def reward(completions, **kwargs):
            values = fn(completions, **kwargs)
            state = kwargs.get("trainer_state")
            step = (state.global_step if state is not None else 0) + 1  # the step these completions train
            if step == 1 or step % self.every == 0:
                batch = self.pending.get(step)
                if batch is None or len(batch["completions"]) != len(completions):
                    from globe.answer import to_text

                    batch = self.pending[step] = {
                        "completions": [to_text(c) for c in completions],
                        "columns": {k: list(kwargs[k]) for k in ("id", "country", "city") if k in kwargs},
                        "rewards": {},
                    }
                batch["rewards"][name] = [None if v is None else float(v) for v in values]
            return values

        reward.__name__ = reward.__qualname__ = name
        return reward

    def pop(self, upto_step: int) -> list[dict]:
        """Records of the steps <= `upto_step`, one per completion, removed from the pending buffer."""
        records = []
        for step in sorted(s for s in self.pending if s <= upto_step):
            batch = self.pending.pop(step)
            for i, text in enumerate(batch["completions"]):
                rewards = {n: v[i] for n, v in batch["rewards"].items()}
                total = sum(self.weights.get(n, 1.0) * v for n, v in rewards.items() if v is not None and not math.isnan(v))
                rec = {"step": step, **{k: v[i] for k, v in batch["columns"].items()}, "completion": text,
                       "rewards": rewards, "reward": total}
                records.append(rec)
        return records


def _make_callback(csv_path: str | os.PathLike, samples_path: str | os.PathLike | None, recorder: SampleRecorder | None,
                   timing_path: str | os.PathLike | None = None):
    from transformers import TrainerCallback

    from globe.progress import TIMING_KEYS

    class GRPOLogCallback(TrainerCallback):
        """One CSV row per optimisation step (every reward component, KL, completion length, loss) and the recorder's
        sample completions as JSONL; the step's wall time goes to a separate `timing_path` CSV, so the tracked log
        holds only numbers a rerun reproduces. On (re)start the files are cut back to the resumed step."""

        def __init__(self):
            self.csv_path = Path(csv_path)
            self.samples_path = Path(samples_path) if samples_path else None
            self.timing_path = Path(timing_path) if timing_path else None
            self.recorder = recorder
            self._t0: float | None = None
            self._step_time: float | None = None

        def on_train_begin(self, args, state, control, **kw):
            if state.is_world_process_zero:
                _truncate_csv(self.csv_path, state.global_step)
                if self.timing_path is not None:
                    _truncate_csv(self.timing_path, state.global_step)
                if self.samples_path is not None:
                    _truncate_jsonl(self.samples_path, state.global_step)

        def on_step_begin(self, args, state, control, **kw):
            self._t0 = time.perf_counter()

        def on_step_end(self, args, state, control, **kw):
            if self._t0 is not None:
                self._step_time = time.perf_counter() - self._t0
            if self.recorder is not None:
                records = self.recorder.pop(state.global_step)
                if state.is_world_process_zero and records and self.samples_path is not None:
                    self.samples_path.parent.mkdir(parents=True, exist_ok=True)
                    with open(self.samples_path, "a", encoding="utf-8") as f:
                        for rec in records:
                            f.write(json.dumps(rec, ensure_ascii=False) + "\n")

        def on_log(self, args, state, control, logs=None, **kw):
            # The end-of-training summary (train_runtime, ...) carries no reward: not a step row.
            if not state.is_world_process_zero or not logs or "reward" not in logs:
                return
            numbers = {k: v for k, v in logs.items() if isinstance(v, (int, float)) or v is None}
            row = {"step": state.global_step, "epoch": state.epoch}
            row.update({k: v for k, v in numbers.items() if k not in TIMING_KEYS})
            _append_csv(self.csv_path, row)
            if self.timing_path is not None:
                _append_csv(self.timing_path, {"step": state.global_step, "step_time_s": self._step_time,
                                               **{k: v for k, v in numbers.items() if k in TIMING_KEYS}})

    return GRPOLogCallback()


def _truncate_csv(path: Path, upto_step: int) -> None:
    """Keep the rows of steps <= `upto_step` (a resumed run redoes the later ones); a run from step 0 starts the file
    afresh (no columns left over from an older log)."""
    if not path.is_file():
        return
    if upto_step <= 0:
        path.unlink()
        return
    with open(path, newline="", encoding="utf-8") as f:
        reader = csv.DictReader(f)
        fields, rows = reader.fieldnames or [], [r for r in reader if int(float(r["step"])) <= upto_step]
    with open(path, "w", newline="", encoding="utf-8") as f:
        w = csv.DictWriter(f, fieldnames=fields)
        w.writeheader()
        w.writerows(rows)


def _truncate_jsonl(path: Path, upto_step: int) -> None:
    if not path.is_file():
        return
    lines = [ln for ln in path.read_text(encoding="utf-8").splitlines() if ln.strip() and json.loads(ln)["step"] <= upto_step]
    path.write_text("".join(ln + "\n" for ln in lines), encoding="utf-8")


def _append_csv(path: Path, row: dict) -> None:
    """Append a row; a row with new columns rewrites the file under the union header (old rows get blanks)."""
    path.parent.mkdir(parents=True, exist_ok=True)
    fields, rows = [], []
    if path.is_file() and path.stat().st_size:
        with open(path, newline="", encoding="utf-8") as f:
            fields = next(csv.reader(f), [])
    if all(k in fields for k in row):
        with open(path, "a", newline="", encoding="utf-8") as f:
            csv.DictWriter(f, fieldnames=fields).writerow(row)
        return
    if fields:
        with open(path, newline="", encoding="utf-8") as f:
            rows = list(csv.DictReader(f))
    fields = fields + [k for k in row if k not in fields]
    with open(path, "w", newline="", encoding="utf-8") as f:
        w = csv.DictWriter(f, fieldnames=fields)
        w.writeheader()
        w.writerows(rows + [row])


def timing_csv(root: str | os.PathLike | None = None) -> Path:
    """Where GRPO's per-step wall times go: `.globe/runs/grpo/timing.csv`, outside every DVC output and tracked
    file (a rerun would change them)."""
    from globe.progress import runs_dir

    return runs_dir(root) / "grpo" / "timing.csv"


def read_log(path: str | os.PathLike = "results/grpo_log.csv", timing: str | os.PathLike | None = None):
    """The per-step log as a DataFrame; with `timing` (a timing CSV, e.g. `timing_csv()`), its step times joined in."""
    import pandas as pd

    log = pd.read_csv(path)
    if timing is not None:
        t = Path(timing)
        if t.is_file():
            log = log.merge(pd.read_csv(t), on="step", how="left")
    return log


def read_samples(path: str | os.PathLike = "results/grpo_samples.jsonl"):
    """The recorded sample completions as a DataFrame (reward components flattened to columns)."""
    import pandas as pd

    recs = [json.loads(ln) for ln in Path(path).read_text(encoding="utf-8").splitlines() if ln.strip()]
    df = pd.json_normalize(recs)
    return df.rename(columns=lambda c: c.replace("rewards.", "reward/"))
