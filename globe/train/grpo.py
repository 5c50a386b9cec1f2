"""GRPO: reinforce the policy's reasoning with GLOBE's rewards, through TRL's `GRPOTrainer`.

The policy (the base VLM, or the SFT adapter continued) samples `num_generations` completions per photo; each
completion is scored by the reward functions named in params (`globe.rewards`: format, accuracy, localizability,
visual grounding, ...), the weighted sum is normalised within its group, and TRL takes the clipped policy-gradient
step with a small KL pull towards the reference (the policy as it started: TRL keeps a frozen copy of the initial
adapter, so after SFT the reference is the SFT model). We only wire things:
params -> `GRPOParams` -> TRL's `GRPOConfig`, the MP16-Reason-style dataset -> TRL's VLM format, and two callbacks
that write what a researcher plots (`results/grpo_log.csv`, one row per step) and reads (`results/grpo_samples.jsonl`,
sampled completions with their image ids and rewards).

A run killed at any point resumes from the newest `checkpoint-N` in `out/checkpoints`: training state, the CSV and the
JSONL all continue from that step; rows written after it (and so redone) are dropped first, so nothing is lost or
duplicated. A rerun whose checkpoint already reached `steps` only exports it.

Backends: on a CUDA machine with unsloth installed, `globe.models.select_backend` picks unsloth's `FastVisionModel`
(LoRA, optionally 4-bit, optionally vLLM generation); unsloth must be imported before TRL/transformers, which is
why the backend is chosen before anything else is imported here. Elsewhere: transformers + PEFT on CPU or GPU.

Multi-GPU: `accelerate launch --config_file configs/accelerate/ddp.yaml -m globe.train.grpo --params params.yaml`
(zero2.yaml / zero3.yaml for DeepSpeed).
"""

from __future__ import annotations

import argparse
import csv
import dataclasses
import json
import logging
import math
import os
import re
import sys
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, ClassVar, Literal

from globe.config import ParamsError, StageConfig

log = logging.getLogger(__name__)


