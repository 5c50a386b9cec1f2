"""The GPU path on a CPU: the calls globe makes into unsloth, vLLM and TRL's GPU-only settings.

unsloth and vLLM cannot run here, so their entry points are replaced by fakes with the exact keyword names of the
real ones (read from unsloth 2026.10.9 `unsloth/models/loader.py` FastModel.from_pretrained and
`unsloth/models/vision.py` FastBaseModel.get_peft_model; vLLM's `LLM` engine arguments and `vllm/config/lora.py`).
The fakes take no `**kwargs`, so a keyword the real function does not name fails here too, and they record what
globe passed. Where the real function's behaviour is the point (unsloth turning `target_modules="all-linear"` into
vision LoRA), the fake does what the real source does, line for line in intent.
"""

from __future__ import annotations

import dataclasses
import importlib.machinery
import json
import logging
import sys
import types
from pathlib import Path

import pytest

from globe import models

# ---------------------------------------------------------------------------------------------------------------------
# Fakes


class FakeFastVisionModel:
    """unsloth.FastVisionModel: records calls, loads the (tiny) model with transformers so the rest of globe runs."""

    calls: list[tuple[str, dict]] = []

    @staticmethod
    def from_pretrained(model_name="unsloth/Llama-3.2-11B-Vision-Instruct-bnb-4bit", max_seq_length=2048, dtype=None,
                        load_in_4bit=True, load_in_8bit=False, load_in_16bit=False, full_finetuning=False,
                        token=None, device_map="sequential", use_gradient_checkpointing="unsloth",
                        fast_inference=False, gpu_memory_utilization=0.5, max_lora_rank=64, random_state=3407):
        FakeFastVisionModel.calls.append(("from_pretrained", dict(
            model_name=model_name, max_seq_length=max_seq_length, dtype=dtype, load_in_4bit=load_in_4bit,
            use_gradient_checkpointing=use_gradient_checkpointing, fast_inference=fast_inference,
            gpu_memory_utilization=gpu_memory_utilization, max_lora_rank=max_lora_rank)))
        from peft import PeftModel
        from transformers import AutoModelForImageTextToText

        path = Path(model_name)
        adapter = path if (path / "adapter_config.json").is_file() else None
        base = models.read_adapter_config(adapter)["base_model_name_or_path"] if adapter else str(path)
        model = AutoModelForImageTextToText.from_pretrained(base)
        if adapter is not None:  # unsloth loads a given adapter trainable (loader.py: is_trainable = True)
            model = PeftModel.from_pretrained(model, str(adapter), is_trainable=True)
        if fast_inference:
            model.vllm_engine = object()  # unsloth keeps its vLLM engine on the model
        return model, models.load_processor(base)

    @staticmethod
    def get_peft_model(model, r=16, target_modules=None, lora_alpha=16, lora_dropout=0.0, bias="none",
                       finetune_vision_layers=True, finetune_language_layers=True, finetune_attention_modules=True,
                       finetune_mlp_modules=True, finetune_last_n_layers=None, layers_to_transform=None,
                       layers_pattern=None, use_gradient_checkpointing="unsloth", random_state=3407,
                       max_seq_length=2048, use_rslora=False, modules_to_save=None, init_lora_weights=True,
                       loftq_config={}):  # noqa: B006 (the real default)
        # vision.py get_peft_model: `if target_modules == "all-linear": finetune_vision_layers = True` (and
        # language, attention, mlp); None or a list keeps the caller's flags.
        vision = True if target_modules == "all-linear" else finetune_vision_layers
        if getattr(model, "vllm_engine", None) is not None and vision:
            raise RuntimeError("Unsloth: Finetuning vision layers is not supported for fast_inference. "
                               "Only text layers are supported!")
        FakeFastVisionModel.calls.append(("get_peft_model", dict(
            r=r, target_modules=target_modules, lora_alpha=lora_alpha, lora_dropout=lora_dropout,
            finetune_vision_layers=finetune_vision_layers, finetune_language_layers=finetune_language_layers,
            effective_vision=vision)))
        from peft import get_peft_model

        names = "all-linear" if target_modules in (None, "all-linear") else list(target_modules)
        leaves = {n.rsplit(".", 1)[-1] for n, _ in model.named_modules()}
        if names != "all-linear" and not leaves & set(names):  # what PEFT says when a listed name matches nothing
            raise ValueError(f"Target modules {set(names)} not found in the base model")
        config = models.peft_lora_config(model, r=r, alpha=lora_alpha, dropout=lora_dropout, target_modules=names,
                                         finetune_vision_layers=vision,
                                         finetune_language_layers=finetune_language_layers)
        return get_peft_model(model, config)

    @staticmethod
    def for_training(model, use_gradient_checkpointing=None):
        FakeFastVisionModel.calls.append(("for_training", {}))
        model.train()

    @staticmethod
    def for_inference(model):
        FakeFastVisionModel.calls.append(("for_inference", {}))
        model.eval()

    @classmethod
    def last(cls, name: str) -> dict:
        found = [kw for n, kw in cls.calls if n == name]
        assert found, f"unsloth.FastVisionModel.{name} was not called"
        return found[-1]


