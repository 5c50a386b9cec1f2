"""GRPO: params -> GRPOConfig, dataset conversion, the log / sample files, resume, 2-process DDP, the notebook, and a
learning test (SFT then GRPO raises the accuracy reward on a task decided by the photo)."""

from __future__ import annotations

import json
import os
import random
import shutil
import subprocess
import sys
from pathlib import Path
from types import SimpleNamespace

import pytest
import yaml

from globe.config import ParamsError
from globe.train.grpo import GRPOParams, SampleRecorder, grpo_config, read_log, to_grpo_dataset
from globe.train.grpo.logs import _append_csv, _truncate_csv, _truncate_jsonl

ROOT = Path(__file__).resolve().parents[1]

# Learning test budget (tiny model, CPU): full-SFT steps, GRPO steps and step size, and the required gain in the mean
# accuracy reward.
SFT_STEPS = 100
SFT_LR = 3e-3
GRPO_STEPS = 40
GRPO_LR = 3e-4
LEARNING_MARGIN = 0.25  # measured: 0.500 (chance: both answers equally likely) -> 0.969 (seed 0, CPU)

# The photo's dominant colour decides the place: a task a VLM can only get right by looking at the image.
COLOURS = {
    "red": ((220, 30, 30), "France", "Paris", "FR"),
    "blue": ((30, 30, 220), "Japan", "Tokyo", "JP"),
}


def colour_rows(n: int, seed: int = 0) -> list[dict]:
    """MP16-Reason-style rows (every distilled column) with generated single-colour photos."""
    from PIL import Image

    rng = random.Random(seed)
    rows = []
    for i in range(n):
        name = list(COLOURS)[i % len(COLOURS)]
        rgb, country, city, code = COLOURS[name]
        jittered = tuple(max(0, min(255, c + rng.randint(-20, 20))) for c in rgb)
        rows.append(dict(
            id=f"{name}-{i}", image=Image.new("RGB", (56, 56), jittered), prompt="Where was this photo taken?",
            reasoning=f"The photo is {name}.", answer=f"country: {country}\ncity: {city}", country=country,
            country_code=code, city=city, lat=0.0, lon=0.0, continent="", localizability=0.9, localizable=True,
            entities=[name], teacher="test",
        ))
    return rows


def save_dataset(rows: list[dict], path: Path) -> Path:
    from datasets import Dataset, DatasetDict

    DatasetDict(train=Dataset.from_list(rows)).save_to_disk(str(path))
    return path


@pytest.fixture(scope="module")
def colour_dataset(tmp_path_factory) -> Path:
    return save_dataset(colour_rows(8), tmp_path_factory.mktemp("grpo-data") / "mp16_reason")


def small_params(tiny_vlm_dir: Path, dataset: Path, work: Path, **over) -> dict:
    """A run of the tiny model on CPU: short completions, format + visual rewards (no reward model, no geocoder)."""
    p = dict(base_model=str(tiny_vlm_dir), dataset=str(dataset), init_adapter=None, out=str(work / "grpo"),
             log_csv=str(work / "grpo_log.csv"), samples=str(work / "grpo_samples.jsonl"), steps=3, save_steps=2,
             num_generations=4, per_device_train_batch_size=4, max_completion_length=12,
             rewards={"format": 1.0, "visual": 0.2}, learning_rate=1e-4, report_to="none")
    p.update(over)
    return p


# ---------------------------------------------------------------------------------------------------------------------
# Params and config


def test_params_match_params_yaml_and_reject_unknown_keys():
    from globe.config import stage_params

    cfg = GRPOParams.from_params(stage_params("04_grpo", ROOT / "params.yaml"))
    assert cfg.steps >= 1 and cfg.out == "models/grpo"
    with pytest.raises(ParamsError, match="unknown grpo parameter"):
        GRPOParams.from_params({"stepz": 3})


