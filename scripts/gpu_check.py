"""The GPU check: GRPO with Unsloth and with plain TRL + PEFT, batched generation, QLoRA continuing an adapter.

    bash scripts/gpu_check.sh [full|smoke] [--size 3b|7b] [--out PATH] [--budget SECONDS] [--workdir DIR]

`full` (one CUDA GPU, no internet): a random-initialised Qwen2.5-VL of the 3B (or 7B) architecture, built offline
from its published config values; `smoke` (CPU, part of the test suite): the same phases on the tiny architecture.
Phases, each in its own process (so Unsloth's patches never reach the plain-TRL run, and peak memory is per path):

    env           versions, GPU, which optional packages import
    build         model (config values below, random weights), tokenizer padded to the real vocabulary, photos, and
                  a LoRA adapter to continue
    grpo_trl      `train_grpo`, backend transformers (TRL + PEFT)
    grpo_unsloth  `train_grpo`, backend unsloth, same data and settings
    generate      `globe.models.generate` at batch 8 and 32
    qlora         `train_grpo` continuing the adapter on the 4-bit base (on CPU the NF4 step is left out)
    grpo_unsloth_vllm   unsloth with its vLLM rollouts, where vLLM is installed

Each phase has a deadline: one that cannot finish in the time left is skipped, one that overruns is killed; the JSON
says which ran, were skipped (and why) or failed. Step time, tokens/s, images/s and peak memory per path go to
`--out` (full: results/bench/grpo_gpu.json); it is rewritten after every phase, so a killed run keeps what it had.
"""

from __future__ import annotations

import argparse
import datetime as dt
import importlib.util
import json
import os
import platform
import signal
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

# Qwen/Qwen2.5-VL-3B-Instruct and -7B-Instruct config.json values (text model and vision tower). rope_theta 1e6 and
# M-RoPE sections [16, 24, 24] (head_dim 128) are shared; so is the vision tower but for its output width.
_VISION = dict(depth=32, hidden_size=1280, intermediate_size=3420, num_heads=16, patch_size=14, spatial_merge_size=2,
               temporal_patch_size=2, window_size=112, fullatt_block_indexes=[7, 15, 23, 31], tokens_per_second=2,
               hidden_act="silu", in_channels=3)
_ROPE = {"type": "mrope", "mrope_section": [16, 24, 24], "rope_theta": 1000000.0}
ARCHS: dict[str, dict[str, Any]] = {
    "3b": dict(text=dict(hidden_size=2048, intermediate_size=11008, num_hidden_layers=36, num_attention_heads=16,
                         num_key_value_heads=2, max_position_embeddings=128000, rms_norm_eps=1e-6, rope_scaling=_ROPE),
               vision=dict(_VISION, out_hidden_size=2048), vocab_size=151936, tie_word_embeddings=True),
    "7b": dict(text=dict(hidden_size=3584, intermediate_size=18944, num_hidden_layers=28, num_attention_heads=28,
                         num_key_value_heads=4, max_position_embeddings=128000, rms_norm_eps=1e-6, rope_scaling=_ROPE),
               vision=dict(_VISION, out_hidden_size=3584), vocab_size=152064, tie_word_embeddings=False),
}
QWEN_FIRST_SPECIAL_ID = 151643  # <|endoftext|> in Qwen2.5's tokenizer; the other specials follow it

# What each mode runs. Completions are full length on a random model (it rarely samples the end token), so these
# are worst-case step times for their length.
SETTINGS = {
    "full": dict(steps=5, num_generations=8, per_device_train_batch_size=8, max_completion_length=256,
                 image_side=448, gen_batches=(8, 32), gen_tokens=256, qlora_steps=3, lora_r=16, photos=32),
    "smoke": dict(steps=2, num_generations=4, per_device_train_batch_size=4, max_completion_length=12,
                  image_side=56, gen_batches=(8, 32), gen_tokens=8, qlora_steps=2, lora_r=4, photos=32),
}
# (phase, seconds it needs to be worth starting: full 3b, full 7b, smoke)
PHASES = [("env", 20, 20, 5), ("build", 90, 150, 10), ("grpo_trl", 100, 150, 15), ("grpo_unsloth", 150, 200, 15),
          ("generate", 50, 80, 10), ("qlora", 90, 140, 15), ("grpo_unsloth_vllm", 180, 240, 15)]
