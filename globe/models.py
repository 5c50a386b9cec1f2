"""Vision-language models: the one loading function, batched generation, backend choice.

Every model GLOBE touches (policy, teachers run locally, reward model, evaluation) is loaded by `load_vlm`, so the
default profile's tiny random model (`globe.tiny`) and the paper's `Qwen/Qwen2.5-VL-7B-Instruct` go through the same
code.

Backends: `select_backend()` picks "unsloth" (its `FastVisionModel`) on a CUDA machine where unsloth is importable,
else "transformers" (+ PEFT). Unsloth patches transformers and TRL when it is imported, so it must be imported before
either of them: call `load_vlm(..., backend="unsloth")` (or `select_backend()`) before anything else in the process
imports transformers/trl, otherwise unsloth warns and some of its optimisations are silently off.
"""

from __future__ import annotations

import importlib.util
import logging
import os
import re
from collections.abc import Sequence
from pathlib import Path
from typing import Any

log = logging.getLogger(__name__)

# ---------------------------------------------------------------------------------------------------------------------
# Backend choice and loading


def select_backend(prefer: str = "auto") -> str:
    """'unsloth' on a CUDA machine with unsloth importable (or when asked), else 'transformers'; logs the choice."""
    if prefer not in ("auto", "unsloth", "transformers"):
        raise ValueError(f"backend must be auto, unsloth or transformers, not {prefer!r}")
    if prefer == "transformers":
        choice, why = "transformers", "requested"
    else:
        has_unsloth = importlib.util.find_spec("unsloth") is not None
        has_cuda = _cuda_available()
        if prefer == "unsloth" and not (has_unsloth and has_cuda):
            raise RuntimeError(
                "backend 'unsloth' needs a CUDA GPU and the unsloth package (pip install '.[gpu]' in a GPU "
                f"environment); cuda={has_cuda}, unsloth installed={has_unsloth}"
            )
        if has_unsloth and has_cuda:
            choice, why = "unsloth", "CUDA and unsloth available"
            _import_unsloth_first()
        else:
            choice, why = "transformers", f"cuda={has_cuda}, unsloth installed={has_unsloth}"
    log.info("model backend: %s (%s)", choice, why)
    return choice


def _import_unsloth_first() -> None:
    """Import unsloth now, so it patches transformers / TRL / PEFT before their first import (warn if too late)."""
    import sys

    late = [m for m in ("transformers", "trl", "peft") if m in sys.modules and "unsloth" not in sys.modules]
    if late:
        log.warning("unsloth is imported after %s: some of its patches may not apply; call "
                    "globe.models.select_backend() before importing them", ", ".join(late))
    import unsloth  # noqa: F401


def _cuda_available() -> bool:
    import torch

    return torch.cuda.is_available()


def _resolve_dtype(dtype: Any):
    import torch

    if dtype is None or dtype == "auto":
        if torch.cuda.is_available():
            return torch.bfloat16 if torch.cuda.is_bf16_supported() else torch.float16
        return torch.float32
    if isinstance(dtype, str):
        try:
            return {"float32": torch.float32, "fp32": torch.float32, "bfloat16": torch.bfloat16, "bf16": torch.bfloat16,
                    "float16": torch.float16, "fp16": torch.float16}[dtype]
        except KeyError:
            raise ValueError(f"unknown dtype {dtype!r}; use auto, float32, bfloat16 or float16") from None
    return dtype


def _check_offline_source(model: str) -> None:
    """With HF_HUB_OFFLINE set, a model that is neither a local dir nor cached must fail here, clearly."""
    if Path(model).exists():
        return
    if os.environ.get("HF_HUB_OFFLINE", "0") not in ("", "0", "false", "False"):
        from huggingface_hub import try_to_load_from_cache

        if try_to_load_from_cache(model, "config.json") is None:
            raise FileNotFoundError(
                f"model {model!r} is not a local directory and is not in the Hugging Face cache, and HF_HUB_OFFLINE "
                "is set: download it first (huggingface-cli download) or point base_model at a local copy"
            )