@dataclass
class GRPOParams(StageConfig):
    """Everything a GRPO run reads: params.yaml's `grpo` group (plus `seed`, `base_model`, `offline` from `common`)."""

    group: ClassVar[str] = "grpo"
    # Keys a run may change and still continue another run's checkpoints (length and bookkeeping); the length only
    # while the learning-rate schedule does not depend on it.
    resumable: ClassVar[frozenset[str]] = frozenset({
        "steps", "num_train_epochs", "save_steps", "save_total_limit", "resume", "out", "log_csv", "samples",
        "sample_every", "report_to", "reward_model_client", "num_processes", "vllm_server_base_url"})

    # data and model
    dataset: str = "data/mp16_reason"  # a distilled DatasetDict on disk, or a hub id (globe-project/MP16-Reason)
    split: str = "train"
    prompt: str | None = None  # a name in globe.prompts.PROMPTS (GLOBE: globe-train); None: each sample's prompt
    base_model: str = "models/tiny-qwen2.5-vl"
    init_adapter: str | None = None  # e.g. models/sft: continue training the SFT adapter; None: fresh LoRA
    out: str = "models/grpo"
    log_csv: str = "results/grpo_log.csv"
    samples: str = "results/grpo_samples.jsonl"
    sample_every: int = 1  # write the completions of every N-th step to `samples`
    # rewards: globe.rewards spec, name -> weight or name -> {weight: w, **factory options}, in params order
    rewards: dict[str, Any] = field(default_factory=lambda: {"format": 1.0, "accuracy": 1.0, "visual": 0.2})
    # the localizability reward's scorer: a reward-model dir (LocalizabilityScorer) or an http endpoint (EndpointScorer)
    reward_model: str | None = None
    reward_model_share: bool = True  # a LoRA reward model rides on the policy's base weights (no second copy)
    # the endpoint client's settings (EndpointScorer keywords: model, timeout_s, retries, error_budget, on_error, ...)
    reward_model_client: dict[str, Any] = field(default_factory=dict)
    # GRPO
    steps: int | None = 4  # optimisation steps; None: `num_train_epochs` passes over the data (GLOBE: 1 epoch)
    num_train_epochs: float | None = None
    num_generations: int = 4
    max_completion_length: int = 64
    max_prompt_length: int | None = None  # passed only to TRL versions that still take it
    temperature: float = 1.0
    top_p: float = 1.0
    learning_rate: float = 1e-6
    beta: float = 0.001
    loss_type: str = "grpo"
    epsilon: float = 0.2
    scale_rewards: str = "group"
    per_device_train_batch_size: int = 4
    gradient_accumulation_steps: int = 1
    num_iterations: int = 1
    warmup_steps: float = 0.0  # an int counts steps, a float in [0, 1) is a share of all steps
    lr_scheduler_type: str = "constant"
    max_grad_norm: float = 1.0
    # Optimiser, set explicitly: Unsloth's patched GRPOConfig defaults to adamw_8bit and weight_decay 0.001 where plain
    # TRL uses adamw_torch_fused and 0.0, so leaving them unset would train the two backends differently.
    optim: str = "adamw_torch_fused"
    weight_decay: float = 0.0
    save_steps: int = 2
    save_total_limit: int = 2
    gradient_checkpointing: bool = False
    max_pixels: int | None = None  # cap on the processor's pixel budget per image (None: the processor's own)
    # LoRA (a fresh adapter when init_adapter is None; globe.models.lora_settings keys). null: full fine-tuning
    # (init_adapter then merged into the weights first); the reference is then a fresh copy of base_model.
    lora: dict[str, Any] | None = field(default_factory=lambda: {
        "r": 16, "alpha": 32, "dropout": 0.05,
        "target_modules": ["q_proj", "k_proj", "v_proj", "o_proj", "gate_proj", "up_proj", "down_proj"],
        "finetune_vision_layers": False,
    })
    # backend
    backend: Literal["auto", "transformers", "unsloth"] = "auto"
    dtype: str = "auto"
    load_in_4bit: bool = False
    use_vllm: bool = False
    vllm_mode: str = "colocate"
    vllm_gpu_memory_utilization: float = 0.5
    vllm_max_model_length: int | None = None  # TRL's name for swift's --vllm_max_model_len (GLOBE: 1024)
    vllm_server_base_url: str | None = None  # vllm_mode server: the `trl vllm-serve` endpoint (None: TRL's default)
    # Generation overlapping training (swift's --async_generate). TRL 1.16's GRPOTrainer has none (its experimental
    # AsyncGRPOTrainer drops the dataset columns GLOBE's rewards read and runs rewards on CPU): asked for, the run
    # says so and generates synchronously (`async_generation_used` in the summary).
    async_generation: bool = False
    deepspeed: str | None = None  # a DeepSpeed JSON config (configs/deepspeed/zero3.json: GLOBE's ZeRO-3)
    # Processes the batch arithmetic assumes (GLOBE: 6 GPUs x 8 x 2 accumulation = 96 completions, 6 prompts x 16);
    # None: whatever the launcher starts. Set and not under a launcher, the stage launches itself on that many
    # processes (globe.launch); under a launcher with another WORLD_SIZE it stops before loading anything.
    num_processes: int | None = None
    report_to: str = "none"
    resume: bool = True  # continue from the newest checkpoint in <out>/checkpoints
    # common
    seed: int = 0
    offline: bool = True

    @property
    def checkpoint_dir(self) -> Path:
        return Path(self.out) / "checkpoints"

    def validate(self) -> None:
        from globe.models import lora_settings
        from globe.rewards import check_reward_spec, get_reward_weights

        self.require((self.steps is None) != (self.num_train_epochs is None), "steps",
                     "set exactly one of steps (a step count) and num_train_epochs (epochs), the other null; got "
                     f"steps={self.steps}, num_train_epochs={self.num_train_epochs}")
        self.require(self.steps is None or self.steps >= 1, "steps", f"must be >= 1, got {self.steps}")
        self.require(self.num_train_epochs is None or self.num_train_epochs > 0, "num_train_epochs", "must be > 0")
        if self.prompt is not None:
            from globe.prompts import PROMPTS

            self.require(self.prompt in PROMPTS, "prompt", f"unknown prompt {self.prompt!r}; known: {sorted(PROMPTS)}")
        self.require(self.vllm_max_model_length is None or self.vllm_max_model_length >= 1, "vllm_max_model_length",
                     "must be >= 1 or null")
        self.require(self.deepspeed is None or Path(self.deepspeed).is_file(), "deepspeed",
                     f"{self.deepspeed} is not a file (a DeepSpeed JSON config, e.g. configs/deepspeed/zero3.json)")
        self.require(self.num_generations >= 2, "num_generations",
                     f"must be >= 2 (GRPO compares a group), got {self.num_generations}")
        self.require(bool(self.rewards), "rewards", "is empty: name at least one reward (e.g. {format: 1.0})")
        try:
            check_reward_spec(self.rewards)
        except (KeyError, TypeError, ValueError) as e:
            raise ParamsError(f"grpo.rewards: {e.args[0] if e.args else e}") from None
        self.require(all(math.isfinite(w) for w in get_reward_weights(self.rewards)), "rewards",
                     f"weights must be finite numbers; got {self.rewards}")
        self.require("localizability" not in self.rewards or bool(self.reward_model), "reward_model",
                     "the localizability reward needs a reward-model dir or endpoint URL")
        from globe.launch import check_world

        mismatch = check_world(self)
        self.require(mismatch is None, "num_processes", mismatch or "")
        world = self.num_processes or int(os.environ.get("WORLD_SIZE", "1"))
        batch = self.per_device_train_batch_size * self.gradient_accumulation_steps * world
        self.require(batch % self.num_generations == 0, "num_generations",
                     f"must divide the batch: per_device_train_batch_size {self.per_device_train_batch_size} x "
                     f"gradient_accumulation_steps {self.gradient_accumulation_steps} x {world} process(es) = "
                     f"{batch} completions per step, not a multiple of {self.num_generations}")
        if self.lora is not None:
            try:
                lora_settings(**self.lora)
            except (TypeError, ValueError) as e:
                raise ParamsError(f"grpo.lora: {e}") from None
        else:
            self.require(self.backend != "unsloth" and not self.load_in_4bit, "lora",
                         "full fine-tuning (lora: null) needs backend transformers and no load_in_4bit")
        self.require(self.sample_every >= 1 and self.save_steps >= 1, "save_steps",
                     "sample_every and save_steps must be >= 1")
        self.require(self.learning_rate > 0, "learning_rate", "must be > 0")
        from globe.config import check_env_name

        check_env_name(self.reward_model_client.get("api_key_env"), "grpo.reward_model_client.api_key_env")


