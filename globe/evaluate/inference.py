"""Resumable batched inference: one completion per benchmark image, cached per batch (`globe.cache`), through
`globe.models.generate` or the vLLM engine."""

from __future__ import annotations

import logging
import os
import time
from collections.abc import Callable
from pathlib import Path
from typing import TYPE_CHECKING

import pandas as pd

from globe.images import load_image

if TYPE_CHECKING:  # pragma: no cover
    from globe.evaluate import EvalParams, ModelEntry

log = logging.getLogger(__name__)


class _VLLMGenerator:
    """vLLM offline inference (GPU machines with `pip install vllm`): same prompts, one engine for all batches."""

    def __init__(self, model: str, adapter: str | None, cfg: EvalParams):
        try:
            from vllm import LLM, SamplingParams
        except ImportError as e:
            raise RuntimeError("eval.backend is 'vllm' but vllm is not installed: pip install vllm (Linux + CUDA), "
                               "or set eval.backend: transformers") from e
        from globe.models import adapter_rank, load_processor, vllm_lora_rank

        self.processor = load_processor(model)
        lora_kw: dict = {}
        if adapter is not None:
            # vLLM allocates LoRA slots of max_lora_rank (default 16) up front and rejects a larger adapter (the
            # paper's are r64): size them from the adapter itself.
            lora_kw = {"enable_lora": True, "max_lora_rank": vllm_lora_rank(adapter_rank(adapter))}
        self.llm = LLM(model=model, seed=cfg.seed, limit_mm_per_prompt={"image": 1}, **lora_kw)
        self.lora = None
        if adapter is not None:
            from vllm.lora.request import LoRARequest

            self.lora = LoRARequest("adapter", 1, str(adapter))
        self.params = SamplingParams(max_tokens=cfg.max_new_tokens, temperature=cfg.temperature, top_p=cfg.top_p,
                                     seed=cfg.seed, frequency_penalty=cfg.frequency_penalty,
                                     presence_penalty=cfg.presence_penalty)

    def __call__(self, images: list, prompts: list[str]) -> list[str]:
        from globe.models import chat_texts

        texts = chat_texts(self.processor, prompts, [True] * len(prompts))
        reqs = [{"prompt": t, "multi_modal_data": {"image": im}} for t, im in zip(texts, images)]
        outs = self.llm.generate(reqs, self.params, lora_request=self.lora, use_tqdm=False)
        return [o.outputs[0].text for o in outs]


def _generator(entry: ModelEntry, cfg: EvalParams) -> Callable[[list, list[str], int], list[str]]:
    model = entry.model or cfg.base_model
    if not model:
        raise ValueError(f"eval model {entry.name!r}: no model given and common.base_model is empty")
    if entry.adapter is not None and not Path(entry.adapter).exists():
        raise FileNotFoundError(f"eval model {entry.name!r}: adapter {entry.adapter!r} not found; train it first "
                                "(notebooks 03/04) or fix its `adapter` in eval.models")
    if cfg.backend == "vllm":
        gen = _VLLMGenerator(str(model), entry.adapter, cfg)
        return lambda images, prompts, seed: gen(images, prompts)
    from globe.models import generate, load_vlm

    vlm, processor = load_vlm(model, entry.adapter, dtype=cfg.dtype, device=cfg.device, training=False,
                              backend=cfg.backend)

    def run(images: list, prompts: list[str], seed: int) -> list[str]:
        return generate(vlm, processor, images, prompts, max_new_tokens=cfg.max_new_tokens,
                        temperature=cfg.temperature, top_p=cfg.top_p, batch_size=cfg.batch_size, seed=seed,
                        frequency_penalty=cfg.frequency_penalty, presence_penalty=cfg.presence_penalty)

    return run


def completion_key(entry: ModelEntry, cfg: EvalParams, image_id: str) -> str:
    """The cache key of one completion: the image, and everything that makes completions comparable -- the model and
    adapter (with digests of their local files: retrained weights are not the old ones), the prompt text, the image
    size the model sees, the backend and the decoding settings."""
    from globe.cache import cache_key, files_digest

    model = entry.model or cfg.base_model
    spec = dict(model=model, model_digest=files_digest(model), adapter=entry.adapter,
                adapter_digest=files_digest(entry.adapter), prompt=entry.prompt_text(), backend=cfg.backend,
                max_new_tokens=cfg.max_new_tokens, temperature=cfg.temperature, top_p=cfg.top_p, seed=cfg.seed,
                image_max_side=cfg.image_max_side)
    # Penalties enter the key only when set, so the keys of runs without them (every cache so far) stay valid.
    for name in ("frequency_penalty", "presence_penalty"):
        if getattr(cfg, name):
            spec[name] = getattr(cfg, name)
    return cache_key("eval", str(image_id), spec)


def predict(bench: pd.DataFrame, entry: ModelEntry, cfg: EvalParams, cache_path: str | os.PathLike,
            progress: bool = True) -> pd.DataFrame:
    """Completions (`id, raw, error`) for every benchmark image, resuming from `cache_path` (JSONL, `globe.cache`).

    Only images without a cached completion are generated; the model is loaded only when some are. An image that
    cannot be opened is recorded with its error (counted as unresolved, not retried).
    """
    from globe.cache import JsonlCache

    cache = JsonlCache(cache_path)
    keys = {i: completion_key(entry, cfg, i) for i in bench["id"]}
    todo = bench[[keys[i] not in cache for i in bench["id"]]]
    gen_s = 0.0
    if len(todo):
        from globe.progress import Progress, rate, seconds

        run = _generator(entry, cfg)
        prompt = entry.prompt_text()
        t0, n_new = time.perf_counter(), 0
        bar = Progress(f"eval  {Path(cache_path).parent.name}/{entry.name}", len(bench), done=len(bench) - len(todo),
                       enabled=progress)
        for start in range(0, len(todo), cfg.batch_size):
            batch = todo.iloc[start:start + cfg.batch_size]
            images, ok_ids, records = [], [], []
            for i, img in zip(batch["id"], batch["image"]):
                try:
                    images.append(load_image(img, max_side=cfg.image_max_side))
                    ok_ids.append(i)
                except Exception as e:  # a broken file is recorded and counted, never silently dropped
                    records.append({"key": keys[i], "id": i, "raw": None, "error": f"{type(e).__name__}: {e}"})
            if images:
                # Seeded per batch position so a sampled run repeats exactly from scratch.
                texts = run(images, [prompt] * len(images), cfg.seed + start)
                records += [{"key": keys[i], "id": i, "raw": t, "error": None} for i, t in zip(ok_ids, texts)]
            cache.append(records)
            n_new += len(records)
            bar.update(len(records))
        gen_s = time.perf_counter() - t0
        log.info("%s: %d images %s %s (model loading excluded)", entry.name, n_new, seconds(gen_s),
                 rate(n_new / max(gen_s, 1e-9), "images/s"))
    recs = [cache.get(keys[i]) for i in bench["id"]]
    out = pd.DataFrame({"id": [r["id"] for r in recs], "raw": [r["raw"] for r in recs],
                        "error": [r.get("error") for r in recs]})
    # Throughput of this call (generation and image decoding; model loading excluded), for benchmark scripts.
    out.attrs.update(n_generated=len(todo), generate_s=gen_s)
    return out