def _module(name: str, **attrs) -> types.ModuleType:
    mod = types.ModuleType(name)
    mod.__spec__ = importlib.machinery.ModuleSpec(name, None)  # importlib.util.find_spec needs one
    mod.__dict__.update(attrs)
    return mod


@pytest.fixture
def fake_unsloth(monkeypatch):
    """A CUDA machine with unsloth installed, as far as globe.models can tell."""
    FakeFastVisionModel.calls = []
    monkeypatch.setitem(sys.modules, "unsloth", _module("unsloth", FastVisionModel=FakeFastVisionModel))
    monkeypatch.setattr(models, "_cuda_available", lambda: True)
    return FakeFastVisionModel


class FakeLLM:
    """vllm.LLM with the engine arguments globe uses (vLLM passes them to EngineArgs); records them."""

    instances: list[FakeLLM] = []

    def __init__(self, model, *, seed=None, limit_mm_per_prompt=None, enable_lora=False, max_lora_rank=16,
                 max_loras=1, max_model_len=None, gpu_memory_utilization=0.9):
        # vllm/config/lora.py: max_lora_rank: MaxLoRARanks, a closed Literal (validated by pydantic).
        allowed = (1, 8, 16, 32, 64, 128, 256, 320, 512)
        if max_lora_rank not in allowed:
            raise ValueError(f"max_lora_rank {max_lora_rank} not in {allowed}")
        self.kwargs = dict(model=model, seed=seed, limit_mm_per_prompt=limit_mm_per_prompt, enable_lora=enable_lora,
                           max_lora_rank=max_lora_rank)
        FakeLLM.instances.append(self)


@pytest.fixture
def fake_vllm(monkeypatch):
    FakeLLM.instances = []
    request = _module("vllm.lora.request", LoRARequest=lambda name, int_id, path: (name, int_id, path))
    lora = _module("vllm.lora", request=request)
    vllm = _module("vllm", LLM=FakeLLM, SamplingParams=lambda **kw: kw, lora=lora)
    for name, mod in (("vllm", vllm), ("vllm.lora", lora), ("vllm.lora.request", request)):
        monkeypatch.setitem(sys.modules, name, mod)
    return FakeLLM


# ---------------------------------------------------------------------------------------------------------------------
# Shared data


@pytest.fixture(scope="module")
def adapter_r32(tiny_vlm_dir, tmp_path_factory) -> Path:
    """A saved LoRA adapter of rank 32 on the tiny model's language layers (what an SFT run leaves)."""
    lora = models.lora_settings(r=32, alpha=32, dropout=0.0, target_modules=["q_proj", "v_proj"])
    model, _ = models.load_vlm(tiny_vlm_dir, training=True, lora=lora)
    out = tmp_path_factory.mktemp("adapter") / "r32"
    model.save_pretrained(out)
    return out


@pytest.fixture(scope="module")
def grpo_dataset(tmp_path_factory) -> Path:
    sys.path.insert(0, str(Path(__file__).parent))
    from test_grpo import colour_rows, save_dataset

    return save_dataset(colour_rows(4), tmp_path_factory.mktemp("gpu-path-data") / "mp16_reason")