def load_processor(model: str | os.PathLike, *, padding_side: str = "left", **kw):
    """The model's processor, padding on the left (generation) unless told otherwise."""
    from transformers import AutoProcessor

    processor = AutoProcessor.from_pretrained(str(model), **kw)
    tok = getattr(processor, "tokenizer", processor)
    tok.padding_side = padding_side
    if tok.pad_token is None:  # Qwen pads with <|endoftext|>; any model without a pad token pads with eos
        tok.pad_token = tok.eos_token
    return processor


def load_vlm(
    model: str | os.PathLike,
    adapter: str | os.PathLike | None = None,
    *,
    dtype: Any = "auto",
    device: str = "auto",
    training: bool = False,
    backend: str = "auto",
    merge: bool = False,
    load_in_4bit: bool = False,
    lora: dict | None = None,
    gradient_checkpointing: bool = False,
    **kw,
) -> tuple[Any, Any]:
    """Load a VLM (hub id or local path) and its processor; optionally a PEFT adapter on top, merged if `merge`.

    `training=True` returns the model in train mode; with `lora` (a dict of LoRA settings, see `lora_settings`) it
    also attaches fresh LoRA adapters, through unsloth's `FastVisionModel.get_peft_model` on the unsloth backend and
    PEFT's `get_peft_model` otherwise. `load_in_4bit` (QLoRA) needs CUDA and bitsandbytes. Extra keywords go to
    `from_pretrained`.
    """
    model = str(model)
    _check_offline_source(model)
    backend = select_backend(backend)
    if backend == "unsloth":
        return _load_unsloth(model, adapter, dtype=dtype, training=training, merge=merge, load_in_4bit=load_in_4bit,
                             lora=lora, gradient_checkpointing=gradient_checkpointing, **kw)

    import torch
    from transformers import AutoModelForImageTextToText

    torch_dtype = _resolve_dtype(dtype)
    if device == "auto":
        device = "cuda" if torch.cuda.is_available() else "cpu"
    if load_in_4bit:
        if not torch.cuda.is_available() or importlib.util.find_spec("bitsandbytes") is None:
            raise RuntimeError(
                "load_in_4bit (QLoRA) needs a CUDA GPU and bitsandbytes; set sft.load_in_4bit: false on this machine"
            )
        from transformers import BitsAndBytesConfig

        kw["quantization_config"] = BitsAndBytesConfig(
            load_in_4bit=True, bnb_4bit_quant_type="nf4", bnb_4bit_compute_dtype=torch_dtype,
            bnb_4bit_use_double_quant=True,
        )
        kw.setdefault("device_map", {"": 0})
    vlm = AutoModelForImageTextToText.from_pretrained(model, dtype=torch_dtype, **kw)
    if "device_map" not in kw:
        vlm = vlm.to(device)
    if adapter is not None:
        from peft import PeftModel

        vlm = PeftModel.from_pretrained(vlm, str(adapter), is_trainable=training and not merge)
        if merge:
            vlm = vlm.merge_and_unload()
    if training:
        if load_in_4bit:
            from peft import prepare_model_for_kbit_training

            vlm = prepare_model_for_kbit_training(vlm, use_gradient_checkpointing=gradient_checkpointing)
        elif gradient_checkpointing:
            vlm.gradient_checkpointing_enable(gradient_checkpointing_kwargs={"use_reentrant": False})
            vlm.enable_input_require_grads()
        if lora is not None and adapter is None:
            from peft import get_peft_model

            vlm = get_peft_model(vlm, peft_lora_config(vlm, **lora))
        vlm.train()
    else:
        vlm.eval()
    processor = load_processor(model)
    return vlm, processor


def lora_settings(
    r: int = 16,
    alpha: int = 32,
    dropout: float = 0.05,
    target_modules: Sequence[str] | str = ("q_proj", "k_proj", "v_proj", "o_proj", "gate_proj", "up_proj", "down_proj"),
    finetune_vision_layers: bool = False,
    finetune_language_layers: bool = True,
) -> dict:
    """The LoRA settings `load_vlm(lora=...)` understands, validated, with defaults."""
    if r <= 0 or alpha <= 0 or not 0 <= dropout < 1:
        raise ValueError(f"LoRA needs r > 0, alpha > 0 and 0 <= dropout < 1; got r={r} alpha={alpha} dropout={dropout}")
    if not (finetune_vision_layers or finetune_language_layers):
        raise ValueError("LoRA must adapt the vision layers, the language layers, or both")
    targets = target_modules if isinstance(target_modules, str) else list(target_modules)
    return dict(r=r, alpha=alpha, dropout=dropout, target_modules=targets,
                finetune_vision_layers=finetune_vision_layers, finetune_language_layers=finetune_language_layers)