DEFINITIONS = {
    "step_time_s": "mean wall time of an optimisation step (generation, rewards, loss, backward, update) after the "
                   "first; first_step_s is the first (compilation, caches)",
    "tokens_per_s": "prompt + completion tokens per second of step time (TRL's num_tokens over the steps timed)",
    "completion_tokens_per_s": "generated tokens per second of step time",
    "images_per_s": "(photo, completion) pairs per second of step time: each completion is scored with its photo",
    "peak_gpu_mem_gib": "torch.cuda.max_memory_allocated over the phase's process (reserved: max_memory_reserved)",
    "peak_rss_mib": "the phase process's peak resident memory (CPU runs)",
}


# ---------------------------------------------------------------------------------------------------------------------
# Parent: phases in child processes, under deadlines


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--mode", choices=("full", "smoke"), default="full")
    ap.add_argument("--size", choices=tuple(ARCHS), default="3b", help="architecture of the full check")
    ap.add_argument("--out", default=None, help="JSON (full: results/bench/grpo_gpu.json; smoke: WORKDIR/...)")
    ap.add_argument("--budget", type=float, default=None, help="seconds for all phases (full 510, smoke 600)")
    ap.add_argument("--workdir", default=None, help="models, data, logs (default: a folder under /tmp)")
    ap.add_argument("--phase", help=argparse.SUPPRESS)  # internal: run one phase in this process
    args = ap.parse_args(argv)
    workdir = Path(args.workdir or f"/tmp/globe-gpu-check-{args.mode}").resolve()
    if args.phase:
        return _run_phase_here(args.phase, args.mode, args.size, workdir)

    budget = args.budget if args.budget is not None else (510.0 if args.mode == "full" else 600.0)
    out = Path(args.out) if args.out else (ROOT / "results" / "bench" / "grpo_gpu.json" if args.mode == "full"
                                           else workdir / "grpo_gpu_smoke.json")
    workdir.mkdir(parents=True, exist_ok=True)
    t_start = time.monotonic()
    deadline = t_start + budget
    arch = "tiny" if args.mode == "smoke" else args.size
    report: dict[str, Any] = {
        "schema": 1, "mode": args.mode, "arch": f"qwen2.5-vl-{arch}", "random_init": True,
        "started": dt.datetime.now(dt.timezone.utc).isoformat(timespec="seconds"), "budget_s": budget,
        "settings": SETTINGS[args.mode], "host": {"python": platform.python_version(), "machine": platform.machine(),
                                                  "cpus": os.cpu_count()},
        "definitions": DEFINITIONS, "phases": {},
    }
    env: dict[str, Any] = {}
    for name, est_3b, est_7b, est_smoke in PHASES:
        est = est_smoke if args.mode == "smoke" else (est_7b if args.size == "7b" else est_3b)
        left = deadline - time.monotonic()
        why = _precondition(name, env, report["phases"], args.mode)
        if why:
            result = {"status": "skipped", "reason": why}
        elif left < est:
            result = {"status": "skipped", "reason": f"deadline: {left:.0f} s left of the {budget:.0f} s budget, the "
                                                     f"phase needs about {est} s"}
        else:
            result = _run_child(name, args.mode, args.size, workdir, timeout=left)
        report["phases"][name] = result
        if name == "env" and result["status"] == "ok":
            env = result
        report["wall_s"] = round(time.monotonic() - t_start, 1)
        report["comparison"] = _compare(report["phases"])
        _write(out, report)
        print(f"[gpu_check] {name}: {result['status']}" + (f" ({result.get('reason') or result.get('error')})"
                                                          if result["status"] != "ok" else
                                                          f" in {result.get('wall_s')} s"), flush=True)
    print(f"[gpu_check] wrote {out}")
    return 1 if any(r["status"] == "failed" for r in report["phases"].values()) else 0


def _precondition(name: str, env: dict, done: dict, mode: str) -> str | None:
    """Why a phase cannot run here (None: it can)."""
    if name != "env" and done.get("env", {}).get("status") != "ok":
        return "the env phase did not complete"
    if name not in ("env", "build") and done.get("build", {}).get("status") != "ok":
        return "the build phase did not complete"
    cuda = env.get("cuda", False)
    if name.startswith("grpo_unsloth"):
        if not cuda:
            return "unsloth needs a CUDA GPU (none here)"
        if not env.get("packages", {}).get("unsloth"):
            return "unsloth is not installed (pip install -e '.[gpu]' -c constraints/gpu.txt, or carry it)"
    if name == "grpo_unsloth_vllm" and not env.get("packages", {}).get("vllm"):
        return "vllm is not installed"
    if name == "qlora" and cuda and not env.get("packages", {}).get("bitsandbytes"):
        return "QLoRA needs bitsandbytes (not installed)"
    return None