def _grpo(tiny_vlm_dir, grpo_dataset, tmp_path, **over):
    from globe.train.grpo import GRPOParams

    p = dict(base_model=str(tiny_vlm_dir), dataset=str(grpo_dataset), init_adapter=None, out=str(tmp_path / "grpo"),
             rewards={"format": 1.0}, backend="unsloth",
             lora={"r": 4, "alpha": 8, "dropout": 0.0, "target_modules": ["q_proj", "v_proj"],
                   "finetune_vision_layers": False})
    p.update(over)
    return GRPOParams.from_params(p)


# ---------------------------------------------------------------------------------------------------------------------
# Item 1 (helper): unsloth imported before TRL


def test_prepare_backend_imports_unsloth_and_names_what_came_first(tmp_path, monkeypatch, caplog):
    """prepare_backend('unsloth') imports unsloth now, and says which of TRL / transformers were imported before it."""
    pkg = tmp_path / "site" / "unsloth"
    pkg.mkdir(parents=True)
    (pkg / "__init__.py").write_text("IMPORTED = True\n")
    monkeypatch.syspath_prepend(str(tmp_path / "site"))
    monkeypatch.delitem(sys.modules, "unsloth", raising=False)
    monkeypatch.setattr(models, "_cuda_available", lambda: True)
    import transformers  # noqa: F401  (already imported by the suite; made explicit: it is the late import here)

    try:
        with caplog.at_level(logging.WARNING, logger="globe.models"):
            assert models.prepare_backend("auto") == "unsloth"
        assert sys.modules["unsloth"].IMPORTED
        assert "unsloth is imported after" in caplog.text and "transformers" in caplog.text
        caplog.clear()
        with caplog.at_level(logging.WARNING, logger="globe.models"):
            assert models.prepare_backend("unsloth") == "unsloth"  # already imported: nothing to warn about
        assert "imported after" not in caplog.text
    finally:
        sys.modules.pop("unsloth", None)


# ---------------------------------------------------------------------------------------------------------------------
# Item 3: unsloth's max_seq_length comes from the recipe


def test_unsloth_max_seq_length_is_the_longest_prompt_with_its_image_plus_the_completion(
        fake_unsloth, tiny_vlm_dir, grpo_dataset, tmp_path):
    from PIL import Image

    from globe.train.grpo import load_policy

    max_pixels = 28 * 28 * 16  # at most 16 merged patches, i.e. 16 image tokens
    cfg = _grpo(tiny_vlm_dir, grpo_dataset, tmp_path, max_completion_length=50, max_pixels=max_pixels)
    load_policy(cfg, "unsloth")
    budget = fake_unsloth.last("from_pretrained")["max_seq_length"]
    assert budget != 2048  # unsloth's default: what was used before

    # What the processor really makes of the dataset's prompt with photos of several shapes, as TRL renders it.
    processor = models.cap_image_pixels(models.load_processor(tiny_vlm_dir), max_pixels)
    messages = [{"role": "user", "content": [{"type": "image"}, {"type": "text", "text": "Where was this photo taken?"}]}]
    text = processor.apply_chat_template(messages, add_generation_prompt=True, tokenize=False)
    lengths = [processor(text=[text], images=[Image.new("RGB", size)], return_tensors="pt")["input_ids"].shape[1] + 50
               for size in ((112, 112), (640, 480), (90, 400), (40, 40))]
    assert max(lengths) == budget  # a bound that the largest photo meets exactly
    assert all(n <= budget for n in lengths)


def test_transformers_backend_takes_no_sequence_cap(tiny_vlm_dir):
    model, _ = models.load_vlm(tiny_vlm_dir, max_seq_length=64)  # accepted and ignored: no such cap in transformers
    assert model.config.model_type == "qwen2_5_vl"


# ---------------------------------------------------------------------------------------------------------------------
# Item 4: vLLM's max_lora_rank from the adapter actually loaded


def test_unsloth_vllm_lora_rank_is_the_init_adapters(fake_unsloth, tiny_vlm_dir, grpo_dataset, adapter_r32, tmp_path):
    from globe.train.grpo import load_policy

    # lora.r is 4, but the SFT adapter being continued has rank 32: vLLM must hold rank 32.
    cfg = _grpo(tiny_vlm_dir, grpo_dataset, tmp_path, init_adapter=str(adapter_r32), use_vllm=True,
                vllm_gpu_memory_utilization=0.3)
    model, _ = load_policy(cfg, "unsloth")
    kw = fake_unsloth.last("from_pretrained")
    assert kw["model_name"] == str(adapter_r32) and kw["fast_inference"] and kw["gpu_memory_utilization"] == 0.3
    assert kw["max_lora_rank"] == 32
    assert any(p.requires_grad for n, p in model.named_parameters() if "lora_" in n)


