"""`serve`: a scorer behind an OpenAI-compatible `POST /v1/chat/completions` returning first-token `logprobs` /
`top_logprobs` (+ `GET /v1/models`, `GET /health`), concurrent requests micro-batched."""

from __future__ import annotations

import hmac
import json
import logging
import os
import queue
import threading
import time
import uuid
from collections import Counter
from collections.abc import Mapping
from concurrent.futures import Future
from typing import Any

from globe.images import load_image
from globe.reward_model.config import DEFAULT_API_KEY_ENV, DEFAULT_MODEL_NAME
from globe.reward_model.scorer import LocalizabilityScorer, _InputError, _ModelError

log = logging.getLogger(__name__)


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
