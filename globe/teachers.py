"""Teacher VLMs behind one interface: `Teacher.complete(requests) -> list[Response]`.

GLOBE builds MP16-Reason by asking strong VLMs (the paper: Qwen2.5-VL-72B and InternVL3-78B) two questions per photo,
a reasoning question and a localizability question (`globe.prompts`). Distillation (`globe.distill`) only sees this
interface; `params.yaml` picks the backends with `make_teacher(cfg)`:

- `local`     a Hugging Face VLM through transformers, batched (`globe.models.load_vlm` / `generate`).
- `openai`    any OpenAI-compatible chat endpoint (a vLLM server, a hosted API): images as base64 data URLs, bounded
              async concurrency, timeouts, retries with exponential backoff on 429 / 5xx (Retry-After honoured) and an
              error budget that stops the run. The API key is read from the environment variable the params NAME
              (`api_key_env`); it never appears in params, logs, caches or exception messages.
- `vllm`      the vLLM offline engine in this process (GPU machines with vllm installed).
- `geoclip`   GeoCLIP (the `geoclip` package; the paper's third teacher): no text, a GPS point and its confidence per
              photo (`gps_answer` writes, `parse_gps` reads them), cached like the others; distillation's `geoclip`
              filter checks the VLM teachers' answers against it. Its image backbone comes from the hub, so the
              default profile and the tests use a tiny random stand-in built offline (`globe.tiny.build_tiny_geoclip`).
- `oracle`    a deterministic offline STAND-IN for a strong teacher (see `OracleTeacher`): it copies the photo's
              labels (true place, caption) into its trace and answers with the true location. It exists only so the default (smoke) profile, whose tiny
              random VLM writes noise that every filter rightly rejects, has data to train on downstream. The paper
              profile never uses it.

A failed request is a `Response` with `error` set (never raised for one photo), so the caller can count and report it;
the HTTP backend raises `ErrorBudgetExceeded` once more requests failed than its budget allows.
"""

from __future__ import annotations

import asyncio
import email.utils
import hashlib
import importlib.util
import json
import logging
import os
import random
import re
import time
from collections.abc import Mapping, Sequence
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

from globe.images import load_image, shrink, to_data_url

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class Sampling:
    """Sampling parameters; part of the distillation cache key (a change re-queries the teacher)."""

    max_new_tokens: int = 512
    temperature: float = 0.0
    top_p: float = 1.0
    seed: int = 0

    def key(self) -> str:
        return json.dumps(asdict(self), sort_keys=True)


@dataclass
class Request:
    """One question about one photo. `meta` carries the sample's columns (only the oracle teacher reads them)."""

    id: str
    image: Any  # PIL.Image
    prompt: str
    sampling: Sampling = field(default_factory=Sampling)
    meta: dict = field(default_factory=dict)


@dataclass
class Response:
    """A teacher's answer: `text` ("" on failure), backend metadata (latency, usage, ...), and `error` (None if ok)."""

    text: str
    meta: dict = field(default_factory=dict)
    error: str | None = None


class TeacherError(RuntimeError):
    """A teacher cannot run (missing backend, missing key, bad configuration)."""


class ErrorBudgetExceeded(TeacherError):
    """More requests failed (after retries) than the teacher's error budget allows: the run stops.

    `responses` holds, per request of the interrupted call, its answer if it had completed (else None), so the caller
    can keep what was already paid for.
    """

    responses: list = []


class Teacher:
    """Base class: a named backend answering batches of requests, one `Response` per request, in order."""

    name: str = "teacher"
    sampling: Sampling = Sampling()
    needs_image: bool = True  # False: the caller may send requests without decoding the photo
    is_oracle: bool = False  # True: answers from the labels, not from the photo (shown wherever its output is)
    kinds: tuple[str, ...] = ("reasoning", "localizability")  # the questions it answers (globe.distill.query)

    def complete(self, requests: Sequence[Request]) -> list[Response]:  # pragma: no cover - interface
        raise NotImplementedError

    def identity(self) -> dict:
        """What makes this teacher's answers what they are, beyond its name and sampling (part of the cache key)."""
        return {"backend": type(self).__name__}

    def close(self) -> None:
        """Free what the backend holds (models, engines)."""


