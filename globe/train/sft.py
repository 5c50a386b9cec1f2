"""Policy SFT: teach the base VLM GLOBE's answer format and reasoning style on the distilled (MP16-Reason-style) set.

Each distilled sample becomes a prompt-completion conversation: the user turn holds the photo and GLOBE's reasoning
prompt, the assistant turn `<think>reasoning</think><answer>country: …\\ncity: …</answer>`. TRL's `SFTTrainer`
trains LoRA adapters on the language model (vision tower frozen unless asked), or with `lora: null` every weight (a
full fine-tune, GLOBE's SFT ablation: train_sft.sh `--train_type full --freeze_vit true`; `freeze_vision` keeps the
vision tower frozen; `out` is then a whole model, evaluated with `model: <out>` rather than as an adapter), with the
loss on the assistant turn only (TRL's completion-only loss: prompt and image tokens are labelled -100).
Checkpoints every `save_steps` keep at most `save_total_limit`; a rerun resumes from the last one. The loss per step
goes to a CSV for DVC plots.

Backends (see `globe.models.select_backend`): unsloth's FastVisionModel on CUDA when installed, else transformers +
PEFT. The model is loaded before TRL is imported so unsloth can patch TRL when it is the backend.
"""

from __future__ import annotations

import csv
import json
import logging
import math
import os
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, ClassVar, Literal

from globe.config import ParamsError, StageConfig

log = logging.getLogger(__name__)

LOG_COLUMNS = ["step", "loss", "eval_loss", "learning_rate", "grad_norm", "epoch"]


@dataclass
class SFTParams(StageConfig):
    """Everything `train_sft` reads: params.yaml's `sft` group (plus `seed`, `base_model`, `offline` from `common`)."""

    group: ClassVar[str] = "sft"
    # Keys a run may change and still resume another run's checkpoints (length, bookkeeping, outputs); the length
    # only while the learning-rate schedule does not depend on it (`globe.checkpoints.length_sets_schedule`).
    resumable: ClassVar[frozenset[str]] = frozenset({
        "max_steps", "num_train_epochs", "logging_steps", "eval_steps", "save_steps", "save_total_limit", "resume",
        "out", "log_csv", "save_merged", "per_device_eval_batch_size", "num_processes"})

    # common
    base_model: str = "models/tiny-qwen2.5-vl"
    seed: int = 0
    offline: bool = True
    # data
    dataset: str = "data/mp16_reason"
    train_split: str = "train"
    eval_split: str | None = None  # a split of `dataset` for the eval loss; None: hold out eval_fraction of train
    eval_fraction: float = 0.2
    max_samples: int | None = None
    prompt: str | None = None  # a name in globe.prompts.PROMPTS (e.g. globe-train); None: each sample's prompt column
    # outputs
    out: str = "models/sft"
    log_csv: str = "results/sft_log.csv"
    save_merged: bool = False
    # model
    backend: Literal["auto", "transformers", "unsloth"] = "auto"
    dtype: str = "auto"
    load_in_4bit: bool = False
    gradient_checkpointing: bool = False
    lora: dict[str, Any] | None = field(default_factory=lambda: {
        "r": 16, "alpha": 32, "dropout": 0.05,
        "target_modules": ["q_proj", "k_proj", "v_proj", "o_proj", "gate_proj", "up_proj", "down_proj"],
        "finetune_vision_layers": False,
    })  # None: full fine-tuning
    freeze_vision: bool = True  # full fine-tuning only: the vision tower stays frozen (GLOBE's --freeze_vit true)
    # optimisation
    max_steps: int = 4  # > 0 wins over num_train_epochs
    num_train_epochs: float = 1.0
    per_device_train_batch_size: int = 2
    per_device_eval_batch_size: int = 2
    gradient_accumulation_steps: int = 1
    learning_rate: float = 2e-4
    lr_scheduler_type: str = "cosine"
    warmup_steps: float = 0.0  # an int counts steps, a float in (0, 1) is a share of all steps
    weight_decay: float = 0.0
    max_grad_norm: float = 1.0
    max_length: int | None = None  # None: no truncation (truncating would cut image tokens)
    # bookkeeping
    logging_steps: int = 1
    eval_steps: int = 2
    save_steps: int = 2
    save_total_limit: int = 2
    resume: bool = True
    # Processes the batch arithmetic assumes (GLOBE's SFT: 8 GPUs x 1 x 8 accumulation); None: whatever the launcher
    # starts. Set and not under a launcher, the stage launches itself (globe.launch).
    num_processes: int | None = None

    def validate(self) -> None:
        from globe.models import lora_settings

        self.require(0 < self.eval_fraction < 1 or self.eval_split is not None, "eval_fraction",
                     f"must be in (0, 1) when eval_split is null, got {self.eval_fraction}")
        self.require(self.max_steps > 0 or self.num_train_epochs > 0, "max_steps",
                     "set max_steps > 0 or num_train_epochs > 0")
        for name in ("per_device_train_batch_size", "per_device_eval_batch_size", "gradient_accumulation_steps",
                     "logging_steps", "eval_steps", "save_steps", "save_total_limit"):
            self.require(getattr(self, name) >= 1, name, f"must be >= 1, got {getattr(self, name)}")
        self.require(self.learning_rate > 0, "learning_rate", "must be > 0")
        from globe.launch import check_world

        mismatch = check_world(self)
        self.require(mismatch is None, "num_processes", mismatch or "")
        if self.prompt is not None:
            from globe.prompts import PROMPTS

            self.require(self.prompt in PROMPTS, "prompt", f"unknown prompt {self.prompt!r}; known: {sorted(PROMPTS)}")
        if self.lora is None:
            self.require(self.backend != "unsloth" and not self.load_in_4bit, "lora",
                         "full fine-tuning (lora: null) needs backend transformers/auto and no load_in_4bit")
            self.require(not self.save_merged, "save_merged", "there is no adapter to merge when lora is null")
            return
        try:
            lora_settings(**self.lora)
        except (TypeError, ValueError) as e:
            raise ParamsError(f"sft.lora: {e}") from None

    @property
    def checkpoint_dir(self) -> Path:
        return Path(self.out) / "checkpoints"