@pytest.mark.parametrize("bad, match", [
    ({"num_generations": 1}, "num_generations"),
    ({"rewards": {}}, "empty"),
    ({"rewards": {"localizability": 0.5}, "reward_model": None}, "reward_model"),
    ({"rewards": {"format": float("nan")}}, "finite"),
    ({"backend": "jax"}, "backend"),
    ({"lora": {"r": 0}}, "LoRA"),
    ({"lora": None, "load_in_4bit": True}, "full fine-tuning"),
    ({"steps": "abc"}, "grpo.steps: expected an integer"),
    ({"steps": 2.5}, "grpo.steps: expected an integer"),
    ({"rewards": {"acuracy": 1.0}}, "unknown reward 'acuracy'"),
    ({"rewards": {"distance": {"weight": 1.0, "tau": 5}}}, "tau"),
    ({"num_generations": 3, "per_device_train_batch_size": 4}, "must divide the batch"),
])
def test_params_validation(bad, match):
    with pytest.raises((ValueError, KeyError), match=match):
        GRPOParams.from_params(bad)


def test_grpo_config_carries_params():
    cfg = GRPOParams.from_params({"steps": 7, "num_generations": 4, "learning_rate": 3e-6, "beta": 0.01,
                                  "temperature": 0.9, "max_completion_length": 33, "save_steps": 5, "seed": 3,
                                  "out": "/tmp/x/grpo", "loss_type": "dr_grpo", "scale_rewards": "none"})
    args = grpo_config(cfg, on_gpu=False, reward_weights=[1.0, 0.2])
    assert (args.max_steps, args.num_generations, args.learning_rate, args.beta) == (7, 4, 3e-6, 0.01)
    assert (args.temperature, args.max_completion_length, args.save_steps, args.seed) == (0.9, 33, 5, 3)
    assert args.reward_weights == [1.0, 0.2] and args.logging_steps == 1
    assert args.loss_type == "dr_grpo" and args.scale_rewards == "none"
    assert not args.bf16 and args.use_cpu and args.output_dir == "/tmp/x/grpo/checkpoints"


def test_build_rewards_with_localizability_scorer(tmp_path, monkeypatch):
    """The paper's four rewards, in params order with their weights; the reward model comes from `reward_model`."""
    from PIL import Image

    import globe.reward_model as rm
    from globe.train.grpo import build_rewards

    class FakeScorer:
        def __init__(self, model, adapter=None, processor=None):
            self.args = (model, adapter, processor)

        def score(self, images, reasonings):
            return [0.75 for _ in reasonings]

    monkeypatch.setattr(rm, "LocalizabilityScorer", FakeScorer)
    (tmp_path / "rm").mkdir()
    cfg = GRPOParams.from_params({"rewards": {"format": 1.0, "accuracy": 1.0, "localizability": 0.5, "visual": 0.2},
                                  "reward_model": str(tmp_path / "rm")})
    funcs, weights = build_rewards(cfg)
    assert [f.__name__ for f in funcs] == ["format", "accuracy", "localizability", "visual"]
    assert weights == [1.0, 1.0, 0.5, 0.2]
    loc = funcs[2](["<think>red roofs</think><answer>country: France\ncity: Paris</answer>", "no reasoning"],
                   image=[Image.new("RGB", (8, 8))] * 2)
    assert loc == [0.75, 0.0]
    with pytest.raises(FileNotFoundError, match="reward_model"):
        build_rewards(GRPOParams.from_params({"rewards": {"localizability": 0.5}, "reward_model": str(tmp_path / "no")}))


# ---------------------------------------------------------------------------------------------------------------------
# Dataset


def test_to_grpo_dataset_is_trl_vlm_format(colour_dataset, tiny_vlm_dir):
    from datasets import load_from_disk
    from transformers import AutoProcessor
    from trl.data_utils import prepare_multimodal_messages

    ds = to_grpo_dataset(load_from_disk(str(colour_dataset))["train"])
    ex = ds[0]
    assert ex["prompt"] == [{"role": "user", "content": "Where was this photo taken?"}]
    assert ex["prompt_text"] == "Where was this photo taken?" and ex["country"] == "France" and ex["entities"] == ["red"]
    # What GRPOTrainer does with a conversational prompt and an `image` column: the image goes in front of the text.
    messages = prepare_multimodal_messages(ex["prompt"], images=[ex["image"]])
    assert messages[0]["content"][0]["type"] == "image" and messages[0]["content"][0]["image"] is not None
    processor = AutoProcessor.from_pretrained(str(tiny_vlm_dir))
    text = processor.apply_chat_template(messages, add_generation_prompt=True, tokenize=False)
    assert "<|image_pad|>" in text and text.endswith("<|im_start|>assistant\n")


