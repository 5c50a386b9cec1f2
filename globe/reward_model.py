"""The localizability reward model: train it, score with it in process, serve it, and call a served one.

GLOBE's localizability reward asks a reward model "is this image visually locatable, given this reasoning?" and reads
P(yes) / (P(yes) + P(no)) from the distribution of the first generated token, summing every vocabulary token that
decodes to a case variant of "yes" / "no" with or without a leading space. The paper's reward model (a LoRA on the
VLM) and its data are unreleased and its code calls a hard-coded server that silently returns 0 on any error; here:

- `train_reward_model(cfg)` fits a LoRA (PEFT, via `globe.models.load_vlm`) with TRL's `SFTTrainer` on the
  localizability labels written by distillation: a conversational prompt-completion dataset (user turn = image +
  `REWARD_MODEL_PROMPT`, assistant turn = "yes" / "no"), loss on the assistant turn only. It holds out a seeded split
  (grouped by image id, stratified by label) and writes accuracy, ROC AUC, expected calibration error and the class
  balance to a JSON file.
- `LocalizabilityScorer` scores (image, reasoning) pairs in batches in this process, either from its own copy of the
  base model + adapter, or as a second named adapter on the policy's `PeftModel` (one copy of the base weights).
- `serve(scorer, ...)` puts a scorer behind an OpenAI-compatible `POST /v1/chat/completions` returning first-token
  `logprobs` / `top_logprobs` (`globe serve-reward-model`), and `EndpointScorer` calls such an endpoint as GLOBE's
  setup does, with timeouts, retries with backoff and an error budget.

Failures are never silently turned into a score. A scorer counts each failed item in `scorer.stats` (`errors`,
`errors_by_kind`, `last_error`) and logs it, then, by `on_error`: "nan" returns NaN for it, "neutral" returns the
neutral score 0.5 (for a GRPO reward: the item neither pushes towards nor away from its reasoning), "raise" raises
`RewardModelError` at once. Past `error_budget` failed items it raises `RewardModelError` whatever `on_error` says.
For GRPO use `on_error="neutral"` with a budget (the localizability reward in globe.rewards rejects NaN): a few bad
requests cost a neutral reward each, counted and logged, and a dead server stops the run with a clear error.
"""

from __future__ import annotations

import base64
import hmac
import io
import json
import logging
import math
import os
import queue
import random
import threading
import time
import uuid
from collections import Counter
from collections.abc import Mapping, Sequence
from concurrent.futures import Future, ThreadPoolExecutor
from contextlib import contextmanager
from dataclasses import asdict, dataclass, field, fields
from pathlib import Path
from typing import Any

from globe.answer import to_text
from globe.images import MIN_SIDE, fit_image, load_image, to_data_url
from globe.prompts import PROMPT_VERSION, REWARD_MODEL_PROMPT, build_messages

log = logging.getLogger(__name__)

YES, NO = "yes", "no"
DEFAULT_API_KEY_ENV = "GLOBE_RM_API_KEY"
DEFAULT_MODEL_NAME = "globe-reward-model"
NEUTRAL = 0.5  # the score a failed item gets with on_error="neutral"
SETTINGS_FILE = "globe_reward_model.json"  # written next to the adapter: what the scorer must do the same way


class RewardModelError(RuntimeError):
    """A scorer was told to raise on a failed item, or more items failed than its error budget allows."""


# ---------------------------------------------------------------------------------------------------------------------
# Configuration


@dataclass
class RewardModelConfig:
    """Reward-model training settings: params.yaml's `sft.reward_model` group (keys are exactly these fields)."""

    labels: str = "data/mp16_reason/localizability"  # datasets Dataset on disk: id, image, reasoning, label (0/1), ...
    base_model: str | None = None  # None: the caller fills in common.base_model
    out: str = "models/reward_model"  # adapter (+ processor, settings) directory
    metrics: str = "results/reward_model.json"
    steps: int = 20
    learning_rate: float = 2e-4
    batch_size: int = 4
    grad_accum: int = 1
    lora_r: int = 16
    lora_alpha: int = 32
    lora_dropout: float = 0.05
    lora_target_modules: list[str] = field(
        default_factory=lambda: ["q_proj", "k_proj", "v_proj", "o_proj", "gate_proj", "up_proj", "down_proj"]
    )
    eval_fraction: float = 0.2
    balance: str = "none"  # none | oversample (duplicate minority-class training rows, seeded)
    max_pixels: int | None = 200704  # 28*28*256: images are downscaled to at most this many pixels (None: as given)
    max_reasoning_chars: int = 4000  # longer reasoning is cut (the head is kept)
    eval_batch_size: int = 8
    save_steps: int = 100  # checkpoint interval; a killed run resumes from the last checkpoint
    gradient_checkpointing: bool = False
    dtype: str = "auto"
    backend: str = "auto"  # auto | transformers | unsloth (globe.models.select_backend)
    seed: int = 0

    @classmethod
    def from_params(cls, params: Mapping[str, Any] | None, **fallbacks: Any) -> RewardModelConfig:
        """Build from a params mapping; unknown keys are an error. `fallbacks` fill keys that are absent or None
        (e.g. `base_model=common_base_model, seed=common_seed`)."""
        params = dict(params or {})
        known = {f.name for f in fields(cls)}
        unknown = sorted(set(params) - known)
        if unknown:
            raise KeyError(f"unknown reward_model parameter(s) {unknown}; known: {sorted(known)}")
        for key, value in fallbacks.items():
            if key not in known:
                raise KeyError(f"unknown reward_model fallback {key!r}")
            if params.get(key) is None:
                params[key] = value
        cfg = cls(**params)
        cfg.validate()
        return cfg

    def validate(self) -> None:
        if not self.base_model:
            raise ValueError("reward_model.base_model is not set (and no common.base_model was passed as a fallback)")
        if not 0 < self.eval_fraction < 1:
            raise ValueError(f"eval_fraction must be in (0, 1), got {self.eval_fraction}")
        if self.balance not in ("none", "oversample"):
            raise ValueError(f"balance must be 'none' or 'oversample', got {self.balance!r}")
        if min(self.steps, self.batch_size, self.grad_accum, self.eval_batch_size, self.save_steps) < 1:
            raise ValueError("steps, batch_size, grad_accum, eval_batch_size and save_steps must be >= 1")
        if self.max_pixels is not None and self.max_pixels < MIN_SIDE * MIN_SIDE:
            raise ValueError(f"max_pixels must be >= {MIN_SIDE * MIN_SIDE} (or null), got {self.max_pixels}")
        if self.max_reasoning_chars < 1:
            raise ValueError("max_reasoning_chars must be >= 1")


