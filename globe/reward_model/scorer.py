"""Scoring (image, reasoning) pairs with the reward model in this process, and the error accounting every scorer
shares (`Scorer`: failures counted in `stats`, then NaN, the neutral 0.5 or an error, by `on_error` and the budget).

`LocalizabilityScorer` loads its own copy of the base model and adapter, or rides on the policy's `PeftModel` as a
second named adapter (one copy of the base weights), switched on only while it scores.
"""

from __future__ import annotations

import json
import logging
import os
import threading
import time
from collections.abc import Sequence
from contextlib import contextmanager
from pathlib import Path
from typing import Any

from globe.answer import to_text
from globe.images import fit_image, load_image
from globe.reward_model.config import NEUTRAL, SETTINGS_FILE, RewardModelError
from globe.reward_model.readout import (
    clean_reasoning,
    input_text,
    reward_messages,
    reward_user_text,
    top5_exact_probability,
    yes_no_probabilities,
    yes_no_token_ids,
)

log = logging.getLogger(__name__)


class Scorer:
    """Error accounting shared by the in-process and endpoint scorers."""

    def __init__(self, on_error: str = "nan", error_budget: int | None = 0):
        if on_error not in ("nan", "neutral", "raise"):
            raise ValueError(f"on_error must be 'nan', 'neutral' or 'raise', got {on_error!r}")
        if error_budget is not None and error_budget < 0:
            raise ValueError("error_budget must be >= 0 or None (unlimited)")
        self.on_error = on_error
        self.error_budget = error_budget
        self._stats_lock = threading.Lock()
        self.stats: dict[str, Any] = {"items": 0, "scored": 0, "errors": 0, "errors_by_kind": {}, "last_error": None,
                                      "seconds": 0.0}

    def _count(self, key: str, n: float = 1) -> None:
        with self._stats_lock:
            self.stats[key] = self.stats.get(key, 0) + n

    def _fail(self, kind: str, message: str) -> float:
        """Count and log one failed item; NaN, or RewardModelError when told to raise or past the budget."""
        with self._stats_lock:
            self.stats["errors"] += 1
            by_kind = self.stats["errors_by_kind"]
            by_kind[kind] = by_kind.get(kind, 0) + 1
            self.stats["last_error"] = f"{kind}: {message}"[:500]
            errors = self.stats["errors"]
        log.warning("%s: item failed (%s): %s [%d failed so far]", type(self).__name__, kind, message[:300], errors)
        if self.on_error == "raise":
            raise RewardModelError(f"{type(self).__name__}: {kind}: {message}")
        if self.error_budget is not None and errors > self.error_budget:
            raise RewardModelError(
                f"{type(self).__name__}: {errors} items failed, over the error budget of {self.error_budget} "
                f"(last: {kind}: {message[:300]}); stats: {self.stats}"
            )
        return NEUTRAL if self.on_error == "neutral" else float("nan")

    def score(self, images: Sequence[Any], reasonings: Sequence[Any]) -> list[float]:
        """P(yes) / (P(yes) + P(no)) in [0, 1] per (image, reasoning); NaN or 0.5 for a failed item (see `on_error`)."""
        images, reasonings = list(images), list(reasonings)
        if len(images) != len(reasonings):
            raise ValueError(f"got {len(images)} images and {len(reasonings)} reasonings")
        start = time.perf_counter()
        try:
            return self._score(images, reasonings)
        finally:
            with self._stats_lock:
                self.stats["items"] += len(images)
                self.stats["seconds"] += time.perf_counter() - start

    __call__ = score

    def _score(self, images: list, reasonings: list) -> list[float]:
        raise NotImplementedError