# ---------------------------------------------------------------------------------------------------------------------
# Rewards


def build_rewards(cfg: GRPOParams, policy=None, processor=None) -> tuple[list, list[float]]:
    """Reward functions and their weights, in params order, from `globe.rewards` (the scorer built when needed)."""
    from globe.rewards import get_reward_funcs, get_reward_weights

    scorer = make_scorer(cfg, policy, processor) if "localizability" in cfg.rewards else None
    return get_reward_funcs(cfg.rewards, scorer=scorer), get_reward_weights(cfg.rewards)


def make_scorer(cfg: GRPOParams, policy=None, processor=None):
    """The localizability reward model: an http(s) endpoint (`globe serve-reward-model`) or a reward-model dir.

    A local reward model (a LoRA adapter) is attached to a LoRA policy as a second adapter, so both share one copy of
    the base weights (`reward_model_share`); otherwise (full fine-tuning, or asked) it loads its own copy. Not on the
    unsloth + vLLM path (a policy with a `vllm_engine`): there each rollout's LoRA request is built from every
    `lora_A`/`lora_B` tensor in the policy's state dict (unsloth_zoo's `load_lora`), so a second adapter riding on the
    policy would go into the rollout weights; the reward model then loads its own copy.
    """
    from globe import reward_model as rm

    url = cfg.reward_model
    if url.startswith(("http://", "https://")):
        return rm.EndpointScorer(url, **cfg.reward_model_client)
    if not Path(url).exists():
        raise FileNotFoundError(f"grpo.reward_model {url} does not exist: train it first (notebook 03b_reward_model)")
    if cfg.reward_model_share and policy is not None and hasattr(policy, "peft_config"):
        if getattr(policy, "vllm_engine", None) is None:
            return rm.LocalizabilityScorer(policy, url, processor=processor)
        log.warning("grpo.reward_model_share is ignored on the unsloth + vLLM path: its rollouts would carry the reward "
                    "model's adapter too; loading a separate copy of the reward model")
    return rm.LocalizabilityScorer(url)


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


