"""What a stage sets up before it runs: seeds, offline hub access, read-only `datasets`, quiet libraries, and CPU
numerics that repeat from one machine to another."""

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


# The CPU kernels torch picks depend on the machine: AVX-512 or AVX2 code in ATen, MKL and oneDNN, and the thread count
# that splits reductions. Each choice moves float sums in the last bits, and a few hundred training steps amplify that
# into other answers (measured: the same commit gave other metrics on an AVX-512 machine than on the one its results
# came from). Pinned to AVX2 code paths and two threads, runs agree on every x86-64 machine that has AVX2, at the
# cost of AVX-512 speed (the tiny model hardly notices). GLOBE_CPU_NUMERICS=native keeps the machine's own choice.
REPRODUCIBLE_CPU_ENV = {
    "ATEN_CPU_CAPABILITY": "avx2",  # ATen's vectorised kernels
    "MKL_CBWR": "AVX2",  # MKL's conditional numerical reproducibility: one code path
    "ONEDNN_MAX_CPU_ISA": "AVX2",
    "OMP_NUM_THREADS": "2",
    "MKL_NUM_THREADS": "2",
}


def reproducible_cpu_env(environ: dict[str, str] | None = None) -> dict[str, str]:
    """The `REPRODUCIBLE_CPU_ENV` settings to add to `environ` (default: os.environ) before a process that imports
    torch starts: none where the user set them already, on a machine with an NVIDIA GPU (its numerics are the GPU's),
    without AVX2, or with GLOBE_CPU_NUMERICS=native."""
    env = os.environ if environ is None else environ
    if env.get("GLOBE_CPU_NUMERICS", "reproducible") == "native" or _has_nvidia_gpu() or not _has_avx2():
        return {}
    return {k: v for k, v in REPRODUCIBLE_CPU_ENV.items() if k not in env}


def use_reproducible_cpu() -> dict[str, str]:
    """Set `reproducible_cpu_env()` in os.environ (for the processes started from here, and for this one when torch
    is not imported yet); returns what was set."""
    extra = reproducible_cpu_env()
    os.environ.update(extra)
    return extra


def _has_nvidia_gpu() -> bool:
    import shutil

    return os.path.exists("/dev/nvidiactl") or shutil.which("nvidia-smi") is not None


def _has_avx2() -> bool:
    try:
        with open("/proc/cpuinfo", encoding="utf-8") as f:
            return any(line.startswith("flags") and " avx2" in line for line in f)
    except OSError:  # not Linux: leave the choice to the libraries
        return False


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
    import logging

    # Trainer orders checkpoints by mtime and, when two were saved within a second (the tiny model saves that fast),
    # says so and orders them by step instead, which is what it should do anyway: a message that depends on the
    # machine's speed, so it comes and goes between reruns of the same commit.
    trainer_utils = logging.getLogger("transformers.trainer_utils")
    if not any(isinstance(f, _NoMtimeNotice) for f in trainer_utils.filters):
        trainer_utils.addFilter(_NoMtimeNotice())


class _NoMtimeNotice:
    def filter(self, record) -> bool:
        return "mtime may not be reliable" not in record.getMessage()