# ---------------------------------------------------------------------------------------------------------------------
# The yes/no readout


def yes_no_token_ids(tokenizer) -> tuple[list[int], list[int]]:
    """Ids of every vocabulary token that decodes to a case variant of "yes" / "no", with or without leading spaces."""
    tok = getattr(tokenizer, "tokenizer", tokenizer)
    yes, no = [], []
    for piece, idx in tok.get_vocab().items():
        low = piece.lower()
        if "yes" not in low and "no" not in low:  # cheap filter before decoding
            continue
        word = tok.decode([idx]).lstrip(" ").lower()
        if word == YES:
            yes.append(idx)
        elif word == NO:
            no.append(idx)
    if not yes or not no:
        raise ValueError(f"the tokenizer has no single token for yes ({yes}) or no ({no}); cannot read P(yes)")
    return sorted(yes), sorted(no)


def yes_no_probabilities(logits, yes_ids: Sequence[int], no_ids: Sequence[int]):
    """P(yes) / (P(yes) + P(no)) for each row of `logits` (..., vocab), as a float64 tensor (...)."""
    import torch

    logits = logits.double()  # the yes/no slices are tiny; double keeps the readout exact to ~1e-15
    lse_yes = torch.logsumexp(logits[..., list(yes_ids)], dim=-1)
    lse_no = torch.logsumexp(logits[..., list(no_ids)], dim=-1)
    # sum_yes / (sum_yes + sum_no) = sigmoid(logsumexp(yes) - logsumexp(no)); the softmax normaliser cancels.
    return torch.sigmoid(lse_yes - lse_no)


def yes_no_probability(logits_last, yes_ids: Sequence[int], no_ids: Sequence[int]) -> float:
    """P(yes) / (P(yes) + P(no)) from one next-token logit vector (vocab,)."""
    value = float(yes_no_probabilities(logits_last.reshape(-1), yes_ids, no_ids))
    if not math.isfinite(value):
        raise ValueError("non-finite logits: cannot read P(yes)")
    return value


# ---------------------------------------------------------------------------------------------------------------------
# Inputs


def clean_reasoning(reasoning: Any, max_chars: int, special_tokens: Sequence[str] = ()) -> str:
    """Reasoning as bounded plain text: None -> "", messages/bytes -> text, special tokens removed, head kept."""
    text = to_text(reasoning).replace("\x00", "")
    for t in special_tokens:  # a literal <|image_pad|> in the text would desynchronise the processor's image tokens
        if t in text:
            text = text.replace(t, "")
    return text[:max_chars]


def reward_prompt(reasoning: str) -> str:
    return REWARD_MODEL_PROMPT.format(reasoning=reasoning)


# ---------------------------------------------------------------------------------------------------------------------
# Scorers


class _Scorer:
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


