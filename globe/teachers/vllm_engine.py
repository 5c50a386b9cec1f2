"""`vllm`: the vLLM offline engine in this process (GPU machines with vllm installed)."""

from __future__ import annotations

from collections.abc import Sequence

from globe.images import to_data_url
from globe.teachers.base import Request, Response, Sampling, Teacher, TeacherError, chat_messages


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