def _sampling(cfg: Mapping) -> Sampling:
    return Sampling(
        max_new_tokens=int(cfg.get("max_new_tokens", 512)),
        temperature=float(cfg.get("temperature", 0.0)),
        top_p=float(cfg.get("top_p", 1.0)),
        seed=int(cfg.get("seed", 0)),
    )


def chat_messages(request: Request, data_url: str) -> list[dict]:
    """The OpenAI chat format for one photo + prompt (also what vLLM's `LLM.chat` takes)."""
    return [
        {
            "role": "user",
            "content": [
                {"type": "image_url", "image_url": {"url": data_url}},
                {"type": "text", "text": request.prompt},
            ],
        }
    ]


# ----------------------------------------------------------------------------------------------------------- local


class LocalTeacher(Teacher):
    """A Hugging Face VLM run in this process through `globe.models` (batched generation)."""

    def __init__(self, name: str, model: str, adapter: str | None = None, batch_size: int = 8, dtype: str = "auto",
                 device: str = "auto", max_image_side: int | None = None, sampling: Sampling = Sampling()):
        self.name, self.model_path, self.adapter = name, str(model), adapter
        self.batch_size, self.dtype, self.device, self.sampling = int(batch_size), dtype, device, sampling
        self.max_image_side = max_image_side  # downscale first: preprocessing a large photo costs more than a tiny model
        self._model = self._processor = None

    def identity(self) -> dict:
        from globe.cache import files_digest

        return {"backend": "local", "model": self.model_path, "model_digest": files_digest(self.model_path),
                "adapter": self.adapter, "adapter_digest": files_digest(self.adapter),
                "max_image_side": self.max_image_side}

    def _load(self):
        if self._model is None:
            from globe.models import load_vlm

            self._model, self._processor = load_vlm(self.model_path, self.adapter, dtype=self.dtype, device=self.device)
        return self._model, self._processor

    def complete(self, requests: Sequence[Request]) -> list[Response]:
        from globe.models import generate

        model, processor = self._load()
        out: list[Response | None] = [None] * len(requests)
        groups: dict[Sampling, list[int]] = {}
        for i, r in enumerate(requests):
            groups.setdefault(r.sampling, []).append(i)
        for s, idx in groups.items():
            t0 = time.perf_counter()
            images = [shrink(load_image(requests[i].image), self.max_image_side) for i in idx]
            texts = generate(model, processor, images, [requests[i].prompt for i in idx],
                             max_new_tokens=s.max_new_tokens, temperature=s.temperature, top_p=s.top_p,
                             batch_size=self.batch_size, seed=s.seed)
            per = (time.perf_counter() - t0) / max(len(idx), 1)
            for i, text in zip(idx, texts):
                out[i] = Response(text=text, meta={"backend": "local", "model": self.model_path, "latency_s": round(per, 4)})
        return out  # type: ignore[return-value]

    def close(self) -> None:
        self._model = self._processor = None


# ---------------------------------------------------------------------------------------------------------- openai


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


# ------------------------------------------------------------------------------------------------------------ vllm


