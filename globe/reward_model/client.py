"""`EndpointScorer`: the reward model behind an OpenAI-compatible chat-completions endpoint (`globe
serve-reward-model`, or `vllm serve` with the LoRA adapter and logprobs), called as GLOBE's setup does."""

from __future__ import annotations

import logging
import os
import time
from concurrent.futures import ThreadPoolExecutor
from typing import Any

from globe.images import to_data_url
from globe.reward_model.config import DEFAULT_API_KEY_ENV, DEFAULT_MODEL_NAME
from globe.reward_model.readout import (
    OFFICIAL_TOP_K,
    NoYesNoError,
    clean_reasoning,
    input_text,
    reward_messages,
    reward_user_text,
    yes_no_from_top_logprobs,
)
from globe.reward_model.scorer import Scorer

log = logging.getLogger(__name__)


class _RetryableError(RuntimeError):
    def __init__(self, kind: str, message: str, retry_after: float | None = None):
        super().__init__(message)
        self.kind, self.retry_after = kind, retry_after


class EndpointScorer(Scorer):
    """The reward model behind an OpenAI-compatible chat-completions endpoint (ours, vLLM, ...), GLOBE-style.

    Each item is one request (image as a base64 data URL + `REWARD_MODEL_PROMPT`, `max_tokens=1`, `logprobs=true`,
    `top_logprobs=k`); requests run `max_workers` at a time. Timeouts, connection errors, HTTP 429 and 5xx are retried
    `retries` times with exponential backoff (`backoff * 2**attempt` seconds, or the server's Retry-After); other
    failures are not. A finally failed item is counted in `stats` and logged, and becomes NaN (or raises, see
    `on_error`); past `error_budget` failed items, `score` raises `RewardModelError`. The API key is read from the
    environment variable `api_key_env` (if set) and sent as a bearer token; it is never logged.

    `input_format="official"` sends GLOBE's request instead: a system turn with `globe-rm-system`, then the image and
    the whole completion (pass completions: `input_text` says so); `readout="top5"` asks for 5 top logprobs and counts
    only the exact tokens yes/Yes/YES and no/No/NO, as GLOBE's plugin.py does.
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
        input_format: str = "project",
        readout: str = "vocabulary",
    ):
        import httpx

        super().__init__(on_error=on_error, error_budget=error_budget)
        if readout not in ("vocabulary", "top5"):
            raise ValueError(f"readout must be 'vocabulary' or 'top5', got {readout!r}")
        self.input_format, self.input_text, self.readout = input_format, input_text(input_format), readout
        if readout == "top5":
            top_logprobs = OFFICIAL_TOP_K
        if retries < 0 or timeout <= 0 or max_workers < 1 or top_logprobs < 1:
            raise ValueError("need retries >= 0, timeout > 0, max_workers >= 1, top_logprobs >= 1")
        url = url.rstrip("/")
        if not url.endswith("/chat/completions"):
            url = (url if url.endswith("/v1") else url + "/v1") + "/chat/completions"
        self.url, self.model, self.timeout, self.retries, self.backoff = url, model, timeout, retries, backoff
        self.top_logprobs, self.max_workers = top_logprobs, max_workers
        self.image_format, self.max_pixels, self.max_reasoning_chars = image_format, max_pixels, max_reasoning_chars
        headers = {"Content-Type": "application/json"}
        from globe.config import check_env_name

        api_key_env = check_env_name(api_key_env, "reward_model_client.api_key_env")
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
            messages = reward_messages(reward_user_text(text, self.input_format), self.input_format)
            for m in messages:  # the OpenAI wire format: the image as a data URL
                m["content"] = [{"type": "image_url", "image_url": {"url": url}} if part["type"] == "image" else part
                                for part in m["content"]]
            payload = {
                "model": self.model,
                "messages": messages,
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
        value, both = yes_no_from_top_logprobs(top, exact=self.readout == "top5")
        if not both:
            self._count("one_sided")
            if self.readout == "top5" and value == 0.0 and not any(
                    e.get("token") in ("no", "No", "NO") for e in top):
                self._count("neither")  # neither yes nor no in the top 5: GLOBE's score, 0
        return value


class _HTTPError(RuntimeError):
    pass
