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
   - `geoclip`:        (GLOBE's third teacher) the answered place is within `geoclip_km` of GeoCLIP's point;
   - `alignment`:      the reasoning chains of the teachers still in the running on a photo are semantically
                       aligned (cosine similarity of sentence embeddings >= `min_alignment`; `alignment_model`
                       `lexical` is a deterministic stand-in);
   - `clues`:          the visual entities named in the reasoning (`globe.vocabulary.extract_entities`) are verified
                       in the photo, by a segmentation model (`verifier: segmentation`, GLOBE's: the entity is among
                       the segments' labels, mapped to the clue vocabulary) or an open-vocabulary detector
                       (`verifier: detector`, OWLv2); verified ones become `entities`; the share verified must reach
                       `min_verified_share`.
   GLOBE's filter 3 is `agreement` + `geoclip` + `alignment`; the default profile runs `agreement` only.

Past one machine: with `shard: i/N` a run queries only its shard's photos (a stable hash of the id) into its own
cache file (`cache.shard-i-of-N.jsonl`) and stops; `merge_shards(cfg, N)` (`globe merge-shards distill --shards N`)
joins the N caches into `cache` (no record lost, none twice) and a normal run then filters and writes with nothing
left to ask.
3. Write (`globe.distill.outputs`). Per photo the surviving candidate with the highest localizability score (ties:
   teacher order) becomes one row of the dataset at `out` (splits as ingested), with a dataset card README.md; every
   judged (photo, teacher) of `localizability_split` -- positives and negatives -- becomes a row of the reward
   model's labels at `<out>/localizability`. The funnel, the teacher agreement matrix and run counts go to `results`.
"""

from __future__ import annotations

import json
import logging
import time
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, ClassVar, Literal

from globe.cache import parse_shard
from globe.config import ParamsError, StageConfig
from globe.distill.filters import (
    DEFAULT_FILTERS,
    FILTERS,
    apply_filters,
    collect_candidates,
    load_detector,
    load_embedder,
    load_segmenter,
)
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
    filters: list[str] = field(default_factory=lambda: list(DEFAULT_FILTERS))
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
    # filter 3b (`geoclip`): a teacher's place within this of GeoCLIP's point (None: agreement_km); GeoCLIP less
    # confident than geoclip_min_confidence abstains
    geoclip_km: float | None = None
    geoclip_min_confidence: float = 0.0
    # filter 3c (`alignment`): sentence encoder (`lexical`: the deterministic stand-in) and the cosine to reach
    alignment_model: str = "lexical"
    min_alignment: float = 0.5
    # filter 4 (`clues`): who verifies the named entities, and the segmenter's settings
    verifier: Literal["detector", "segmentation"] = "detector"
    segmenter: str = "models/tiny-segformer"
    segment_min_area: float = 0.0  # share of the photo a segment must cover to count
    segment_aliases: dict[str, list[str]] | None = None  # None: globe.distill.filters.SEGMENT_ALIASES
    shard: str | None = None  # "i/N": query only shard i of N into its own cache file, then stop (merge_shards)
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
        backends = [t["backend"] for t in self.teachers]
        self.require(any(b != "geoclip" for b in backends), "teachers", "name at least one VLM teacher (GeoCLIP "
                     "gives points, not reasoning)")
        self.require("geoclip" not in self.filters or "geoclip" in backends, "filters",
                     "the geoclip filter needs a teacher with backend geoclip")
        self.require(self.geoclip_km is None or self.geoclip_km > 0, "geoclip_km", "must be > 0 or null")
        self.require(0.0 <= self.geoclip_min_confidence <= 1.0, "geoclip_min_confidence", "must be in [0, 1]")
        self.require(-1.0 <= self.min_alignment <= 1.0, "min_alignment", "must be a cosine, in [-1, 1]")
        self.require(0.0 <= self.segment_min_area < 1.0, "segment_min_area", "must be in [0, 1)")
        try:
            parse_shard(self.shard)
        except ValueError as e:
            raise ParamsError(f"distill.shard: {e}") from None


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
    """Build the tiny random models `cfg` names (detector or segmenter, sentence encoder, local teachers, GeoCLIP)
    when they are missing (`build_tiny_models`: the default profile and the recipe shape check)."""
    if not cfg.build_tiny_models:
        return
    from globe import tiny

    def build(kind: str, builder, path: str) -> None:
        if not Path(path).exists():
            log.info("building the tiny random %s at %s", kind, path)
            builder(path, seed=cfg.seed)

    if "clues" in cfg.filters:
        if cfg.verifier == "detector":
            build("detector", tiny.build_tiny_detector, cfg.detector)
        else:
            build("segmenter", tiny.build_tiny_segmenter, cfg.segmenter)
    if "alignment" in cfg.filters and cfg.alignment_model != "lexical":
        build("sentence encoder", tiny.build_tiny_text_encoder, cfg.alignment_model)
    for t in cfg.teachers:
        if t.get("backend") == "local":
            build("VLM", tiny.build_tiny_vlm, t["model"])
        elif t.get("backend") == "geoclip" and t.get("model", "geoclip") != "geoclip":
            build("GeoCLIP", tiny.build_tiny_geoclip, t["model"])


def shard_splits(splits: dict, shard: tuple[int, int]) -> dict:
    """Each split's photos that belong to `shard` (by a stable hash of the id)."""
    from globe.cache import in_shard

    return {name: ds.select([i for i, x in enumerate(ds["id"]) if in_shard(x, shard)]) for name, ds in splits.items()}


def merge_shards(cfg: DistillParams | dict, n_shards: int) -> dict:
    """Join the caches of shards 0..N-1 (`cache.shard-i-of-N.jsonl`) into `cfg.cache`; returns the merge report
    (`globe.cache.merge_caches`: nothing lost, nothing twice). Every shard must have run."""
    from globe.cache import merge_caches, shard_paths

    cfg = cfg if isinstance(cfg, DistillParams) else DistillParams.from_params(cfg)
    report = merge_caches(cfg.cache, shard_paths(cfg.cache, n_shards))
    log.info("distillation: merged %d shards into %s: %s", n_shards, cfg.cache, report)
    return report


def run_distillation(cfg: DistillParams | dict, teachers: Sequence | None = None,
                     progress: bool = True) -> DistillResult:
    """The whole stage: query, filter, write the dataset, its card, the reward model's labels and the results."""
    from globe.cache import JsonlCache, shard_path
    from globe.config import prepare_run
    from globe.data import save_dataset
    from globe.distill.query import teacher_kinds
    from globe.progress import record_timing

    cfg = cfg if isinstance(cfg, DistillParams) else DistillParams.from_params(cfg)
    prepare_run(cfg.seed, cfg.offline)
    clock = {"start": time.perf_counter()}
    splits = load_splits(cfg.dataset, cfg.splits, cfg.max_images)
    shard = parse_shard(cfg.shard)
    if shard is not None:
        splits = shard_splits(splits, shard)
    ensure_tiny_models(cfg)
    teachers = _unique_teachers(cfg, teachers)
    names = [t.name for t in teachers if "reasoning" in teacher_kinds(t)]  # the candidates' teachers (not GeoCLIP)
    cache = JsonlCache(shard_path(cfg.cache, shard) if shard else cfg.cache)
    stats: dict[str, Any] = {"cache_on_load": cache.report()}
    stats["query"] = query_teachers(teachers, splits, cache, cfg.batch_size, progress=progress)
    teacher_seconds = stats["query"].pop("seconds")  # wall times are shown, never written to tracked results
    clock["query"] = time.perf_counter()
    if shard is not None:  # a shard only asks; the merged run filters and writes
        return _finish_shard(cfg, shard, teachers, splits, cache, stats, teacher_seconds)
    judged = collect_candidates(teachers, splits, cache)
    stats["unparsed_localizability"] = {t: int(((judged["teacher"] == t) & judged["loc_label"].isna()).sum())
                                        for t in names}
    stats["unparsed_answer"] = {t: int(((judged["teacher"] == t) & judged["pred_country"].isna()).sum())
                                for t in names}
    for t in teachers:
        t.close()
    models = _filter_models(cfg)
    stats["verifier"] = {"verifier": cfg.verifier,
                         "model": cfg.detector if cfg.verifier == "detector" else cfg.segmenter}
    survivors, stages = apply_filters(judged, cfg, images=lambda s, r: splits[s][int(r)]["image"], **models)
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
        write_card(partial / "README.md", dataset, funnel, cfg, tracked_stats(stats), teachers)  # not run state

    save_dataset(dataset, cfg.out, before_rename=extras)
    clock["write"] = time.perf_counter()
    _write_results(cfg.results, funnel, agreement, stats)
    seconds = {k: round(clock[k] - clock[p], 2) for p, k in zip(list(clock), list(clock)[1:])}
    seconds["teachers"] = teacher_seconds
    record_timing("distill", seconds)  # shown by `globe run` at the end, kept out of the notebook and results
    return DistillResult(dataset, loc, judged, survivors, funnel, agreement, stats, dict(stages), seconds)


def _unique_teachers(cfg: DistillParams, teachers: Sequence | None) -> Sequence:
    """The teachers given, else those of `cfg.teachers`; their names key the cache, so they must be unique."""
    from globe.teachers import make_teacher

    if teachers is None:
        teachers = [make_teacher(t, seed=cfg.seed) for t in cfg.teachers]
    all_names = [t.name for t in teachers]
    if len(set(all_names)) != len(all_names):
        raise ValueError(f"teacher names must be unique (they key the cache): {all_names}")
    return teachers


def _finish_shard(cfg: DistillParams, shard: tuple[int, int], teachers: Sequence, splits: dict, cache,
                  stats: dict[str, Any], teacher_seconds) -> DistillResult:
    """A shard's run ends after its queries: the teachers closed, its counts written beside the results."""
    for t in teachers:
        t.close()
    stats["shard"] = {"shard": cfg.shard, "cache": str(cache.path),
                      "images": {s: len(d) for s, d in splits.items()}}
    results = Path(cfg.results)
    results.mkdir(parents=True, exist_ok=True)
    (results / f"shard-{shard[0]}-of-{shard[1]}.json").write_text(json.dumps(stats, indent=1, default=str) + "\n")
    log.info("distillation shard %s: %s", cfg.shard, stats["query"])
    return DistillResult(None, None, None, None, None, None, stats, {}, {"teachers": teacher_seconds})


def _filter_models(cfg: DistillParams) -> dict[str, Any]:
    """The models the configured filters need: the clue verifier (detector or segmenter), the alignment embedder."""
    models: dict[str, Any] = {}
    if "clues" in cfg.filters:
        if cfg.verifier == "detector":
            models["detector"] = load_detector(cfg.detector)
        else:
            models["segmenter"] = load_segmenter(cfg.segmenter)
    if "alignment" in cfg.filters:
        models["embedder"] = load_embedder(cfg.alignment_model)
    return models


RUN_STATE_KEYS = ("cache_on_load", "query")  # run-state counts kept out of the tracked stats.json


def tracked_stats(stats: Mapping[str, Any]) -> dict[str, Any]:
    """`stats` without the run-state counts (RUN_STATE_KEYS): what the tracked stats.json and the dataset card hold."""
    return {k: v for k, v in stats.items() if k not in RUN_STATE_KEYS}


def _write_results(results_dir: str, funnel, agreement, stats: dict[str, Any]) -> None:
    """The funnel, the teacher agreement matrix and the run's counts, into `results_dir`.

    The cache's state and what was asked versus read from it (`cache_on_load`, `query`) describe this run, not the
    result (a fresh clone asks everything, a rerun nothing): they stay in the returned stats and the notebook, out of
    the tracked stats.json, so a rerun from scratch writes the same file."""
    results = Path(results_dir)
    results.mkdir(parents=True, exist_ok=True)
    funnel.to_csv(results / "funnel.csv", index=False)
    agreement.rename_axis("teacher").to_csv(results / "agreement.csv", float_format="%.4f")
    (results / "stats.json").write_text(json.dumps(tracked_stats(stats), indent=1, default=str) + "\n",
                                        encoding="utf-8")


__all__ = ["DEFAULT_FILTERS", "DistillParams", "DistillResult", "FILTERS", "answer_key", "apply_filters",
           "collect_candidates", "load_splits", "merge_shards", "query_teachers", "run_distillation", "shard_splits"]
