"""The reward model's settings (params.yaml's `reward_model` group) and the names shared by its parts."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any, ClassVar, Literal

from globe.config import ParamsError, StageConfig
from globe.images import MIN_SIDE

DEFAULT_API_KEY_ENV = "GLOBE_RM_API_KEY"
DEFAULT_MODEL_NAME = "globe-reward-model"
NEUTRAL = 0.5  # the score a failed item gets with on_error="neutral"
SETTINGS_FILE = "globe_reward_model.json"  # written next to the adapter: what the scorer must do the same way


class RewardModelError(RuntimeError):
    """A scorer was told to raise on a failed item, or more items failed than its error budget allows."""


@dataclass
class RewardModelParams(StageConfig):
    """Reward-model training: params.yaml's `reward_model` group (plus `seed`, `base_model`, `offline`)."""

    group: ClassVar[str] = "reward_model"
    # Keys a run may change and still resume its checkpoints (the length only under a length-free schedule).
    resumable: ClassVar[frozenset[str]] = frozenset({"out", "metrics", "steps", "num_train_epochs", "save_steps",
                                                     "eval_batch_size", "resume", "num_processes"})

    labels: str = "data/mp16_reason/localizability"  # datasets Dataset on disk: id, image, reasoning, label (0/1), ...
    base_model: str = "models/tiny-qwen2.5-vl"
    out: str = "models/reward_model"  # adapter (+ processor, settings) directory
    metrics: str = "results/reward_model.json"
    backend: Literal["auto", "transformers", "unsloth"] = "auto"
    dtype: str = "auto"
    lora: dict[str, Any] = field(default_factory=lambda: {
        "r": 16, "alpha": 32, "dropout": 0.05,
        "target_modules": ["q_proj", "k_proj", "v_proj", "o_proj", "gate_proj", "up_proj", "down_proj"],
        "finetune_vision_layers": False,
    })
    steps: int | None = 20  # optimisation steps; null: train `num_train_epochs` epochs instead
    num_train_epochs: float | None = None  # used when steps is null (GLOBE: 2 epochs)
    # The input the reward model judges and how P(yes) is read (globe.reward_model.readout): the project's format
    # (user turn: image + REWARD_MODEL_PROMPT around the reasoning; full-vocabulary yes/no), or GLOBE's official one
    # (system prompt `globe-rm-system`, user turn: image + the whole completion; top-5 logprobs, exact yes/Yes/YES).
    input_format: Literal["project", "official"] = "project"
    readout: Literal["vocabulary", "top5"] = "vocabulary"
    max_length: int | None = None  # token cap per training example (null: none; GLOBE 2048); images are never cut
    learning_rate: float = 2e-4
    lr_scheduler_type: str = "constant_with_warmup"
    warmup_steps: float = 0  # an int counts steps, a float in (0, 1) is a share of all steps
    batch_size: int = 4
    grad_accum: int = 1
    eval_fraction: float = 0.2
    balance: Literal["none", "oversample"] = "none"  # oversample: duplicate minority-class training rows, seeded
    max_pixels: int | None = 200704  # 28*28*256: images are downscaled to at most this many pixels (None: as given)
    max_reasoning_chars: int = 4000  # longer reasoning is cut (the head is kept)
    eval_batch_size: int = 8
    save_steps: int = 100  # checkpoint interval; a killed run resumes from the last checkpoint
    gradient_checkpointing: bool = False
    resume: bool = True
    # Processes the batch arithmetic assumes (GLOBE: 8 GPUs x 4 x 4 accumulation = 128 per step); null: whatever the
    # launcher starts. Set and not under a launcher, the stage launches itself (globe.launch).
    num_processes: int | None = None
    seed: int = 0
    offline: bool = True

    @property
    def global_batch(self) -> int:
        """Examples per optimisation step: batch_size x grad_accum x processes (WORLD_SIZE when num_processes is
        null)."""
        import os

        return self.batch_size * self.grad_accum * (self.num_processes or int(os.environ.get("WORLD_SIZE", "1")))

    def validate(self) -> None:
        from globe.models import lora_settings

        self.require(bool(self.base_model), "base_model", "is not set")
        self.require(0 < self.eval_fraction < 1, "eval_fraction", f"must be in (0, 1), got {self.eval_fraction}")
        self.require((self.steps is None) != (self.num_train_epochs is None), "steps",
                     "set exactly one of steps (a step count) and num_train_epochs (epochs), the other null; got "
                     f"steps={self.steps}, num_train_epochs={self.num_train_epochs}")
        self.require(self.steps is None or self.steps >= 1, "steps", f"must be >= 1, got {self.steps}")
        self.require(self.num_train_epochs is None or self.num_train_epochs > 0, "num_train_epochs", "must be > 0")
        for key in ("batch_size", "grad_accum", "eval_batch_size", "save_steps"):
            self.require(getattr(self, key) >= 1, key, f"must be >= 1, got {getattr(self, key)}")
        self.require(self.max_length is None or self.max_length >= 64, "max_length", "must be >= 64 or null")
        from globe.launch import check_world

        mismatch = check_world(self)
        self.require(mismatch is None, "num_processes", mismatch or "")
        self.require(self.learning_rate > 0, "learning_rate", "must be > 0")
        self.require(self.max_pixels is None or self.max_pixels >= MIN_SIDE * MIN_SIDE, "max_pixels",
                     f"must be >= {MIN_SIDE * MIN_SIDE} (or null), got {self.max_pixels}")
        self.require(self.max_reasoning_chars >= 1, "max_reasoning_chars", "must be >= 1")
        try:
            lora_settings(**self.lora)
        except (TypeError, ValueError) as e:
            raise ParamsError(f"reward_model.lora: {e}") from None