# ---------------------------------------------------------------------------------------------------------------------
# Data


def to_conversation(example: dict, prompt: str | None = None) -> dict:
    """A distilled sample as TRL prompt-completion messages (user: image + prompt; assistant: think + answer)."""
    from globe.answer import parse_completion
    from globe.prompts import REASONING_PROMPT, build_messages, format_target

    reasoning = example.get("reasoning")
    if not reasoning or not example.get("country") or not example.get("city"):
        raise ValueError(f"sample {example.get('id')!r} lacks reasoning, country or city")
    # Teachers sometimes keep their own tags; train on the bare reasoning inside one think block.
    inner = parse_completion(reasoning).think
    think = inner if inner is not None else reasoning
    text = prompt or example.get("prompt") or REASONING_PROMPT
    messages = build_messages(text, with_image=True, answer=format_target(think, example["country"], example["city"]))
    return {"prompt": messages[:1], "completion": messages[1:]}


def load_sft_splits(cfg: SFTParams):
    """(train, eval) conversation datasets with an `image` column, from the distilled DatasetDict on disk."""
    from datasets import Dataset, DatasetDict

    from globe.data import open_saved

    path = Path(cfg.dataset)
    if not path.exists():
        raise FileNotFoundError(f"no distilled dataset at {path}; run notebook 02_distill (distillation) first")
    data = open_saved(path)
    if isinstance(data, Dataset):
        data = DatasetDict({cfg.train_split: data})
    if cfg.train_split not in data:
        raise KeyError(f"{path} has no split {cfg.train_split!r}; splits: {list(data)}")
    train = data[cfg.train_split]
    if cfg.eval_split is not None:
        if cfg.eval_split not in data:
            raise KeyError(f"{path} has no split {cfg.eval_split!r}; splits: {list(data)}")
        evaluation = data[cfg.eval_split]
    else:
        if len(train) < 2:
            raise ValueError(f"{path}:{cfg.train_split} has {len(train)} samples; need at least 2 to hold one out")
        parts = train.train_test_split(test_size=cfg.eval_fraction, seed=cfg.seed)
        train, evaluation = parts["train"], parts["test"]
    missing = {"image", "reasoning", "country", "city"} - set(train.column_names)
    if missing:
        raise KeyError(f"{path} lacks columns {sorted(missing)}; has {train.column_names}")
    if cfg.max_samples is not None:
        train = train.select(range(min(cfg.max_samples, len(train))))

    from globe.prompts import PROMPTS

    prompt = PROMPTS[cfg.prompt] if cfg.prompt is not None else None

    def convert(ds):
        keep = ["image"]
        drop = [c for c in ds.column_names if c not in keep]
        return ds.map(lambda ex: to_conversation(ex, prompt), remove_columns=drop)

    return convert(train), convert(evaluation)


