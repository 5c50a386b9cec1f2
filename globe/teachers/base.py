"""The one teacher interface: `Teacher.complete(requests) -> list[Response]`, its requests, answers and errors."""

from __future__ import annotations

import json
from collections.abc import Sequence
from dataclasses import asdict, dataclass, field
from typing import Any


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