def _run_child(name: str, mode: str, size: str, workdir: Path, timeout: float) -> dict:
    """Run one phase in a fresh process with a hard timeout (the whole process group is killed past it)."""
    log_path, res_path = workdir / f"phase-{name}.log", workdir / f"phase-{name}.json"
    res_path.unlink(missing_ok=True)
    cmd = [sys.executable, str(Path(__file__).resolve()), "--phase", name, "--mode", mode, "--size", size,
           "--workdir", str(workdir)]
    t0 = time.monotonic()
    with open(log_path, "w") as log:
        proc = subprocess.Popen(cmd, stdout=log, stderr=subprocess.STDOUT, start_new_session=True,
                                env={**os.environ, "PYTHONUNBUFFERED": "1"})
        try:
            rc = proc.wait(timeout=max(timeout, 0.1))
        except subprocess.TimeoutExpired:
            os.killpg(proc.pid, signal.SIGKILL)
            proc.wait()
            return {"status": "failed", "error": f"timed out: killed at the deadline after {timeout:.0f} s",
                    "wall_s": round(time.monotonic() - t0, 1), "log_tail": _tail(log_path)}
    wall = round(time.monotonic() - t0, 1)
    if rc != 0 or not res_path.is_file():
        return {"status": "failed", "error": f"exit code {rc}", "wall_s": wall, "log_tail": _tail(log_path)}
    result = json.loads(res_path.read_text())
    result.setdefault("status", "ok")
    result["wall_s"] = wall
    return result


def _tail(path: Path, n: int = 15) -> list[str]:
    lines = [ln for ln in path.read_text(errors="replace").splitlines() if ln.strip()]
    return [ln[-300:] for ln in lines[-n:]]


def _compare(phases: dict) -> dict:
    """Unsloth against TRL + PEFT from the same run: step-time and peak-memory ratios (unsloth / trl)."""
    a, b = phases.get("grpo_unsloth", {}), phases.get("grpo_trl", {})
    if a.get("status") != "ok" or b.get("status") != "ok":
        return {"unsloth_vs_trl": None, "reason": "needs both grpo_unsloth and grpo_trl to have run"}
    out = {"step_time_ratio": _ratio(a.get("step_time_s"), b.get("step_time_s")),
           "peak_mem_ratio": _ratio(a.get("peak_gpu_mem_gib"), b.get("peak_gpu_mem_gib"))}
    return {"unsloth_vs_trl": out, "note": "ratios below 1: unsloth faster / smaller"}


def _ratio(x, y):
    return round(x / y, 3) if x and y else None


def _write(path: Path, report: dict) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_suffix(".tmp")
    tmp.write_text(json.dumps(report, indent=2) + "\n")
    tmp.replace(path)


# ---------------------------------------------------------------------------------------------------------------------
# Child: one phase


def _run_phase_here(name: str, mode: str, size: str, workdir: Path) -> int:
    import logging

    # globe's INFO lines (backend chosen, unsloth's max_seq_length, the optimiser in use) go to the phase's log.
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    if name.startswith("grpo_unsloth"):
        # Before anything imports transformers / TRL (this script's callback class included): Unsloth patches them.
        from globe.models import prepare_backend

        prepare_backend("unsloth")
    from globe.config import offline_hub

    offline_hub()
    s = SETTINGS[mode]
    fn = {"env": phase_env, "build": phase_build, "grpo_trl": phase_grpo, "grpo_unsloth": phase_grpo,
          "generate": phase_generate, "qlora": phase_grpo, "grpo_unsloth_vllm": phase_grpo}[name]
    result = fn(name=name, mode=mode, size=size, workdir=workdir, s=s)
    result.update(_peak_memory())
    (workdir / f"phase-{name}.json").write_text(json.dumps(result, indent=2, default=str) + "\n")
    return 0