def test_to_grpo_dataset_needs_images():
    from datasets import Dataset

    with pytest.raises(ValueError, match="image"):
        to_grpo_dataset(Dataset.from_list([{"id": "a", "prompt": "p"}]))


# ---------------------------------------------------------------------------------------------------------------------
# Log and samples files


def test_sample_recorder_keeps_completions_with_ids_and_rewards():
    def fmt(completions, **kw):
        return [1.0 if "<answer>" in c else 0.0 for c in completions]

    def acc(completions, country=None, **kw):
        return [0.2 if (co in c) else 0.0 for c, co in zip(completions, country)]

    fmt.__name__, acc.__name__ = "format", "accuracy"
    rec = SampleRecorder(every=2, weights={"format": 1.0, "accuracy": 0.5})
    wrapped = rec.wrap([fmt, acc])
    assert [f.__name__ for f in wrapped] == ["format", "accuracy"]
    cols = dict(id=["a", "a"], country=["France", "France"], city=["Paris", "Paris"])
    for step in (0, 1, 2):  # trainer_state.global_step before the step: records for steps 1 (always), 2, not 3
        for f in wrapped:
            assert f(["<answer>France</answer>", "nothing"], trainer_state=SimpleNamespace(global_step=step), **cols)
    records = rec.pop(upto_step=3)
    assert [r["step"] for r in records] == [1, 1, 2, 2]
    assert records[0] == {"step": 1, "id": "a", "country": "France", "city": "Paris",
                          "completion": "<answer>France</answer>", "rewards": {"format": 1.0, "accuracy": 0.2},
                          "reward": pytest.approx(1.1)}
    assert records[1]["reward"] == 0.0 and rec.pop(upto_step=10) == []


def test_csv_append_new_columns_and_truncate(tmp_path):
    path = tmp_path / "log.csv"
    _append_csv(path, {"step": 1, "reward": 0.5})
    _append_csv(path, {"step": 2, "reward": 0.7, "kl": 0.01})  # a new column rewrites under the union header
    _append_csv(path, {"step": 3, "reward": 0.9, "kl": 0.02})
    df = read_log(path)
    assert list(df.columns) == ["step", "reward", "kl"] and df["step"].tolist() == [1, 2, 3]
    assert df["kl"].isna().tolist() == [True, False, False]
    _truncate_csv(path, 2)
    assert read_log(path)["step"].tolist() == [1, 2]
    jl = tmp_path / "s.jsonl"
    jl.write_text("".join(json.dumps({"step": s}) + "\n" for s in (1, 2, 3, 3)))
    _truncate_jsonl(jl, 2)
    assert [json.loads(x)["step"] for x in jl.read_text().splitlines()] == [1, 2]


# ---------------------------------------------------------------------------------------------------------------------
# Training, resume, distributed