def peft_lora_config(model, r=16, alpha=32, dropout=0.05, target_modules=("q_proj",), finetune_vision_layers=False,
                     finetune_language_layers=True):
    """A PEFT LoraConfig whose targets are the named linear layers of the language model and/or the vision tower."""
    from peft import LoraConfig

    names = [target_modules] if isinstance(target_modules, str) else list(target_modules)
    if names == ["all-linear"]:
        # Named linear layers only: an index such as the vision merger's `mlp.0` would also match `layers.0`, a
        # whole decoder layer, which PEFT cannot wrap.
        linear = {n.rsplit(".", 1)[-1] for n, m in model.named_modules() if type(m).__name__ == "Linear"}
        names = sorted(n for n in linear - {"lm_head"} if not n.isdigit())
    parts = []
    if finetune_language_layers:
        parts.append(r"language_model")
    if finetune_vision_layers:
        parts.append(r"visual")
    # A regex over full module names: the chosen towers, and only the named projections inside them.
    pattern = rf".*(?:{'|'.join(parts)}).*\.(?:{'|'.join(names)})$"
    targets = [n for n, _ in model.named_modules() if re.fullmatch(pattern, n)]
    if not targets:
        raise ValueError(f"LoRA target modules {names} match no layer of {type(model).__name__} (pattern {pattern})")
    return LoraConfig(r=r, lora_alpha=alpha, lora_dropout=dropout, target_modules=pattern, bias="none",
                      task_type="CAUSAL_LM")


def _load_unsloth(model, adapter, *, dtype, training, merge, load_in_4bit, lora, gradient_checkpointing, **kw):
    """The unsloth path (CUDA only). unsloth is imported first so it can patch transformers/TRL before they load."""
    import unsloth  # noqa: F401  (must precede transformers/trl; see the module docstring)
    from unsloth import FastVisionModel

    torch_dtype = None if dtype == "auto" else _resolve_dtype(dtype)
    vlm, processor = FastVisionModel.from_pretrained(
        adapter if adapter is not None else model,  # unsloth reads the base model from an adapter's config
        load_in_4bit=load_in_4bit,
        dtype=torch_dtype,
        use_gradient_checkpointing="unsloth" if gradient_checkpointing else False,
        **kw,
    )
    if adapter is not None and merge:
        vlm = vlm.merge_and_unload()
    if training:
        if lora is not None and adapter is None:
            vlm = FastVisionModel.get_peft_model(
                vlm,
                finetune_vision_layers=lora["finetune_vision_layers"],
                finetune_language_layers=lora["finetune_language_layers"],
                finetune_attention_modules=True,
                finetune_mlp_modules=True,
                r=lora["r"],
                lora_alpha=lora["alpha"],
                lora_dropout=lora["dropout"],
                target_modules=lora["target_modules"],
                bias="none",
                use_gradient_checkpointing="unsloth" if gradient_checkpointing else False,
            )
        FastVisionModel.for_training(vlm)
    else:
        FastVisionModel.for_inference(vlm)
    tok = getattr(processor, "tokenizer", processor)
    tok.padding_side = "left"
    return vlm, processor


# ---------------------------------------------------------------------------------------------------------------------
# Generation


def chat_texts(processor, prompts: Sequence[str], with_image: Sequence[bool]) -> list[str]:
    """Each prompt as the model's chat text (user turn, image placeholder when there is an image, assistant header)."""
    from globe.prompts import build_messages

    return [
        processor.apply_chat_template(build_messages(p, with_image=w), add_generation_prompt=True, tokenize=False)
        for p, w in zip(prompts, with_image)
    ]


