"""`serve`: a scorer behind an OpenAI-compatible `POST /v1/chat/completions` returning first-token `logprobs` /
`top_logprobs` (+ `GET /v1/models`, `GET /health`), on Starlette and uvicorn, concurrent requests micro-batched.

Safe by default: requests must carry the API key from the environment variable `api_key_env` as a bearer token;
serving without one takes an explicit `allow_no_auth=True` (`--no-auth`) and is refused on any address but loopback.
Bodies over `max_body_bytes` are refused (413) before they are read, images over `max_pixels` before they are
decoded (the ingest guard, `globe.images.load_image`). uvicorn handles keep-alive (a refused request's unread body
never poisons the connection) and clients that hang up (no tracebacks).

On a GPU cluster, `vllm serve` speaks the same API (LoRA adapter, logprobs), and `EndpointScorer` calls either:

    vllm serve Qwen/Qwen2.5-VL-7B-Instruct --enable-lora --max-lora-rank 16 \\
        --lora-modules globe-reward-model=models/reward_model --max-logprobs 20 --api-key "$GLOBE_RM_API_KEY"
"""

from __future__ import annotations

import asyncio
import hmac
import ipaddress
import json
import logging
import os
import socket
import threading
import time
import uuid
from collections import Counter
from collections.abc import Mapping
from typing import Any

from globe.images import DEFAULT_MAX_PIXELS, load_image
from globe.reward_model.config import DEFAULT_API_KEY_ENV, DEFAULT_MODEL_NAME, RewardModelError
from globe.reward_model.scorer import LocalizabilityScorer, _InputError, _ModelError

log = logging.getLogger(__name__)

MAX_BODY_BYTES = 32 << 20  # a 1024-px photo as a base64 PNG is a few MB; 32 MB leaves room, not for abuse


def _error(message: str, kind: str = "invalid_request_error") -> dict:
    return {"error": {"message": message, "type": kind, "param": None, "code": None}}


def is_loopback(host: str) -> bool:
    """Whether `host` names only this machine (127.0.0.0/8, ::1, localhost)."""
    if host == "localhost":
        return True
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:
        try:
            return all(ipaddress.ip_address(info[4][0]).is_loopback for info in socket.getaddrinfo(host, None))
        except OSError:
            return False


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


