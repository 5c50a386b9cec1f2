"""The backends by name, and `make_teacher(cfg)`: a teacher from its params entry."""

from __future__ import annotations

from collections.abc import Mapping

from globe.teachers.base import Sampling, Teacher, TeacherError
from globe.teachers.geoclip_gps import GeoCLIPTeacher
from globe.teachers.local import LocalTeacher
from globe.teachers.openai_endpoint import OpenAITeacher
from globe.teachers.oracle import OracleTeacher
from globe.teachers.vllm_engine import VLLMTeacher

TEACHERS: dict[str, type[Teacher]] = {
    "local": LocalTeacher,
    "openai": OpenAITeacher,
    "vllm": VLLMTeacher,
    "geoclip": GeoCLIPTeacher,
    "oracle": OracleTeacher,
}

_SAMPLING_KEYS = ("max_new_tokens", "temperature", "top_p", "seed")


def _sampling(cfg: Mapping) -> Sampling:
    return Sampling(
        max_new_tokens=int(cfg.get("max_new_tokens", 512)),
        temperature=float(cfg.get("temperature", 0.0)),
        top_p=float(cfg.get("top_p", 1.0)),
        seed=int(cfg.get("seed", 0)),
    )


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
