"""Vision-language models: the one loading function, batched generation, backend choice.

Every model GLOBE touches (policy, teachers run locally, reward model, evaluation) is loaded by `load_vlm`, so the
default profile's tiny random model (`globe.tiny`) and the paper's `Qwen/Qwen2.5-VL-7B-Instruct` go through the same
code.

Backends: `select_backend()` picks "unsloth" (its `FastVisionModel`) on a CUDA machine where unsloth is importable,
else "transformers" (+ PEFT). Unsloth patches transformers, TRL and PEFT when it is imported, so it must be imported
before any of them: an entry point that will import TRL calls `prepare_backend()` first (a TRL trainer class imported
before unsloth stays TRL's unpatched class); `load_vlm(..., backend="unsloth")` and `select_backend()` import it too,
but only when they run, which may be too late.
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


def _import_unsloth_first() -> list[str]:
    """Import unsloth now, so it patches transformers / TRL / PEFT; warn with those already imported before it.

    Returns the modules that were imported too early (empty when unsloth came first or was already imported).
    """
    import sys

    late = [] if "unsloth" in sys.modules else [m for m in ("trl", "transformers", "peft") if m in sys.modules]
    if late:
        log.warning("unsloth is imported after %s: classes imported from them before now (e.g. a TRL trainer) stay "
                    "unpatched; call globe.models.prepare_backend() before importing them", ", ".join(late))
    import unsloth  # noqa: F401

    return late


def prepare_backend(prefer: str = "auto") -> str:
    """Choose the backend (`select_backend`) and get the process ready for it, before trl/transformers are imported.

    Call this first in any entry point that trains with a TRL trainer (`from trl import SFTTrainer` must come after
    it): on the unsloth backend it imports unsloth now, so the trainer class you import next is Unsloth's patched one,
    and warns if TRL, transformers or PEFT were imported before it. Returns "unsloth" or "transformers".
    """
    return select_backend(prefer)


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
    max_seq_length: int | None = None,
    **kw,
) -> tuple[Any, Any]:
    """Load a VLM (hub id or local path) and its processor; optionally a PEFT adapter on top, merged if `merge`.

    `training=True` returns the model in train mode; with `lora` (a dict of LoRA settings, see `lora_settings`) it
    also attaches fresh LoRA adapters, through unsloth's `FastVisionModel.get_peft_model` on the unsloth backend and
    PEFT's `get_peft_model` otherwise; a given `adapter` is loaded trainable instead. `load_in_4bit` (QLoRA) needs
    CUDA and bitsandbytes. `max_seq_length` (prompt with its image tokens + completion, see `recipe_max_seq_length`)
    is unsloth's sequence budget, and vLLM's `max_model_len` under `fast_inference`; transformers has no such cap and
    ignores it. Extra keywords go to `from_pretrained`.
    """
    model = str(model)
    _check_offline_source(model)
    backend = select_backend(backend)
    if backend == "unsloth":
        return _load_unsloth(model, adapter, dtype=dtype, training=training, merge=merge, load_in_4bit=load_in_4bit,
                             lora=lora, gradient_checkpointing=gradient_checkpointing, max_seq_length=max_seq_length,
                             **kw)

    import torch
    from transformers import AutoModelForImageTextToText

    torch_dtype = _resolve_dtype(dtype)
    if device == "auto":
        device = "cuda" if torch.cuda.is_available() else "cpu"
    if load_in_4bit:
        _require_4bit()
        for key, value in _bnb_4bit_kwargs(torch_dtype).items():
            kw.setdefault(key, value)
    vlm = AutoModelForImageTextToText.from_pretrained(model, dtype=torch_dtype, **kw)
    if "device_map" not in kw:
        vlm = vlm.to(device)
    if training and load_in_4bit:
        # Before any adapter: PEFT's prepare_model_for_kbit_training freezes *every* parameter, so applied after
        # PeftModel.from_pretrained(is_trainable=True) it froze the adapter being continued (0 trainable weights).
        _prepare_kbit_base(vlm, gradient_checkpointing)
    if adapter is not None:
        from peft import PeftModel

        vlm = PeftModel.from_pretrained(vlm, str(adapter), is_trainable=training and not merge)
        if merge:
            vlm = vlm.merge_and_unload()
    if training:
        if gradient_checkpointing and not load_in_4bit:
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


def _require_4bit() -> None:
    """4-bit loading (bitsandbytes NF4) needs a CUDA GPU and bitsandbytes; say so plainly otherwise."""
    import torch

    if not torch.cuda.is_available() or importlib.util.find_spec("bitsandbytes") is None:
        raise RuntimeError(
            "load_in_4bit (QLoRA) needs a CUDA GPU and bitsandbytes; set sft.load_in_4bit: false on this machine"
        )


def _bnb_4bit_kwargs(torch_dtype) -> dict:
    """`from_pretrained` keywords for QLoRA: NF4 with double quantisation, computing in `torch_dtype`, on GPU 0."""
    from transformers import BitsAndBytesConfig

    quant = BitsAndBytesConfig(load_in_4bit=True, bnb_4bit_quant_type="nf4", bnb_4bit_compute_dtype=torch_dtype,
                               bnb_4bit_use_double_quant=True)
    return {"quantization_config": quant, "device_map": {"": 0}}


def _prepare_kbit_base(model, gradient_checkpointing: bool) -> None:
    """Ready a (4-bit) base model for LoRA training, before an adapter is attached: freeze it, checkpoint if asked.

    What PEFT's `prepare_model_for_kbit_training` does minus its fp32 upcast of every non-4-bit weight (embeddings,
    lm_head, norms, an unquantised vision tower), which costs gigabytes on a 7B model; the weights stay in the compute
    dtype, as Unsloth keeps them, and PEFT keeps the adapter's own weights in fp32 (`autocast_adapter_dtype`).
    """
    for param in model.parameters():
        param.requires_grad_(False)
    if gradient_checkpointing:
        model.gradient_checkpointing_enable(gradient_checkpointing_kwargs={"use_reentrant": False})
        model.enable_input_require_grads()  # frozen embeddings: the checkpointed blocks still need a grad path


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
    """A PEFT LoraConfig whose targets are the named linear layers of the language model and/or the vision tower.

    `target_modules="all-linear"` means every linear layer inside the chosen towers (so `finetune_vision_layers`
    holds for it too; lm_head sits outside both), listed by full name: as a leaf-name pattern, the vision merger's
    `mlp.0` / `mlp.2` would also match whole decoder layers (`layers.0`), which PEFT cannot wrap.
    """
    import torch
    from peft import LoraConfig

    names = [target_modules] if isinstance(target_modules, str) else list(target_modules)
    parts = []
    if finetune_language_layers:
        parts.append(r"language_model")
    if finetune_vision_layers:
        parts.append(r"visual")
    tower = rf".*(?:{'|'.join(parts)}).*"
    if names == ["all-linear"]:
        # isinstance: bitsandbytes' Linear4bit (QLoRA) is a torch Linear too.
        target: str | list[str] = [n for n, m in model.named_modules()
                                   if isinstance(m, torch.nn.Linear) and re.fullmatch(tower, n)]
        found = target
    else:
        # A regex over full module names: the chosen towers, and only the named projections inside them.
        target = rf"{tower}\.(?:{'|'.join(names)})$"
        found = [n for n, _ in model.named_modules() if re.fullmatch(target, n)]
    if not found:
        raise ValueError(f"LoRA target modules {names} match no layer of {type(model).__name__} in "
                         f"{' and '.join(parts)}")
    return LoraConfig(r=r, lora_alpha=alpha, lora_dropout=dropout, target_modules=target, bias="none",
                      task_type="CAUSAL_LM")


def _unsloth_target_modules(target_modules: Sequence[str] | str) -> list[str] | None:
    """Our LoRA targets in unsloth's terms: "all-linear" becomes None (unsloth picks every linear layer itself).

    unsloth's `get_peft_model` turns `target_modules="all-linear"` into "every tower": it sets
    `finetune_vision_layers=True` whatever the caller asked (and then fails under `fast_inference`, where vLLM cannot
    serve vision LoRA). With None it builds the same all-linear selection but scoped by the `finetune_*` flags, which
    is what PEFT's path here does too.
    """
    names = [target_modules] if isinstance(target_modules, str) else list(target_modules)
    return None if names == ["all-linear"] else names


def _load_unsloth(model, adapter, *, dtype, training, merge, load_in_4bit, lora, gradient_checkpointing,
                  max_seq_length=None, **kw):
    """The unsloth path (CUDA only). unsloth is imported first so it can patch transformers/TRL before they load."""
    import unsloth  # noqa: F401  (must precede transformers/trl; see the module docstring)
    from unsloth import FastVisionModel

    torch_dtype = None if dtype == "auto" else _resolve_dtype(dtype)
    if max_seq_length is not None:
        # Unsloth's default is 2048 tokens (and vLLM's max_model_len with it): too short for a photo's tokens plus a
        # 1024-token completion, so the caller derives it from the recipe.
        kw["max_seq_length"] = int(max_seq_length)
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
                target_modules=_unsloth_target_modules(lora["target_modules"]),
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
# Adapters and sequence budgets (what vLLM and unsloth must be told up front)

# vLLM's LoRAConfig.max_lora_rank is a closed set (vllm/config/lora.py, MaxLoRARanks); its default is 16.
VLLM_LORA_RANKS = (1, 8, 16, 32, 64, 128, 256, 320, 512)


def read_adapter_config(adapter: str | os.PathLike) -> dict:
    """A saved PEFT adapter's `adapter_config.json` (rank, alpha, targets, base model)."""
    import json

    path = Path(adapter) / "adapter_config.json"
    if not path.is_file():
        raise FileNotFoundError(f"{adapter} is not a PEFT adapter directory (no adapter_config.json)")
    return json.loads(path.read_text(encoding="utf-8"))


