"""What a stage sets up before it runs: seeds, offline hub access, read-only `datasets`, quiet libraries."""

from __future__ import annotations

import os
import random
import sys


def seed_everything(seed: int) -> None:
    """Seed python, numpy and (when installed) torch, for runs that repeat exactly."""
    random.seed(seed)
    os.environ.setdefault("PYTHONHASHSEED", str(seed))
    try:
        import numpy as np

        np.random.seed(seed)
    except ImportError:  # pragma: no cover
        pass
    try:
        import torch

        torch.manual_seed(seed)
    except ImportError:  # pragma: no cover
        pass


def offline_hub() -> None:
    """Forbid hub downloads for the default profile: a missing local file must fail loudly, not fetch."""
    os.environ["HF_HUB_OFFLINE"] = "1"
    os.environ["HF_DATASETS_OFFLINE"] = "1"
    os.environ["TRANSFORMERS_OFFLINE"] = "1"


def read_only_datasets() -> None:
    """Turn off `datasets`' cache files for this process: `.map` / `.filter` on a dataset loaded from a finished DVC
    output would otherwise write cache-*.arrow files beside it (changing the output). Stages call this once."""
    import datasets

    datasets.disable_caching()


def prepare_run(seed: int, offline: bool) -> None:
    """What every stage does first: seed everything, forbid hub downloads when offline, keep `datasets` read-only,
    and keep library progress bars (weight loading, dataset maps) out of the stage's streamed output."""
    if offline:
        offline_hub()
    seed_everything(seed)
    read_only_datasets()
    quiet_libraries()


def quiet_libraries() -> None:
    """No tqdm bars from transformers (weight loading), the hub or datasets (maps): stages print their own progress
    lines. Environment switches, read at import, so that nothing is imported here (unsloth must come first)."""
    os.environ["HF_HUB_DISABLE_PROGRESS_BARS"] = "1"  # transformers reads huggingface_hub's switch
    os.environ["HF_DATASETS_DISABLE_PROGRESS_BARS"] = "1"
    if "datasets" in sys.modules:  # already imported: the environment switch came too late for it
        sys.modules["datasets"].disable_progress_bars()
    if "huggingface_hub" in sys.modules:
        sys.modules["huggingface_hub"].utils.disable_progress_bars()
    if "transformers" in sys.modules:
        sys.modules["transformers"].utils.logging.disable_progress_bar()
    import warnings

    # transformers 5 renamed `is_gradient_checkpointing`; PEFT (PeftModel.__init__) and TRL (generation unwrapping)
    # still read the old name on every model load and rollout. Their calls, not ours (ours use the new names).
    warnings.filterwarnings("ignore", message=r"`is_gradient_checkpointing` is deprecated", category=FutureWarning)