class RewardModelServer:
    """A `serve` server: `.url` (base, ending in /v1), `.start()` (background thread), `.shutdown()`."""

    def __init__(self, scorer: LocalizabilityScorer, host: str, port: int, *, model_name: str = DEFAULT_MODEL_NAME,
                 api_key_env: str | None = DEFAULT_API_KEY_ENV, allow_no_auth: bool = False,
                 max_top_logprobs: int = 20, batch_wait_s: float = 0.01, max_body_bytes: int = MAX_BODY_BYTES,
                 max_pixels: int = DEFAULT_MAX_PIXELS):
        from globe.config import check_env_name

        api_key_env = check_env_name(api_key_env, "--api-key-env")
        key = os.environ.get(api_key_env) if api_key_env else None
        if not key:
            if not allow_no_auth:
                raise RewardModelError(
                    f"no API key: export {api_key_env or 'GLOBE_RM_API_KEY'} (clients send it as a bearer token), or "
                    "pass --no-auth to serve without one on a loopback address")
            if not is_loopback(host):
                raise RewardModelError(f"--no-auth serves loopback addresses only, not {host!r}: set an API key")
        self._key = key or None
        self.scorer, self.model_name, self.max_top_logprobs = scorer, model_name, max_top_logprobs
        self.batch_wait_s, self.max_body_bytes, self.max_pixels = batch_wait_s, max_body_bytes, max_pixels
        self.stats: Counter = Counter()
        self.host, self.port = host, port
        self._queue: asyncio.Queue | None = None
        self._thread: threading.Thread | None = None
        self._server = self._uvicorn(host, port)

    # -- HTTP

    def _uvicorn(self, host: str, port: int):
        import contextlib

        import uvicorn
        from starlette.applications import Starlette
        from starlette.routing import Route

        @contextlib.asynccontextmanager
        async def lifespan(app):
            self._queue = asyncio.Queue()
            worker = asyncio.create_task(self._batch_loop())
            try:
                yield
            finally:
                worker.cancel()

        app = Starlette(lifespan=lifespan, routes=[
            Route("/v1/chat/completions", self._chat, methods=["POST"]),
            Route("/v1/models", self._models, methods=["GET"]),
            Route("/health", self._health, methods=["GET"]),
            Route("/v1/health", self._health, methods=["GET"]),
        ])
        config = uvicorn.Config(app, host=host, port=port, log_level="warning", access_log=False, lifespan="on",
                                timeout_keep_alive=30)
        return uvicorn.Server(config)

    def _reply(self, status: int, body: dict):
        from starlette.responses import JSONResponse

        self.stats[f"http_{status}"] += 1
        return JSONResponse(body, status_code=status)

    async def _health(self, request):
        return self._reply(200, {"status": "ok"})

    async def _models(self, request):  # metadata only, open like /health
        return self._reply(200, {"object": "list", "data": [
            {"id": self.model_name, "object": "model", "owned_by": "globe"}]})

    async def _chat(self, request):
        if not self.authorized(request.headers.get("authorization")):
            return self._reply(401, _error("invalid or missing API key", "authentication_error"))
        declared = request.headers.get("content-length")
        if declared is not None and declared.isdigit() and int(declared) > self.max_body_bytes:
            return self._reply(413, _error(f"request body over {self.max_body_bytes} bytes"))
        chunks, size = [], 0
        async for chunk in request.stream():  # chunked bodies are counted as they arrive
            size += len(chunk)
            if size > self.max_body_bytes:
                return self._reply(413, _error(f"request body over {self.max_body_bytes} bytes"))
            chunks.append(chunk)
        try:
            body = json.loads(b"".join(chunks) or b"null")
        except (ValueError, UnicodeDecodeError):
            return self._reply(400, _error("the request body is not valid JSON"))
        try:
            status, answer = await self.completion(body)
        except Exception as e:  # noqa: BLE001 - the server keeps serving
            log.exception("reward-model server: request failed")
            status, answer = 500, _error(f"{type(e).__name__}: {e}", "server_error")
        return self._reply(status, answer)

    def authorized(self, header: str | None) -> bool:
        if self._key is None:
            return True
        return header is not None and hmac.compare_digest(header.encode(), f"Bearer {self._key}".encode())

    # -- scoring

    async def _batch_loop(self) -> None:
        import anyio

        while True:
            batch = [await self._queue.get()]
            deadline = time.monotonic() + self.batch_wait_s
            while len(batch) < self.scorer.batch_size:
                try:
                    batch.append(await asyncio.wait_for(self._queue.get(), max(0.0, deadline - time.monotonic())))
                except asyncio.TimeoutError:
                    break
            try:
                results = await anyio.to_thread.run_sync(self.scorer.logprobs, [b[0] for b in batch],
                                                         [b[1] for b in batch])
            except Exception as e:  # noqa: BLE001 - reported to every waiting request
                results = [_ModelError(f"{type(e).__name__}: {e}")] * len(batch)
            for (_, _, fut), result in zip(batch, results):
                if not fut.done():  # the client may have gone
                    fut.set_result(result)

    async def completion(self, body: Mapping[str, Any]) -> tuple[int, dict]:
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
            url, prompt = _parse_messages(body.get("messages"))
            image = load_image(url, max_pixels=self.max_pixels)  # the pixel cap applies before decoding
        except Exception as e:  # noqa: BLE001
            return 400, _error(f"{type(e).__name__}: {e}")
        fut = asyncio.get_running_loop().create_future()
        await self._queue.put((image, prompt, fut))
        result = await fut
        if isinstance(result, _InputError):
            return 400, _error(str(result))
        if isinstance(result, Exception):
            return 500, _error(str(result), "server_error")
        return 200, self._answer(result, k, want_logprobs, prompt)

    def _answer(self, logprobs, k: int, want_logprobs: bool, prompt: str) -> dict:
        import torch

        top_values, top_ids = torch.topk(logprobs, min(max(k, 1), logprobs.numel()))
        texts = self.scorer.tokenizer.batch_decode([[int(i)] for i in top_ids])
        entries = [{"token": t, "logprob": float(v), "bytes": list(t.encode("utf-8"))}
                   for t, v in zip(texts, top_values)]
        first = entries[0]
        content = {**first, "top_logprobs": entries[:k]}
        n_prompt = len(self.scorer.tokenizer(prompt)["input_ids"])  # text tokens only (image tokens not counted)
        return {
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

    # -- lifecycle

    @property
    def url(self) -> str:
        return f"http://{self.host}:{self.port}/v1"

    def serve_forever(self) -> None:
        self._server.run()

    def start(self, timeout: float = 30.0) -> RewardModelServer:
        """Serve from a background thread; returns once the socket is bound (`port=0` picks a free one)."""
        self._thread = threading.Thread(target=self._server.run, name="reward-model-server", daemon=True)
        self._thread.start()
        deadline = time.monotonic() + timeout
        while not self._server.started:
            if not self._thread.is_alive() or time.monotonic() > deadline:
                raise RewardModelError(f"the reward-model server did not start on {self.host}:{self.port}")
            time.sleep(0.01)
        self.port = self._server.servers[0].sockets[0].getsockname()[1]
        return self

    def shutdown(self) -> None:
        self._server.should_exit = True
        if self._thread is not None:
            self._thread.join(timeout=10)


def serve(
    scorer: LocalizabilityScorer,
    host: str = "127.0.0.1",
    port: int = 8000,
    *,
    model_name: str = DEFAULT_MODEL_NAME,
    api_key_env: str | None = DEFAULT_API_KEY_ENV,
    allow_no_auth: bool = False,
    max_top_logprobs: int = 20,
    batch_wait_s: float = 0.01,
    max_body_bytes: int = MAX_BODY_BYTES,
    max_pixels: int = DEFAULT_MAX_PIXELS,
    block: bool = True,
) -> RewardModelServer:
    """Serve `scorer` as an OpenAI-compatible `POST /v1/chat/completions` (see the module docstring).

    Concurrent requests are gathered into batches of up to `scorer.batch_size` (waiting at most `batch_wait_s`).
    `port=0` picks a free port (see `.url`). `block=False` serves from a background thread and returns at once.
    """
    server = RewardModelServer(scorer, host, port, model_name=model_name, api_key_env=api_key_env,
                               allow_no_auth=allow_no_auth, max_top_logprobs=max_top_logprobs,
                               batch_wait_s=batch_wait_s, max_body_bytes=max_body_bytes, max_pixels=max_pixels)
    log.info("reward model %r served at http://%s:%s/v1 (auth: %s)", model_name, host, port,
             "on" if server._key else "off, loopback only")
    if not block:
        return server.start()
    try:
        server.serve_forever()
    except KeyboardInterrupt:
        pass
    return server