@pytest.mark.slow
def test_train_writes_log_samples_adapter_and_resumes(tiny_vlm_dir, colour_dataset, tmp_path):
    import pandas as pd

    from globe.train.grpo import read_samples, train_grpo

    params = small_params(tiny_vlm_dir, colour_dataset, tmp_path)
    out = train_grpo(params)
    assert (out / "adapter_model.safetensors").is_file() and (out / "adapter_config.json").is_file()
    assert "step_time_s" not in read_log(params["log_csv"]).columns  # wall time stays out of the tracked log
    from globe.train.grpo import timing_csv

    assert not (out / "timing.csv").exists()  # wall times are not part of the adapter folder (a DVC output)
    log = read_log(params["log_csv"], timing=timing_csv())  # joined in from .globe/runs/grpo/timing.csv
    assert log["step"].tolist() == [1, 2, 3]
    for col in ("rewards/format/mean", "rewards/visual/mean", "reward", "kl", "completions/mean_length", "loss",
                "step_time_s"):
        assert col in log.columns and log[col].notna().all(), col
    assert (log["step_time_s"] > 0).all() and (log["completions/mean_length"] <= 12).all()
    samples = read_samples(params["samples"])
    assert sorted(samples["step"].unique()) == [1, 2, 3] and samples["id"].str.match(r"(red|blue)-\d").all()
    assert {"reward/format", "reward/visual", "completion", "country", "city"} <= set(samples.columns)

    # Interrupted after step 3 but before its checkpoint: the newest checkpoint is step 2. The rerun (now to step 4)
    # resumes there, redoes step 3 and adds step 4; the CSV and the JSONL hold each step once.
    ckpts = out / "checkpoints"
    assert (ckpts / "checkpoint-2").is_dir()
    shutil.rmtree(ckpts / "checkpoint-3")
    train_grpo({**params, "steps": 4})
    summary = json.loads((out / "globe_grpo.json").read_text())
    assert summary["global_step"] == 4 and "resuming checkpoint-2 (step 2 of 4)" in summary["resume"]
    assert read_log(params["log_csv"])["step"].tolist() == [1, 2, 3, 4]
    steps = pd.Series([json.loads(x)["step"] for x in Path(params["samples"]).read_text().splitlines()])
    assert steps.is_monotonic_increasing and steps.value_counts().sort_index().tolist() == [4, 4, 4, 4]

    # A finished run rerun with the same steps trains nothing more: it exports the step-4 checkpoint again.
    (out / "adapter_model.safetensors").unlink()
    train_grpo({**params, "steps": 4})
    assert read_log(params["log_csv"])["step"].tolist() == [1, 2, 3, 4]
    assert (out / "adapter_model.safetensors").is_file() and not (out / "optimizer.pt").exists()
    assert json.loads((out / "globe_grpo.json").read_text())["global_step"] == 4

    # Asked for fewer steps than the newest checkpoint holds: never more training than asked. The 4-step checkpoint
    # is discarded (not exported as "3 steps"); the run resumes its step-2 checkpoint and trains step 3 again.
    train_grpo({**params, "steps": 3})
    summary = json.loads((out / "globe_grpo.json").read_text())
    assert summary["global_step"] == 3 and "past steps=3" in summary["resume"]
    assert read_log(params["log_csv"])["step"].tolist() == [1, 2, 3]

    # Another experiment in the same folder (a different learning rate) is not resumed, nor exported as finished:
    # it starts over from step 0 and its log restarts with it.
    train_grpo({**params, "steps": 2, "learning_rate": 5e-5})
    summary = json.loads((out / "globe_grpo.json").read_text())
    assert summary["global_step"] == 2 and "another experiment" in summary["resume"]
    assert read_log(params["log_csv"])["step"].tolist() == [1, 2]


@pytest.mark.slow
@pytest.mark.parametrize("disable_dropout", [True, False])
def test_continued_adapter_starts_at_zero_kl_only_without_dropout(tiny_vlm_dir, colour_dataset, tmp_path,
                                                                 disable_dropout):
    """Continuing a trained LoRA adapter (what the default profile does after SFT): at step 1 the policy is the
    reference, so the KL is 0, unless LoRA dropout perturbs the policy's log-probs (measured: KL 290 on the tiny model
    after SFT). The adapter here has random non-zero lora_B and dropout 0.5 in its config."""
    import torch

    from globe import models
    from globe.train.grpo import train_grpo

    model, _ = models.load_vlm(tiny_vlm_dir, training=True, lora=models.lora_settings(r=8, alpha=16, dropout=0.5))
    torch.manual_seed(0)
    with torch.no_grad():
        for name, p in model.named_parameters():
            if "lora_B" in name:
                p.normal_(0.0, 0.5)
    model.save_pretrained(tmp_path / "adapter")
    train_grpo(small_params(tiny_vlm_dir, colour_dataset, tmp_path, init_adapter=str(tmp_path / "adapter"), steps=1,
                            save_steps=1000, disable_dropout=disable_dropout))
    kl = float(read_log(tmp_path / "grpo_log.csv")["kl"].iloc[0])
    assert (kl < 1e-6) if disable_dropout else (kl > 1e-3), kl


