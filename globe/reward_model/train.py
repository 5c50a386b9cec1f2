"""Training the reward model: a LoRA yes/no classifier (TRL's `SFTTrainer`, loss on the answer token only) on the
localizability labels distillation writes, evaluated on held-out photos with the same readout the reward uses.

Each label row becomes a conversational prompt-completion example, assistant turn = "yes" / "no". The user turn
depends on `input_format`: `project` = image + `REWARD_MODEL_PROMPT` with the reasoning; `official` (GLOBE's) = a
system turn with `globe-rm-system` and a user turn with the image and the teacher's whole completion (the labels'
`completion` column; distillation writes it). The held-out split is seeded, grouped by image id and stratified by
label; accuracy, ROC AUC, expected calibration error and the class balance go to a JSON file.
"""

from __future__ import annotations

import json
import logging
import os
import random
import time
from collections import Counter
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

from globe.answer import to_text
from globe.images import fit_image, load_image
from globe.prompts import GLOBE_RM_SYSTEM_PROMPT, PROMPT_VERSION, REWARD_MODEL_PROMPT
from globe.reward_model.config import SETTINGS_FILE, RewardModelParams
from globe.reward_model.metrics import classification_metrics
from globe.reward_model.readout import NO, YES, clean_reasoning, input_text, reward_user_text
from globe.reward_model.scorer import LocalizabilityScorer

log = logging.getLogger(__name__)


def load_labels(path: str | os.PathLike):
    """The localizability labels (a datasets Dataset on disk; a DatasetDict's splits are concatenated)."""
    from datasets import DatasetDict, concatenate_datasets

    from globe.data import open_saved

    ds = open_saved(path)
    if isinstance(ds, DatasetDict):
        log.info("labels at %s are a DatasetDict; using all its splits %s", path, list(ds))
        ds = concatenate_datasets([ds[k] for k in ds])
    missing = {"image", "reasoning", "label"} - set(ds.column_names)
    if missing:
        raise ValueError(f"labels at {path} lack column(s) {sorted(missing)}; columns: {ds.column_names}")
    return ds


def split_indices(labels: Sequence[int], groups: Sequence[Any] | None, eval_fraction: float, seed: int
                  ) -> tuple[list[int], list[int]]:
    """Seeded held-out split: whole groups (image ids) go to one side, stratified by the group's majority label."""
    import numpy as np

    groups = list(groups) if groups is not None else list(range(len(labels)))
    members: dict[Any, list[int]] = {}
    for i, g in enumerate(groups):
        members.setdefault(g, []).append(i)
    by_class: dict[int, list] = {0: [], 1: []}
    for g, idx in members.items():
        by_class[int(round(sum(labels[i] for i in idx) / len(idx)))].append(g)
    rng = np.random.default_rng(seed)
    held: list = []
    for c in (0, 1):
        gs = sorted(by_class[c], key=str)
        rng.shuffle(gs)
        n = round(eval_fraction * len(gs))
        if len(gs) >= 2:
            n = min(max(n, 1), len(gs) - 1)  # both sides get each class when it has two groups or more
        held += gs[:n]
    held_set = set(held)
    train = [i for i, g in enumerate(groups) if g not in held_set]
    evals = [i for i, g in enumerate(groups) if g in held_set]
    return train, evals


def _class_counts(labels: Sequence[int]) -> dict[str, int]:
    c = Counter(int(x) for x in labels)
    return {YES: c.get(1, 0), NO: c.get(0, 0)}


def judged_text(row: Mapping[str, Any], input_format: str) -> Any:
    """What the reward model reads for a label row: the reasoning (project) or the whole completion (official; a row
    without one falls back to its reasoning)."""
    if input_text(input_format) == "completion" and row.get("completion"):
        return row["completion"]
    return row["reasoning"]


def _to_example(row: dict, max_pixels: int | None, max_chars: int, special: Sequence[str],
                input_format: str = "project") -> dict:
    """One label row as a conversational prompt-completion example (or a reason to skip it)."""
    skip, image = "", None
    label = row["label"]
    if isinstance(label, bool) or label in (0, 1):
        label = int(label)
    else:
        skip = "bad_label"
    if not skip:
        try:
            image = fit_image(load_image(row["image"]), max_pixels)
        except Exception as e:  # noqa: BLE001 - counted and reported as a skip
            skip = f"bad_image:{getattr(e, 'reason', type(e).__name__)}"
    judged = judged_text(row, input_format)
    text = clean_reasoning(judged, max_chars, special)
    system = [{"role": "system", "content": GLOBE_RM_SYSTEM_PROMPT}] if input_format == "official" else []
    return {
        "image_fit": image,
        "prompt": [*system, {"role": "user", "content": reward_user_text(text, input_format)}],
        # The label row's own `completion` (the teacher's text) is replaced by the target turn in the example.
        "completion": [{"role": "assistant", "content": YES if label == 1 else NO}],
        "skip": skip,
        "truncated": len(to_text(judged)) > max_chars,
        "judged": to_text(judged),
    }