def _peak_memory() -> dict:
    import resource

    import torch

    out: dict[str, Any] = {"peak_rss_mib": round(resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024, 1)}
    if torch.cuda.is_available():
        out["peak_gpu_mem_gib"] = round(torch.cuda.max_memory_allocated() / 2**30, 3)
        out["peak_gpu_reserved_gib"] = round(torch.cuda.max_memory_reserved() / 2**30, 3)
    return out


def phase_env(**_) -> dict:
    from importlib.metadata import PackageNotFoundError, version

    import torch

    def ver(name):
        try:
            return version(name)
        except PackageNotFoundError:
            return None

    names = ("torch", "torchvision", "transformers", "trl", "peft", "accelerate", "datasets", "unsloth", "unsloth_zoo",
             "vllm", "bitsandbytes", "xformers", "triton", "deepspeed")
    out: dict[str, Any] = {"versions": {n: ver(n) for n in names},
                           "packages": {n: importlib.util.find_spec(n) is not None
                                        for n in ("unsloth", "vllm", "bitsandbytes", "trl", "peft", "datasets")},
                           "cuda": torch.cuda.is_available(), "torch_cuda": torch.version.cuda}
    if out["cuda"]:
        props = torch.cuda.get_device_properties(0)
        out["gpu"] = {"name": props.name, "memory_gib": round(props.total_memory / 2**30, 1),
                      "capability": f"{props.major}.{props.minor}", "count": torch.cuda.device_count()}
    return out


# -- build


def phase_build(*, mode: str, size: str, workdir: Path, s: dict, **_) -> dict:
    import torch

    t0 = time.perf_counter()
    if mode == "smoke":
        from globe.tiny import TINY_TEXT, TINY_VISION, TINY_VOCAB

        arch = dict(text=TINY_TEXT, vision=dict(TINY_VISION, out_hidden_size=TINY_TEXT["hidden_size"]),
                    vocab_size=TINY_VOCAB, tie_word_embeddings=True)
    else:
        arch = ARCHS[size]
    info = build_model(workdir / "model", arch, image_side=s["image_side"],
                       device="cuda" if torch.cuda.is_available() else "cpu")
    info["model_s"] = round(time.perf_counter() - t0, 1)
    build_dataset(workdir / "data", s["photos"], s["image_side"])
    build_adapter(workdir / "model", workdir / "adapter", r=s["lora_r"])
    return info


def build_tokenizer(vocab_size: int):
    """A byte-level BPE trained on GLOBE's prompts, padded with filler tokens so that Qwen's special tokens sit at
    their real ids (151643...) and every id below them decodes: the embedding matrix has the real model's shape."""
    from tokenizers import Tokenizer, decoders, models, pre_tokenizers, trainers
    from transformers import PreTrainedTokenizerFast

    from globe.prompts import PROMPTS, format_target
    from globe.tiny import CHAT_TEMPLATE, QWEN_SPECIAL_TOKENS

    n_special = len(QWEN_SPECIAL_TOKENS)
    first_special = min(QWEN_FIRST_SPECIAL_ID, vocab_size - n_special)
    tok = Tokenizer(models.BPE())
    tok.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    tok.decoder = decoders.ByteLevel()
    corpus = list(PROMPTS.values()) + [format_target("The signs are in French and the roofs are slate.", "France",
                                                     "Paris")] * 4
    tok.train_from_iterator(corpus, trainer=trainers.BpeTrainer(
        vocab_size=min(first_special, 1000), initial_alphabet=pre_tokenizers.ByteLevel.alphabet(), show_progress=False))
    data = json.loads(tok.to_str())
    vocab = data["model"]["vocab"]
    i = 0
    while len(vocab) < first_special:  # never produced by encoding (no merges lead there); decodes to " zq<hex>"
        name = f"\u0120zq{i:05x}"
        if name not in vocab:
            vocab[name] = len(vocab)
        i += 1
    # The specials with explicit ids, in Qwen's order (the wrapper would otherwise add eos / pad first).
    data["added_tokens"] = [dict(id=first_special + k, content=t, single_word=False, lstrip=False, rstrip=False,
                                 normalized=False, special=True) for k, t in enumerate(QWEN_SPECIAL_TOKENS)]
    fast = PreTrainedTokenizerFast(tokenizer_object=Tokenizer.from_str(json.dumps(data)), eos_token="<|im_end|>",
                                   pad_token="<|endoftext|>", unk_token=None, bos_token=None,
                                   additional_special_tokens=QWEN_SPECIAL_TOKENS, clean_up_tokenization_spaces=False,
                                   model_max_length=32768)
    fast.chat_template = CHAT_TEMPLATE
    got = fast.convert_tokens_to_ids("<|endoftext|>")
    assert got == first_special, f"<|endoftext|> at {got}, not {first_special} (tokenizer size {len(fast)})"
    return fast