class VLLMTeacher(Teacher):
    """The vLLM offline engine in this process (`vllm.LLM.chat`), for GPU machines with vllm installed."""

    def __init__(self, name: str, model: str, tensor_parallel_size: int = 1, max_model_len: int = 8192,
                 gpu_memory_utilization: float = 0.9, max_image_side: int | None = 1024, trust_remote_code: bool = False,
                 batch_size: int = 256, sampling: Sampling = Sampling()):
        try:
            import vllm  # noqa: F401
        except ImportError as e:
            raise TeacherError(
                f"teacher {name!r} uses backend 'vllm' but vllm is not installed (pip install vllm, on a CUDA machine); "
                "or serve the model with `vllm serve` and use backend 'openai'"
            ) from e
        self.name, self.model, self.sampling, self.batch_size = name, str(model), sampling, int(batch_size)
        self.max_image_side = max_image_side
        self._engine_kw = dict(model=str(model), tensor_parallel_size=tensor_parallel_size, max_model_len=max_model_len,
                               gpu_memory_utilization=gpu_memory_utilization, trust_remote_code=trust_remote_code,
                               limit_mm_per_prompt={"image": 1})
        self._llm = None

    def identity(self) -> dict:
        from globe.cache import files_digest

        return {"backend": "vllm", "model": self.model, "model_digest": files_digest(self.model),
                "max_image_side": self.max_image_side}

    def complete(self, requests: Sequence[Request]) -> list[Response]:
        from vllm import LLM, SamplingParams

        if self._llm is None:
            self._llm = LLM(**self._engine_kw)
        out: list[Response | None] = [None] * len(requests)
        groups: dict[Sampling, list[int]] = {}
        for i, r in enumerate(requests):
            groups.setdefault(r.sampling, []).append(i)
        for s, idx in groups.items():
            params = SamplingParams(max_tokens=s.max_new_tokens, temperature=s.temperature, top_p=s.top_p, seed=s.seed)
            for start in range(0, len(idx), self.batch_size):
                chunk = idx[start:start + self.batch_size]
                convs = [chat_messages(requests[i], to_data_url(requests[i].image, max_side=self.max_image_side))
                         for i in chunk]
                try:
                    results = self._llm.chat(convs, params, use_tqdm=False)
                except Exception as e:  # one bad batch is reported per request, not fatal to the run
                    for i in chunk:
                        out[i] = Response(text="", meta={"backend": "vllm"}, error=f"{type(e).__name__}: {e}"[:300])
                    continue
                for i, res in zip(chunk, results):
                    o = res.outputs[0]
                    out[i] = Response(text=o.text, meta={"backend": "vllm", "model": self.model, "finish_reason": o.finish_reason})
        return out  # type: ignore[return-value]

    def close(self) -> None:
        self._llm = None


# --------------------------------------------------------------------------------------------------------- geoclip

GEOCLIP_DEFAULT = "geoclip"  # the package's own weights (image backbone openai/clip-vit-large-patch14 from the hub)


def gps_answer(lat: float, lon: float, confidence: float) -> str:
    """The cached text of a GeoCLIP answer."""
    return f"lat: {lat:.6f}\nlon: {lon:.6f}\nconfidence: {confidence:.6g}"


_GPS = re.compile(r"lat:\s*(-?[\d.]+)\s*\nlon:\s*(-?[\d.]+)\s*\nconfidence:\s*([\d.eE+-]+)")


def parse_gps(text: str | None) -> tuple[float, float, float] | None:
    """(lat, lon, confidence) from a GeoCLIP answer, or None."""
    m = _GPS.search(text or "")
    if not m:
        return None
    lat, lon, conf = (float(g) for g in m.groups())
    if not (-90 <= lat <= 90 and -180 <= lon <= 180 and 0 <= conf <= 1):
        return None
    return lat, lon, conf


