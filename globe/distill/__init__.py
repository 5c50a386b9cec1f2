"""Distillation: teachers answer, filters keep what is trustworthy, an MP16-Reason-style dataset comes out.

GLOBE's recipe (paper §3.1), step by step as `run_distillation` does it:

1. Query (`globe.distill.query`). Every teacher answers every photo of every split twice: the reasoning prompt and
   the localizability prompt (`globe.prompts`). Each raw answer is appended to a JSONL cache (`globe.cache`) keyed
   by everything that changes it (photo, teacher identity, prompt version and text, image budget, sampling), so a run
   killed at any moment and started again asks nothing twice and loses nothing. Failed requests are not cached (a
   rerun retries them) and are counted.
2. Filter (`globe.distill.filters`), in order, one candidate per (photo, teacher):
   - `localizability`: the teacher says `localizable: yes` with score >= `min_localizability`;
   - `ground_truth`:   the teacher's country is the photo's (ISO codes, gazetteer-normalised) and its city passes
                       `city_rule` (`string`: GLOBE's string rule on the names; `gazetteer`: the same GeoNames place,
                       or within `city_km`);
   - `agreement`:      the reasoning is consistent (the completion is well formed, and if the reasoning names
                       countries the answered one is among them) and at least `min_agreeing_teachers` teachers still
                       in the running give the same country and a city within `agreement_km`;
   - `clues`:          the visual entities named in the reasoning (`globe.vocabulary.extract_entities`) are checked
                       by an open-vocabulary detector (OWLv2 in the paper profile); verified ones become `entities`;
                       the share verified must reach `min_verified_share`.
3. Write (`globe.distill.outputs`). Per photo the surviving candidate with the highest localizability score (ties:
   teacher order) becomes one row of the dataset at `out` (splits as ingested), with a dataset card README.md; every
   judged (photo, teacher) of `localizability_split` -- positives and negatives -- becomes a row of the reward
   model's labels at `<out>/localizability`. The funnel, the teacher agreement matrix and run counts go to `results`.
"""

from __future__ import annotations

import json
import logging
import time
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, ClassVar, Literal

from globe.config import ParamsError, StageConfig
from globe.distill.filters import FILTERS, apply_filters, collect_candidates, load_detector
from globe.distill.outputs import (
    agreement_matrix,
    build_localizability_dataset,
    build_reason_dataset,
    funnel_table,
    pick_per_photo,
    write_card,
)
from globe.distill.query import answer_key, query_teachers

log = logging.getLogger(__name__)

LOCALIZABILITY_DIR = "localizability"  # the reward model's labels, inside the distilled dataset's folder


@dataclass
class DistillParams(StageConfig):
    """params.yaml's `distill` group (plus `seed` and `offline` from `common`). See params.yaml for each key."""

    group: ClassVar[str] = "distill"

    dataset: str = "data/processed/dataset"
    out: str = "data/mp16_reason"
    localizability_split: str = "train"
    cache: str = "data/processed/distill/cache.jsonl"
    results: str = "results/distill"
    splits: list[str] | None = None  # None: every split of `dataset`
    max_images: int | None = None  # per split
    batch_size: int = 16
    teachers: list[dict[str, Any]] = field(default_factory=lambda: [{"name": "oracle", "backend": "oracle"}])
    filters: list[str] = field(default_factory=lambda: list(FILTERS))
    min_localizability: float = 0.5
    city_rule: Literal["string", "gazetteer"] = "string"
    city_km: float = 25.0
    agreement_km: float = 100.0
    min_agreeing_teachers: int = 1
    detector: str = "models/tiny-owlvit"
    build_tiny_models: bool = False
    detector_threshold: float = 0.1
    detector_batch_size: int = 8
    min_verified_share: float = 0.5
    max_entities: int = 8
    clue_vocabulary: list[str] | None = None  # None: globe.vocabulary.CLUE_VOCABULARY
    keep: Literal["best", "all"] = "best"
    seed: int = 0
    offline: bool = True

    def validate(self) -> None:
        unknown = [f for f in self.filters if f not in FILTERS]
        self.require(not unknown, "filters", f"unknown filter(s) {unknown}; known: {list(FILTERS)}")
        self.require(self.min_localizability >= 0.0, "min_localizability", "must be >= 0 (above 1 keeps nothing)")
        self.require(0.0 <= self.min_verified_share <= 1.0, "min_verified_share", "must be in [0, 1]")
        self.require(self.min_agreeing_teachers >= 1, "min_agreeing_teachers", "must be >= 1")
        self.require(self.batch_size >= 1 and self.detector_batch_size >= 1, "batch_size", "batch sizes must be >= 1")
        self.require(self.max_entities >= 1, "max_entities", "must be >= 1")
        self.require(bool(self.teachers), "teachers", "name at least one teacher")
        from globe.config import check_env_name

        for i, t in enumerate(self.teachers):
            if not t.get("backend"):
                raise ParamsError(f"distill.teachers[{i}]: no backend (one of local, openai, vllm, oracle)")
            check_env_name(t.get("api_key_env"), f"distill.teachers[{i}].api_key_env")
        names = [t.get("name", t["backend"]) for t in self.teachers]
        self.require(len(set(names)) == len(names), "teachers", f"teacher names must be unique (they key the "
                     f"cache): {names}")


