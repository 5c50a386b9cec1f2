"""TRL trainers for the policy: supervised fine-tuning on distilled reasoning (`train_sft`) and GRPO (`train_grpo`).

Import-light on purpose: each trainer module imports torch / transformers / TRL inside its functions, and the names
below are resolved lazily, so `import globe.train` costs nothing (and the unsloth backend can still be imported
before transformers when it is chosen).
"""

from __future__ import annotations

from typing import Any

_LAZY = {
    "train_sft": "globe.train.sft",
    "SFTConfigParams": "globe.train.sft",
    "train_grpo": "globe.train.grpo",
}

__all__ = sorted(_LAZY)


def __getattr__(name: str) -> Any:
    if name in _LAZY:
        import importlib

        return getattr(importlib.import_module(_LAZY[name]), name)
    raise AttributeError(f"module 'globe.train' has no attribute {name!r}")