class GeoCLIPTeacher(Teacher):
    """GeoCLIP (Vivanco et al., NeurIPS 2023) through the `geoclip` package: the top-1 point of its GPS gallery and
    that point's softmax probability as the confidence, per photo.

    `model`: "geoclip" (the package's weights; its CLIP backbone from the hub), a hub id or folder of a GeoCLIP
    release (`GeoCLIP.from_pretrained`), or a folder with a `clip/` backbone beside GeoCLIP weights (what
    `globe.tiny.build_tiny_geoclip` writes). The gallery's location features are computed once and photos are
    scored in batches (the package's `predict` takes one path and re-encodes the whole gallery each time).
    """

    kinds = ("gps",)

    def __init__(self, name: str = "geoclip", model: str = GEOCLIP_DEFAULT, batch_size: int = 32, device: str = "auto",
                 max_image_side: int | None = 512, gallery_batch: int = 8192, sampling: Sampling = Sampling()):
        if importlib.util.find_spec("geoclip") is None:
            raise TeacherError(f"teacher {name!r} uses backend 'geoclip' but the geoclip package is not installed "
                               "(pip install geoclip, or pip install '.[paper]')")
        if batch_size < 1 or gallery_batch < 1:
            raise TeacherError(f"teacher {name!r}: batch_size and gallery_batch must be >= 1")
        self.name, self.model_path, self.batch_size, self.device = name, str(model), int(batch_size), device
        self.max_image_side, self.gallery_batch, self.sampling = max_image_side, int(gallery_batch), sampling
        self._model = self._gallery_features = None

    def identity(self) -> dict:
        from importlib.metadata import version

        from globe.cache import files_digest

        return {"backend": "geoclip", "model": self.model_path, "model_digest": files_digest(self.model_path),
                "geoclip": version("geoclip"), "max_image_side": self.max_image_side}

    def _load(self):
        if self._model is not None:
            return self._model
        import torch
        from geoclip import GeoCLIP

        device = ("cuda" if torch.cuda.is_available() else "cpu") if self.device == "auto" else self.device
        path = Path(self.model_path)
        if self.model_path == GEOCLIP_DEFAULT:
            model = GeoCLIP()
        elif (path / "clip").is_dir():
            model = _local_geoclip(path)
        else:
            model = GeoCLIP.from_pretrained(self.model_path)
        self._model = model.to(device).eval()
        with torch.inference_mode():
            gallery = self._model.gps_gallery.to(device)
            feats = [self._model.location_encoder(gallery[i:i + self.gallery_batch])
                     for i in range(0, len(gallery), self.gallery_batch)]
            self._gallery_features = torch.nn.functional.normalize(torch.cat(feats), dim=1)
        return self._model

    def locate(self, images: Sequence[Any]) -> list[tuple[float, float, float]]:
        """(lat, lon, confidence) of the most probable gallery point for each image."""
        import torch

        model = self._load()
        device = self._gallery_features.device
        out = []
        for start in range(0, len(images), self.batch_size):
            batch = [shrink(load_image(im), self.max_image_side) for im in images[start:start + self.batch_size]]
            with torch.inference_mode():
                pixels = model.image_encoder.preprocess_image(batch).to(device)
                feats = torch.nn.functional.normalize(model.image_encoder(pixels), dim=1)
                probs = (model.logit_scale.exp() * feats @ self._gallery_features.T).softmax(dim=-1)
                conf, idx = probs.max(dim=-1)
            points = model.gps_gallery[idx.cpu()]
            out += [(float(p[0]), float(p[1]), float(c)) for p, c in zip(points, conf.cpu())]
        return out

    def complete(self, requests: Sequence[Request]) -> list[Response]:
        t0 = time.perf_counter()
        out: list[Response | None] = [None] * len(requests)
        ok, images = [], []
        for i, r in enumerate(requests):
            try:
                images.append(load_image(r.image))
                ok.append(i)
            except Exception as e:  # noqa: BLE001 - one bad photo is its own error, counted by the caller
                out[i] = Response(text="", meta={"backend": "geoclip"}, error=f"{type(e).__name__}: {e}"[:300])
        if images:
            located = self.locate(images)
            per = round((time.perf_counter() - t0) / len(images), 4)
            for i, (lat, lon, conf) in zip(ok, located):
                out[i] = Response(text=gps_answer(lat, lon, conf),
                                  meta={"backend": "geoclip", "model": self.model_path, "latency_s": per})
        return out  # type: ignore[return-value]

    def close(self) -> None:
        self._model = self._gallery_features = None


def _local_geoclip(path: Path):
    """A GeoCLIP from a folder: `clip/` (the image backbone), `model.safetensors` (location encoder, image MLP,
    logit scale, in the release's key layout), `config.json` (`sigma`, `gallery_file`)."""
    import torch
    from geoclip import GeoCLIP, LocationEncoder
    from safetensors.torch import load_file

    config = json.loads((path / "config.json").read_text(encoding="utf-8"))
    model = GeoCLIP(from_pretrained=False, clip_path=str(path / "clip"))
    if list(config.get("sigma", model.location_encoder.sigma)) != list(model.location_encoder.sigma):
        model.location_encoder = LocationEncoder(sigma=config["sigma"], from_pretrained=False)
    weights = load_file(str(path / "model.safetensors"))
    for prefix, module in (("location_encoder.", model.location_encoder),
                           ("image_encoder.mlp.", model.image_encoder.mlp)):
        module.load_state_dict({k[len(prefix):]: v for k, v in weights.items() if k.startswith(prefix)}, strict=True)
    with torch.no_grad():
        model.logit_scale.copy_(weights["logit_scale"])
    import pandas as pd

    gallery = pd.read_csv(path / config["gallery_file"])[["LAT", "LON"]].to_numpy(dtype="float32")
    model.gps_gallery = torch.from_numpy(gallery)
    return model