@pytest.mark.slow
def test_two_process_ddp_on_cpu(tiny_vlm_dir, colour_dataset, tmp_path):
    """`python -m globe.train.grpo` under torchrun with 2 CPU processes (gloo): the script entry point that
    `accelerate launch --config_file configs/accelerate/ddp.yaml -m globe.train.grpo` runs on GPUs."""
    params = {"common": {"profile": "default", "seed": 0, "base_model": str(tiny_vlm_dir), "offline": True},
              "grpo": small_params(tiny_vlm_dir, colour_dataset, tmp_path, steps=2, per_device_train_batch_size=2)}
    params["grpo"].pop("base_model")
    (tmp_path / "params.yaml").write_text(yaml.safe_dump(params))
    env = {**os.environ, "OMP_NUM_THREADS": "1", "PYTHONPATH": str(ROOT)}
    cmd = [sys.executable, "-m", "torch.distributed.run", "--nproc_per_node", "2", "--master_port", str(29500 + os.getpid() % 1000),
           "-m", "globe.train.grpo", "--params", str(tmp_path / "params.yaml"), "--set", "save_steps=1"]
    proc = subprocess.run(cmd, cwd=ROOT, env=env, capture_output=True, text=True, timeout=600)
    assert proc.returncode == 0, proc.stderr[-3000:]
    summary = json.loads((tmp_path / "grpo" / "globe_grpo.json").read_text())
    assert summary["world_size"] == 2 and summary["global_step"] == 2
    assert read_log(tmp_path / "grpo_log.csv")["step"].tolist() == [1, 2]
    assert (tmp_path / "grpo" / "checkpoints" / "checkpoint-2").is_dir()


@pytest.mark.parametrize("name", ["ddp", "zero2", "zero3"])
def test_accelerate_configs_load(name):
    from accelerate.commands.config.config_args import load_config_from_file

    cfg = load_config_from_file(str(ROOT / "configs" / "accelerate" / f"{name}.yaml"))
    assert cfg.distributed_type == ("MULTI_GPU" if name == "ddp" else "DEEPSPEED")
    if name != "ddp":
        assert cfg.deepspeed_config["zero_stage"] == int(name[-1])


# ---------------------------------------------------------------------------------------------------------------------
# Notebook


@pytest.mark.slow
def test_notebook_runs_three_steps(tiny_vlm_dir, colour_dataset, tmp_path):
    import papermill as pm

    overrides = small_params(tiny_vlm_dir, colour_dataset, tmp_path, steps=3)
    out_nb = tmp_path / "04_grpo.ipynb"
    pm.execute_notebook(str(ROOT / "notebooks" / "04_grpo.ipynb"), str(out_nb), parameters=overrides,
                        cwd=str(ROOT / "notebooks"), kernel_name="python3", progress_bar=False)
    assert read_log(overrides["log_csv"])["step"].tolist() == [1, 2, 3]
    text = out_nb.read_text()
    assert "GRPO adapter in" in text and "grpo  step 3/3" in text
    assert "s/step]" in text  # papermill alone keeps the timing tokens; `globe run` scrubs them (test_reproducible)


# ---------------------------------------------------------------------------------------------------------------------
# Learning