# ---------------------------------------------------------------------------------------------------------------------
# Logging callback


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
    """Keep the rows of steps <= `upto_step` (a resumed run redoes the later ones)."""
    if not path.is_file():
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


TIMING_FILE = "timing.csv"  # per-step wall times, beside the adapter (a DVC output, not a tracked result file)


def read_log(path: str | os.PathLike = "results/grpo_log.csv", timing: str | os.PathLike | None = None):
    """The per-step log as a DataFrame; with `timing` (an adapter dir or a timing CSV), its step times joined in."""
    import pandas as pd

    log = pd.read_csv(path)
    if timing is not None:
        t = Path(timing) / TIMING_FILE if Path(timing).is_dir() else Path(timing)
        if t.is_file():
            log = log.merge(pd.read_csv(t), on="step", how="left")
    return log


def read_samples(path: str | os.PathLike = "results/grpo_samples.jsonl"):
    """The recorded sample completions as a DataFrame (reward components flattened to columns)."""
    import pandas as pd

    recs = [json.loads(ln) for ln in Path(path).read_text(encoding="utf-8").splitlines() if ln.strip()]
    df = pd.json_normalize(recs)
    return df.rename(columns=lambda c: c.replace("rewards.", "reward/"))


# ---------------------------------------------------------------------------------------------------------------------
# Dataset


def to_grpo_dataset(ds, prompt: str | None = None):
    """An MP16-Reason-style split -> TRL's VLM GRPO format.

    TRL wants a conversational `prompt` (a user turn; it inserts the image placeholder itself) and an `image` column.
    The photo's own prompt text (column `prompt`) is kept as `prompt_text`; every other column stays, because TRL
    hands the columns to the reward functions (accuracy needs `country`/`city`, visual grounding `entities`, ...).
    """
    from globe.prompts import REASONING_PROMPT

    if "image" not in ds.column_names:
        raise ValueError(f"the GRPO dataset needs an `image` column; it has {ds.column_names}")
    if "prompt" in ds.column_names:
        ds = ds.rename_column("prompt", "prompt_text")

    def convert(ex):
        text = prompt or ex.get("prompt_text") or REASONING_PROMPT
        return {"prompt": [{"role": "user", "content": text}]}

    return ds.map(convert, desc="GRPO prompts")


def _is_hub_id(name: str) -> bool:
    """`owner/name` (a Hugging Face dataset id): not an absolute or dotted path, and `owner` is no local folder
    (so a missing `data/mp16_reason` is reported as a missing distillation output, not looked up on the hub)."""
    return (bool(re.fullmatch(r"[\w.-]+/[\w.-]+", name)) and not name.startswith((".", "/"))
            and not Path(name.split("/")[0]).exists())


def load_grpo_dataset(cfg: GRPOParams):
    """The training split of `cfg.dataset` (a DatasetDict saved with save_to_disk) in TRL's format."""
    from datasets import DatasetDict

    from globe.data import open_saved

    path = Path(cfg.dataset)
    if not path.exists() and _is_hub_id(cfg.dataset):
        from globe import mp16_reason

        if cfg.offline:
            raise FileNotFoundError(f"grpo.dataset {cfg.dataset!r} is a hub id and common.offline is true")
        ds = mp16_reason.load(cfg.dataset, cfg.split)  # the released MP16-Reason, in our columns
    elif not path.exists():
        raise FileNotFoundError(f"GRPO dataset {path} does not exist: run the distillation stage (02_distill) first")
    else:
        ds = open_saved(path)
    if isinstance(ds, DatasetDict):
        if cfg.split not in ds:
            raise KeyError(f"{path} has no split {cfg.split!r}; splits: {list(ds)}")
        ds = ds[cfg.split]
    if len(ds) == 0:
        raise ValueError(f"{path} split {cfg.split!r} is empty")
    from globe.prompts import PROMPTS

    return to_grpo_dataset(ds, PROMPTS[cfg.prompt] if cfg.prompt is not None else None)


# ---------------------------------------------------------------------------------------------------------------------
# Training


