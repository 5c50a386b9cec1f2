"""Policy SFT (globe.train.sft): config, conversations, assistant-only labels, loss log, checkpoints and resume."""

from __future__ import annotations

import csv
import json
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from globe.answer import parse_completion
from globe.config import ParamsError
from globe.prompts import REASONING_PROMPT
from globe.train.sft import SFTParams, to_conversation

PLACES = [("France", "Lyon", 45.76, 4.84), ("Japan", "Kyoto", 35.01, 135.77), ("Brazil", "Recife", -8.05, -34.9),
          ("Kenya", "Nairobi", -1.29, 36.82)]

TINY_LORA = {"r": 4, "alpha": 8, "dropout": 0.0, "target_modules": ["q_proj", "v_proj"],
             "finetune_vision_layers": False}


def make_reason_dataset(path: Path, n: int = 8) -> Path:
    """A small distilled-style DatasetDict (the columns distillation writes) with generated photos."""
    from datasets import Dataset, DatasetDict
    from datasets import Image as HFImage

    rs = np.random.RandomState(0)
    rows = []
    for i in range(n):
        country, city, lat, lon = PLACES[i % len(PLACES)]
        image = Image.fromarray((rs.rand(48 + 8 * (i % 3), 64, 3) * 255).astype("uint8"))
        rows.append(dict(id=f"s{i}", image=image, prompt=REASONING_PROMPT,
                         reasoning=f"The shop signs suggest {country}.", answer=f"country: {country}\ncity: {city}",
                         country=country, city=city, lat=lat, lon=lon))
    DatasetDict(train=Dataset.from_list(rows).cast_column("image", HFImage())).save_to_disk(str(path))
    return path


@pytest.fixture(scope="module")
def reason_ds(tmp_path_factory) -> Path:
    return make_reason_dataset(tmp_path_factory.mktemp("mp16r") / "mp16_reason")


def _cfg(tiny_vlm_dir, reason_ds, tmp_path, **kw) -> SFTParams:
    params = dict(base_model=str(tiny_vlm_dir), dataset=str(reason_ds), out=str(tmp_path / "sft"),
                  log_csv=str(tmp_path / "sft_log.csv"), lora=TINY_LORA, max_steps=2, save_steps=1, eval_steps=1,
                  per_device_train_batch_size=2, learning_rate=1e-3, lr_scheduler_type="constant")
    params.update(kw)
    return SFTParams.from_params(params)


def test_config_rejects_unknown_and_bad_keys():
    with pytest.raises(ParamsError, match="lora_rank"):
        SFTParams.from_params({"lora_rank": 8})
    with pytest.raises(ValueError, match="save_steps"):
        SFTParams.from_params({"save_steps": 0})
    with pytest.raises(ValueError, match="LoRA"):
        SFTParams.from_params({"lora": {**TINY_LORA, "r": 0}})
    with pytest.raises(ParamsError, match="rank"):
        SFTParams.from_params({"lora": {**TINY_LORA, "rank": 3}})
    with pytest.raises(ParamsError, match="sft.max_steps: expected an integer, got 2.5"):
        SFTParams.from_params({"max_steps": 2.5})


def test_params_yaml_sft_group_is_valid(root):
    from globe.config import stage_params

    cfg = SFTParams.from_params(stage_params("03_sft", root / "params.yaml"))
    assert cfg.out and cfg.log_csv.endswith(".csv")


def test_to_conversation_formats_the_target():
    ex = {"id": "a", "prompt": "Where?", "reasoning": "<think>Red double-decker buses.</think>",
          "country": "United Kingdom", "city": "London"}
    conv = to_conversation(ex)
    assert conv["prompt"][0]["role"] == "user"
    assert [c["type"] for c in conv["prompt"][0]["content"]] == ["image", "text"]
    assert conv["prompt"][0]["content"][1]["text"] == "Where?"
    target = conv["completion"][0]["content"][0]["text"]
    parsed = parse_completion(target)
    assert parsed.format_ok and parsed.think == "Red double-decker buses." and parsed.n_think == 1
    assert (parsed.country, parsed.city) == ("United Kingdom", "London")
    assert to_conversation({**ex, "prompt": None})["prompt"][0]["content"][1]["text"] == REASONING_PROMPT
    with pytest.raises(ValueError, match="lacks"):
        to_conversation({**ex, "city": ""})


def test_missing_dataset_is_a_clear_error(tiny_vlm_dir, tmp_path):
    from globe.train.sft import load_sft_splits

    with pytest.raises(FileNotFoundError, match="distill"):
        load_sft_splits(SFTParams.from_params({"dataset": str(tmp_path / "nope")}))


def test_loss_only_on_assistant_turn(tiny_vlm_dir, reason_ds, tmp_path):
    from globe.train.sft import build_trainer, load_sft_splits

    cfg = _cfg(tiny_vlm_dir, reason_ds, tmp_path)
    train, _ = load_sft_splits(cfg)
    trainer, processor = build_trainer(cfg, train, None)
    examples = [dict(train[i]) for i in range(2)]
    targets = [ex["completion"][0]["content"][0]["text"] for ex in examples]
    batch = trainer.data_collator(examples)
    tok = processor.tokenizer
    for row, target in enumerate(targets):
        ids, labels = batch["input_ids"][row], batch["labels"][row]
        trained = labels != -100
        assert trained.any()
        # Image tokens and every prompt token come before the first trained position, and are all -100.
        first = int(trained.nonzero()[0])
        assert (labels[:first] == -100).all()
        assert (ids[:first] == processor.image_token_id).any()
        assert not (ids[trained] == processor.image_token_id).any()
        text = tok.decode(ids[trained])
        assert text.startswith(target) and "<|im_start|>" not in text and "user" not in text.replace(target, "")
        # The trained part is exactly the completion (plus the turn's end), contiguous.
        assert trained[first:].sum() == trained.sum()