# ---------------------------------------------------------------------------------------------------------------------
# Loss log


def _loss_logger(path: Path, resumed_step: int):
    """A TrainerCallback writing one CSV row per step (train and eval values of a step merged), resume-safe."""
    from transformers import TrainerCallback

    rows: dict[int, dict] = {}
    if resumed_step > 0 and path.is_file():
        with open(path, newline="") as f:
            for row in csv.DictReader(f):
                if int(row["step"]) <= resumed_step:  # later rows belong to the interrupted run's lost steps
                    rows[int(row["step"])] = row

    class LossCSV(TrainerCallback):
        def on_log(self, args, state, control, logs=None, **kwargs):
            if not state.is_world_process_zero or not logs:
                return
            row = rows.setdefault(state.global_step, {"step": state.global_step})
            for key in LOG_COLUMNS[1:]:
                if key in logs:
                    row[key] = logs[key]
            path.parent.mkdir(parents=True, exist_ok=True)
            tmp = path.with_suffix(".tmp")
            with open(tmp, "w", newline="") as f:
                w = csv.DictWriter(f, fieldnames=LOG_COLUMNS)
                w.writeheader()
                for step in sorted(rows):
                    w.writerow({k: rows[step].get(k, "") for k in LOG_COLUMNS})
            os.replace(tmp, path)

    return LossCSV()


# ---------------------------------------------------------------------------------------------------------------------
# Training


def build_trainer(cfg: SFTParams, train=None, evaluation=None):
    """The configured TRL SFTTrainer (model loaded with LoRA through `globe.models.load_vlm`)."""
    from globe.config import prepare_run
    from globe.models import load_vlm, lora_settings, select_backend

    prepare_run(cfg.seed, cfg.offline)
    backend = select_backend(cfg.backend if cfg.lora is not None else "transformers")
    # Load the model first: on the unsloth backend, unsloth must be imported before TRL.
    model, processor = load_vlm(
        cfg.base_model,
        dtype=cfg.dtype,
        training=True,
        backend=backend,
        load_in_4bit=cfg.load_in_4bit,
        lora=lora_settings(**cfg.lora) if cfg.lora is not None else None,
        gradient_checkpointing=cfg.gradient_checkpointing and backend == "unsloth",
    )
    if cfg.lora is None:
        full_finetune(model, cfg.freeze_vision)
    import torch
    from trl import SFTConfig, SFTTrainer

    from globe.train import checkpointing_args

    if train is None:
        train, evaluation = load_sft_splits(cfg)
    bf16 = next(model.parameters()).dtype == torch.bfloat16 or (cfg.load_in_4bit and torch.cuda.is_bf16_supported())
    args = SFTConfig(
        output_dir=str(cfg.checkpoint_dir),
        seed=cfg.seed,
        data_seed=cfg.seed,
        max_steps=cfg.max_steps if cfg.max_steps > 0 else -1,
        num_train_epochs=cfg.num_train_epochs,
        per_device_train_batch_size=cfg.per_device_train_batch_size,
        per_device_eval_batch_size=cfg.per_device_eval_batch_size,
        gradient_accumulation_steps=cfg.gradient_accumulation_steps,
        learning_rate=cfg.learning_rate,
        lr_scheduler_type=cfg.lr_scheduler_type,
        warmup_steps=cfg.warmup_steps,
        weight_decay=cfg.weight_decay,
        max_grad_norm=cfg.max_grad_norm,
        max_length=cfg.max_length,
        completion_only_loss=True,  # loss on the assistant turn only
        **checkpointing_args(SFTConfig, cfg.gradient_checkpointing and backend != "unsloth"),  # unsloth: its own
        bf16=bf16,
        logging_steps=cfg.logging_steps,
        eval_strategy="steps" if evaluation is not None and len(evaluation) else "no",
        eval_steps=cfg.eval_steps,
        save_strategy="steps",
        save_steps=cfg.save_steps,
        save_total_limit=cfg.save_total_limit,
        report_to="none",
        remove_unused_columns=False,  # the collator needs the image column
        dataloader_num_workers=0,
        use_cpu=not torch.cuda.is_available(),
    )
    trainer = SFTTrainer(model=model, args=args, train_dataset=train, eval_dataset=evaluation,
                         processing_class=processor)
    from globe.progress import plain_progress

    plain_progress(trainer, "sft")
    return trainer, processor


