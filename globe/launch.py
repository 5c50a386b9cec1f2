"""Multi-process training from one call. A recipe that names `num_processes` for a training stage (GLOBE: 6 GPUs for
GRPO, 8 for SFT and the reward model) is launched with `accelerate launch` from wherever the stage runs (its notebook
under `dvc repro`, `globe train-grpo`, a plain Python call), so `globe profile paper && dvc repro` trains on every GPU
the recipe asks for. Under a launcher (torchrun / accelerate set WORLD_SIZE) nothing is relaunched and the stage's
config checks that WORLD_SIZE is what the recipe assumes.

    python -m globe.launch grpo --params params.yaml     # what each launched process runs
"""

from __future__ import annotations

import argparse
import importlib
import logging
import os
import subprocess
import sys
from pathlib import Path
from typing import Any

log = logging.getLogger(__name__)

# params group -> "module:function" training it from its typed config
TRAINERS = {
    "sft": "globe.train.sft:train_sft",
    "reward_model": "globe.reward_model:train_reward_model",
    "grpo": "globe.train.grpo:train_grpo",
}


def launched() -> bool:
    """Whether this process was started by a distributed launcher."""
    return "WORLD_SIZE" in os.environ


def world_size() -> int:
    return int(os.environ.get("WORLD_SIZE", "1"))


def needs_launch(cfg: Any) -> bool:
    """The recipe asks for several processes and this one was not started by a launcher."""
    n = getattr(cfg, "num_processes", None)
    return bool(n and n > 1 and not launched())


def check_world(cfg: Any, key: str = "num_processes") -> str | None:
    """A message when a launched run's WORLD_SIZE differs from the recipe's `num_processes` (None when it fits)."""
    n = getattr(cfg, key, None)
    if n is None or not launched() or world_size() == n:
        return None
    return (f"the recipe assumes {n} processes; this run has WORLD_SIZE={world_size()}: launch it with that many "
            "processes (or let the stage launch itself), or set num_processes: null")


def launch_command(group: str, params_file: str | os.PathLike, n: int) -> list[str]:
    """`accelerate launch` running `python -m globe.launch GROUP --params FILE` on `n` processes of this machine."""
    return [sys.executable, "-m", "accelerate.commands.launch", "--num_processes", str(n), "--num_machines", "1",
            "-m", "globe.launch", group, "--params", str(params_file)]


def launch(group: str, cfg: Any, workdir: str | os.PathLike) -> None:
    """Run stage `group` with `cfg` on `cfg.num_processes` processes and wait; raises if the job fails. The config
    goes to `<workdir>/launch_params.yaml` (common keys + the group), which every process reads."""
    import yaml

    from globe.config import stage_of

    stage = stage_of(group)
    values = cfg.to_dict()
    common = {k: values.pop(k) for k in stage.common if k in values}
    path = Path(workdir) / "launch_params.yaml"
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(yaml.safe_dump({"common": common, group: values}, sort_keys=False), encoding="utf-8")
    cmd = launch_command(group, path, cfg.num_processes)
    log.info("launching %s on %d processes: %s", group, cfg.num_processes, " ".join(cmd))
    done = subprocess.run(cmd, env=dict(os.environ), check=False)
    if done.returncode != 0:
        raise RuntimeError(f"{group}: the {cfg.num_processes}-process job failed (exit {done.returncode}); its log is "
                           f"above. Command: {' '.join(cmd)}")


def run_worker(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m globe.launch", description=__doc__.split("\n\n")[0])
    parser.add_argument("group", choices=sorted(TRAINERS))
    parser.add_argument("--params", required=True)
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    from globe.config import stage_config

    module, _, name = TRAINERS[args.group].partition(":")
    getattr(importlib.import_module(module), name)(stage_config(args.group, path=args.params))
    return 0


if __name__ == "__main__":
    sys.exit(run_worker())
