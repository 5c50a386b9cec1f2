"""`local`: a Hugging Face VLM run in this process through transformers, batched (`globe.models`)."""

from __future__ import annotations

import time
from collections.abc import Sequence

from globe.images import load_image, shrink
from globe.teachers.base import Request, Response, Sampling, Teacher


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
