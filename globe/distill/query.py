"""Asking the teachers: every prompt about every photo the cache lacks, cached per batch, failures counted."""

from __future__ import annotations

import logging
from collections.abc import Mapping, Sequence
from typing import Any

from globe.cache import JsonlCache, cache_key

log = logging.getLogger(__name__)

PROMPT_KINDS = ("reasoning", "localizability")
META_COLUMNS = ("id", "lat", "lon", "country_code", "country", "admin1", "city", "continent", "title")
GPS_QUESTION = "geoclip: the most probable GPS point of the photo and its probability"  # GeoCLIP reads no prompt


def prompt_text(kind: str) -> str:
    from globe import prompts

    return {"reasoning": prompts.REASONING_PROMPT, "localizability": prompts.LOCALIZABILITY_PROMPT,
            "gps": GPS_QUESTION}[kind]


def teacher_kinds(teacher, kinds: Sequence[str] | None = None) -> tuple[str, ...]:
    """The questions a teacher is asked: those of its `kinds` (GeoCLIP answers "gps" only; a VLM the reasoning and
    localizability prompts) that are among `kinds` (None: all of them)."""
    own = tuple(getattr(teacher, "kinds", None) or PROMPT_KINDS)
    return own if kinds is None else tuple(k for k in own if k in kinds)


def answer_key(image_id: str, teacher, kind: str, *, prompt_version: str | None = None) -> str:
    """The cache key of one teacher answer: the photo, the teacher's name and identity (backend, model and a digest
    of its local files, image budget), the prompt version and current text, and the sampling parameters."""
    from globe.prompts import PROMPT_VERSION

    return cache_key("distill", str(image_id), teacher.name, teacher.identity(), prompt_version or PROMPT_VERSION,
                     kind, prompt_text(kind), teacher.sampling)


WALL_CLOCK_META = ("latency_s",)  # response metadata a rerun does not reproduce: kept out of the cache (a DVC output)


def _record(key: str, split: str, kind: str, request, response, teacher) -> dict:
    """The cache line of one answer (its metadata without wall-clock figures)."""
    from dataclasses import asdict

    from globe.prompts import PROMPT_VERSION

    return {"key": key, "id": request.id, "split": split, "teacher": teacher.name, "prompt": kind,
            "prompt_version": PROMPT_VERSION, "sampling": asdict(teacher.sampling), "text": response.text,
            "meta": {k: v for k, v in response.meta.items() if k not in WALL_CLOCK_META}}


def _todo(teacher, splits: Mapping[str, Any], cache: JsonlCache, kinds: Sequence[str]) -> tuple[list, int]:
    """(split, row, kind, key) of every answer the cache lacks, and how many it has."""
    todo, cached = [], 0
    for split, ds in splits.items():
        ids = ds["id"]
        for kind in kinds:
            for row, image_id in enumerate(ids):
                key = answer_key(image_id, teacher, kind)
                if key in cache:
                    cached += 1
                else:
                    todo.append((split, row, kind, key))
    return todo, cached


def query_teachers(teachers: Sequence, splits: Mapping[str, Any], cache: JsonlCache, batch_size: int = 8,
                   kinds: Sequence[str] | None = None, progress: bool = False) -> dict:
    """Ask every teacher every prompt about every photo of `splits` ({name: datasets.Dataset}) that the cache lacks.

    Answers are cached per batch. Failed requests are not cached (a rerun retries them); they are counted in the
    returned stats: {"asked", "cached", "errors": {teacher: n}, "error_examples": [...], "seconds": {teacher: s}}.
    """
    import time

    from globe.progress import Progress
    from globe.teachers import ErrorBudgetExceeded, Request

    stats: dict = {"asked": {}, "cached": {}, "errors": {}, "error_examples": [], "seconds": {}}
    for teacher in teachers:
        t = teacher.name
        t0 = time.perf_counter()
        todo, stats["cached"][t] = _todo(teacher, splits, cache, teacher_kinds(teacher, kinds))
        stats["asked"][t] = stats["errors"][t] = 0
        # A teacher that reads metadata only (the oracle stand-in) is spared decoding every photo.
        view = splits if teacher.needs_image else {s: d.remove_columns("image") for s, d in splits.items()}
        bar = Progress(f"teacher {t}", len(todo), unit="answers", enabled=progress and bool(todo))
        for start in range(0, len(todo), batch_size):
            batch = todo[start:start + batch_size]
            requests = []
            for split, row, kind, _ in batch:
                sample = view[split][row]
                requests.append(Request(id=str(sample["id"]), image=sample.get("image"), prompt=prompt_text(kind),
                                        sampling=teacher.sampling, meta={c: sample.get(c) for c in META_COLUMNS}))
            try:
                responses = teacher.complete(requests)
            except ErrorBudgetExceeded as e:  # keep the answers of this batch that did complete, then stop
                cache.append([_record(key, split, kind, req, resp, teacher)
                              for (split, _, kind, key), req, resp in zip(batch, requests, e.responses)
                              if resp is not None and resp.error is None])
                raise
            if len(responses) != len(requests):
                raise RuntimeError(f"teacher {t!r} returned {len(responses)} responses for {len(requests)} requests")
            records = []
            for (split, _, kind, key), req, resp in zip(batch, requests, responses):
                stats["asked"][t] += 1
                if resp.error is not None:
                    stats["errors"][t] += 1
                    if len(stats["error_examples"]) < 5:
                        stats["error_examples"].append(f"{t} {req.id} {kind}: {resp.error[:200]}")
                    continue
                records.append(_record(key, split, kind, req, resp, teacher))
            cache.append(records)
            bar.update(len(batch))
        stats["seconds"][t] = round(time.perf_counter() - t0, 3)
        if stats["errors"][t]:
            log.warning("teacher %s: %d requests failed (not cached; a rerun retries them)", t, stats["errors"][t])
    return stats
