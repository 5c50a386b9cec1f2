"""A GRPO run: the rewards and their scorer, the policy, TRL's `GRPOTrainer`, resuming, and the script entry point."""

from __future__ import annotations

import argparse
import json
import logging
import os
from pathlib import Path
from typing import Any

from globe.train.grpo.args import grpo_config
from globe.train.grpo.data import load_grpo_dataset
from globe.train.grpo.logs import SampleRecorder, _make_callback, timing_csv
from globe.train.grpo.params import GRPOParams

log = logging.getLogger(__name__)


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
        callbacks=[_make_callback(cfg.log_csv, cfg.samples, recorder, timing_csv()),
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