@dataclass
class DistillResult:
    dataset: Any  # DatasetDict
    localizability: Any  # Dataset
    candidates: Any  # DataFrame: every judged (photo, teacher) with the columns the filters added
    survivors: Any  # DataFrame: candidates after all filters
    funnel: Any
    agreement: Any
    stats: dict = field(default_factory=dict)
    stages: dict = field(default_factory=dict)  # stage -> survivors after it (with the columns each filter adds)
    seconds: dict = field(default_factory=dict)  # wall time per phase (shown, never written to tracked results)


def load_splits(path: str, names: Sequence[str] | None, max_images: int | None = None) -> dict:
    from globe.data import open_saved

    dd = open_saved(path)
    names = list(names or dd.keys())
    missing = [n for n in names if n not in dd]
    if missing:
        raise KeyError(f"{path} has no split(s) {missing}; it has {list(dd.keys())}")
    return {n: dd[n].select(range(min(len(dd[n]), max_images))) if max_images else dd[n] for n in names}


def ensure_tiny_models(cfg: DistillParams) -> None:
    """Build the tiny random detector and local teacher models named by `cfg` when missing (`build_tiny_models`)."""
    if not cfg.build_tiny_models:
        return
    from globe.tiny import build_tiny_detector, build_tiny_vlm

    if "clues" in cfg.filters and not Path(cfg.detector).exists():
        log.info("building the tiny random detector at %s", cfg.detector)
        build_tiny_detector(cfg.detector, seed=cfg.seed)
    for t in cfg.teachers:
        if t.get("backend") == "local" and not Path(t["model"]).exists():
            log.info("building the tiny random VLM at %s", t["model"])
            build_tiny_vlm(t["model"], seed=cfg.seed)


def run_distillation(cfg: DistillParams | dict, teachers: Sequence | None = None,
                     progress: bool = True) -> DistillResult:
    """The whole stage: query, filter, write the dataset, its card, the reward model's labels and the results."""
    from globe.cache import JsonlCache
    from globe.config import prepare_run
    from globe.data import save_dataset
    from globe.teachers import make_teacher

    cfg = cfg if isinstance(cfg, DistillParams) else DistillParams.from_params(cfg)
    prepare_run(cfg.seed, cfg.offline)
    clock = {"start": time.perf_counter()}
    splits = load_splits(cfg.dataset, cfg.splits, cfg.max_images)
    ensure_tiny_models(cfg)
    if teachers is None:
        teachers = [make_teacher(t, seed=cfg.seed) for t in cfg.teachers]
    names = [t.name for t in teachers]
    if len(set(names)) != len(names):
        raise ValueError(f"teacher names must be unique (they key the cache): {names}")
    cache = JsonlCache(cfg.cache)
    stats: dict[str, Any] = {"cache_on_load": cache.report()}
    stats["query"] = query_teachers(teachers, splits, cache, cfg.batch_size, progress=progress)
    teacher_seconds = stats["query"].pop("seconds")  # wall times are shown, never written to tracked results
    clock["query"] = time.perf_counter()
    judged = collect_candidates(teachers, splits, cache)
    stats["unparsed_localizability"] = {t: int(((judged["teacher"] == t) & judged["loc_label"].isna()).sum())
                                        for t in names}
    stats["unparsed_answer"] = {t: int(((judged["teacher"] == t) & judged["pred_country"].isna()).sum())
                                for t in names}
    for t in teachers:
        t.close()
    detector = load_detector(cfg.detector) if "clues" in cfg.filters else None
    survivors, stages = apply_filters(judged, cfg, images=lambda s, r: splits[s][int(r)]["image"], detector=detector)
    clock["filters"] = time.perf_counter()
    funnel = funnel_table(stages, names, list(splits))
    agreement = agreement_matrix(judged, names, cfg.agreement_km)
    chosen = pick_per_photo(survivors, cfg.keep)
    dataset = build_reason_dataset(chosen, splits)
    if cfg.localizability_split not in splits:
        raise ParamsError(f"distill.localizability_split {cfg.localizability_split!r} is not among the splits "
                          f"{list(splits)}")
    loc = build_localizability_dataset(judged[judged["split"] == cfg.localizability_split],
                                       splits[cfg.localizability_split])
    stats["images"] = {s: len(d) for s, d in splits.items()}
    stats["sizes"] = {s: len(d) for s, d in dataset.items()}
    stats["localizability_rows"] = {"total": len(loc), "positive": int(sum(loc["label"]))}
    stats["teachers"] = {t.name: t.identity() for t in teachers}

    def extras(partial: Path) -> None:  # written inside the dataset folder before it is renamed into place
        save_dataset(loc, partial / LOCALIZABILITY_DIR, atomic=False)
        write_card(partial / "README.md", dataset, funnel, cfg, stats, teachers)

    save_dataset(dataset, cfg.out, before_rename=extras)
    clock["write"] = time.perf_counter()
    results = Path(cfg.results)
    results.mkdir(parents=True, exist_ok=True)
    funnel.to_csv(results / "funnel.csv", index=False)
    agreement.rename_axis("teacher").to_csv(results / "agreement.csv", float_format="%.4f")
    (results / "stats.json").write_text(json.dumps(stats, indent=1, default=str) + "\n", encoding="utf-8")
    seconds = {k: round(clock[k] - clock[p], 2) for p, k in zip(list(clock), list(clock)[1:])}
    seconds["teachers"] = teacher_seconds
    log.info("distillation: %s", seconds)
    return DistillResult(dataset, loc, judged, survivors, funnel, agreement, stats, dict(stages), seconds)


__all__ = ["DistillParams", "DistillResult", "FILTERS", "answer_key", "apply_filters", "collect_candidates",
           "load_splits", "query_teachers", "run_distillation"]