def grpo_config(cfg: GRPOParams, *, on_gpu: bool, reward_weights: list[float]):
    """TRL's `GRPOConfig` from our params; a setting the installed TRL cannot honour is an error here, not a log line.

    The optimiser and weight decay are always passed (Unsloth's patched config has other defaults) and the ones the
    config ends up with are logged. TRL 1.15 (the unsloth GPU set) has no `max_prompt_length`, and its GRPOTrainer
    needs a GPU (a Triton log-prob kernel), so both are checked before anything is built.
    """
    import trl
    from packaging.version import Version
    from trl import GRPOConfig

    from globe.train import checkpointing_args

    if not on_gpu and Version(trl.__version__) < Version("1.16"):
        raise RuntimeError(
            f"TRL {trl.__version__}'s GRPOTrainer cannot run on CPU (its fused log-prob kernel needs a Triton GPU "
            "driver): install the CPU set's TRL, pip install 'trl>=1.16' (TRL 1.15 is for the unsloth GPU set)"
        )
    kwargs: dict[str, Any] = dict(
        output_dir=str(cfg.checkpoint_dir),
        max_steps=cfg.steps if cfg.steps is not None else -1,
        num_train_epochs=cfg.num_train_epochs if cfg.num_train_epochs is not None else 1.0,
        num_generations=cfg.num_generations,
        max_completion_length=cfg.max_completion_length,
        max_prompt_length=cfg.max_prompt_length,
        temperature=cfg.temperature,
        top_p=cfg.top_p,
        learning_rate=cfg.learning_rate,
        optim=cfg.optim,
        weight_decay=cfg.weight_decay,
        beta=cfg.beta,
        loss_type=cfg.loss_type,
        epsilon=cfg.epsilon,
        scale_rewards=cfg.scale_rewards,
        num_iterations=cfg.num_iterations,
        per_device_train_batch_size=cfg.per_device_train_batch_size,
        gradient_accumulation_steps=cfg.gradient_accumulation_steps,
        warmup_steps=cfg.warmup_steps,
        lr_scheduler_type=cfg.lr_scheduler_type,
        max_grad_norm=cfg.max_grad_norm,
        reward_weights=reward_weights,
        save_strategy="steps",
        save_steps=cfg.save_steps,
        save_total_limit=cfg.save_total_limit,
        logging_steps=1,
        seed=cfg.seed,
        data_seed=cfg.seed,
        bf16=on_gpu and _bf16_ok(),
        fp16=False,
        use_cpu=not on_gpu,
        **checkpointing_args(GRPOConfig, cfg.gradient_checkpointing),
        use_vllm=cfg.use_vllm,
        vllm_mode=cfg.vllm_mode,
        vllm_gpu_memory_utilization=cfg.vllm_gpu_memory_utilization,
        vllm_max_model_length=cfg.vllm_max_model_length,
        vllm_server_base_url=cfg.vllm_server_base_url,
        deepspeed=cfg.deepspeed,
        report_to=cfg.report_to,
        remove_unused_columns=False,
        dataloader_num_workers=0,
    )
    known = {f.name for f in dataclasses.fields(GRPOConfig)}
    if cfg.max_prompt_length is None:
        kwargs.pop("max_prompt_length")
    elif "max_prompt_length" not in known:
        raise ValueError(
            f"grpo.max_prompt_length is {cfg.max_prompt_length}, but TRL {trl.__version__}'s GRPOConfig has no "
            "max_prompt_length: prompts are never truncated (a cut would drop image tokens); set "
            "grpo.max_prompt_length: null"
        )
    if not cfg.use_vllm:
        for k in ("vllm_mode", "vllm_gpu_memory_utilization", "vllm_max_model_length", "vllm_server_base_url"):
            kwargs.pop(k, None)
    for k in ("vllm_server_base_url", "deepspeed"):  # TRL's / transformers' own defaults unless set
        if kwargs.get(k) is None:
            kwargs.pop(k, None)
    if cfg.async_generation:
        log.warning("grpo.async_generation is set, but this TRL's GRPOTrainer has no asynchronous generation (its "
                    "experimental AsyncGRPOTrainer drops the dataset columns GLOBE's rewards read): generating "
                    "synchronously")
    skipped = sorted(k for k in kwargs if k not in known)
    if skipped:
        log.warning("this TRL's GRPOConfig has no %s; not passed", skipped)
    args = GRPOConfig(**{k: v for k, v in kwargs.items() if k in known})
    optim = str(getattr(args.optim, "value", args.optim))
    log.info("GRPO optimiser: %s, weight_decay %s, learning rate %g (%s)", optim, args.weight_decay,
             args.learning_rate, type(args).__name__)
    if optim != cfg.optim or args.weight_decay != cfg.weight_decay:
        log.warning("%s changed the optimiser settings: asked %s / weight_decay %s, got %s / %s", type(args).__name__,
                    cfg.optim, cfg.weight_decay, optim, args.weight_decay)
    return args