# ---------------------------------------------------------------------------------------------------------- oracle

# Words in a title that suggest a recognisable, nameable place (the oracle teacher's localizability heuristic).
LANDMARK_WORDS = (
    "abbey", "basilica", "beach", "bridge", "castle", "cathedral", "church", "harbour", "harbor", "lake", "monument",
    "mosque", "mount", "mountain", "museum", "palace", "park", "plaza", "river", "square", "station", "statue",
    "street", "temple", "tower", "university", "valley",
)
# Words that do not make a title a caption (camera and gallery boilerplate).
_NOT_DESCRIPTIVE = {"image", "img", "dsc", "dscn", "cimg", "photo", "picture", "pic", "untitled", "jpg", "jpeg", "www", "com"}


class OracleTeacher(Teacher):
    """A deterministic offline STAND-IN for a strong teacher. NOT a model, and not what the paper does.

    It answers from the sample's metadata (`Request.meta`: title, country, admin1, city, lat/lon), so its answers are
    right by construction:

    - reasoning prompt: a short templated trace that lists clue words (those of the clue vocabulary found in the
      photo's title, then generic ones picked deterministically from the vocabulary by a hash of the id), says in
      fixed phrases what the title shows (it names the place, a landmark, describes the scene, or says nothing
      useful: the signals of the localizability judgement below), names the true city and country, then
      `<answer>` with them;
    - localizability prompt: `score = 0.1 + 0.3·[the title names the city, region or country] + 0.2·[the title has
      a landmark or clue word] + 0.3·[the title is a descriptive caption, not a camera file name] + 0.1·[a city is
      known]`, `localizable: yes` iff score >= 0.5. So captioned photos and named places are "localizable", photos
      titled "IMG_0042" are not: both labels occur, which the reward model needs. The heuristic is a proxy for
      "the photographer saw a subject worth naming", nothing more.

    Why it exists: the default profile's teacher is a tiny random VLM whose text is noise, which the filters rightly
    reject, leaving nothing for SFT / GRPO / the reward model to train on. With this teacher the smoke pipeline has
    data of the right shape. The paper profile uses Qwen2.5-VL-72B and InternVL3-78B behind an OpenAI-compatible vLLM
    endpoint instead.
    """

    is_oracle = True
    TEMPLATE = 4  # the version of the trace it writes (part of its identity, hence of the cache key)

    def __init__(self, name: str = "oracle", vocabulary: Sequence[str] | None = None, n_clues: int = 2,
                 sampling: Sampling = Sampling()):
        from globe.vocabulary import CLUE_VOCABULARY

        self.name, self.sampling, self.n_clues = name, sampling, int(n_clues)
        self.needs_image = False  # it reads the metadata only
        self.vocabulary = list(vocabulary or CLUE_VOCABULARY)

    def identity(self) -> dict:
        from globe.cache import cache_key

        return {"backend": "oracle", "template": self.TEMPLATE, "vocabulary": cache_key(self.vocabulary),
                "n_clues": self.n_clues}

    def _clues(self, rid: str, title: str) -> list[str]:
        from globe.vocabulary import find_clues

        found = find_clues(title, self.vocabulary)
        h = int(hashlib.sha256(rid.encode("utf-8")).hexdigest(), 16)
        pool = [c for c in self.vocabulary if c not in found]
        while len(found) < self.n_clues and pool:
            found.append(pool.pop(h % len(pool)))
            h //= 7
        return found

    @staticmethod
    def _place_named(title: str, meta: Mapping) -> bool:
        t = title.lower()
        return any(p and str(p).lower() in t for p in (meta.get("city"), meta.get("admin1"), meta.get("country")))

    @staticmethod
    def _descriptive(title: str) -> bool:
        """A caption in words, not a camera file name ("IMG_0042", "Image #12 (http://...)")."""
        t = re.sub(r"\(?https?://\S+\)?|\S*\d\S*", " ", title.lower())
        return len([w for w in re.findall(r"[a-z]{3,}", t) if w not in _NOT_DESCRIPTIVE]) >= 2

    def _signals(self, meta: Mapping) -> dict[str, bool]:
        """What the title shows: it names the place, it has a landmark or clue word, it is a descriptive caption;
        and whether a city is known."""
        from globe.vocabulary import find_clues

        title = str(meta.get("title") or "")
        words = set(re.findall(r"[a-z]+", title.lower()))
        return {"place": self._place_named(title, meta),
                "landmark": bool(words & set(LANDMARK_WORDS)) or bool(find_clues(title, self.vocabulary)),
                "caption": self._descriptive(title), "city": bool(meta.get("city"))}

    def localizability(self, meta: Mapping) -> float:
        """0.1 + 0.3·[title names the city, region or country] + 0.2·[title has a landmark or clue word]
        + 0.3·[title is a descriptive caption] + 0.1·[a city is known], capped at 1."""
        s = self._signals(meta)
        score = 0.1 + 0.3 * s["place"] + 0.2 * s["landmark"] + 0.3 * s["caption"] + 0.1 * s["city"]
        return round(min(score, 1.0), 2)

    def _reasoning(self, r: Request) -> str:
        """A short, templated trace: the clue list, what the caption shows (the signals its localizability judgement
        rests on, in fixed phrases), and the place.

        Templated on purpose: the default profile's tiny policy can learn a fixed structure within a few hundred SFT
        steps (free text such as a quoted caption it can only memorise), writes it well inside GRPO's completion
        budget, and the reward model finds its labels' reasons in the reasoning it reads."""
        m = r.meta
        s = self._signals(m)
        hints = [phrase for key, phrase in (("place", "The caption names the place."),
                                            ("landmark", "It mentions a landmark."),
                                            ("caption", "It describes the scene.")) if s[key]]
        country, city = m.get("country") or "", m.get("city") or ""
        place = ", ".join(p for p in (city, country) if p)  # the answer repeats it: a structure a small model can copy
        parts = [f"Clues: {', '.join(self._clues(r.id, str(m.get('title') or '')))}.",
                 *(hints or ["The caption says nothing useful."]),
                 f"This looks like {place or 'an unknown place'}."]
        return f"<think>{' '.join(parts)}</think>\n<answer>country: {country}\ncity: {city}</answer>"

    def complete(self, requests: Sequence[Request]) -> list[Response]:
        from globe.prompts import LOCALIZABILITY_PROMPT

        out = []
        for r in requests:
            if r.prompt == LOCALIZABILITY_PROMPT:
                s = self.localizability(r.meta)
                text = f"localizable: {'yes' if s >= 0.5 else 'no'}\nscore: {s:.2f}"
            else:
                text = self._reasoning(r)
            out.append(Response(text=text, meta={"backend": "oracle"}))
        return out