def occurrence_penalty(prompt_length: int, frequency_penalty: float, presence_penalty: float):
    """A transformers logits processor with the OpenAI / vLLM definition of frequency and presence penalties: over
    the tokens generated so far (not the prompt), `logit[t] -= frequency_penalty * count(t) + presence_penalty *
    [count(t) > 0]`, applied to the raw logits, before temperature and top-p (vLLM's order)."""
    import torch
    from transformers import LogitsProcessor

    class OccurrencePenalty(LogitsProcessor):
        def __call__(self, input_ids, scores):
            generated = input_ids[:, prompt_length:]
            if generated.shape[1] == 0:
                return scores
            counts = torch.zeros_like(scores).scatter_add_(1, generated, torch.ones_like(generated, dtype=scores.dtype))
            return scores - frequency_penalty * counts - presence_penalty * (counts > 0).to(scores.dtype)

    return OccurrencePenalty()


def generate(
    model,
    processor,
    images: Sequence[Any] | None,
    prompts: Sequence[str] | str,
    *,
    max_new_tokens: int = 256,
    temperature: float = 0.0,
    top_p: float = 1.0,
    batch_size: int = 8,
    seed: int = 0,
    frequency_penalty: float = 0.0,
    presence_penalty: float = 0.0,
) -> list[str]:
    """Generate one completion per (image, prompt): batched, left padded, greedy when temperature == 0.

    `images` items are PIL images (or None for a text-only prompt); `prompts` is one prompt per image or a single
    prompt for all. Returns only the new text, special tokens stripped. `frequency_penalty` / `presence_penalty`
    follow the OpenAI / vLLM definitions (`occurrence_penalty`; GLOBE's evaluation: 0.7 each, temperature 0.1):
    with either set, the penalties, then temperature, then top-p are applied in that order, as vLLM does.
    """
    import torch

    if images is None:
        images = [None] * (1 if isinstance(prompts, str) else len(prompts))
    images = list(images)
    prompts = [prompts] * len(images) if isinstance(prompts, str) else list(prompts)
    if len(prompts) != len(images):
        raise ValueError(f"got {len(images)} images and {len(prompts)} prompts; "
                         "pass one prompt per image or one for all")
    if temperature < 0 or not 0 < top_p <= 1 or batch_size < 1:
        raise ValueError("need temperature >= 0, 0 < top_p <= 1, batch_size >= 1 "
                         f"(got {temperature}, {top_p}, {batch_size})")
    tok = getattr(processor, "tokenizer", processor)
    tok.padding_side = "left"
    device = next(model.parameters()).device
    sampling = dict(do_sample=True, temperature=temperature, top_p=top_p) if temperature > 0 else dict(do_sample=False)
    penalised = bool(frequency_penalty or presence_penalty)
    if penalised and temperature > 0:
        # transformers would apply its own temperature / top-p BEFORE a custom processor; vLLM penalises the raw
        # logits first, so the warpers run here, after the penalty, and generate's own are switched off (1.0).
        from transformers import TemperatureLogitsWarper, TopPLogitsWarper

        warpers = [TemperatureLogitsWarper(temperature)] + ([TopPLogitsWarper(top_p)] if top_p < 1 else [])
        sampling = dict(do_sample=True, temperature=1.0, top_p=1.0)
    else:
        warpers = []
    torch.manual_seed(seed)
    out: list[str] = []
    for start in range(0, len(images), batch_size):
        batch_images = images[start:start + batch_size]
        batch_prompts = prompts[start:start + batch_size]
        texts = chat_texts(processor, batch_prompts, [im is not None for im in batch_images])
        present = [im.convert("RGB") for im in batch_images if im is not None]
        inputs = processor(text=texts, images=present or None, padding=True, return_tensors="pt").to(device)
        extra = {}
        if penalised:
            from transformers import LogitsProcessorList

            extra["logits_processor"] = LogitsProcessorList(
                [occurrence_penalty(inputs["input_ids"].shape[1], frequency_penalty, presence_penalty), *warpers])
        with torch.inference_mode():
            generated = model.generate(
                **inputs,
                max_new_tokens=max_new_tokens,
                pad_token_id=tok.pad_token_id,
                top_k=None,
                **sampling,
                **extra,
            )
        new_tokens = generated[:, inputs["input_ids"].shape[1]:]
        out += tok.batch_decode(new_tokens, skip_special_tokens=True, clean_up_tokenization_spaces=False)
    return out