class LocalizabilityScorer(Scorer):
    """Batched in-process reward model.

    `model` is a base model id/path (loaded here with `adapter` on top, by `globe.models.load_vlm`), or an already
    loaded model with `processor`. Given a loaded `peft.PeftModel` (the policy) and an `adapter` path, the adapter is
    added to it as a second named adapter and switched on only while scoring (`set_adapter`), so the policy and the
    reward model share one copy of the base weights; the policy's active adapter and its trainable flags are restored
    afterwards. A loaded model that is not a PeftModel cannot share weights this way (injecting LoRA layers would modify
    the policy itself): load a separate copy by passing the base model path instead. `model` may also be a reward-model
    directory alone (what `train_reward_model` writes): its base model is read from the directory's settings.

    `input_format` and `readout` (see `globe.reward_model.readout`) default to what the adapter was trained with (its
    settings file), else the project's ("project", "vocabulary"). `input_text` says what `score` expects per item:
    the reasoning (project format) or the whole completion (official format).

    TRL's GRPOTrainer takes its reward functions before it builds anything, so to share weights pass it a policy you
    wrapped yourself (`load_vlm(..., training=True, lora=...)` gives a PeftModel) and build this scorer on that same
    object. Rewards run between generation and the loss, never during a policy forward pass, so switching adapters
    there is safe. (Under DeepSpeed ZeRO-3 / FSDP the weights are sharded: load a separate copy or use an endpoint.)
    """

    def __init__(
        self,
        model: Any,
        adapter: str | os.PathLike | None = None,
        *,
        processor: Any = None,
        adapter_name: str = "reward_model",
        batch_size: int = 8,
        max_pixels: int | None = None,
        max_reasoning_chars: int | None = None,
        dtype: Any = "auto",
        device: str = "auto",
        backend: str = "auto",
        on_error: str = "nan",
        error_budget: int | None = None,
        input_format: str | None = None,
        readout: str | None = None,
    ):
        super().__init__(on_error=on_error, error_budget=error_budget)
        if adapter is None and isinstance(model, (str, os.PathLike)) and (Path(model) / "adapter_config.json").exists():
            adapter, model = model, _adapter_base(model)  # a reward-model dir alone: its base model from its settings
        settings = _read_settings(adapter)
        self.input_format = input_format or settings.get("input_format") or "project"
        self.input_text = input_text(self.input_format)
        self.readout = readout or settings.get("readout") or "vocabulary"
        if self.readout not in ("vocabulary", "top5"):
            raise ValueError(f"readout must be 'vocabulary' or 'top5', got {self.readout!r}")
        self.max_pixels = max_pixels if max_pixels is not None else settings.get("max_pixels")
        self.max_reasoning_chars = max_reasoning_chars or settings.get("max_reasoning_chars") or 4000
        self.batch_size = batch_size
        self.adapter_name: str | None = None
        if isinstance(model, (str, os.PathLike)):
            from globe.models import load_vlm

            self.model, self.processor = load_vlm(model, adapter, dtype=dtype, device=device, backend=backend)
        else:
            if processor is None:
                raise ValueError("pass the processor together with an already loaded model")
            self.model, self.processor = model, processor
            if adapter is not None:
                if not hasattr(model, "load_adapter") or not hasattr(model, "peft_config"):
                    raise TypeError(
                        f"sharing base weights needs a peft.PeftModel policy, got {type(model).__name__}; pass the "
                        "base model path instead to load a separate copy of the reward model"
                    )
                if adapter_name in model.peft_config:
                    raise ValueError(f"the model already has an adapter named {adapter_name!r}")
                was_training = model.training
                model.load_adapter(str(adapter), adapter_name=adapter_name, is_trainable=False)
                model.train(was_training)  # load_adapter switches the whole model to eval mode
                self.adapter_name = adapter_name
        self.tokenizer = getattr(self.processor, "tokenizer", self.processor)
        self.yes_ids, self.no_ids = yes_no_token_ids(self.tokenizer)
        self._special = [t for t in self.tokenizer.all_special_tokens if t] + list(
            getattr(self.tokenizer, "additional_special_tokens", None) or [])
        self._lock = threading.Lock()  # one forward pass at a time (the server calls from several threads)
        self.stats.update(yes_no_mass=0.0)  # running sum of P(yes) + P(no): how much of the first token is yes/no

    # -- public API

    def score_prompts(self, images: Sequence[Any], prompts: Sequence[str]) -> list[float]:
        """Like `score`, for full user-turn texts (the server receives the prompt, not the reasoning)."""
        images, prompts = list(images), list(prompts)
        out = [float("nan")] * len(images)
        for i, result in enumerate(self.logprobs(images, prompts)):
            if isinstance(result, Exception):
                out[i] = self._fail(_error_kind(result), str(result))
                continue
            self._count("yes_no_mass", float(result[self.yes_ids].exp().sum() + result[self.no_ids].exp().sum()))
            if self.readout == "top5":
                p, both = top5_exact_probability(result, self.tokenizer)
                if not both:
                    self._count("one_sided")
                    if p == 0.0:
                        self._count("neither")  # neither yes nor no in the top 5: GLOBE's score, 0
            else:
                p = float(yes_no_probabilities(result, self.yes_ids, self.no_ids))
            self._count("scored")
            out[i] = p
        return out

    def _score(self, images: list, reasonings: list) -> list[float]:
        prompts = []
        for r in reasonings:
            text = clean_reasoning(r, self.max_reasoning_chars, self._special)
            if len(to_text(r)) > self.max_reasoning_chars:
                self._count("truncated")
            prompts.append(reward_user_text(text, self.input_format))
        return self.score_prompts(images, prompts)

    def logprobs(self, images: Sequence[Any], prompts: Sequence[str]) -> list:
        """First-token log-probabilities (a float CPU tensor over the vocabulary) per item, or the item's exception.

        Batches of `batch_size`; a batch that fails is retried item by item so one bad input cannot sink the others.
        """
        items: list = []
        for image, prompt in zip(images, prompts):
            try:
                items.append((fit_image(load_image(image), self.max_pixels),
                              clean_reasoning(prompt, 10 * self.max_reasoning_chars, self._special)))
            except Exception as e:  # noqa: BLE001 - a bad input is this item's error, reported to the caller
                items.append(_InputError(f"{type(e).__name__}: {e}"))
        results: list = list(items)
        todo = [i for i, it in enumerate(items) if not isinstance(it, Exception)]
        for start in range(0, len(todo), self.batch_size):
            chunk = todo[start:start + self.batch_size]
            try:
                rows = self._forward([items[i] for i in chunk])
            except Exception as e:  # noqa: BLE001
                if len(chunk) == 1:
                    results[chunk[0]] = _ModelError(f"{type(e).__name__}: {e}")
                    continue
                rows = []
                for i in chunk:  # isolate the failing item(s)
                    try:
                        rows += self._forward([items[i]])
                    except Exception as e1:  # noqa: BLE001
                        rows.append(_ModelError(f"{type(e1).__name__}: {e1}"))
            for i, row in zip(chunk, rows):
                results[i] = row
        return results

    # -- internals

    @contextmanager
    def _active(self):
        """Switch the reward-model adapter on (and the model to eval mode) for the duration of a forward pass."""
        model = self.model
        was_training = model.training
        if self.adapter_name is None:
            model.eval()
            try:
                yield
            finally:
                model.train(was_training)
            return
        previous = model.active_adapter
        prev_trainable = any(p.requires_grad for n, p in model.named_parameters() if f".{previous}." in n)
        model.set_adapter(self.adapter_name, inference_mode=True)
        model.eval()
        try:
            yield
        finally:
            model.set_adapter(previous, inference_mode=not prev_trainable)
            model.train(was_training)

    def _forward(self, items: list[tuple]) -> list:
        import torch

        texts = [
            self.processor.apply_chat_template(reward_messages(p, self.input_format), add_generation_prompt=True,
                                               tokenize=False)
            for _, p in items
        ]
        images = [im for im, _ in items]
        device = next(self.model.parameters()).device
        inputs = self.processor(text=texts, images=images, padding=True, padding_side="left", return_tensors="pt")
        inputs = inputs.to(device)
        with self._lock, self._active(), torch.inference_mode():
            logits = self.model(**inputs, logits_to_keep=1).logits[:, -1, :]
        logprobs = torch.log_softmax(logits.float(), dim=-1).cpu()
        rows = []
        for row in logprobs:
            rows.append(row if torch.isfinite(row).all() else _ModelError("non-finite logits"))
        return rows


class _InputError(ValueError):
    pass


class _ModelError(RuntimeError):
    pass


def _error_kind(e: Exception) -> str:
    return "bad_input" if isinstance(e, _InputError) else "model_error"


def _adapter_base(adapter) -> str:
    """The base model an adapter directory was trained on (our settings file, else PEFT's adapter config)."""
    base = _read_settings(adapter).get("base_model")
    if not base:
        base = json.loads((Path(adapter) / "adapter_config.json").read_text()).get("base_model_name_or_path")
    if not base:
        raise ValueError(f"{adapter}: cannot tell which base model this adapter belongs to; pass model= explicitly")
    return base


def _read_settings(adapter) -> dict:
    if adapter is None:
        return {}
    p = Path(adapter) / SETTINGS_FILE
    return json.loads(p.read_text()) if p.is_file() else {}