# -------------------------------------------------------------------------------------------------------- registry

TEACHERS: dict[str, type[Teacher]] = {
    "local": LocalTeacher,
    "openai": OpenAITeacher,
    "vllm": VLLMTeacher,
    "geoclip": GeoCLIPTeacher,
    "oracle": OracleTeacher,
}

_SAMPLING_KEYS = ("max_new_tokens", "temperature", "top_p", "seed")


def make_teacher(cfg: Mapping, seed: int | None = None) -> Teacher:
    """A teacher from its params entry: `{name, backend, <backend options>, max_new_tokens, temperature, top_p}`."""
    cfg = dict(cfg)
    if "api_key" in cfg:
        raise TeacherError("put the NAME of an environment variable in `api_key_env`, never the key itself, in params")
    backend = cfg.pop("backend", None)
    if backend not in TEACHERS:
        raise TeacherError(f"teacher {cfg.get('name')!r}: unknown backend {backend!r}; known: {sorted(TEACHERS)}")
    if seed is not None:
        cfg.setdefault("seed", seed)
    sampling = _sampling(cfg)
    for k in _SAMPLING_KEYS:
        cfg.pop(k, None)
    cfg.setdefault("name", backend)
    try:
        return TEACHERS[backend](sampling=sampling, **cfg)
    except TypeError as e:
        raise TeacherError(f"teacher {cfg['name']!r} (backend {backend!r}): bad options: {e}") from e