def build_model(out: Path, arch: dict, *, image_side: int, device: str) -> dict:
    """A random Qwen2.5-VL of `arch` with a processor whose pixel budget is one image_side x image_side photo."""
    import torch
    from transformers import (
        GenerationConfig,
        Qwen2_5_VLConfig,
        Qwen2_5_VLForConditionalGeneration,
        Qwen2_5_VLProcessor,
        Qwen2VLImageProcessor,
        Qwen2VLVideoProcessor,
    )

    from globe.tiny import CHAT_TEMPLATE, QWEN_SPECIAL_TOKENS

    tokenizer = build_tokenizer(arch["vocab_size"])
    ids = {t: tokenizer.convert_tokens_to_ids(t) for t in QWEN_SPECIAL_TOKENS}
    max_pixels = image_side * image_side
    processor = Qwen2_5_VLProcessor(
        image_processor=Qwen2VLImageProcessor(min_pixels=28 * 28 * 4, max_pixels=max_pixels), tokenizer=tokenizer,
        video_processor=Qwen2VLVideoProcessor(min_pixels=28 * 28 * 4, max_pixels=max_pixels),
        chat_template=CHAT_TEMPLATE)
    config = Qwen2_5_VLConfig(
        text_config=dict(arch["text"], vocab_size=arch["vocab_size"], bos_token_id=ids["<|endoftext|>"],
                         eos_token_id=ids["<|im_end|>"], pad_token_id=ids["<|endoftext|>"]),
        vision_config=arch["vision"], image_token_id=ids["<|image_pad|>"], video_token_id=ids["<|video_pad|>"],
        vision_start_token_id=ids["<|vision_start|>"], vision_end_token_id=ids["<|vision_end|>"],
        tie_word_embeddings=arch["tie_word_embeddings"])
    dtype = torch.bfloat16 if device == "cuda" else torch.float32
    torch.manual_seed(0)
    previous = torch.get_default_dtype()
    torch.set_default_dtype(dtype)  # initialise in the storage dtype, on the GPU: seconds, not minutes, for 7B
    try:
        with torch.device(device):
            model = Qwen2_5_VLForConditionalGeneration(config).eval()
    finally:
        torch.set_default_dtype(previous)
    model.generation_config = GenerationConfig(eos_token_id=[ids["<|im_end|>"], ids["<|endoftext|>"]],
                                               pad_token_id=ids["<|endoftext|>"], do_sample=False)
    model.save_pretrained(out)
    processor.save_pretrained(out)
    n_params = sum(p.numel() for p in model.parameters())
    return {"params": n_params, "params_b": round(n_params / 1e9, 3), "vocab_size": arch["vocab_size"],
            "tokenizer_size": len(tokenizer), "dtype": str(dtype).replace("torch.", ""),
            "max_image_tokens": max_pixels // (28 * 28), "layers": arch["text"]["num_hidden_layers"],
            "hidden_size": arch["text"]["hidden_size"]}


def build_dataset(out: Path, n: int, side: int) -> None:
    """MP16-Reason-style rows (every column the rewards read) with random-noise photos of side x side pixels."""
    import numpy as np
    from datasets import Dataset, DatasetDict
    from PIL import Image

    from globe.prompts import REASONING_PROMPT, format_target

    rng = np.random.RandomState(0)
    places = [("France", "Paris", "FR", 48.86, 2.35), ("Japan", "Tokyo", "JP", 35.68, 139.69),
              ("Brazil", "Rio de Janeiro", "BR", -22.91, -43.17), ("Kenya", "Nairobi", "KE", -1.29, 36.82)]
    rows = []
    for i in range(n):
        country, city, code, lat, lon = places[i % len(places)]
        image = Image.fromarray((rng.rand(side, side, 3) * 255).astype("uint8"))
        rows.append(dict(id=f"bench-{i}", image=image, prompt=REASONING_PROMPT,
                         reasoning="Slate roofs and French signs.", answer=format_target("Signs.", country, city),
                         country=country, country_code=code, city=city, lat=lat, lon=lon, continent="",
                         localizability=0.9, localizable=True, entities=["sign", "roof"], teacher="bench"))
    DatasetDict(train=Dataset.from_list(rows)).save_to_disk(str(out))


