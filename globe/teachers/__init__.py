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

The parts: `base` (the interface: `Teacher`, `Request`, `Response`, `Sampling`, the errors), one module per backend
(`local`, `openai_endpoint`, `vllm_engine`, `geoclip_gps`, `oracle`), and `registry` (`make_teacher`).
"""

from __future__ import annotations

from globe.teachers.base import ErrorBudgetExceeded, Request, Response, Sampling, Teacher, TeacherError
from globe.teachers.geoclip_gps import GeoCLIPTeacher, parse_gps
from globe.teachers.local import LocalTeacher
from globe.teachers.openai_endpoint import OpenAITeacher
from globe.teachers.oracle import OracleTeacher
from globe.teachers.registry import make_teacher
from globe.teachers.vllm_engine import VLLMTeacher

__all__ = ["ErrorBudgetExceeded", "GeoCLIPTeacher", "LocalTeacher", "OpenAITeacher", "OracleTeacher", "Request",
           "Response", "Sampling", "Teacher", "TeacherError", "VLLMTeacher", "make_teacher", "parse_gps"]
