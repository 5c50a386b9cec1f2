"""GRPO: reinforce the policy's reasoning with GLOBE's rewards, through TRL's `GRPOTrainer`.

The policy (the base VLM, or the SFT adapter continued) samples `num_generations` completions per photo; each
completion is scored by the reward functions named in params (`globe.rewards`: format, accuracy, localizability,
visual grounding, ...), the weighted sum is normalised within its group, and TRL takes the clipped policy-gradient
step with a small KL pull towards the reference (the policy as it started: TRL keeps a frozen copy of the initial
adapter, so after SFT the reference is the SFT model). We only wire things:
params -> `GRPOParams` -> TRL's `GRPOConfig`, the MP16-Reason-style dataset -> TRL's VLM format, and two callbacks
that write what a researcher plots (`results/grpo_log.csv`, one row per step) and reads (`results/grpo_samples.jsonl`,
sampled completions with their image ids and rewards).

A run killed at any point resumes from the newest `checkpoint-N` in `out/checkpoints`: training state, the CSV and the
JSONL all continue from that step; rows written after it (and so redone) are dropped first, so nothing is lost or
duplicated. A rerun whose checkpoint already reached `steps` only exports it.

Backends: on a CUDA machine with unsloth installed, `globe.models.select_backend` picks unsloth's `FastVisionModel`
(LoRA, optionally 4-bit, optionally vLLM generation); unsloth must be imported before TRL/transformers, which is
why the backend is chosen before anything else is imported here. Elsewhere: transformers + PEFT on CPU or GPU.

Multi-GPU: `accelerate launch --config_file configs/accelerate/ddp.yaml -m globe.train.grpo --params params.yaml`
(zero2.yaml / zero3.yaml for DeepSpeed).

The parts: `params` (`GRPOParams`), `args` (TRL's `GRPOConfig`), `data` (the dataset in TRL's format), `logs` (the
step log, the sampled completions, their readers) and `trainer` (rewards, policy, `train_grpo`, the script's `cli`).
"""

from __future__ import annotations

from globe.train.grpo.args import grpo_config
from globe.train.grpo.data import load_grpo_dataset, to_grpo_dataset
from globe.train.grpo.logs import SampleRecorder, read_log, read_samples, timing_csv
from globe.train.grpo.params import GRPOParams
from globe.train.grpo.trainer import build_rewards, cli, load_policy, make_scorer, train_grpo

__all__ = ["GRPOParams", "SampleRecorder", "build_rewards", "cli", "grpo_config", "load_grpo_dataset", "load_policy",
           "make_scorer", "read_log", "read_samples", "timing_csv", "to_grpo_dataset", "train_grpo"]