def _prepare_examples(cfg: RewardModelParams, processor) -> tuple[Any, Any, dict]:
    """The usable label rows as prompt-completion examples, the raw rows they came from, and what was skipped."""
    from datasets import Features, Value
    from datasets import Image as ImageFeature

    raw = load_labels(cfg.labels).cast_column("image", ImageFeature(decode=False))
    tok = getattr(processor, "tokenizer", processor)
    special = [t for t in tok.all_special_tokens if t] + list(getattr(tok, "additional_special_tokens", None) or [])
    message = [{"role": Value("string"), "content": Value("string")}]
    features = Features({**raw.features, "image_fit": ImageFeature(), "prompt": message, "completion": message,
                         "skip": Value("string"), "truncated": Value("bool"), "judged": Value("string")})
    if cfg.input_format == "official" and "completion" not in raw.column_names:
        log.warning("reward model: input_format official, but the labels at %s have no `completion` column; the "
                    "reasoning stands in for the whole completion (re-run distillation to write it)", cfg.labels)
    examples = raw.map(
        _to_example, fn_kwargs=dict(max_pixels=cfg.max_pixels, max_chars=cfg.max_reasoning_chars, special=special,
                                    input_format=cfg.input_format),
        features=features, keep_in_memory=True, desc="reward-model examples",
    )
    skipped = Counter(s for s in examples["skip"] if s)
    keep = [i for i, s in enumerate(examples["skip"]) if not s]
    if skipped:
        log.warning("reward model: skipped %d of %d label rows: %s", sum(skipped.values()), len(raw), dict(skipped))
    counts = {"label_rows": len(raw), "usable": len(keep), "skipped": dict(skipped),
              "reasoning_truncated": int(sum(examples["truncated"]))}
    raw = raw.add_column("judged", examples["judged"]) if "judged" not in raw.column_names else raw
    return examples.select(keep), raw.select(keep), counts


def _held_out(examples, cfg: RewardModelParams) -> tuple[list[int], list[int], list[int], dict]:
    """(train indices, held-out indices, labels, class balance), oversampled when asked."""
    labels = [int(x) for x in examples["label"]]
    groups = examples["id"] if "id" in examples.column_names else None
    train_idx, eval_idx = split_indices(labels, groups, cfg.eval_fraction, cfg.seed)
    if not train_idx or not eval_idx:
        raise ValueError(f"too few usable label rows ({len(labels)}) for a train / held-out split")
    train_labels = [labels[i] for i in train_idx]
    balance = {"train": _class_counts(train_labels), "eval": _class_counts([labels[i] for i in eval_idx])}
    if cfg.balance == "oversample":
        train_idx = _oversample(train_idx, train_labels, cfg.seed)
        balance["train_oversampled"] = _class_counts([labels[i] for i in train_idx])
    log.info("reward model: class balance %s", balance)
    return train_idx, eval_idx, labels, balance


def _trainer(cfg: RewardModelParams, model, processor, train_ds):
    """TRL's SFTTrainer on the yes/no examples, loss on the answer token only (TRL imported after the model, so the
    unsloth backend patches it first)."""
    import torch
    from trl import SFTConfig, SFTTrainer

    from globe.train import checkpointing_args

    dtype = next(model.parameters()).dtype
    args = SFTConfig(
        output_dir=str(Path(cfg.out) / "checkpoints"),
        max_steps=cfg.steps if cfg.steps is not None else -1,
        num_train_epochs=cfg.num_train_epochs if cfg.num_train_epochs is not None else 1.0,
        per_device_train_batch_size=cfg.batch_size,
        gradient_accumulation_steps=cfg.grad_accum,
        learning_rate=cfg.learning_rate,
        lr_scheduler_type=cfg.lr_scheduler_type,
        warmup_steps=cfg.warmup_steps,
        logging_steps=1,
        save_strategy="steps",
        save_steps=cfg.save_steps,
        save_total_limit=1,
        report_to="none",
        seed=cfg.seed,
        data_seed=cfg.seed,
        bf16=dtype == torch.bfloat16,
        fp16=dtype == torch.float16,
        **checkpointing_args(SFTConfig, cfg.gradient_checkpointing),
        # Truncation could cut image tokens: the reasoning is bounded in characters, and a token cap (GLOBE's 2048)
        # only applies when set.
        max_length=cfg.max_length,
        completion_only_loss=True,  # loss on the assistant turn ("yes" / "no") only
        dataloader_num_workers=0,
        use_cpu=not torch.cuda.is_available(),
    )
    from globe.progress import plain_progress

    trainer = SFTTrainer(model=model, args=args, train_dataset=train_ds, processing_class=processor)
    plain_progress(trainer, "rm", "reward_model")
    return trainer