def test_unsloth_vllm_lora_rank_of_a_fresh_adapter_and_no_vision_lora(fake_unsloth, tiny_vlm_dir, grpo_dataset,
                                                                       tmp_path):
    from globe.train.grpo import load_policy

    load_policy(_grpo(tiny_vlm_dir, grpo_dataset, tmp_path, use_vllm=True), "unsloth")
    assert fake_unsloth.last("from_pretrained")["max_lora_rank"] == 8  # r=4 rounded up to vLLM's next allowed rank
    vision = _grpo(tiny_vlm_dir, grpo_dataset, tmp_path, use_vllm=True,
                   lora={"r": 4, "alpha": 8, "target_modules": "all-linear", "finetune_vision_layers": True})
    with pytest.raises(ValueError, match="vision tower"):
        load_policy(vision, "unsloth")


def test_lora_rank_helpers(adapter_r32, tmp_path):
    assert models.adapter_rank(adapter_r32) == 32 and not models.adapter_targets_vision(adapter_r32)
    cfg = json.loads((adapter_r32 / "adapter_config.json").read_text())
    patterned = tmp_path / "patterned"
    patterned.mkdir()
    (patterned / "adapter_config.json").write_text(json.dumps({**cfg, "rank_pattern": {"q_proj": 64}}))
    assert models.adapter_rank(patterned) == 64
    assert [models.vllm_lora_rank(r) for r in (1, 4, 16, 17, 64, 300)] == [1, 8, 16, 32, 64, 320]
    with pytest.raises(ValueError, match="largest"):
        models.vllm_lora_rank(1024)
    with pytest.raises(FileNotFoundError, match="adapter_config"):
        models.adapter_rank(tmp_path)


# ---------------------------------------------------------------------------------------------------------------------
# Item 5: vLLM evaluation sizes its LoRA slots from the adapter


def test_vllm_evaluation_passes_the_adapters_rank(fake_vllm, tiny_vlm_dir, tmp_path):
    from globe.evaluate import EvalParams
    from globe.evaluate.inference import _VLLMGenerator

    model, _ = models.load_vlm(tiny_vlm_dir, training=True, lora=models.lora_settings(r=64, alpha=64))
    model.save_pretrained(tmp_path / "r64")  # the paper's adapters are rank 64; vLLM's default slot is 16
    gen = _VLLMGenerator(str(tiny_vlm_dir), str(tmp_path / "r64"), EvalParams(seed=3))
    kw = fake_vllm.instances[-1].kwargs
    assert kw["enable_lora"] and kw["max_lora_rank"] == 64 and kw["seed"] == 3
    assert gen.lora == ("adapter", 1, str(tmp_path / "r64"))
    _VLLMGenerator(str(tiny_vlm_dir), None, EvalParams())
    assert not fake_vllm.instances[-1].kwargs["enable_lora"]


# ---------------------------------------------------------------------------------------------------------------------
# Item 6: the optimiser is set, not left to the backend's defaults


def test_grpo_config_sets_the_optimiser_unsloth_would_change(monkeypatch, caplog):
    import trl

    from globe.train.grpo import GRPOParams, grpo_config

    # unsloth/models/rl.py rewrites GRPOConfig's defaults: optim "adamw_8bit", weight_decay 0.001.
    @dataclasses.dataclass
    class UnslothGRPOConfig(trl.GRPOConfig):
        optim: str = "adamw_8bit"
        weight_decay: float = 0.001

    monkeypatch.setattr(trl, "GRPOConfig", UnslothGRPOConfig)
    with caplog.at_level(logging.INFO, logger="globe.train.grpo"):
        args = grpo_config(GRPOParams.from_params({"out": "/tmp/x"}), on_gpu=False, reward_weights=[1.0])
    assert type(args) is UnslothGRPOConfig
    assert str(getattr(args.optim, "value", args.optim)) == "adamw_torch_fused" and args.weight_decay == 0.0
    assert "GRPO optimiser: adamw_torch_fused, weight_decay 0.0" in caplog.text
    args = grpo_config(GRPOParams.from_params({"optim": "adamw_torch", "weight_decay": 0.01}), on_gpu=False,
                       reward_weights=[1.0])
    assert str(getattr(args.optim, "value", args.optim)) == "adamw_torch" and args.weight_decay == 0.01


