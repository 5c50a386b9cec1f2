"""TRL trainers for the policy: supervised fine-tuning on distilled reasoning (`train_sft`) and GRPO (`train_grpo`).

Import-light on purpose: each trainer module imports torch / transformers / TRL inside its functions, and the names
below are resolved lazily, so `import globe.train` costs nothing (and the unsloth backend can still be imported
before transformers when it is chosen). Resuming is `globe.checkpoints`'; progress lines are `globe.progress`'.
"""

from __future__ import annotations

import dataclasses
from typing import Any

_LAZY = {
    "train_sft": "globe.train.sft",
    "SFTParams": "globe.train.sft",
    "train_grpo": "globe.train.grpo",
    "GRPOParams": "globe.train.grpo",
}

__all__ = sorted([*_LAZY, "checkpointing_args"])


def __getattr__(name: str) -> Any:
    if name in _LAZY:
        import importlib

        return getattr(importlib.import_module(_LAZY[name]), name)
    raise AttributeError(f"module 'globe.train' has no attribute {name!r}")


def checkpointing_args(config_cls: type, enabled: bool) -> dict[str, Any]:
    """Gradient (activation) checkpointing keywords for a TrainingArguments subclass, under the names this
    transformers takes: `activation_checkpointing*` where it has them (5.x renamed `gradient_checkpointing*`, which
    now warn), the old names on versions without them (the GPU environment's pinned transformers)."""
    names = {f.name for f in dataclasses.fields(config_cls)}
    prefix = "activation" if "activation_checkpointing" in names else "gradient"
    return {f"{prefix}_checkpointing": enabled, f"{prefix}_checkpointing_kwargs": {"use_reentrant": False}}