def adapter_rank(adapter: str | os.PathLike) -> int:
    """The largest LoRA rank in a saved adapter: its `r`, or a larger per-module `rank_pattern` entry."""
    cfg = read_adapter_config(adapter)
    ranks = [int(cfg.get("r") or 0), *(int(v) for v in (cfg.get("rank_pattern") or {}).values())]
    if max(ranks) <= 0:
        raise ValueError(f"adapter {adapter} has no LoRA rank in its adapter_config.json")
    return max(ranks)


def adapter_targets_vision(adapter: str | os.PathLike) -> bool:
    """Whether a saved adapter puts LoRA on the vision tower (`visual.` modules), which vLLM cannot serve."""
    targets = read_adapter_config(adapter).get("target_modules") or []
    text = targets if isinstance(targets, str) else " ".join(targets)
    return "visual" in text


def vllm_lora_rank(rank: int) -> int:
    """The smallest `max_lora_rank` vLLM accepts that holds a LoRA of `rank`."""
    for allowed in VLLM_LORA_RANKS:
        if rank <= allowed:
            return allowed
    raise ValueError(f"LoRA rank {rank} is above vLLM's largest max_lora_rank ({VLLM_LORA_RANKS[-1]})")


def max_image_tokens(processor) -> int:
    """The most tokens one image can become: the image processor's pixel cap over one merged patch's pixels.

    Qwen2-VL-style processors resize so that height x width <= max_pixels, in multiples of patch_size x merge_size,
    and emit one token per merged patch.
    """
    ip = getattr(processor, "image_processor", processor)
    size = getattr(ip, "size", None) or {}
    # transformers 5 resizes by size["longest_edge"]; older releases kept the budget in `max_pixels`.
    max_pixels = size.get("longest_edge") or getattr(ip, "max_pixels", None)
    patch, merge = getattr(ip, "patch_size", None), getattr(ip, "merge_size", None)
    if not (max_pixels and patch and merge):
        raise ValueError(f"{type(ip).__name__} has no max_pixels / patch_size / merge_size: cannot bound its image "
                         "tokens (a Qwen2-VL-style image processor is expected)")
    return int(max_pixels) // int(patch * merge) ** 2


