"""The GRPO dataset: a distilled (MP16-Reason-style) split, or the released one from the hub, in TRL's VLM format."""

from __future__ import annotations

import re
from pathlib import Path

from globe.train.grpo.params import GRPOParams


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