def full_finetune(model, freeze_vision: bool = True) -> int:
    """Every weight trains (a full fine-tune), except the vision tower's when `freeze_vision`; returns the number of
    trainable parameters (logged)."""
    for name, param in model.named_parameters():
        param.requires_grad_(not (freeze_vision and _is_vision(name)))
    n = sum(p.numel() for p in model.parameters() if p.requires_grad)
    log.info("full fine-tuning: %d trainable parameters (vision tower %s)", n, "frozen" if freeze_vision else "trained")
    return n


def _is_vision(name: str) -> bool:
    """A parameter of the vision tower (Qwen2.5-VL's `visual`; `vision_tower` / `vision_model` elsewhere)."""
    return any(part in ("visual", "vision_tower", "vision_model") for part in name.split("."))


def train_sft(cfg: SFTParams | dict) -> Path:
    """Train the policy SFT adapter; returns the output directory (adapter + processor, `merged/` if asked).

    Resumes the newest checkpoint of this experiment at or below `max_steps` (`globe.checkpoints`), or exports one
    that already reached it without training. Writes the per-step loss CSV (`log_csv`) and
    `<out>/train_summary.json` (steps, the step resumed from, losses, what the resume check decided; wall times go to
    `globe.progress.record_timing`, so that a rerun writes the same adapter folder).
    """
    from globe.checkpoints import data_fingerprint, experiment_settings, export_checkpoint, prepare_resume
    from globe.progress import record_timing

    cfg = cfg if isinstance(cfg, SFTParams) else SFTParams.from_params(cfg)
    from globe.launch import launch, needs_launch

    if needs_launch(cfg):  # the recipe's processes (GLOBE: 8), started from here
        launch("sft", cfg, cfg.out)
        return Path(cfg.out)
    t0 = time.perf_counter()
    settings = experiment_settings(cfg, ("max_steps", "num_train_epochs"), data=data_fingerprint(cfg.dataset))
    plan = prepare_resume(cfg.checkpoint_dir, settings,  # before loading anything
                          max_steps=cfg.max_steps if cfg.max_steps > 0 else None, resume=cfg.resume)
    out = Path(cfg.out)
    if plan.done:
        export_checkpoint(plan.checkpoint, out)
        _write_summary(out, {"base_model": cfg.base_model, "global_step": plan.step, "resumed_from_step": plan.step,
                             "resume": plan.message})
        return out
    trainer, processor = build_trainer(cfg)
    trainer.add_callback(_loss_logger(Path(cfg.log_csv), plan.step))
    result = trainer.train(resume_from_checkpoint=plan.checkpoint)
    metrics: dict = {}
    if trainer.eval_dataset is not None and len(trainer.eval_dataset):
        # The final eval loss: reuse the one logged at the last step when there is one, rather than evaluate twice.
        last = [h for h in trainer.state.log_history if "eval_loss" in h and h.get("step") == trainer.state.global_step]
        metrics = last[-1] if last else trainer.evaluate()

    trainer.save_model(str(out))  # the LoRA adapter
    processor.save_pretrained(str(out))
    if cfg.save_merged:
        merged = trainer.model.merge_and_unload()
        merged.save_pretrained(str(out / "merged"))
        processor.save_pretrained(str(out / "merged"))
    summary = {
        "base_model": cfg.base_model,
        "global_step": trainer.state.global_step,
        "resumed_from_step": plan.step,
        "resume": plan.message,
        "train_loss": result.training_loss if not math.isnan(result.training_loss) else None,
        "eval_loss": metrics.get("eval_loss"),
        "n_train": len(trainer.train_dataset),
        "n_eval": len(trainer.eval_dataset) if trainer.eval_dataset is not None else 0,
    }
    _write_summary(out, summary)
    record_timing("sft", {"wall_s": round(time.perf_counter() - t0, 2)})  # the trainer's own: globe.progress
    log.info("SFT done: %s", summary)
    return out


def _write_summary(out: Path, summary: dict) -> None:
    out.mkdir(parents=True, exist_ok=True)
    (out / "train_summary.json").write_text(json.dumps(summary, indent=2) + "\n")