def cap_image_pixels(processor, max_pixels: int | None):
    """Cap the processor's pixel budget per image at `max_pixels` (None: leave the processor's own); returns it."""
    if max_pixels is None:
        return processor
    ip = processor.image_processor
    size = dict(getattr(ip, "size", None) or {})
    size["longest_edge"] = max_pixels
    size["shortest_edge"] = min(size.get("shortest_edge", max_pixels), max_pixels)
    ip.size = size
    for attr, key in (("max_pixels", "longest_edge"), ("min_pixels", "shortest_edge")):
        if hasattr(ip, attr):
            setattr(ip, attr, size[key])
    return processor


def recipe_max_seq_length(processor, prompts: Sequence[str], max_completion_length: int,
                          images_per_prompt: int = 1) -> int:
    """The longest sequence a GRPO/SFT recipe can produce: the longest chat prompt as TRL renders it (user turn with
    its images, generation header), each image at its largest token count, plus `max_completion_length`."""
    if not prompts:
        raise ValueError("recipe_max_seq_length needs at least one prompt")
    tok = getattr(processor, "tokenizer", processor)
    longest = 0
    for prompt in dict.fromkeys(prompts):
        content = [{"type": "image"}] * images_per_prompt + [{"type": "text", "text": prompt}]
        text = processor.apply_chat_template([{"role": "user", "content": content}], add_generation_prompt=True,
                                             tokenize=False)
        longest = max(longest, len(tok(text, add_special_tokens=False)["input_ids"]))
    # Each image placeholder token is replaced by the image's tokens.
    return longest + images_per_prompt * (max_image_tokens(processor) - 1) + int(max_completion_length)


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