def _bf16_ok() -> bool:
    import torch

    return torch.cuda.is_available() and torch.cuda.is_bf16_supported()


def load_policy(cfg: GRPOParams, backend: str):
    """The trainable policy (LoRA on the base model, or the SFT adapter continued) and its processor.

    On unsloth, its sequence budget (`max_seq_length`, vLLM's `max_model_len` too) comes from the recipe: the longest
    prompt with its image at the processor's pixel cap, plus `max_completion_length` (unsloth's default, 2048, is
    too short for the paper's 1024-token completions after a photo). With vLLM generation (`fast_inference`) vLLM
    must be told the LoRA rank up front: that of the adapter actually trained, `init_adapter`'s own when continuing
    one (an SFT adapter of another rank than `lora.r` would otherwise not fit), else `lora.r`.
    """
    from globe.models import (
        adapter_rank,
        adapter_targets_vision,
        cap_image_pixels,
        load_processor,
        load_vlm,
        lora_settings,
        recipe_max_seq_length,
        vllm_lora_rank,
    )

    if cfg.init_adapter is not None and not Path(cfg.init_adapter).exists():
        raise FileNotFoundError(f"grpo.init_adapter {cfg.init_adapter} does not exist: run notebook 03 (SFT) first, or "
                                "set init_adapter: null to start from the base model")
    lora = lora_settings(**cfg.lora) if cfg.lora is not None else None
    extra: dict[str, Any] = {}
    if backend == "unsloth":
        from globe.prompts import REASONING_PROMPT

        prompts = [m[0]["content"] for m in load_grpo_dataset(cfg)["prompt"]] or [REASONING_PROMPT]
        budget_processor = cap_image_pixels(load_processor(cfg.base_model), cfg.max_pixels)
        extra["max_seq_length"] = recipe_max_seq_length(budget_processor, prompts, cfg.max_completion_length)
        log.info("unsloth max_seq_length %d (longest prompt with its image tokens + %d completion tokens)",
                 extra["max_seq_length"], cfg.max_completion_length)
    if backend == "unsloth" and cfg.use_vllm:
        # unsloth's own vLLM engine for generation (its GRPO path), sharing the GPU with training
        if cfg.init_adapter is not None:
            rank, vision = adapter_rank(cfg.init_adapter), adapter_targets_vision(cfg.init_adapter)
        else:
            rank, vision = lora["r"], lora["finetune_vision_layers"]
        if vision:
            raise ValueError("unsloth's vLLM generation (backend unsloth + use_vllm) cannot serve LoRA on the vision "
                             "tower: set grpo.lora.finetune_vision_layers: false, or use_vllm: false")
        extra.update(fast_inference=True, gpu_memory_utilization=cfg.vllm_gpu_memory_utilization,
                     max_lora_rank=vllm_lora_rank(rank))
    model, processor = load_vlm(
        cfg.base_model,
        cfg.init_adapter,
        dtype=cfg.dtype,
        device="auto",
        training=True,
        backend=backend,
        load_in_4bit=cfg.load_in_4bit,
        lora=lora,
        merge=lora is None and cfg.init_adapter is not None,  # full fine-tuning continues the merged SFT model
        gradient_checkpointing=cfg.gradient_checkpointing,
        **extra,
    )
    if lora is None:  # full fine-tuning: every weight trains (a merged adapter leaves them frozen)
        for param in model.parameters():
            param.requires_grad_(True)
    return model, cap_image_pixels(processor, cfg.max_pixels)


def _experiment(cfg: GRPOParams) -> dict:
    """What names a GRPO experiment: the settings, the data, and digests of the starting adapter and the reward model
    (a retrained SFT adapter or reward model starts GRPO over)."""
    from globe.cache import files_digest
    from globe.checkpoints import data_fingerprint, experiment_settings

    reward_model = cfg.reward_model if "localizability" in cfg.rewards else None
    return experiment_settings(cfg, ("steps", "num_train_epochs"), data=data_fingerprint(cfg.dataset),
                               init_adapter_digest=files_digest(cfg.init_adapter),
                               reward_model_digest=files_digest(reward_model))