def build_adapter(model_dir: Path, out: Path, *, r: int) -> None:
    """A LoRA adapter on the language layers with non-zero weights (an "SFT adapter" for the QLoRA phase)."""
    import torch
    from peft import get_peft_model
    from transformers import AutoModelForImageTextToText

    from globe.models import lora_settings, peft_lora_config

    model = AutoModelForImageTextToText.from_pretrained(str(model_dir), dtype="auto")
    lora = lora_settings(r=r, alpha=2 * r, dropout=0.0)
    peft = get_peft_model(model, peft_lora_config(model, **lora))
    torch.manual_seed(1)
    with torch.no_grad():
        for n, p in peft.named_parameters():
            if "lora_B" in n:
                p.normal_(0.0, 0.01)
    peft.save_pretrained(str(out))


# -- GRPO paths


def phase_grpo(*, name: str, mode: str, workdir: Path, s: dict, **_) -> dict:
    """`train_grpo` on the bench data; the same settings for every path but the backend (and QLoRA's adapter)."""
    import torch

    from globe.train.grpo import train_grpo

    qlora = name == "qlora"
    steps = s["qlora_steps"] if qlora else s["steps"]
    out = workdir / f"run-{name}"
    params = dict(
        base_model=str(workdir / "model"), dataset=str(workdir / "data"), out=str(out / "adapter"),
        log_csv=str(out / "log.csv"), samples=str(out / "samples.jsonl"), sample_every=steps, steps=steps,
        save_steps=steps, num_generations=s["num_generations"],
        per_device_train_batch_size=s["per_device_train_batch_size"],
        max_completion_length=s["max_completion_length"], max_pixels=s["image_side"] ** 2,
        rewards={"format": 1.0, "visual": 0.2}, learning_rate=1e-5, gradient_checkpointing=True, resume=False,
        lora={"r": s["lora_r"], "alpha": 2 * s["lora_r"], "dropout": 0.0,
              "target_modules": ["q_proj", "k_proj", "v_proj", "o_proj", "gate_proj", "up_proj", "down_proj"],
              "finetune_vision_layers": False},
        backend="unsloth" if name.startswith("grpo_unsloth") else "transformers",
        use_vllm=name == "grpo_unsloth_vllm", vllm_gpu_memory_utilization=0.3,
        init_adapter=str(workdir / "adapter") if qlora else None, load_in_4bit=qlora,
    )
    extra: dict[str, Any] = {}
    if qlora and not torch.cuda.is_available():
        # CPU: no NF4 kernels. The same preparation code runs (freeze the base, load the adapter trainable) with the
        # quantisation step itself left out; the JSON says so.
        import globe.models as gm

        gm._require_4bit = lambda: None
        gm._bnb_4bit_kwargs = lambda torch_dtype: {}
        extra["quantization"] = "emulated: no NF4 on CPU, same preparation code"
    bench = _bench_callback()
    t0 = time.perf_counter()
    train_grpo(params, callbacks=[bench])
    total = time.perf_counter() - t0
    times = bench.step_times
    timed = times[1:] if len(times) > 1 else times
    per_step = s["per_device_train_batch_size"]
    logs = bench.logs
    tokens = [lg.get("num_tokens") for lg in logs]
    mean_len = [lg.get("completions/mean_length") for lg in logs]
    result: dict[str, Any] = {
        "backend": params["backend"], "steps": len(times), "first_step_s": round(times[0], 3) if times else None,
        "step_time_s": round(sum(timed) / len(timed), 3) if timed else None,
        "step_times_s": [round(t, 3) for t in times], "train_grpo_s": round(total, 1),
        "completions_per_step": per_step, **bench.info, **extra,
    }
    if timed and all(t is not None for t in tokens) and len(tokens) == len(times):
        start = tokens[0] if len(times) > 1 else 0
        result["tokens_per_s"] = round((tokens[-1] - start) / sum(timed), 1)
    if timed and all(m is not None for m in mean_len) and len(mean_len) == len(times):
        gen = sum(m * per_step for m in mean_len[len(times) - len(timed):])
        result["completion_tokens_per_s"] = round(gen / sum(timed), 1)
        result["mean_completion_tokens"] = round(sum(mean_len) / len(mean_len), 1)
    if timed:
        result["images_per_s"] = round(per_step * len(timed) / sum(timed), 3)
    if qlora and not result.get("trainable_params"):
        raise RuntimeError("QLoRA continuing an adapter: no trainable parameters (the adapter is frozen)")
    return result