def test_train_resume_and_outputs(tiny_vlm_dir, reason_ds, tmp_path, sample_dir, caplog):
    from globe.models import generate, load_vlm
    from globe.train.sft import train_sft

    out = train_sft(_cfg(tiny_vlm_dir, reason_ds, tmp_path, max_steps=2))
    first = json.loads((out / "train_summary.json").read_text())
    assert first["global_step"] == 2 and first["resumed_from_step"] == 0
    assert sorted(p.name for p in (out / "checkpoints").glob("checkpoint-*")) == ["checkpoint-1", "checkpoint-2"]

    # A rerun with more steps picks up at step 2 (not from scratch) and keeps at most save_total_limit checkpoints.
    out = train_sft(_cfg(tiny_vlm_dir, reason_ds, tmp_path, max_steps=4))
    second = json.loads((out / "train_summary.json").read_text())
    assert second["resumed_from_step"] == 2 and second["global_step"] == 4
    assert sorted(p.name for p in (out / "checkpoints").glob("checkpoint-*")) == ["checkpoint-3", "checkpoint-4"]
    assert second["n_train"] + second["n_eval"] == 8 and second["n_eval"] >= 1
    assert second["eval_loss"] is not None and np.isfinite(second["eval_loss"])

    with open(tmp_path / "sft_log.csv", newline="") as f:
        rows = list(csv.DictReader(f))
    assert [int(r["step"]) for r in rows] == [1, 2, 3, 4]  # nothing lost or duplicated across the restart
    assert all(np.isfinite(float(r["loss"])) for r in rows)
    assert all(r["eval_loss"] for r in rows)  # eval_steps=1
    assert set(rows[0]) == {"step", "loss", "eval_loss", "learning_rate", "grad_norm", "epoch"}

    # Checkpoints of a run with other training settings belong to another experiment: it starts over, saying so.
    with caplog.at_level("INFO", logger="globe.checkpoints"):
        changed = train_sft(_cfg(tiny_vlm_dir, reason_ds, tmp_path, max_steps=1, learning_rate=5e-4))
    assert "learning_rate" in caplog.text and "another experiment" in caplog.text
    assert json.loads((changed / "train_summary.json").read_text())["resumed_from_step"] == 0
    assert sorted(p.name for p in (out / "checkpoints").glob("checkpoint-*")) == ["checkpoint-1"]
    # resume: false starts over even with the same settings.
    fresh = train_sft(_cfg(tiny_vlm_dir, reason_ds, tmp_path, max_steps=1, learning_rate=5e-4, resume=False))
    assert json.loads((fresh / "train_summary.json").read_text())["resumed_from_step"] == 0

    # The adapter is a PEFT adapter on the base model; it loads through load_vlm and generates.
    assert (out / "adapter_config.json").is_file()
    model, processor = load_vlm(tiny_vlm_dir, out)
    photo = Image.open(sorted((sample_dir / "images").glob("*.jpg"))[0])
    assert isinstance(generate(model, processor, [photo], REASONING_PROMPT, max_new_tokens=4)[0], str)


def test_training_changes_only_the_language_lora(tiny_vlm_dir, reason_ds, tmp_path):
    import torch
    from safetensors.torch import load_file

    from globe.train.sft import train_sft

    out = train_sft(_cfg(tiny_vlm_dir, reason_ds, tmp_path, max_steps=1, save_steps=5, save_merged=True))
    adapter = load_file(out / "adapter_model.safetensors")
    assert adapter and all("lora_" in k and "visual" not in k for k in adapter)
    assert any("lora_B" in k and torch.count_nonzero(v) > 0 for k, v in adapter.items())  # it trained
    base = load_file(tiny_vlm_dir / "model.safetensors")
    merged = load_file(out / "merged" / "model.safetensors")
    vis = [k for k in base if "visual" in k]
    assert vis and all(torch.equal(base[k], merged[k]) for k in vis)  # vision tower frozen


def test_4bit_needs_a_gpu(tiny_vlm_dir, reason_ds, tmp_path):
    from globe.train.sft import train_sft

    with pytest.raises(RuntimeError, match="CUDA"):
        train_sft(_cfg(tiny_vlm_dir, reason_ds, tmp_path, load_in_4bit=True))


def test_full_fine_tuning_trains_every_weight_but_the_vision_tower(tiny_vlm_dir):
    from globe.models import load_vlm
    from globe.train.sft import full_finetune

    model, _ = load_vlm(tiny_vlm_dir, training=True)
    n = full_finetune(model, freeze_vision=True)
    vision = sum(p.numel() for name, p in model.named_parameters() if ".visual." in f".{name}")
    assert vision > 0 and n == sum(p.numel() for p in model.parameters()) - vision
    assert full_finetune(model, freeze_vision=False) == sum(p.numel() for p in model.parameters())
    cfg = SFTParams.from_params({"lora": None, "prompt": "globe-train"})
    assert cfg.lora is None and cfg.freeze_vision
    with pytest.raises(ParamsError, match="full fine-tuning"):
        SFTParams.from_params({"lora": None, "load_in_4bit": True})
    with pytest.raises(ParamsError, match="unknown prompt"):
        SFTParams.from_params({"prompt": "Where was this photo taken?"})  # a name in PROMPTS, not a text