def train_reward_model(cfg: RewardModelParams | Mapping[str, Any]) -> dict:
    """Train the reward-model LoRA on the localizability labels, evaluate it on a held-out split, save both.

    Writes the adapter (+ processor and `globe_reward_model.json` settings) to `cfg.out` and the metrics to
    `cfg.metrics` (wall times go to `globe.progress.record_timing`, not to the file, so a rerun writes the same
    bytes); returns the metrics. A killed run resumes the newest checkpoint of this experiment at or below `steps`
    (`globe.checkpoints`); the checkpoints are removed once the adapter is saved.
    """
    import shutil

    from globe.checkpoints import data_fingerprint, experiment_settings, prepare_resume
    from globe.config import prepare_run
    from globe.models import load_vlm, lora_settings, select_backend
    from globe.progress import record_timing

    cfg = cfg if isinstance(cfg, RewardModelParams) else RewardModelParams.from_params(cfg)
    from globe.launch import launch, needs_launch

    if needs_launch(cfg):  # the recipe's processes (GLOBE: 8), started from here
        launch("reward_model", cfg, cfg.out)
        return json.loads(Path(cfg.metrics).read_text())
    prepare_run(cfg.seed, cfg.offline)
    out, ckpt_dir = Path(cfg.out), Path(cfg.out) / "checkpoints"
    settings = experiment_settings(cfg, ("steps", "num_train_epochs"), labels_data=data_fingerprint(cfg.labels))
    plan = prepare_resume(ckpt_dir, settings, max_steps=cfg.steps, resume=cfg.resume)
    backend = select_backend(cfg.backend)  # before TRL is imported: unsloth must patch it first
    model, processor = load_vlm(cfg.base_model, dtype=cfg.dtype, training=True, backend=backend,
                                lora=lora_settings(**cfg.lora))
    examples, raw, counts = _prepare_examples(cfg, processor)
    train_idx, eval_idx, labels, balance = _held_out(examples, cfg)
    train_ds = (examples.select(train_idx)
                .select_columns(["image_fit", "prompt", "completion"]).rename_column("image_fit", "image"))
    trainer = _trainer(cfg, model, processor, train_ds)
    start = time.perf_counter()
    result = trainer.train(resume_from_checkpoint=plan.checkpoint)
    train_seconds = time.perf_counter() - start

    out.mkdir(parents=True, exist_ok=True)
    trainer.save_model(str(out))
    processor.save_pretrained(str(out))
    settings = {"base_model": cfg.base_model, "max_pixels": cfg.max_pixels,
                "max_reasoning_chars": cfg.max_reasoning_chars, "input_format": cfg.input_format,
                "readout": cfg.readout, "prompt_version": PROMPT_VERSION,
                "prompt": GLOBE_RM_SYSTEM_PROMPT if cfg.input_format == "official" else REWARD_MODEL_PROMPT,
                "yes": YES, "no": NO}
    (out / SETTINGS_FILE).write_text(json.dumps(settings, indent=2) + "\n")

    # Held-out evaluation with the trained model as it is in memory, read out exactly as the reward reads it.
    eval_rows = raw.select(eval_idx)
    scorer = LocalizabilityScorer(trainer.model, processor=processor, batch_size=cfg.eval_batch_size,
                                  max_pixels=cfg.max_pixels, max_reasoning_chars=cfg.max_reasoning_chars,
                                  error_budget=None, input_format=cfg.input_format, readout=cfg.readout)
    eval_start = time.perf_counter()
    scores = scorer.score(eval_rows["image"], eval_rows["judged"])
    eval_seconds = time.perf_counter() - eval_start
    losses = [h["loss"] for h in trainer.state.log_history if "loss" in h]
    metrics = {
        "n": {**counts, "train": len(train_idx), "eval": len(eval_idx)},
        "class_balance": balance,
        "eval": classification_metrics([labels[i] for i in eval_idx], scores),
        "train": {"steps": int(trainer.state.global_step), "first_loss": losses[0] if losses else None,
                  "final_loss": losses[-1] if losses else None, "train_loss": float(result.training_loss),
                  "resume": plan.message},
        "eval_yes_no_mass": scorer.stats["yes_no_mass"] / max(1, scorer.stats["scored"]),
        "config": cfg.to_dict(),
        "prompt_version": PROMPT_VERSION,
    }
    metrics_path = Path(cfg.metrics)
    metrics_path.parent.mkdir(parents=True, exist_ok=True)
    metrics_path.write_text(json.dumps(metrics, indent=2) + "\n")
    shutil.rmtree(ckpt_dir, ignore_errors=True)
    log.info("reward model: %s", metrics["eval"])
    record_timing("reward_model", {"train_s": round(train_seconds, 3), "eval_s": round(eval_seconds, 3),
                                   "device": str(next(trainer.model.parameters()).device)})
    return metrics


def _oversample(indices: list[int], labels: list[int], seed: int) -> list[int]:
    """Indices with the minority class drawn again (with replacement, seeded) up to the majority's count."""
    rng = random.Random(seed)
    pos = [i for i, y in zip(indices, labels) if y == 1]
    neg = [i for i, y in zip(indices, labels) if y == 0]
    small, big = (pos, neg) if len(pos) < len(neg) else (neg, pos)
    if not small:
        return list(indices)
    extra = [rng.choice(small) for _ in range(len(big) - len(small))]
    out = list(indices) + extra
    rng.shuffle(out)
    return out