# ---------------------------------------------------------------------------------------------------------------------
# Item 7: finetune_vision_layers holds on the unsloth backend too


@pytest.mark.parametrize("targets", ["all-linear", ["all-linear"], ["q_proj", "v_proj", "qkv"]])
def test_unsloth_lora_respects_finetune_vision_layers(fake_unsloth, tiny_vlm_dir, targets):
    lora = models.lora_settings(r=4, alpha=8, target_modules=targets, finetune_vision_layers=False)
    model, _ = models.load_vlm(tiny_vlm_dir, training=True, backend="unsloth", lora=lora)
    kw = fake_unsloth.last("get_peft_model")
    assert not kw["effective_vision"] and kw["finetune_vision_layers"] is False
    assert kw["target_modules"] != "all-linear"
    trainable = [n for n, p in model.named_parameters() if p.requires_grad]
    assert trainable and not any("visual" in n for n in trainable)
    # ...and asked for, vision LoRA is there.
    lora = models.lora_settings(r=4, alpha=8, target_modules=targets, finetune_vision_layers=True)
    model, _ = models.load_vlm(tiny_vlm_dir, training=True, backend="unsloth", lora=lora)
    assert any("visual" in n for n, p in model.named_parameters() if p.requires_grad)


# ---------------------------------------------------------------------------------------------------------------------
# Item 8: the reward model's adapter stays out of unsloth's vLLM rollouts


def test_reward_model_is_not_shared_with_an_unsloth_vllm_policy(tiny_vlm_dir, tmp_path, monkeypatch, caplog):
    import globe.reward_model as rm
    from globe.train.grpo import GRPOParams, make_scorer

    class FakeScorer:
        def __init__(self, model, adapter=None, processor=None):
            self.model, self.adapter = model, adapter

    monkeypatch.setattr(rm, "LocalizabilityScorer", FakeScorer)
    (tmp_path / "rm").mkdir()
    cfg = GRPOParams.from_params({"rewards": {"localizability": 0.5}, "reward_model": str(tmp_path / "rm")})
    policy, processor = models.load_vlm(tiny_vlm_dir, training=True, lora=models.lora_settings(r=4, alpha=8))
    assert make_scorer(cfg, policy, processor).model is policy  # shared: one copy of the base weights
    policy.base_model.model.vllm_engine = object()  # what unsloth's fast_inference load leaves on the model
    with caplog.at_level(logging.WARNING, logger="globe.train.grpo"):
        scorer = make_scorer(cfg, policy, processor)
    assert scorer.model == str(tmp_path / "rm") and scorer.adapter is None  # its own copy
    assert "reward_model_share is ignored" in caplog.text


# ---------------------------------------------------------------------------------------------------------------------
# Item 9 and the TRL version split


def test_max_prompt_length_without_trl_support_is_a_config_error():
    from trl import GRPOConfig

    from globe.train.grpo import GRPOParams, grpo_config

    cfg = GRPOParams.from_params({"max_prompt_length": 256})
    if "max_prompt_length" in {f.name for f in dataclasses.fields(GRPOConfig)}:
        assert grpo_config(cfg, on_gpu=False, reward_weights=[1.0]).max_prompt_length == 256
    else:  # TRL 1.15 and 1.16: no such field
        with pytest.raises(ValueError, match="max_prompt_length"):
            grpo_config(cfg, on_gpu=False, reward_weights=[1.0])
    assert grpo_config(GRPOParams.from_params({}), on_gpu=False, reward_weights=[1.0]).max_steps >= 1


def test_trl_115_on_cpu_is_a_clear_error(monkeypatch):
    import trl

    from globe.train.grpo import GRPOParams, grpo_config

    monkeypatch.setattr(trl, "__version__", "1.15.0")
    with pytest.raises(RuntimeError, match=r"TRL 1\.15\.0.*CPU.*trl>=1\.16"):
        grpo_config(GRPOParams.from_params({}), on_gpu=False, reward_weights=[1.0])
