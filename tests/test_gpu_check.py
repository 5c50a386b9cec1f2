"""scripts/gpu_check.sh: the smoke mode (every phase the CPU can run, on the tiny architecture), its deadlines, and
the architecture it builds for the full check."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "scripts"))

import gpu_check  # noqa: E402


@pytest.mark.slow
def test_smoke_runs_the_phases_on_cpu(tmp_path):
    out = tmp_path / "grpo_gpu_smoke.json"
    res = subprocess.run(["bash", str(ROOT / "scripts" / "gpu_check.sh"), "smoke", "--workdir", str(tmp_path / "w"),
                          "--out", str(out)], cwd=ROOT, capture_output=True, text=True, timeout=900,
                         env={**os.environ, "PYTHON": sys.executable})
    assert res.returncode == 0, res.stdout[-3000:] + res.stderr[-3000:]
    report = json.loads(out.read_text())
    phases = report["phases"]
    assert report["mode"] == "smoke" and list(phases) == [p[0] for p in gpu_check.PHASES]
    assert {n: p["status"] for n, p in phases.items()} == {
        "env": "ok", "build": "ok", "grpo_trl": "ok", "grpo_unsloth": "skipped", "generate": "ok", "qlora": "ok",
        "grpo_unsloth_vllm": "skipped"}
    assert "CUDA" in phases["grpo_unsloth"]["reason"]
    s = gpu_check.SETTINGS["smoke"]
    for name in ("grpo_trl", "qlora"):
        p = phases[name]
        assert p["steps"] == (s["qlora_steps"] if name == "qlora" else s["steps"]) == len(p["step_times_s"])
        assert p["step_time_s"] > 0 and p["tokens_per_s"] > 0 and p["images_per_s"] > 0 and p["peak_rss_mib"] > 0
        assert p["config"]["optim"] == "adamw_torch_fused" and p["optimizer"]  # what trained, as configured
        assert 0 < p["trainable_params"] < p["total_params"]
    assert phases["grpo_trl"]["mean_completion_tokens"] <= s["max_completion_length"]
    assert phases["qlora"]["quantization"].startswith("emulated")  # said, not hidden
    for b in s["gen_batches"]:
        g = phases["generate"][f"batch_{b}"]
        assert g["images"] == b and 0 < g["generated_tokens"] <= b * s["gen_tokens"] and g["tokens_per_s"] > 0
    assert phases["build"]["vocab_size"] == phases["build"]["tokenizer_size"]
    assert report["comparison"]["unsloth_vs_trl"] is None and report["comparison"]["reason"]


def test_phases_past_the_deadline_are_skipped_and_overruns_killed(tmp_path):
    out = tmp_path / "out.json"
    res = subprocess.run([sys.executable, str(ROOT / "scripts" / "gpu_check.py"), "--mode", "smoke", "--budget", "1",
                          "--workdir", str(tmp_path), "--out", str(out)], capture_output=True, text=True, timeout=120)
    assert res.returncode == 0, res.stderr[-2000:]
    phases = json.loads(out.read_text())["phases"]
    assert phases["env"]["status"] == "skipped" and phases["env"]["reason"].startswith("deadline")
    assert all(p["status"] == "skipped" for p in phases.values())
    # A phase still running at its deadline is killed, with what it printed kept for the report.
    killed = gpu_check._run_child("build", "smoke", "3b", tmp_path, timeout=0.3)
    assert killed["status"] == "failed" and killed["error"].startswith("timed out")


@pytest.mark.parametrize("size, params_b", [("3b", 3.75), ("7b", 8.29)])
def test_full_check_builds_the_published_architectures(size, params_b):
    """The configs give Qwen2.5-VL-3B's 3.75B and -7B's 8.29B parameters (counted on the meta device: no memory)."""
    import torch
    from transformers import Qwen2_5_VLConfig, Qwen2_5_VLForConditionalGeneration

    arch = gpu_check.ARCHS[size]
    config = Qwen2_5_VLConfig(text_config=dict(arch["text"], vocab_size=arch["vocab_size"]),
                              vision_config=arch["vision"], tie_word_embeddings=arch["tie_word_embeddings"])
    with torch.device("meta"):
        model = Qwen2_5_VLForConditionalGeneration(config)
    n = sum(p.numel() for p in model.parameters())
    assert abs(n / 1e9 - params_b) < 0.01 * params_b, n


def test_bench_tokenizer_has_qwens_special_ids_and_full_vocabulary():
    tok = gpu_check.build_tokenizer(151936)
    assert tok.convert_tokens_to_ids("<|endoftext|>") == 151643 and tok.convert_tokens_to_ids("<|image_pad|>") == 151655
    assert len(tok) == 151657  # every id a random 3B model samples below the specials decodes
    text = "Where was this photo taken? <answer>country: France\ncity: Paris</answer>"
    assert tok.decode(tok(text)["input_ids"]) == text
    assert tok.decode([100_000]).strip()
