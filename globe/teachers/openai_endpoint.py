"""`openai`: any OpenAI-compatible chat endpoint (a vLLM server, a hosted API), one server or several.

Images go as base64 data URLs, with bounded async concurrency, timeouts, retries with exponential backoff on 429 /
5xx (Retry-After honoured) and an error budget that stops the run. The API key is read from the environment variable
the params NAME (`api_key_env`); it never appears in params, logs, caches or exception messages.
"""

from __future__ import annotations

import asyncio
import email.utils
import logging
import os
import random
import time
from collections.abc import Mapping, Sequence

from globe.images import to_data_url
from globe.teachers.base import ErrorBudgetExceeded, Request, Response, Sampling, Teacher, TeacherError, chat_messages

log = logging.getLogger(__name__)


class OpenAITeacher(Teacher):
    """An OpenAI-compatible `/chat/completions` endpoint, queried with bounded async concurrency.

    `base_url` may be a list: several servers (vLLM replicas of one model, one per node) share the requests round
    robin, and a retried request goes to the next server. The servers are interchangeable replicas, so they are not
    part of the teacher's identity (its cache key): answers are cached the same whichever server gave them. For a
    Ray-backed deployment (`vllm serve ... --data-parallel-size N`, Ray Serve), point `base_url` at its one endpoint.

    Retries: transport errors, timeouts, HTTP 429 and 5xx and unreadable bodies are retried up to `max_retries` times,
    waiting `Retry-After` when the server sends it, else `backoff_s * 2**attempt` (with jitter, capped at
    `max_backoff_s`). Other 4xx fail at once. A request that still fails becomes a `Response` with `error`; once more
    than `error_budget` requests have failed in this teacher's lifetime, `complete` raises `ErrorBudgetExceeded`.
    """

    def __init__(self, name: str, model: str, base_url: str | Sequence[str] = "https://api.openai.com/v1",
                 api_key_env: str | None = "OPENAI_API_KEY",
                 concurrency: int = 8, timeout_s: float = 120.0, max_retries: int = 4, backoff_s: float = 1.0,
                 max_backoff_s: float = 60.0, error_budget: int = 10, max_image_side: int | None = 1024,
                 extra_body: Mapping | None = None, sampling: Sampling = Sampling()):
        if concurrency < 1 or max_retries < 0 or error_budget < 0:
            raise TeacherError(f"teacher {name!r}: need concurrency >= 1, max_retries >= 0, error_budget >= 0")
        urls = [base_url] if isinstance(base_url, str) else list(base_url)
        if not urls or not all(isinstance(u, str) and u for u in urls):
            raise TeacherError(f"teacher {name!r}: base_url must be a URL or a non-empty list of URLs, "
                               f"got {base_url!r}")
        self.base_urls = [u.rstrip("/") for u in urls]
        self.name, self.model, self.base_url = name, model, self.base_urls[0]
        self._next_server = 0
        from globe.config import ParamsError, check_env_name

        try:
            self.api_key_env = api_key_env = check_env_name(api_key_env, f"teacher {name!r}: api_key_env")
        except ParamsError as e:
            raise TeacherError(str(e)) from None
        self._key = None
        if api_key_env:
            self._key = os.environ.get(api_key_env)
            if not self._key:
                raise TeacherError(
                    f"teacher {name!r}: environment variable {api_key_env} is not set; export the API key there "
                    "(keys never go in params.yaml), or set api_key_env: null for an endpoint without authentication"
                )
        self.concurrency, self.timeout_s, self.max_retries = int(concurrency), float(timeout_s), int(max_retries)
        self.backoff_s, self.max_backoff_s, self.error_budget = float(backoff_s), float(max_backoff_s), int(error_budget)
        self.max_image_side, self.extra_body, self.sampling = max_image_side, dict(extra_body or {}), sampling
        self.n_requests = self.n_failed = self.n_retries = 0
        self._rng = random.Random(0)

    def identity(self) -> dict:
        # Not the server address: replicas of one model answer alike (see the class docstring).
        return {"backend": "openai", "model": self.model, "max_image_side": self.max_image_side,
                "extra_body": self.extra_body}

    def _redact(self, text: str) -> str:
        """Remove the key from anything that may be shown (a server may echo headers back in an error body)."""
        text = str(text)
        return text.replace(self._key, "***") if self._key else text

    def _body(self, request: Request) -> dict:
        s = request.sampling
        body = {
            "model": self.model,
            "messages": chat_messages(request, to_data_url(request.image, max_side=self.max_image_side)),
            "max_tokens": s.max_new_tokens,
            "temperature": s.temperature,
            "top_p": s.top_p,
            "seed": s.seed,
        }
        body.update(self.extra_body)
        return body

    def _wait_s(self, attempt: int, retry_after: str | None) -> float:
        if retry_after:
            try:
                wait = float(retry_after)
            except ValueError:
                when = email.utils.parsedate_to_datetime(retry_after)
                wait = when.timestamp() - time.time() if when else self.backoff_s
            return min(max(wait, 0.0), self.max_backoff_s)
        return min(self.backoff_s * 2**attempt * (1 + 0.25 * self._rng.random()), self.max_backoff_s)

    async def _one(self, client, sem: asyncio.Semaphore, request: Request) -> Response:
        import httpx

        body = self._body(request)
        error = "not attempted"
        first = self._next_server
        self._next_server = (self._next_server + 1) % len(self.base_urls)
        async with sem:
            for attempt in range(self.max_retries + 1):
                retry_after = None
                t0 = time.perf_counter()
                base = self.base_urls[(first + attempt) % len(self.base_urls)]  # a retry tries the next server
                try:
                    r = await client.post(f"{base}/chat/completions", json=body)
                except (httpx.TimeoutException, httpx.TransportError) as e:
                    error = f"{type(e).__name__}"
                else:
                    if r.status_code == 200:
                        try:
                            data = r.json()
                            choice = data["choices"][0]
                            text = choice["message"]["content"]
                            if not isinstance(text, str):
                                raise TypeError("message content is not a string")
                            meta = {"backend": "openai", "model": data.get("model", self.model),
                                    "finish_reason": choice.get("finish_reason"), "usage": data.get("usage"),
                                    "latency_s": round(time.perf_counter() - t0, 4), "attempts": attempt + 1}
                            return Response(text=text, meta=meta)
                        except (ValueError, KeyError, IndexError, TypeError) as e:
                            error = f"malformed response body ({type(e).__name__}): {r.text[:200]!r}"
                    else:
                        error = f"HTTP {r.status_code}: {r.text[:200]!r}"
                        if r.status_code != 429 and r.status_code < 500:
                            break  # a client error will not get better by asking again
                        retry_after = r.headers.get("retry-after")
                if attempt < self.max_retries:
                    self.n_retries += 1
                    wait = self._wait_s(attempt, retry_after)
                    log.warning("teacher %s: request %s failed (%s); retry %d/%d in %.2fs", self.name, request.id,
                                self._redact(error)[:120], attempt + 1, self.max_retries, wait)
                    await asyncio.sleep(wait)
        return Response(text="", meta={"backend": "openai", "attempts": attempt + 1}, error=self._redact(error))

    async def _complete(self, requests: Sequence[Request]) -> list[Response]:
        import httpx

        headers = {"Authorization": f"Bearer {self._key}"} if self._key else {}
        sem = asyncio.Semaphore(self.concurrency)
        limits = httpx.Limits(max_connections=self.concurrency, max_keepalive_connections=self.concurrency)
        async with httpx.AsyncClient(headers=headers, timeout=httpx.Timeout(self.timeout_s), limits=limits) as client:
            tasks = [asyncio.ensure_future(self._one(client, sem, r)) for r in requests]
            try:
                for fut in asyncio.as_completed(tasks):
                    resp = await fut
                    self.n_requests += 1
                    if resp.error is not None:
                        self.n_failed += 1
                        log.error("teacher %s: request failed after retries: %s", self.name, resp.error[:200])
                        if self.n_failed > self.error_budget:
                            err = ErrorBudgetExceeded(
                                f"teacher {self.name!r}: {self.n_failed} requests failed after {self.max_retries} retries, "
                                f"more than error_budget={self.error_budget}; stopping. Last error: {resp.error[:200]}. "
                                "Completed answers are already cached; fix the endpoint and run again to resume."
                            )
                            done = [t.done() and not t.cancelled() and t.exception() is None for t in tasks]
                            err.responses = [t.result() if ok else None for t, ok in zip(tasks, done)]
                            raise err
            finally:
                for t in tasks:
                    t.cancel()
                await asyncio.gather(*tasks, return_exceptions=True)
        return [t.result() for t in tasks]

    def complete(self, requests: Sequence[Request]) -> list[Response]:
        if not requests:
            return []
        try:
            asyncio.get_running_loop()
        except RuntimeError:
            return asyncio.run(self._complete(requests))
        # Inside a running loop (a Jupyter kernel): run ours in a worker thread.
        from concurrent.futures import ThreadPoolExecutor

        with ThreadPoolExecutor(1) as pool:
            return pool.submit(asyncio.run, self._complete(requests)).result()

    def __repr__(self) -> str:  # never shows the key
        return (f"OpenAITeacher(name={self.name!r}, model={self.model!r}, base_url={self.base_urls!r}, "
                f"api_key_env={self.api_key_env!r})")