@pytest.mark.slow
def test_sft_then_grpo_learns_the_colour_task(tiny_vlm_dir, tmp_path):
    """SFT teaches the answer format and both places but not which colour means which: each photo is paired with
    both answers. GRPO, rewarded by `accuracy`, must learn to read the colour. Accuracy is measured by sampling
    (temperature 1, fixed seed) before and after GRPO."""
    import numpy as np
    from datasets import Dataset
    from trl import SFTConfig, SFTTrainer

    from globe.models import generate, load_vlm
    from globe.prompts import build_messages
    from globe.rewards import REWARDS
    from globe.train.grpo import train_grpo

    rows = colour_rows(8)
    dataset = save_dataset(rows, tmp_path / "colours")
    prompt = rows[0]["prompt"]
    answers = [(c[1], c[2]) for c in COLOURS.values()]
    sft_rows = []
    for r in rows:
        for country, city in answers:
            m = build_messages(prompt, answer=f"<answer>country: {country}\ncity: {city}</answer>")
            sft_rows.append({"image": r["image"], "prompt": m[:1], "completion": m[1:]})

    # Full fine-tuning, so the test measures the GRPO loop rather than LoRA's capacity on a random model.
    model, processor = load_vlm(str(tiny_vlm_dir), training=True)
    sft_dir = tmp_path / "sft"
    trainer = SFTTrainer(model=model, processing_class=processor, train_dataset=Dataset.from_list(sft_rows),
                         args=SFTConfig(output_dir=str(tmp_path / "sft-ck"), max_steps=SFT_STEPS, learning_rate=SFT_LR,
                                        lr_scheduler_type="linear", per_device_train_batch_size=16, save_strategy="no",
                                        logging_steps=10, report_to="none", use_cpu=True, bf16=False, seed=0,
                                        remove_unused_columns=False, disable_tqdm=True))
    trainer.train()
    trainer.save_model(str(sft_dir))
    processor.save_pretrained(str(sft_dir))

    def accuracy(model_dir: Path, repeats: int = 8) -> float:
        m, p = load_vlm(str(model_dir))
        outs = generate(m, p, [r["image"] for r in rows] * repeats, prompt, max_new_tokens=16, temperature=1.0,
                        batch_size=64, seed=1)
        return float(np.mean(REWARDS["accuracy"](outs, country=[r["country"] for r in rows] * repeats,
                                                 city=[r["city"] for r in rows] * repeats)))

    before = accuracy(sft_dir)
    out = train_grpo(dict(base_model=str(sft_dir), dataset=str(dataset), init_adapter=None, lora=None,
                          out=str(tmp_path / "grpo"), log_csv=str(tmp_path / "log.csv"),
                          samples=str(tmp_path / "samples.jsonl"), steps=GRPO_STEPS, learning_rate=GRPO_LR, beta=0.0,
                          num_generations=8, per_device_train_batch_size=32, max_completion_length=16,
                          rewards={"accuracy": 1.0}, save_steps=1000, report_to="none"))
    after = accuracy(out)
    print(f"accuracy reward before GRPO {before:.3f}, after {after:.3f}")
    assert before > 0.1, "SFT did not teach the answer format; the test cannot measure GRPO"
    assert after >= before + LEARNING_MARGIN, (before, after)


# ---------------------------------------------------------------------------------------------------------------------
# The paper recipe's GRPO fields: epochs, warmup ratio, vLLM settings, async generation, DeepSpeed, processes, hub data


def test_recipe_fields_reach_trls_config(monkeypatch, caplog):
    import logging

    cfg = GRPOParams.from_params({"steps": None, "num_train_epochs": 1, "warmup_steps": 0.01, "num_generations": 16,
                                  "per_device_train_batch_size": 16, "use_vllm": True, "vllm_mode": "server",
                                  "vllm_max_model_length": 1024, "vllm_server_base_url": "http://gpu7:8000",
                                  "async_generation": True, "out": "/tmp/x/grpo", "prompt": "globe-train"})
    with caplog.at_level(logging.WARNING, logger="globe.train.grpo"):
        args = grpo_config(cfg, on_gpu=False, reward_weights=[1.0])
    assert (args.max_steps, args.num_train_epochs, args.warmup_steps) == (-1, 1, 0.01)
    assert (args.use_vllm, args.vllm_mode, args.vllm_max_model_length) == (True, "server", 1024)
    assert args.vllm_server_base_url == "http://gpu7:8000"
    assert any("async_generation" in m for m in caplog.messages)
    assert grpo_config(GRPOParams.from_params({"steps": 2, "out": "/tmp/x"}), on_gpu=False,
                       reward_weights=[1.0]).vllm_max_model_length is None
    for bad, match in (({"steps": None}, "exactly one"), ({"steps": 2, "num_train_epochs": 1}, "exactly one"),
                       ({"prompt": "nope"}, "unknown prompt"), ({"deepspeed": "missing.json"}, "not a file")):
        with pytest.raises(ParamsError, match=match):
            GRPOParams.from_params(bad)


