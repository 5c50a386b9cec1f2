"""globe.models: the tiny offline Qwen2.5-VL, loading, chat template, generation, adapters, backend choice."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from globe import models
from globe import tiny as tiny_builders
from globe.prompts import REASONING_PROMPT, build_messages


def _photo(sample_dir: Path, i: int = 0) -> Image.Image:
    files = sorted((sample_dir / "images").glob("*.jpg"))
    assert files, "data/sample/images holds no photos"
    return Image.open(files[i]).convert("RGB")


def _noise(seed: int, size=(96, 64)) -> Image.Image:
    return Image.fromarray((np.random.RandomState(seed).rand(size[1], size[0], 3) * 255).astype("uint8"))


@pytest.fixture(scope="module")
def tiny(tiny_vlm_dir):
    return models.load_vlm(tiny_vlm_dir)


def test_tiny_model_files_and_config(tiny_vlm_dir):
    for name in ("config.json", "model.safetensors", "tokenizer.json", "processor_config.json", "chat_template.jinja"):
        assert (tiny_vlm_dir / name).is_file(), name
    cfg = json.loads((tiny_vlm_dir / "config.json").read_text())
    assert cfg["model_type"] == "qwen2_5_vl"
    tok = json.loads((tiny_vlm_dir / "tokenizer.json").read_text())
    added = {t["content"]: t["id"] for t in tok["added_tokens"]}
    assert cfg["image_token_id"] == added["<|image_pad|>"]
    assert cfg["video_token_id"] == added["<|video_pad|>"]
    assert cfg["vision_start_token_id"] == added["<|vision_start|>"]
    assert cfg["vision_end_token_id"] == added["<|vision_end|>"]
    assert cfg["text_config"]["eos_token_id"] == added["<|im_end|>"]
    assert cfg["text_config"]["hidden_size"] <= 128 and cfg["vision_config"]["depth"] <= 2


def test_chat_template_has_vision_tokens(tiny):
    _, processor = tiny
    text = processor.apply_chat_template(build_messages(REASONING_PROMPT), tokenize=False, add_generation_prompt=True)
    assert "<|vision_start|><|image_pad|><|vision_end|>" in text
    assert text.startswith("<|im_start|>system\n") and text.endswith("<|im_start|>assistant\n")
    assert REASONING_PROMPT in text
    text_only = processor.apply_chat_template(build_messages("hi", with_image=False), tokenize=False)
    assert "<|image_pad|>" not in text_only


def test_processor_expands_image_to_a_few_dozen_tokens(tiny, sample_dir):
    _, processor = tiny
    text = processor.apply_chat_template(build_messages("Where?"), tokenize=False, add_generation_prompt=True)
    batch = processor(text=[text], images=[_photo(sample_dir)], return_tensors="pt")
    n_visual = int((batch["input_ids"] == processor.image_token_id).sum())
    assert 4 <= n_visual <= 64
    assert processor.tokenizer.padding_side == "left"


def test_tokenizer_knows_the_answer_format(tiny):
    _, processor = tiny
    tok = processor.tokenizer
    text = "<think>The signs are in French.</think>\n<answer>country: France\ncity: Lyon</answer>"
    ids = tok(text, add_special_tokens=False)["input_ids"]
    assert tok.decode(ids) == text  # byte-level: lossless
    assert len(ids) < len(text) / 2  # trained merges, not bytes
    assert tok.unk_token_id is None or tok.unk_token_id not in ids


def test_round_trip_generate_from_real_photo(tiny, sample_dir):
    model, processor = tiny
    out = models.generate(model, processor, [_photo(sample_dir)], REASONING_PROMPT, max_new_tokens=8)
    assert len(out) == 1 and isinstance(out[0], str)
    assert "<|im_end|>" not in out[0] and "<|image_pad|>" not in out[0]
    # Greedy is deterministic.
    assert models.generate(model, processor, [_photo(sample_dir)], REASONING_PROMPT, max_new_tokens=8) == out


def test_batch_generation_equals_one_by_one(tiny, sample_dir):
    model, processor = tiny
    images = [_photo(sample_dir, 0), _noise(1, (200, 120)), None, _photo(sample_dir, 1)]
    prompts = ["Where was this photo taken?", REASONING_PROMPT, "Name a country.", "City?"]
    batched = models.generate(model, processor, images, prompts, max_new_tokens=6, batch_size=4)
    single = [models.generate(model, processor, [im], [p], max_new_tokens=6)[0] for im, p in zip(images, prompts)]
    assert batched == single


def test_sampling_is_seeded(tiny):
    model, processor = tiny
    im = [_noise(3)]
    a = models.generate(model, processor, im, "Where?", max_new_tokens=8, temperature=1.0, seed=5)
    b = models.generate(model, processor, im, "Where?", max_new_tokens=8, temperature=1.0, seed=5)
    assert a == b


def test_generate_rejects_mismatched_inputs(tiny):
    model, processor = tiny
    with pytest.raises(ValueError, match="prompts"):
        models.generate(model, processor, [_noise(0), _noise(1)], ["a", "b", "c"])


def test_build_is_deterministic_by_seed(tmp_path, tiny_vlm_dir):
    import torch
    from safetensors.torch import load_file

    again = tiny_builders.build_tiny_vlm(tmp_path / "same", seed=0)
    other = tiny_builders.build_tiny_vlm(tmp_path / "other", seed=1)
    assert (again / "tokenizer.json").read_text() == (tiny_vlm_dir / "tokenizer.json").read_text()
    w0, w0b, w1 = (load_file(d / "model.safetensors") for d in (tiny_vlm_dir, again, other))
    assert w0.keys() == w0b.keys() == w1.keys()
    assert all(torch.equal(w0[k], w0b[k]) for k in w0)
    assert any(not torch.equal(w0[k], w1[k]) for k in w0)


def test_reload_offline_in_fresh_process(tiny_vlm_dir):
    code = (
        "import os, sys; assert os.environ['HF_HUB_OFFLINE'] == '1';"
        "from transformers import AutoProcessor, AutoModelForImageTextToText;"
        f"p = AutoProcessor.from_pretrained({str(tiny_vlm_dir)!r});"
        f"m = AutoModelForImageTextToText.from_pretrained({str(tiny_vlm_dir)!r});"
        "print(type(p).__name__, type(m).__name__)"
    )
    env = {**__import__("os").environ, "HF_HUB_OFFLINE": "1"}
    res = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, env=env, timeout=300)
    assert res.returncode == 0, res.stderr[-2000:]
    assert "Qwen2_5_VLProcessor Qwen2_5_VLForConditionalGeneration" in res.stdout


def test_missing_model_offline_fails_clearly(monkeypatch, tmp_path):
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    monkeypatch.setenv("HF_HOME", str(tmp_path / "hf"))
    monkeypatch.setenv("HF_HUB_CACHE", str(tmp_path / "hf" / "hub"))
    with pytest.raises(FileNotFoundError, match="HF_HUB_OFFLINE"):
        models.load_vlm("nobody/not-a-model-xyz")


def test_adapter_load_and_merge(tiny_vlm_dir, tmp_path, sample_dir):
    import torch
    from peft import PeftModel

    lora = models.lora_settings(r=4, alpha=8, dropout=0.0, target_modules=["q_proj", "v_proj"])
    model, _ = models.load_vlm(tiny_vlm_dir, training=True, lora=lora)
    assert isinstance(model, PeftModel)
    trainable = [n for n, p in model.named_parameters() if p.requires_grad]
    assert trainable and all("lora_" in n for n in trainable)
    assert not any("visual" in n for n in trainable)  # vision tower frozen by default
    # Make the adapter do something, then save it.
    with torch.no_grad():
        for n, p in model.named_parameters():
            if "lora_B" in n:
                p.normal_(0, 0.5)
    model.save_pretrained(tmp_path / "adapter")

    base, processor = models.load_vlm(tiny_vlm_dir)
    adapted, _ = models.load_vlm(tiny_vlm_dir, tmp_path / "adapter")
    merged, _ = models.load_vlm(tiny_vlm_dir, tmp_path / "adapter", merge=True)
    assert isinstance(adapted, PeftModel) and not isinstance(merged, PeftModel)
    text = processor.apply_chat_template(build_messages("Where?"), tokenize=False, add_generation_prompt=True)
    batch = processor(text=[text], images=[_photo(sample_dir)], return_tensors="pt")
    with torch.no_grad():
        lb, la, lm = (m(**batch).logits for m in (base, adapted, merged))
    assert not torch.allclose(lb, la)
    assert torch.allclose(la, lm, atol=1e-4)


def test_lora_can_target_the_vision_tower(tiny_vlm_dir):
    lora = models.lora_settings(r=2, alpha=4, target_modules=["qkv", "q_proj"], finetune_vision_layers=True)
    model, _ = models.load_vlm(tiny_vlm_dir, training=True, lora=lora)
    trainable = [n for n, p in model.named_parameters() if p.requires_grad]
    assert any("visual" in n for n in trainable) and any("language_model" in n for n in trainable)
    with pytest.raises(ValueError, match="match no layer"):
        models.load_vlm(tiny_vlm_dir, training=True, lora=models.lora_settings(target_modules=["no_such_proj"]))


def test_select_backend_on_cpu():
    assert models.select_backend("auto") == "transformers"  # no CUDA here
    assert models.select_backend("transformers") == "transformers"
    with pytest.raises(RuntimeError, match="CUDA"):
        models.select_backend("unsloth")
    with pytest.raises(ValueError):
        models.select_backend("vllm")


def test_4bit_errors_clearly_on_cpu(tiny_vlm_dir):
    with pytest.raises(RuntimeError, match="CUDA"):
        models.load_vlm(tiny_vlm_dir, load_in_4bit=True)


def test_cli_build_tiny_model(tmp_path):
    from globe.cli import main

    assert main(["build-tiny-model", "--out", str(tmp_path / "m"), "--seed", "3"]) == 0
    assert json.loads((tmp_path / "m" / "globe_tiny.json").read_text())["seed"] == 3


# ---------------------------------------------------------------------------------------------------------------------
# QLoRA and LoRA targets (the 4-bit load itself needs CUDA + bitsandbytes; the training preparation around it does not)


@pytest.fixture
def cpu_4bit(monkeypatch):
    """Let load_in_4bit=True run on CPU: the same preparation code, with the NF4 quantisation step left out."""
    monkeypatch.setattr(models, "_require_4bit", lambda: None)
    monkeypatch.setattr(models, "_bnb_4bit_kwargs", lambda torch_dtype: {})


def _lora_names(model) -> set[str]:
    return {n for n, _ in model.named_parameters() if "lora_" in n}


def _backward(model, processor, sample_dir):
    text = processor.apply_chat_template(build_messages("Where?"), tokenize=False, add_generation_prompt=True)
    batch = processor(text=[text], images=[_photo(sample_dir)], return_tensors="pt")
    out = model(**batch, labels=batch["input_ids"])
    out.loss.backward()


def test_qlora_continuing_an_adapter_trains_it_and_keeps_weights_in_compute_dtype(cpu_4bit, tiny_vlm_dir, tmp_path,
                                                                                  sample_dir):
    import torch

    lora = models.lora_settings(r=4, alpha=8, dropout=0.0, target_modules=["q_proj", "v_proj"])
    sft, _ = models.load_vlm(tiny_vlm_dir, training=True, lora=lora)
    sft.save_pretrained(tmp_path / "sft")

    model, processor = models.load_vlm(tiny_vlm_dir, tmp_path / "sft", training=True, load_in_4bit=True,
                                       dtype="bfloat16", device="cpu", gradient_checkpointing=True)
    trainable = {n for n, p in model.named_parameters() if p.requires_grad}
    assert trainable and trainable == _lora_names(model)  # the continued adapter trains, nothing else does
    # No blanket fp32 upcast of the base: every non-LoRA weight stays bf16 (PEFT keeps the adapter itself in fp32).
    assert {p.dtype for n, p in model.named_parameters() if "lora_" not in n} == {torch.bfloat16}
    _backward(model, processor, sample_dir)
    assert all(p.grad is not None for n, p in model.named_parameters() if n in trainable)


def test_qlora_with_a_fresh_adapter(cpu_4bit, tiny_vlm_dir, sample_dir):
    import torch

    lora = models.lora_settings(r=4, alpha=8, dropout=0.0, target_modules=["q_proj", "v_proj"])
    model, processor = models.load_vlm(tiny_vlm_dir, training=True, load_in_4bit=True, lora=lora, dtype="bfloat16",
                                       device="cpu")
    trainable = {n for n, p in model.named_parameters() if p.requires_grad}
    assert trainable and trainable == _lora_names(model)
    assert {p.dtype for n, p in model.named_parameters() if "lora_" not in n} == {torch.bfloat16}
    _backward(model, processor, sample_dir)


@pytest.mark.parametrize("targets", ["all-linear", ["all-linear"]])
def test_all_linear_lora_respects_finetune_vision_layers(tiny_vlm_dir, targets):
    off = models.lora_settings(r=2, alpha=4, target_modules=targets, finetune_vision_layers=False)
    model, _ = models.load_vlm(tiny_vlm_dir, training=True, lora=off)
    names = _lora_names(model)
    assert names and not any("visual" in n for n in names)
    assert any("mlp.down_proj" in n for n in names) and not any("lm_head" in n for n in names)
    on = models.lora_settings(r=2, alpha=4, target_modules=targets, finetune_vision_layers=True)
    model, _ = models.load_vlm(tiny_vlm_dir, training=True, lora=on)
    assert any("visual" in n for n in _lora_names(model))


def test_recipe_max_seq_length_bounds_the_processed_prompt(tiny):
    from PIL import Image

    _, processor = tiny
    budget = models.recipe_max_seq_length(processor, [REASONING_PROMPT, "Where?"], max_completion_length=100)
    assert budget == models.recipe_max_seq_length(processor, [REASONING_PROMPT], 100)  # the longer prompt decides
    messages = [{"role": "user", "content": [{"type": "image"}, {"type": "text", "text": REASONING_PROMPT}]}]
    text = processor.apply_chat_template(messages, add_generation_prompt=True, tokenize=False)
    n = processor(text=[text], images=[Image.new("RGB", (1600, 1600))], return_tensors="pt")["input_ids"].shape[1]
    assert n + 100 == budget
    with pytest.raises(ValueError, match="max_pixels"):
        models.max_image_tokens(object())


# ---- frequency and presence penalties (GLOBE's evaluation: 0.7 each), OpenAI / vLLM definitions ---------------------


def test_occurrence_penalty_is_the_openai_definition():
    import torch

    prompt = torch.tensor([[5, 5, 5, 1]])  # prompt tokens are not penalised
    generated = torch.tensor([[2, 3, 3, 3]])
    scores = torch.zeros(1, 8)
    out = models.occurrence_penalty(prompt.shape[1], 0.7, 0.5)(torch.cat([prompt, generated], 1), scores.clone())
    expected = torch.zeros(1, 8)
    expected[0, 2] = -(0.7 * 1 + 0.5)
    expected[0, 3] = -(0.7 * 3 + 0.5)
    assert torch.allclose(out, expected)
    assert torch.equal(models.occurrence_penalty(4, 0.7, 0.7)(prompt, scores.clone()), scores)  # nothing generated yet


def test_penalised_generation_runs_before_temperature_and_changes_greedy_output(tiny):
    vlm, processor = tiny
    images = [_noise(i) for i in range(2)]
    plain = models.generate(vlm, processor, images, "Where?", max_new_tokens=24, temperature=0.0)
    again = models.generate(vlm, processor, images, "Where?", max_new_tokens=24, temperature=0.0,
                            frequency_penalty=0.0, presence_penalty=0.0)
    penalised = models.generate(vlm, processor, images, "Where?", max_new_tokens=24, temperature=0.0,
                                frequency_penalty=2.0, presence_penalty=2.0)
    assert plain == again and penalised != plain  # zero penalties are the old path exactly
    sampled = models.generate(vlm, processor, images, "Where?", max_new_tokens=8, temperature=0.1, seed=3,
                              frequency_penalty=0.7, presence_penalty=0.7)
    assert sampled == models.generate(vlm, processor, images, "Where?", max_new_tokens=8, temperature=0.1, seed=3,
                                      frequency_penalty=0.7, presence_penalty=0.7)  # seeded: repeatable


def test_all_linear_lora_targets_named_layers_only(tiny_vlm_dir):
    vlm, _ = models.load_vlm(tiny_vlm_dir)
    cfg = models.peft_lora_config(vlm, r=4, alpha=8, target_modules="all-linear")
    # named layers (PEFT keeps a list of full names as a set), not a pattern: exact names match nothing else
    targets = sorted(cfg.target_modules)
    assert targets and all(type(dict(vlm.named_modules())[n]).__name__ == "Linear" for n in targets)
    assert not any("visual" in n for n in targets)  # finetune_vision_layers is false
