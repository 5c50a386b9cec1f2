"""`GRPOParams`: what a GRPO run reads, checked (values and their combinations) before anything heavy loads."""

from __future__ import annotations

import math
import os
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, ClassVar, Literal

from globe.config import ParamsError, StageConfig


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
    # Dropout off in policy and reference (TRL's disable_dropout): with LoRA dropout on, the trained policy's log-probs
    # are noisy draws, so the KL and the importance ratio are nonsense from step 1 (measured on the tiny model: KL 290
    # at step 1 with dropout 0.05, 0.0 without). Qwen2.5-VL itself has no dropout, so full fine-tuning is unaffected.
    disable_dropout: bool = True
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