def _write_summary(cfg: GRPOParams, **info) -> None:
    Path(cfg.out).mkdir(parents=True, exist_ok=True)
    (Path(cfg.out) / "globe_grpo.json").write_text(
        json.dumps({"params": cfg.to_dict(), **info}, indent=2, default=str) + "\n", encoding="utf-8")


def train_grpo(cfg: GRPOParams | dict[str, Any], *, callbacks: list | None = None) -> Path:
    """Run (or resume) GRPO; save the adapter and processor to `cfg.out`; return that path.

    The resume check (`globe.checkpoints.prepare_resume`) runs before any model loads: the newest checkpoint of this
    experiment at or below `steps` is resumed, one exactly at `steps` is exported without training, and another
    experiment's checkpoints (or ones past `steps`) are discarded; the log says which.
    """
    from globe.checkpoints import export_checkpoint, prepare_resume
    from globe.config import prepare_run
    from globe.models import select_backend

    cfg = cfg if isinstance(cfg, GRPOParams) else GRPOParams.from_params(cfg)
    from globe.launch import launch, needs_launch

    if needs_launch(cfg):  # the recipe's processes (GLOBE: 6), started from here
        launch("grpo", cfg, cfg.out)
        return Path(cfg.out)
    prepare_run(cfg.seed, cfg.offline)
    backend = select_backend(cfg.backend)  # before trl/transformers: unsloth patches them on import
    plan = prepare_resume(cfg.checkpoint_dir, _experiment(cfg), max_steps=cfg.steps, resume=cfg.resume)
    main_process = int(os.environ.get("RANK", "0")) == 0
    if plan.done:
        if main_process:  # under torchrun / accelerate every rank gets here
            export_checkpoint(plan.checkpoint, cfg.out)
            _write_summary(cfg, global_step=plan.step, backend=backend, resume=plan.message, world_size=None)
        return Path(cfg.out)

    import torch
    from trl import GRPOTrainer

    from globe.progress import plain_progress

    on_gpu = torch.cuda.is_available()
    dataset = load_grpo_dataset(cfg)
    model, processor = load_policy(cfg, backend)
    funcs, weights = build_rewards(cfg, model, processor)
    recorder = SampleRecorder(cfg.sample_every, {f.__name__: w for f, w in zip(funcs, weights)})
    funcs = recorder.wrap(funcs)
    args = grpo_config(cfg, on_gpu=on_gpu, reward_weights=weights)

    trainer = GRPOTrainer(
        model=model,
        reward_funcs=funcs,
        args=args,
        train_dataset=dataset,
        processing_class=processor,
        callbacks=[_make_callback(cfg.log_csv, cfg.samples, recorder, Path(cfg.out) / TIMING_FILE),
                   *(callbacks or [])],
    )
    plain_progress(trainer, "grpo")
    trainer.train(resume_from_checkpoint=plan.checkpoint)
    trainer.save_model(cfg.out)
    if trainer.accelerator.is_main_process:
        processor.save_pretrained(cfg.out)
        _write_summary(cfg, global_step=trainer.state.global_step, backend=backend, resume=plan.message,
                       world_size=trainer.accelerator.num_processes, async_generation_used=False)
    return Path(cfg.out)


# ---------------------------------------------------------------------------------------------------------------------
# Script entry point (single process, or under `accelerate launch` / `torchrun`)


def cli(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        prog="python -m globe.train.grpo",
        description="GRPO-train the GLOBE policy from params.yaml (common + grpo); resumes from the last checkpoint.",
    )
    parser.add_argument("--params", default=None, help="params file (default: params.yaml at the project root)")
    parser.add_argument("--set", nargs="*", default=[], metavar="KEY=VALUE",
                        help="override grpo parameters (YAML values), e.g. --set steps=2 out=/tmp/grpo")
    args = parser.parse_args(argv)
    import yaml

    from globe.config import stage_params

    params = stage_params("04_grpo", args.params)
    for item in args.set:
        key, sep, value = item.partition("=")
        if not sep:
            parser.error(f"--set expects KEY=VALUE, got {item!r}")
        params[key] = yaml.safe_load(value)
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    out = train_grpo(params)
    print(f"GRPO adapter saved to {out}")
    return 0


if __name__ == "__main__":
    sys.exit(cli())