def test_num_processes_is_checked_under_a_launcher_and_launches_otherwise(monkeypatch):
    from globe.launch import launch_command, needs_launch

    monkeypatch.delenv("WORLD_SIZE", raising=False)
    cfg = GRPOParams.from_params({"num_processes": 6, "per_device_train_batch_size": 8,
                                  "gradient_accumulation_steps": 2, "num_generations": 16})
    assert needs_launch(cfg)  # not under a launcher: the stage starts the recipe's 6 processes itself
    cmd = launch_command("grpo", "p.yaml", 6)
    assert cmd[1:4] == ["-m", "accelerate.commands.launch", "--num_processes"] and cmd[4] == "6"
    assert cmd[-4:] == ["globe.launch", "grpo", "--params", "p.yaml"]
    monkeypatch.setenv("WORLD_SIZE", "2")
    with pytest.raises(ParamsError, match="assumes 6 processes; this run has WORLD_SIZE=2"):
        GRPOParams.from_params({"num_processes": 6, "per_device_train_batch_size": 8, "num_generations": 16})
    monkeypatch.setenv("WORLD_SIZE", "6")
    assert not needs_launch(GRPOParams.from_params({"num_processes": 6, "per_device_train_batch_size": 8,
                                                    "gradient_accumulation_steps": 2, "num_generations": 16}))


def test_launch_writes_the_config_every_process_reads(tmp_path, monkeypatch):
    import globe.launch as launch

    calls = []
    monkeypatch.delenv("WORLD_SIZE", raising=False)
    monkeypatch.setattr(launch.subprocess, "run", lambda cmd, env, check: calls.append(cmd) or
                        SimpleNamespace(returncode=0))
    cfg = GRPOParams.from_params({"num_processes": 2, "per_device_train_batch_size": 2, "num_generations": 4,
                                  "out": str(tmp_path / "grpo"), "seed": 5})
    launch.launch("grpo", cfg, tmp_path / "grpo")
    written = yaml.safe_load((tmp_path / "grpo" / "launch_params.yaml").read_text())
    assert written["common"] == {"seed": 5, "base_model": cfg.base_model, "offline": True}
    rebuilt = GRPOParams.from_params({**written["common"], **written["grpo"]})
    assert rebuilt == cfg and calls and calls[0][-1].endswith("launch_params.yaml")
    monkeypatch.setattr(launch.subprocess, "run", lambda cmd, env, check: SimpleNamespace(returncode=3))
    with pytest.raises(RuntimeError, match="2-process job failed"):
        launch.launch("grpo", cfg, tmp_path / "grpo")


def test_released_mp16_reason_layout_is_read(tmp_path):
    from datasets import Dataset
    from PIL import Image

    from globe import mp16_reason
    from globe.train.grpo.data import _is_hub_id

    assert _is_hub_id("globe-project/MP16-Reason") and not _is_hub_id("tests/missing") and not _is_hub_id("./a/b")
    img = Image.new("RGB", (8, 8), (1, 2, 3))
    official = Dataset.from_list([
        {"images": [img], "response": "Red buses.", "solution": "<country>UK</country><city>London</city>",
         "entities": [{"text": "bus"}, {"text": "clock tower"}]},
        {"images": [img], "response": "<think>Snow.</think>", "solution": "Norway\tOslo", "entities": []},
        {"images": [img], "response": "No place.", "solution": "", "entities": []},  # no place: skipped
    ])
    ds = mp16_reason.normalise(official)
    assert ds["country"] == ["UK", "Norway"] and ds["city"] == ["London", "Oslo"]
    assert ds["reasoning"] == ["Red buses.", "Snow."] and ds["entities"] == [["bus", "clock tower"], []]
    assert ds[0]["image"].size == (8, 8)
    converted = to_grpo_dataset(ds, "a prompt")
    assert converted[0]["prompt"] == [{"role": "user", "content": "a prompt"}]
