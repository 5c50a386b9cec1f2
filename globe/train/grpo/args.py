"""TRL's `GRPOConfig` from `GRPOParams`: every setting passed explicitly, and one the installed TRL cannot honour
refused here, before anything is built."""

from __future__ import annotations

import dataclasses
import logging
from typing import Any

from globe.train.grpo.params import GRPOParams

log = logging.getLogger(__name__)

_VLLM_KEYS = ("vllm_mode", "vllm_gpu_memory_utilization", "vllm_max_model_length", "vllm_server_base_url")


def grpo_config(cfg: GRPOParams, *, on_gpu: bool, reward_weights: list[float]):
    """TRL's `GRPOConfig` from our params; a setting the installed TRL cannot honour is an error here, not a log line.

    The optimiser and weight decay are always passed (Unsloth's patched config has other defaults) and the ones the
    config ends up with are logged. TRL 1.15 (the unsloth GPU set) has no `max_prompt_length`, and its GRPOTrainer
    needs a GPU (a Triton log-prob kernel), so both are checked before anything is built.
    """
    from trl import GRPOConfig

    _check_trl_device(on_gpu)
    kwargs = _config_kwargs(cfg, GRPOConfig, on_gpu=on_gpu, reward_weights=reward_weights)
    known = {f.name for f in dataclasses.fields(GRPOConfig)}
    _drop_unset(kwargs, cfg, known)
    if cfg.async_generation:
        log.warning("grpo.async_generation is set, but this TRL's GRPOTrainer has no asynchronous generation (its "
                    "experimental AsyncGRPOTrainer drops the dataset columns GLOBE's rewards read): generating "
                    "synchronously")
    skipped = sorted(k for k in kwargs if k not in known)
    if skipped:
        log.warning("this TRL's GRPOConfig has no %s; not passed", skipped)
    args = GRPOConfig(**{k: v for k, v in kwargs.items() if k in known})
    _log_optimiser(cfg, args)
    return args


def _check_trl_device(on_gpu: bool) -> None:
    """TRL 1.15's GRPOTrainer cannot run on CPU (its fused log-prob kernel needs a Triton GPU driver)."""
    import trl
    from packaging.version import Version

    if not on_gpu and Version(trl.__version__) < Version("1.16"):
        raise RuntimeError(
            f"TRL {trl.__version__}'s GRPOTrainer cannot run on CPU (its fused log-prob kernel needs a Triton GPU "
            "driver): install the CPU set's TRL, pip install 'trl>=1.16' (TRL 1.15 is for the unsloth GPU set)"
        )


def _config_kwargs(cfg: GRPOParams, config_cls: type, *, on_gpu: bool, reward_weights: list[float]) -> dict[str, Any]:
    """Every `GRPOConfig` keyword the params set, before the installed TRL's fields are checked."""
    from globe.train import checkpointing_args

    return dict(
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
        disable_dropout=cfg.disable_dropout,
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
        **checkpointing_args(config_cls, cfg.gradient_checkpointing),
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


def _drop_unset(kwargs: dict[str, Any], cfg: GRPOParams, known: set[str]) -> None:
    """Remove (in place) the keywords left to TRL's own defaults; a `max_prompt_length` this TRL lacks is an error."""
    import trl

    if cfg.max_prompt_length is None:
        kwargs.pop("max_prompt_length")
    elif "max_prompt_length" not in known:
        raise ValueError(
            f"grpo.max_prompt_length is {cfg.max_prompt_length}, but TRL {trl.__version__}'s GRPOConfig has no "
            "max_prompt_length: prompts are never truncated (a cut would drop image tokens); set "
            "grpo.max_prompt_length: null"
        )
    if not cfg.use_vllm:
        for k in _VLLM_KEYS:
            kwargs.pop(k, None)
    for k in ("vllm_server_base_url", "deepspeed"):  # TRL's / transformers' own defaults unless set
        if kwargs.get(k) is None:
            kwargs.pop(k, None)


def _log_optimiser(cfg: GRPOParams, args) -> None:
    """Log the optimiser the config ends up with, and warn when it is not the one asked for."""
    optim = str(getattr(args.optim, "value", args.optim))
    log.info("GRPO optimiser: %s, weight_decay %s, learning rate %g (%s)", optim, args.weight_decay,
             args.learning_rate, type(args).__name__)
    if optim != cfg.optim or args.weight_decay != cfg.weight_decay:
        log.warning("%s changed the optimiser settings: asked %s / weight_decay %s, got %s / %s", type(args).__name__,
                    cfg.optim, cfg.weight_decay, optim, args.weight_decay)


def _bf16_ok() -> bool:
    import torch

    return torch.cuda.is_available() and torch.cuda.is_bf16_supported()