def _bench_callback():
    """A TrainerCallback timing each optimisation step and keeping what TRL logs and what it trains with."""
    import torch
    from transformers import TrainerCallback

    sync = torch.cuda.synchronize if torch.cuda.is_available() else (lambda: None)

    class Bench(TrainerCallback):
        def __init__(self):
            self.step_times: list[float] = []
            self.logs: list[dict] = []
            self.info: dict[str, Any] = {}
            self._t0 = 0.0

        def on_train_begin(self, args, state, control, model=None, optimizer=None, **kw):
            inner = getattr(optimizer, "optimizer", optimizer)  # accelerate wraps the optimiser
            params = list(model.parameters()) if model is not None else []
            self.info.update(
                optimizer=type(inner).__name__ if inner is not None else None,
                config={k: str(getattr(getattr(args, k), "value", getattr(args, k)))
                        for k in ("optim", "weight_decay", "learning_rate", "loss_type", "beta", "bf16",
                                  "gradient_checkpointing", "num_generations", "max_completion_length", "temperature")
                        if hasattr(args, k)} | {"class": type(args).__name__},
                trainable_params=sum(p.numel() for p in params if p.requires_grad),
                total_params=sum(p.numel() for p in params),
                linear_4bit_layers=sum(type(m).__name__ == "Linear4bit" for m in model.modules()) if model else 0,
            )

        def on_step_begin(self, args, state, control, **kw):
            sync()
            self._t0 = time.perf_counter()

        def on_step_end(self, args, state, control, **kw):
            sync()
            self.step_times.append(time.perf_counter() - self._t0)

        def on_log(self, args, state, control, logs=None, **kw):
            if logs and "reward" in logs:
                self.logs.append(dict(logs))

    return Bench()


# -- generation


def phase_generate(*, workdir: Path, s: dict, **_) -> dict:
    """`globe.models.generate` (transformers backend) over the bench photos at each batch size, sampling."""
    import torch
    from datasets import load_from_disk

    from globe.models import cap_image_pixels, generate, load_vlm
    from globe.prompts import REASONING_PROMPT

    model, processor = load_vlm(workdir / "model", backend="transformers")
    cap_image_pixels(processor, s["image_side"] ** 2)
    images = list(load_from_disk(str(workdir / "data"))["train"]["image"])
    pad = processor.tokenizer.pad_token_id
    counted = {"tokens": 0}
    original = model.generate

    def counting_generate(**kw):  # count generated tokens (padding after the end token excluded)
        out = original(**kw)
        counted["tokens"] += int((out[:, kw["input_ids"].shape[1]:] != pad).sum())
        return out

    model.generate = counting_generate
    generate(model, processor, images[:2], REASONING_PROMPT, max_new_tokens=4, batch_size=2)  # warm-up
    results = {}
    for b in s["gen_batches"]:
        batch = (images * (b // len(images) + 1))[:b]
        counted["tokens"] = 0
        if torch.cuda.is_available():
            torch.cuda.synchronize()
            torch.cuda.reset_peak_memory_stats()
        t0 = time.perf_counter()
        generate(model, processor, batch, REASONING_PROMPT, max_new_tokens=s["gen_tokens"], temperature=1.0,
                 batch_size=b)
        if torch.cuda.is_available():
            torch.cuda.synchronize()
        sec = time.perf_counter() - t0
        results[f"batch_{b}"] = {"images": b, "max_new_tokens": s["gen_tokens"], "seconds": round(sec, 3),
                                 "generated_tokens": counted["tokens"],
                                 "tokens_per_s": round(counted["tokens"] / sec, 1),
                                 "images_per_s": round(b / sec, 3), **(
                                     {"peak_gpu_mem_gib": round(torch.cuda.max_memory_allocated() / 2**30, 3)}
                                     if torch.cuda.is_available() else {})}
    return {"backend": "transformers", "sampling": "temperature 1.0", **results}


if __name__ == "__main__":
    sys.exit(main())