class LocalizabilityScorer(_Scorer):
    """Batched in-process reward model.

    `model` is a base model id/path (loaded here with `adapter` on top, by `globe.models.load_vlm`), or an already
    loaded model with `processor`. Given a loaded `peft.PeftModel` (the policy) and an `adapter` path, the adapter is
    added to it as a second named adapter and switched on only while scoring (`set_adapter`), so the policy and the
    reward model share one copy of the base weights; the policy's active adapter and its trainable flags are restored
    afterwards. A loaded model that is not a PeftModel cannot share weights this way (injecting LoRA layers would modify
    the policy itself): load a separate copy by passing the base model path instead. `model` may also be a reward-model
    directory alone (what `train_reward_model` writes): its base model is read from the directory's settings.

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
    ):
        super().__init__(on_error=on_error, error_budget=error_budget)
        if adapter is None and isinstance(model, (str, os.PathLike)) and (Path(model) / "adapter_config.json").exists():
            adapter, model = model, _adapter_base(model)  # a reward-model dir alone: its base model from its settings
        settings = _read_settings(adapter)
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
        """Like `score`, for full prompt texts (the server receives the prompt, not the reasoning)."""
        images, prompts = list(images), list(prompts)
        out = [float("nan")] * len(images)
        for i, result in enumerate(self.logprobs(images, prompts)):
            if isinstance(result, Exception):
                out[i] = self._fail(_error_kind(result), str(result))
            else:
                p = float(yes_no_probabilities(result, self.yes_ids, self.no_ids))
                self._count("yes_no_mass", float(result[self.yes_ids].exp().sum() + result[self.no_ids].exp().sum()))
                self._count("scored")
                out[i] = p
        return out

    def _score(self, images: list, reasonings: list) -> list[float]:
        prompts = []
        for r in reasonings:
            text = clean_reasoning(r, self.max_reasoning_chars, self._special)
            if len(to_text(r)) > self.max_reasoning_chars:
                self._count("truncated")
            prompts.append(reward_prompt(text))
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
            self.processor.apply_chat_template(build_messages(p, with_image=True), add_generation_prompt=True,
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


# ---------------------------------------------------------------------------------------------------------------------
# Client for an OpenAI-compatible endpoint


def yes_no_from_top_logprobs(top_logprobs: Sequence[Mapping[str, Any]]) -> tuple[float, bool]:
    """P(yes) / (P(yes) + P(no)) from an OpenAI `top_logprobs` list, and whether both yes and no were among them.

    A variant absent from the top k counts as probability 0 (GLOBE's readout), so with only one of the two present
    the value is 0 or 1: `EndpointScorer` counts those items (`stats["one_sided"]`); raise `top_logprobs` if many.
    """
    p_yes = p_no = 0.0
    for entry in top_logprobs:
        word = str(entry.get("token", "")).lstrip(" ").lower()
        if word == YES:
            p_yes += math.exp(float(entry["logprob"]))
        elif word == NO:
            p_no += math.exp(float(entry["logprob"]))
    if p_yes + p_no <= 0.0:
        raise NoYesNoError(f"neither yes nor no among the {len(top_logprobs)} top logprobs")
    return p_yes / (p_yes + p_no), p_yes > 0 and p_no > 0


class NoYesNoError(ValueError):
    """An answer's top logprobs hold no yes/no token: no score can be read (raise `top_logprobs`)."""


class _RetryableError(RuntimeError):
    def __init__(self, kind: str, message: str, retry_after: float | None = None):
        super().__init__(message)
        self.kind, self.retry_after = kind, retry_after


class EndpointScorer(_Scorer):
    """The reward model behind an OpenAI-compatible chat-completions endpoint (ours, vLLM, ...), GLOBE-style.

    Each item is one request (image as a base64 data URL + `REWARD_MODEL_PROMPT`, `max_tokens=1`, `logprobs=true`,
    `top_logprobs=k`); requests run `max_workers` at a time. Timeouts, connection errors, HTTP 429 and 5xx are retried
    `retries` times with exponential backoff (`backoff * 2**attempt` seconds, or the server's Retry-After); other
    failures are not. A finally failed item is counted in `stats` and logged, and becomes NaN (or raises, see
    `on_error`); past `error_budget` failed items, `score` raises `RewardModelError`. The API key is read from the
    environment variable `api_key_env` (if set) and sent as a bearer token; it is never logged.
    """

    def __init__(
        self,
        url: str,
        model: str = DEFAULT_MODEL_NAME,
        timeout: float = 30.0,
        retries: int = 3,
        error_budget: int | None = 0,
        *,
        backoff: float = 0.5,
        on_error: str = "nan",
        top_logprobs: int = 20,
        max_workers: int = 8,
        api_key_env: str | None = DEFAULT_API_KEY_ENV,
        image_format: str = "PNG",
        max_pixels: int | None = None,
        max_reasoning_chars: int = 4000,
    ):
        import httpx

        super().__init__(on_error=on_error, error_budget=error_budget)
        if retries < 0 or timeout <= 0 or max_workers < 1 or top_logprobs < 1:
            raise ValueError("need retries >= 0, timeout > 0, max_workers >= 1, top_logprobs >= 1")
        url = url.rstrip("/")
        if not url.endswith("/chat/completions"):
            url = (url if url.endswith("/v1") else url + "/v1") + "/chat/completions"
        self.url, self.model, self.timeout, self.retries, self.backoff = url, model, timeout, retries, backoff
        self.top_logprobs, self.max_workers = top_logprobs, max_workers
        self.image_format, self.max_pixels, self.max_reasoning_chars = image_format, max_pixels, max_reasoning_chars
        headers = {"Content-Type": "application/json"}
        key = os.environ.get(api_key_env) if api_key_env else None
        if key:
            headers["Authorization"] = f"Bearer {key}"
        self._client = httpx.Client(timeout=timeout, headers=headers)
        self.stats.update(requests=0, retries=0, timeouts=0, one_sided=0)

    def __repr__(self) -> str:  # no headers: they may hold the key
        return f"EndpointScorer(url={self.url!r}, model={self.model!r}, timeout={self.timeout}, retries={self.retries})"

    def close(self) -> None:
        self._client.close()

    def _score(self, images: list, reasonings: list) -> list[float]:
        if not images:
            return []
        if self.max_workers == 1 or len(images) == 1:
            return [self._score_one(im, r) for im, r in zip(images, reasonings)]
        with ThreadPoolExecutor(min(self.max_workers, len(images))) as pool:
            futures = [pool.submit(self._score_one, im, r) for im, r in zip(images, reasonings)]
            try:
                return [f.result() for f in futures]
            except BaseException:
                for f in futures:
                    f.cancel()
                raise

    def _score_one(self, image: Any, reasoning: Any) -> float:
        try:
            text = clean_reasoning(reasoning, self.max_reasoning_chars)
            url = to_data_url(image, self.image_format, max_pixels=self.max_pixels)
            payload = {
                "model": self.model,
                "messages": [{"role": "user", "content": [
                    {"type": "image_url", "image_url": {"url": url}},
                    {"type": "text", "text": reward_prompt(text)},
                ]}],
                "max_tokens": 1,
                "temperature": 0.0,
                "logprobs": True,
                "top_logprobs": self.top_logprobs,
            }
        except Exception as e:  # noqa: BLE001
            return self._fail("bad_input", f"{type(e).__name__}: {e}")
        last = ""
        kind = "request_failed"
        for attempt in range(self.retries + 1):
            if attempt:
                self._count("retries")
            try:
                value = self._request(payload)
                self._count("scored")
                return value
            except _RetryableError as e:
                last, kind = str(e), e.kind
                delay = e.retry_after or self.backoff * 2 ** attempt
                if attempt < self.retries:
                    log.info("reward-model request failed (%s); retry %d/%d in %.2fs", e, attempt + 1, self.retries,
                             delay)
                    time.sleep(delay)
            except Exception as e:  # noqa: BLE001 - not retryable: a client error or a malformed answer
                kind = ("http_error" if isinstance(e, _HTTPError)
                        else "no_yes_no" if isinstance(e, NoYesNoError) else "bad_response")
                return self._fail(kind, str(e))
        return self._fail(kind, f"gave up after {self.retries + 1} attempts: {last}")

    def _request(self, payload: dict) -> float:
        import httpx

        self._count("requests")
        try:
            response = self._client.post(self.url, json=payload)
        except httpx.TimeoutException as e:
            self._count("timeouts")
            raise _RetryableError("timeout", f"timed out after {self.timeout}s ({type(e).__name__})") from None
        except httpx.TransportError as e:
            raise _RetryableError("connection", f"{type(e).__name__}: {e}") from None
        if response.status_code == 429 or response.status_code >= 500:
            retry_after = response.headers.get("retry-after", "")
            delay = min(float(retry_after), 60.0) if retry_after.replace(".", "", 1).isdigit() else None
            raise _RetryableError(f"http_{response.status_code}", f"HTTP {response.status_code}: {response.text[:200]}",
                                  delay)
        if response.status_code != 200:
            raise _HTTPError(f"HTTP {response.status_code}: {response.text[:300]}")
        try:
            choice = response.json()["choices"][0]
            top = choice["logprobs"]["content"][0]["top_logprobs"]
        except (ValueError, KeyError, IndexError, TypeError) as e:
            raise ValueError(
                f"response without choices[0].logprobs.content[0].top_logprobs ({type(e).__name__})") from None
        value, both = yes_no_from_top_logprobs(top)
        if not both:
            self._count("one_sided")
        return value


class _HTTPError(RuntimeError):
    pass


# ---------------------------------------------------------------------------------------------------------------------
# OpenAI-compatible server


class RewardModelServer:
    """A running `serve` server: `.url` (base, ending in /v1), `.shutdown()`. Requests are micro-batched."""

    def __init__(self, scorer: LocalizabilityScorer, host: str, port: int, *, model_name: str, api_key_env: str | None,
                 max_top_logprobs: int, batch_wait_s: float):
        from http.server import ThreadingHTTPServer

        self.scorer, self.model_name, self.max_top_logprobs = scorer, model_name, max_top_logprobs
        self.batch_wait_s = batch_wait_s
        key = os.environ.get(api_key_env) if api_key_env else None
        self._key = key or None
        self._queue: queue.Queue = queue.Queue()
        self._stop = threading.Event()
        self.stats = Counter()
        self.httpd = ThreadingHTTPServer((host, port), _make_handler(self))
        self.httpd.daemon_threads = True
        self.host, self.port = self.httpd.server_address[:2]
        self.url = f"http://{self.host}:{self.port}/v1"
        self._worker = threading.Thread(target=self._batch_loop, name="reward-model-batcher", daemon=True)
        self._worker.start()
        self._thread: threading.Thread | None = None

    def authorized(self, header: str | None) -> bool:
        if self._key is None:
            return True
        return header is not None and hmac.compare_digest(header.encode(), f"Bearer {self._key}".encode())

    def submit(self, image: Any, prompt: str) -> Future:
        fut: Future = Future()
        self._queue.put((image, prompt, fut))
        return fut

    def _batch_loop(self) -> None:
        while not self._stop.is_set():
            try:
                first = self._queue.get(timeout=0.2)
            except queue.Empty:
                continue
            batch = [first]
            deadline = time.monotonic() + self.batch_wait_s
            while len(batch) < self.scorer.batch_size:
                try:
                    batch.append(self._queue.get(timeout=max(0.0, deadline - time.monotonic())))
                except queue.Empty:
                    break
            try:
                results = self.scorer.logprobs([b[0] for b in batch], [b[1] for b in batch])
            except Exception as e:  # noqa: BLE001 - reported to every waiting request
                results = [_ModelError(f"{type(e).__name__}: {e}")] * len(batch)
            for (_, _, fut), result in zip(batch, results):
                fut.set_result(result)

    def completion(self, body: Mapping[str, Any]) -> tuple[int, dict]:
        """Answer one chat-completions request body: (HTTP status, JSON body)."""
        if not isinstance(body, Mapping):
            return 400, _error("the request body must be a JSON object")
        model = body.get("model")
        if model not in (None, self.model_name):
            return 404, _error(f"model {model!r} not found; this server serves {self.model_name!r}", "model_not_found")
        max_tokens = body.get("max_completion_tokens", body.get("max_tokens"))
        if max_tokens not in (None, 1):
            return 400, _error("this server returns the first token only: max_tokens must be 1")
        if body.get("n", 1) != 1:
            return 400, _error("n must be 1")
        want_logprobs = bool(body.get("logprobs", False))
        k = body.get("top_logprobs", 0) or 0
        if not isinstance(k, int) or not 0 <= k <= self.max_top_logprobs:
            return 400, _error(f"top_logprobs must be an integer in [0, {self.max_top_logprobs}]")
        if k and not want_logprobs:
            return 400, _error("top_logprobs requires logprobs: true")
        try:
            image, prompt = _parse_messages(body.get("messages"))
            image = load_image(image)
        except Exception as e:  # noqa: BLE001
            return 400, _error(f"{type(e).__name__}: {e}")
        result = self.submit(image, prompt).result()
        if isinstance(result, _InputError):
            return 400, _error(str(result))
        if isinstance(result, Exception):
            return 500, _error(str(result), "server_error")
        import torch

        top_values, top_ids = torch.topk(result, min(max(k, 1), result.numel()))
        texts = self.scorer.tokenizer.batch_decode([[int(i)] for i in top_ids])
        entries = [{"token": t, "logprob": float(v), "bytes": list(t.encode("utf-8"))}
                   for t, v in zip(texts, top_values)]
        first = entries[0]
        content = {**first, "top_logprobs": entries[:k]}
        n_prompt = len(self.scorer.tokenizer(prompt)["input_ids"])  # text tokens only (image tokens not counted)
        return 200, {
            "id": f"chatcmpl-{uuid.uuid4().hex}",
            "object": "chat.completion",
            "created": int(time.time()),
            "model": self.model_name,
            "choices": [{
                "index": 0,
                "message": {"role": "assistant", "content": first["token"]},
                "logprobs": {"content": [content]} if want_logprobs else None,
                "finish_reason": "length",
            }],
            "usage": {"prompt_tokens": n_prompt, "completion_tokens": 1, "total_tokens": n_prompt + 1},
        }

    def serve_forever(self) -> None:
        try:
            self.httpd.serve_forever()
        finally:
            self._stop.set()

    def start(self) -> RewardModelServer:
        self._thread = threading.Thread(target=self.serve_forever, name="reward-model-server", daemon=True)
        self._thread.start()
        return self

    def shutdown(self) -> None:
        self.httpd.shutdown()
        self.httpd.server_close()
        self._stop.set()


def _error(message: str, kind: str = "invalid_request_error") -> dict:
    return {"error": {"message": message, "type": kind, "param": None, "code": None}}


def _parse_messages(messages: Any) -> tuple[str, str]:
    """(image data URL, prompt text) from OpenAI chat messages: one user message with one image and some text."""
    if not isinstance(messages, list) or not messages:
        raise ValueError("messages must be a non-empty list")
    users = [m for m in messages if isinstance(m, Mapping) and m.get("role") == "user"]
    if len(users) != 1 or len(messages) != 1:
        raise ValueError("the reward model takes exactly one user message (image + text) and no other message")
    content = users[0].get("content")
    if not isinstance(content, list):
        raise ValueError("the user message must hold a list of content parts (one image_url, text)")
    images = [p for p in content if isinstance(p, Mapping) and p.get("type") == "image_url"]
    texts = [p.get("text", "") for p in content if isinstance(p, Mapping) and p.get("type") == "text"]
    if len(images) != 1:
        raise ValueError(f"expected exactly one image_url part, got {len(images)}")
    url = images[0].get("image_url")
    url = url.get("url") if isinstance(url, Mapping) else url
    if not isinstance(url, str) or not url.startswith("data:"):
        raise ValueError("image_url must be a base64 data URL (this server does not fetch remote images)")
    return url, "".join(str(t) for t in texts)


def _make_handler(server: RewardModelServer):
    from http.server import BaseHTTPRequestHandler

    class Handler(BaseHTTPRequestHandler):
        protocol_version = "HTTP/1.1"

        def log_message(self, fmt, *args):  # request lines only, at debug level (never headers)
            log.debug("reward-model server: " + fmt, *args)

        def _send(self, status: int, body: dict) -> None:
            data = json.dumps(body).encode("utf-8")
            self.send_response(status)
            self.send_header("Content-Type", "application/json")
            self.send_header("Content-Length", str(len(data)))
            self.end_headers()
            self.wfile.write(data)
            server.stats[f"http_{status}"] += 1

        def do_GET(self):  # noqa: N802
            if self.path.rstrip("/") in ("/health", "/v1/health"):
                return self._send(200, {"status": "ok"})
            if self.path.rstrip("/") == "/v1/models":
                return self._send(200, {"object": "list", "data": [
                    {"id": server.model_name, "object": "model", "owned_by": "globe"}]})
            return self._send(404, _error(f"no route {self.path}", "not_found"))

        def do_POST(self):  # noqa: N802
            if self.path.rstrip("/") != "/v1/chat/completions":
                return self._send(404, _error(f"no route {self.path}", "not_found"))
            if not server.authorized(self.headers.get("Authorization")):
                return self._send(401, _error("invalid or missing API key", "authentication_error"))
            try:
                length = int(self.headers.get("Content-Length", "0"))
                body = json.loads(self.rfile.read(length) or b"null")
            except (ValueError, UnicodeDecodeError):
                return self._send(400, _error("the request body is not valid JSON"))
            try:
                status, answer = server.completion(body)
            except Exception as e:  # noqa: BLE001 - the server keeps serving
                log.exception("reward-model server: request failed")
                status, answer = 500, _error(f"{type(e).__name__}: {e}", "server_error")
            return self._send(status, answer)

    return Handler


def serve(
    scorer: LocalizabilityScorer,
    host: str = "127.0.0.1",
    port: int = 8000,
    *,
    model_name: str = DEFAULT_MODEL_NAME,
    api_key_env: str | None = DEFAULT_API_KEY_ENV,
    max_top_logprobs: int = 20,
    batch_wait_s: float = 0.01,
    block: bool = True,
) -> RewardModelServer:
    """Serve `scorer` as an OpenAI-compatible `POST /v1/chat/completions` (+ `GET /v1/models`, `GET /health`).

    Concurrent requests are gathered into batches of up to `scorer.batch_size` (waiting at most `batch_wait_s`).
    When the environment variable `api_key_env` is set, requests must carry it as a bearer token. `port=0` picks a
    free port (see `.url`). `block=False` serves from a background thread and returns at once.
    """
    server = RewardModelServer(scorer, host, port, model_name=model_name, api_key_env=api_key_env,
                               max_top_logprobs=max_top_logprobs, batch_wait_s=batch_wait_s)
    log.info("reward model %r served at %s (auth: %s)", model_name, server.url, "on" if server._key else "off")
    if not block:
        return server.start()
    try:
        server.serve_forever()
    except KeyboardInterrupt:
        pass
    finally:
        server.httpd.server_close()
    return server


# ---------------------------------------------------------------------------------------------------------------------
# Metrics


def roc_auc(labels: Sequence[int], scores: Sequence[float]) -> float | None:
    """ROC AUC by the rank (Mann-Whitney U) formula, ties averaged; None with only one class."""
    import numpy as np
    from scipy.stats import rankdata

    y = np.asarray(labels, dtype=int)
    s = np.asarray(scores, dtype=float)
    n_pos, n_neg = int(y.sum()), int((1 - y).sum())
    if n_pos == 0 or n_neg == 0:
        return None
    ranks = rankdata(s)
    return float((ranks[y == 1].sum() - n_pos * (n_pos + 1) / 2) / (n_pos * n_neg))


def expected_calibration_error(labels: Sequence[int], scores: Sequence[float], n_bins: int = 10) -> float:
    """ECE over `n_bins` equal-width bins of the score: sum over bins of |bin| / n * |mean label - mean score|."""
    import numpy as np

    y = np.asarray(labels, dtype=float)
    s = np.asarray(scores, dtype=float)
    if len(y) == 0:
        raise ValueError("no scores")
    bins = np.minimum((s * n_bins).astype(int), n_bins - 1)
    ece = 0.0
    for b in range(n_bins):
        m = bins == b
        if m.any():
            ece += m.sum() / len(y) * abs(y[m].mean() - s[m].mean())
    return float(ece)


def classification_metrics(labels: Sequence[int], scores: Sequence[float], threshold: float = 0.5) -> dict:
    """Held-out figures for a yes/no scorer; NaN scores (failed items) are counted and left out."""
    import numpy as np

    y = np.asarray(labels, dtype=int)
    s = np.asarray(scores, dtype=float)
    ok = np.isfinite(s)
    y, s = y[ok], s[ok]
    out: dict[str, Any] = {"n": int(len(ok)), "n_scored": int(ok.sum()), "n_failed": int((~ok).sum())}
    if len(y) == 0:
        return out
    majority = max(y.mean(), 1 - y.mean())
    out.update(
        accuracy=float(((s >= threshold).astype(int) == y).mean()),
        majority_accuracy=float(majority),
        roc_auc=roc_auc(y, s),
        ece=expected_calibration_error(y, s),
        brier=float(((s - y) ** 2).mean()),
        mean_score_yes=float(s[y == 1].mean()) if (y == 1).any() else None,
        mean_score_no=float(s[y == 0].mean()) if (y == 0).any() else None,
    )
    return out


# ---------------------------------------------------------------------------------------------------------------------
# Training


def load_labels(path: str | os.PathLike):
    """The localizability labels (a datasets Dataset on disk; a DatasetDict's splits are concatenated)."""
    from datasets import DatasetDict, concatenate_datasets

    from globe.data import open_saved

    ds = open_saved(path)
    if isinstance(ds, DatasetDict):
        log.info("labels at %s are a DatasetDict; using all its splits %s", path, list(ds))
        ds = concatenate_datasets([ds[k] for k in ds])
    missing = {"image", "reasoning", "label"} - set(ds.column_names)
    if missing:
        raise ValueError(f"labels at {path} lack column(s) {sorted(missing)}; columns: {ds.column_names}")
    return ds


def split_indices(labels: Sequence[int], groups: Sequence[Any] | None, eval_fraction: float, seed: int
                  ) -> tuple[list[int], list[int]]:
    """Seeded held-out split: whole groups (image ids) go to one side, stratified by the group's majority label."""
    import numpy as np

    groups = list(groups) if groups is not None else list(range(len(labels)))
    members: dict[Any, list[int]] = {}
    for i, g in enumerate(groups):
        members.setdefault(g, []).append(i)
    by_class: dict[int, list] = {0: [], 1: []}
    for g, idx in members.items():
        by_class[int(round(sum(labels[i] for i in idx) / len(idx)))].append(g)
    rng = np.random.default_rng(seed)
    held: list = []
    for c in (0, 1):
        gs = sorted(by_class[c], key=str)
        rng.shuffle(gs)
        n = round(eval_fraction * len(gs))
        if len(gs) >= 2:
            n = min(max(n, 1), len(gs) - 1)  # both sides get each class when it has two groups or more
        held += gs[:n]
    held_set = set(held)
    train = [i for i, g in enumerate(groups) if g not in held_set]
    evals = [i for i, g in enumerate(groups) if g in held_set]
    return train, evals


def _class_counts(labels: Sequence[int]) -> dict[str, int]:
    c = Counter(int(x) for x in labels)
    return {YES: c.get(1, 0), NO: c.get(0, 0)}


def _to_example(row: dict, max_pixels: int | None, max_chars: int, special: Sequence[str]) -> dict:
    """One label row as a conversational prompt-completion example (or a reason to skip it)."""
    skip, image = "", None
    label = row["label"]
    if isinstance(label, bool) or label in (0, 1):
        label = int(label)
    else:
        skip = "bad_label"
    if not skip:
        try:
            image = fit_image(load_image(row["image"]), max_pixels)
        except Exception as e:  # noqa: BLE001 - counted and reported as a skip
            skip = f"bad_image:{getattr(e, 'reason', type(e).__name__)}"
    text = clean_reasoning(row["reasoning"], max_chars, special)
    return {
        "image_fit": image,
        "prompt": [{"role": "user", "content": reward_prompt(text)}],
        "completion": [{"role": "assistant", "content": YES if label == 1 else NO}],
        "skip": skip,
        "truncated": len(to_text(row["reasoning"])) > max_chars,
    }


def train_reward_model(cfg: Mapping[str, Any] | RewardModelConfig) -> dict:
    """Train the reward-model LoRA on the localizability labels, evaluate it on a held-out split, save both.

    Writes the adapter (+ processor and `globe_reward_model.json` settings) to `cfg.out` and the metrics to
    `cfg.metrics`; returns the metrics. A run killed mid-training resumes from its last checkpoint in
    `<out>/checkpoints` (removed once the adapter is saved) when its settings and labels are unchanged; otherwise it
    starts over (`globe.train.resume_checkpoint`).
    """
    import shutil

    from datasets import Features, Value
    from datasets import Image as ImageFeature
    from trl import SFTConfig, SFTTrainer

    from globe.config import seed_everything
    from globe.models import load_vlm, lora_settings
    from globe.train import data_fingerprint, resume_checkpoint

    cfg = cfg if isinstance(cfg, RewardModelConfig) else RewardModelConfig.from_params(cfg)
    cfg.validate()
    seed_everything(cfg.seed)
    out, ckpt_dir = Path(cfg.out), Path(cfg.out) / "checkpoints"

    raw = load_labels(cfg.labels).cast_column("image", ImageFeature(decode=False))
    n_raw = len(raw)
    model, processor = load_vlm(
        cfg.base_model, dtype=cfg.dtype, training=True, backend=cfg.backend,
        lora=lora_settings(r=cfg.lora_r, alpha=cfg.lora_alpha, dropout=cfg.lora_dropout,
                           target_modules=cfg.lora_target_modules),
    )
    tok = getattr(processor, "tokenizer", processor)
    special = [t for t in tok.all_special_tokens if t] + list(getattr(tok, "additional_special_tokens", None) or [])

    message = [{"role": Value("string"), "content": Value("string")}]
    features = Features({**raw.features, "image_fit": ImageFeature(), "prompt": message, "completion": message,
                         "skip": Value("string"), "truncated": Value("bool")})
    examples = raw.map(
        _to_example, fn_kwargs=dict(max_pixels=cfg.max_pixels, max_chars=cfg.max_reasoning_chars, special=special),
        features=features, keep_in_memory=True, desc="reward-model examples",
    )
    skipped = Counter(s for s in examples["skip"] if s)
    n_truncated = sum(examples["truncated"])
    keep = [i for i, s in enumerate(examples["skip"]) if not s]
    if skipped:
        log.warning("reward model: skipped %d of %d label rows: %s", sum(skipped.values()), n_raw, dict(skipped))
    examples = examples.select(keep)
    labels = [int(x) for x in examples["label"]]
    groups = examples["id"] if "id" in examples.column_names else None
    train_idx, eval_idx = split_indices(labels, groups, cfg.eval_fraction, cfg.seed)
    if not train_idx or not eval_idx:
        raise ValueError(f"too few usable label rows ({len(labels)}) for a train / held-out split")

    train_labels = [labels[i] for i in train_idx]
    balance = {"train": _class_counts(train_labels), "eval": _class_counts([labels[i] for i in eval_idx])}
    if cfg.balance == "oversample":
        train_idx = _oversample(train_idx, train_labels, cfg.seed)
        balance["train_oversampled"] = _class_counts([labels[i] for i in train_idx])
    log.info("reward model: class balance %s", balance)

    train_ds = (examples.select(train_idx)
                .select_columns(["image_fit", "prompt", "completion"]).rename_column("image_fit", "image"))
    dtype = next(model.parameters()).dtype
    import torch

    args = SFTConfig(
        output_dir=str(ckpt_dir),
        max_steps=cfg.steps,
        per_device_train_batch_size=cfg.batch_size,
        gradient_accumulation_steps=cfg.grad_accum,
        learning_rate=cfg.learning_rate,
        lr_scheduler_type="constant_with_warmup",
        warmup_steps=min(10, cfg.steps // 10),
        logging_steps=1,
        save_strategy="steps",
        save_steps=cfg.save_steps,
        save_total_limit=1,
        report_to="none",
        seed=cfg.seed,
        data_seed=cfg.seed,
        bf16=dtype == torch.bfloat16,
        fp16=dtype == torch.float16,
        gradient_checkpointing=cfg.gradient_checkpointing,
        max_length=None,  # truncation could cut image tokens; the reasoning is bounded in characters instead
        completion_only_loss=True,  # loss on the assistant turn ("yes" / "no") only
        dataloader_num_workers=0,
        use_cpu=not torch.cuda.is_available(),
    )
    trainer = SFTTrainer(model=model, args=args, train_dataset=train_ds, processing_class=processor)
    # Resume only checkpoints of this very run (same settings and labels); a changed experiment starts over.
    resumable = ("out", "metrics", "steps", "save_steps", "eval_batch_size")
    settings = {k: v for k, v in asdict(cfg).items() if k not in resumable}
    last = resume_checkpoint(ckpt_dir, {**settings, "labels_data": data_fingerprint(cfg.labels)})
    if last:
        log.info("reward model: resuming from %s", last)
    start = time.perf_counter()
    result = trainer.train(resume_from_checkpoint=last)
    train_seconds = time.perf_counter() - start

    out.mkdir(parents=True, exist_ok=True)
    trainer.save_model(str(out))
    processor.save_pretrained(str(out))
    settings = {"base_model": cfg.base_model, "max_pixels": cfg.max_pixels,
                "max_reasoning_chars": cfg.max_reasoning_chars,
                "prompt_version": PROMPT_VERSION, "prompt": REWARD_MODEL_PROMPT, "yes": YES, "no": NO}
    (out / SETTINGS_FILE).write_text(json.dumps(settings, indent=2) + "\n")

    # Held-out evaluation with the trained model as it is in memory, read out exactly as the reward reads it.
    eval_rows = raw.select(keep).select(eval_idx)
    scorer = LocalizabilityScorer(trainer.model, processor=processor, batch_size=cfg.eval_batch_size,
                                  max_pixels=cfg.max_pixels, max_reasoning_chars=cfg.max_reasoning_chars,
                                  error_budget=None)
    eval_start = time.perf_counter()
    scores = scorer.score(eval_rows["image"], eval_rows["reasoning"])
    eval_seconds = time.perf_counter() - eval_start
    losses = [h["loss"] for h in trainer.state.log_history if "loss" in h]
    metrics = {
        "n": {"label_rows": n_raw, "usable": len(keep), "train": len(train_idx), "eval": len(eval_idx),
              "skipped": dict(skipped), "reasoning_truncated": int(n_truncated)},
        "class_balance": balance,
        "eval": classification_metrics([labels[i] for i in eval_idx], scores),
        "train": {"steps": int(trainer.state.global_step), "seconds": round(train_seconds, 3),
                  "first_loss": losses[0] if losses else None, "final_loss": losses[-1] if losses else None,
                  "train_loss": float(result.training_loss), "resumed_from": Path(last).name if last else None},
        "eval_seconds": round(eval_seconds, 3),
        "eval_yes_no_mass": scorer.stats["yes_no_mass"] / max(1, scorer.stats["scored"]),
        "config": asdict(cfg),
        "prompt_version": PROMPT_VERSION,
        "device": str(next(trainer.model.parameters()).device),
    }
    metrics_path = Path(cfg.metrics)
    metrics_path.parent.mkdir(parents=True, exist_ok=True)
    metrics_path.write_text(json.dumps(metrics, indent=2) + "\n")
    shutil.rmtree(ckpt_dir, ignore_errors=True)
    log.info("reward model: %s", metrics["eval"])
    return metrics


def _oversample(indices: list[int], labels: list[int], seed: int) -> list[int]:
    """Indices with the minority class drawn again (with replacement, seeded) up to the majority's count."""
    rng = random.Random(seed)
    pos = [i for i, y in zip(indices, labels) if y == 1]
    neg = [i for i, y in zip(indices, labels) if y == 0]
    small, big = (pos, neg) if len(pos) < len(neg) else (neg, pos)
    if not small:
        return list(indices)
    extra = [rng.choice(small) for _ in range(len(big) - len(small))]
    out = list(indices) + extra
    rng.shuffle(out)
    return out
