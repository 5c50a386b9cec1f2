"""Evaluation: benchmarks, resumable batched inference, baselines, metrics and the paper's main table.

A run (`evaluate(cfg)`) goes benchmark by benchmark:

1. `load_benchmark(name, cfg)` (`benchmarks`) gives a frame of `id, lat, lon, image` (a file path, or the image itself
   for Hugging Face datasets) from the registry `BENCHMARKS` (im2gps3k, yfcc4k, mp16-reason-test, osv5m, sample,
   custom).
2. Each model entry (base VLM with the reasoning or the direct prompt, SFT / GRPO adapters, any hub id or path) is
   run by `predict` (`inference`): batched generation through `globe.models.generate` (or vLLM), every batch's
   completions appended to `results/predictions/<benchmark>/<model>.jsonl` (`globe.cache`), so a killed run resumes
   where it stopped without redoing or duplicating an image.
3. `score` (`scoring`) parses completions with `globe.answer.parse_completion`, geocodes the answers offline with
   `globe.geo`, measures great-circle errors and the named accuracies (`globe.geo.accuracy_flags`); the scored frame
   is saved as `<model>.parquet` beside the JSONL.
4. Weight-free baselines (`baselines`: the training set's geographic medoid, its most frequent city, random points on
   land) are scored the same way, as sanity rows.

`results/metrics.json` holds the headline figures DVC shows ({benchmark: {model: the five thresholds, median km, n,
unresolved}}: `dvc metrics show` stays readable); `results/tables/metrics_full.json` every figure (confidence
intervals, the named accuracies, per continent); `results/tables/main.md` (`tables`) lays our rows beside the
published ones like the paper's Table 2.
"""

from __future__ import annotations

import json
import logging
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, ClassVar, Literal

from globe.config import ParamsError, StageConfig
from globe.evaluate.baselines import BASELINES, baseline_predictions, load_train_coords, medoid, random_land, top_city
from globe.evaluate.benchmarks import BENCHMARKS, MissingBenchmark, load_benchmark
from globe.evaluate.inference import completion_key, predict
from globe.evaluate.scoring import (
    ACCURACY_COLUMNS,
    _write_parquet,
    add_localizability,
    localizability_scorer,
    metrics_of,
    score,
    truth_places,
)
from globe.evaluate.tables import DISPLAY, main_table, per_continent, published, table_frame

log = logging.getLogger(__name__)


@dataclass
class ModelEntry(StageConfig):
    """One evaluated model: `model` a hub id or local path (None: common.base_model), an optional PEFT `adapter`, and
    `prompt` the name of a prompt in `globe.prompts.PROMPTS` ('reasoning', 'direct', ...)."""

    group: ClassVar[str] = "eval.models"

    name: str = ""
    model: str | None = None
    adapter: str | None = None
    prompt: str = "reasoning"

    def validate(self) -> None:
        from globe.prompts import PROMPTS

        self.require(bool(self.name) and "/" not in self.name and not self.name.startswith("."), "name",
                     f"{self.name!r} must be a plain file name (it names the predictions file)")
        self.require(self.prompt in PROMPTS, "prompt",
                     f"model {self.name!r}: unknown prompt {self.prompt!r}; known: {sorted(PROMPTS)}")

    def prompt_text(self) -> str:
        from globe.prompts import PROMPTS

        return PROMPTS[self.prompt]


@dataclass
class EvalParams(StageConfig):
    """The `eval` group of params.yaml (plus `common`'s seed, base_model and offline)."""

    group: ClassVar[str] = "eval"

    out: str = "results"
    run_benchmarks: list[str] = field(default_factory=lambda: ["sample"])
    benchmarks: dict[str, dict[str, Any]] = field(default_factory=dict)
    models: list[ModelEntry] = field(default_factory=list)
    baselines: list[str] = field(default_factory=lambda: list(BASELINES))
    baseline_train: dict[str, Any] = field(default_factory=dict)
    max_images: int | None = None
    batch_size: int = 4
    max_new_tokens: int = 256
    temperature: float = 0.0
    top_p: float = 1.0
    # OpenAI / vLLM definitions (over the generated tokens; globe.models.occurrence_penalty). GLOBE's eval.py: 0.7.
    frequency_penalty: float = 0.0
    presence_penalty: float = 0.0
    backend: Literal["auto", "transformers", "unsloth", "vllm"] = "transformers"
    dtype: str = "auto"
    image_max_side: int | None = 512
    device: str = "auto"
    reward_model: str | None = None  # the localizability reward-model adapter (on base_model); None: skip
    shard: str | None = None  # "i/N": generate only shard i of N into its own cache files, then stop (merge_shards)
    land_mask: str | None = "globe/assets/naturalearth/naturalearth_lowres.shp"
    n_bootstrap: int = 1000
    # "geodesic" (WGS84 ellipsoid, as GeoCLIP's and Img2Loc's evaluations) or "haversine" (sphere); globe.geo.distance
    distance: Literal["geodesic", "haversine"] = "geodesic"
    seed: int = 0
    base_model: str | None = None
    offline: bool = True

    def validate(self) -> None:
        names = [m.name for m in self.models] + list(self.baselines)
        dup = sorted({n for n in names if names.count(n) > 1})
        self.require(not dup, "models", f"duplicate names {dup} (models and baselines)")
        bad = sorted(set(self.baselines) - set(BASELINES))
        self.require(not bad, "baselines", f"unknown {bad}; known: {list(BASELINES)}")
        bad = sorted(set(self.run_benchmarks) - set(BENCHMARKS))
        self.require(not bad, "run_benchmarks", f"unknown benchmark(s) {bad}; known: {sorted(BENCHMARKS)}")
        self.require(self.batch_size >= 1 and self.max_new_tokens >= 1, "batch_size",
                     "batch_size and max_new_tokens must be >= 1")
        self.require(self.temperature >= 0 and 0 < self.top_p <= 1, "temperature", "need temperature >= 0, 0 < top_p <= 1")
        for key in ("frequency_penalty", "presence_penalty"):  # the OpenAI API's range
            self.require(-2.0 <= getattr(self, key) <= 2.0, key, f"must be in [-2, 2], got {getattr(self, key)}")
        self.require(self.max_images is None or self.max_images >= 1, "max_images", "must be >= 1 or null")
        self.require(self.n_bootstrap >= 1, "n_bootstrap", "must be >= 1")
        from globe.cache import parse_shard

        try:
            parse_shard(self.shard)
        except ValueError as e:
            raise ParamsError(f"eval.shard: {e}") from None

    @property
    def predictions_dir(self) -> Path:
        return Path(self.out) / "predictions"


def evaluate(cfg: EvalParams, progress: bool = True) -> dict:
    """Evaluate every model and baseline on every benchmark in `cfg.run_benchmarks`; write the predictions, the
    metrics and the table. Returns {benchmark: {model: metrics}}.

    With `cfg.shard` ("i/N") only the completions of shard i's images are generated, into
    `<model>.shard-i-of-N.jsonl`, and nothing is scored; `merge_shards(cfg, N)` joins the shards' files into each
    `<model>.jsonl`, and a run without a shard then scores everything, generating nothing.
    """
    from globe.cache import in_shard, parse_shard, shard_path
    from globe.config import prepare_run

    prepare_run(cfg.seed, cfg.offline)
    out = Path(cfg.out)
    all_metrics: dict[str, dict] = {}
    # Every benchmark and the baselines' data are checked before any model runs: a missing file fails in seconds.
    benches = {name: load_benchmark(name, cfg) for name in cfg.run_benchmarks}
    shard = parse_shard(cfg.shard)
    if shard is not None:
        for name, bench in benches.items():
            part = bench[[in_shard(i, shard) for i in bench["id"]]].reset_index(drop=True)
            pred_dir = cfg.predictions_dir / name
            pred_dir.mkdir(parents=True, exist_ok=True)
            for entry in cfg.models:
                predict(part, entry, cfg, shard_path(pred_dir / f"{entry.name}.jsonl", shard), progress=progress)
            log.info("%s: shard %s done (%d of %d images)", name, cfg.shard, len(part), len(bench))
        return {}
    train = load_train_coords(cfg) if cfg.baselines else None
    scorer = None
    for name, bench in benches.items():
        truth = truth_places(bench)
        pred_dir = cfg.predictions_dir / name
        pred_dir.mkdir(parents=True, exist_ok=True)
        skipped = write_skipped(bench, pred_dir)
        all_metrics[name] = {}
        for entry in cfg.models:
            raw = predict(bench, entry, cfg, pred_dir / f"{entry.name}.jsonl", progress=progress)
            scored = score(bench, raw, truth, distance=cfg.distance)
            if cfg.reward_model:
                scorer = scorer or localizability_scorer(cfg)
                scored = add_localizability(scored, bench, scorer, cfg)
            _write_parquet(scored, pred_dir / f"{entry.name}.parquet")
            all_metrics[name][entry.name] = {**metrics_of(scored, cfg.seed, cfg.n_bootstrap), **skipped}
            log.info("%s / %s: %s", name, entry.name, _summary(all_metrics[name][entry.name]))
        for b in cfg.baselines:
            scored = score(bench, baseline_predictions(b, bench, train, cfg), truth, distance=cfg.distance)
            _write_parquet(scored, pred_dir / f"{b}.parquet")
            all_metrics[name][b] = {**metrics_of(scored, cfg.seed, cfg.n_bootstrap), **skipped}
    (out / "tables").mkdir(parents=True, exist_ok=True)
    with open(out / "metrics.json", "w", encoding="utf-8") as f:
        json.dump(headline(all_metrics), f, indent=2, sort_keys=True)
        f.write("\n")
    with open(out / "tables" / "metrics_full.json", "w", encoding="utf-8") as f:
        json.dump(all_metrics, f, indent=2, sort_keys=True)
        f.write("\n")
    (out / "tables" / "main.md").write_text(main_table(all_metrics, baselines=cfg.baselines), encoding="utf-8")
    return all_metrics


HEADLINE = ("acc_1km", "acc_25km", "acc_200km", "acc_750km", "acc_2500km", "median_km", "n", "n_unresolved")


def headline(metrics: dict) -> dict:
    """The figures `dvc metrics show` prints: per benchmark and model, the five thresholds, median km, n, unresolved."""
    return {b: {m: {k: v.get(k) for k in HEADLINE} for m, v in models.items()} for b, models in metrics.items()}


def merge_shards(cfg: EvalParams, n_shards: int) -> dict:
    """Join every model's shard caches of every benchmark (`<model>.shard-i-of-N.jsonl`) into `<model>.jsonl`
    (`globe.cache.merge_caches`: nothing lost, nothing twice); returns {benchmark: {model: report}}."""
    from globe.cache import merge_caches, shard_paths

    reports: dict[str, dict] = {}
    for name in cfg.run_benchmarks:
        pred_dir = cfg.predictions_dir / name
        reports[name] = {e.name: merge_caches(pred_dir / f"{e.name}.jsonl", shard_paths(pred_dir / f"{e.name}.jsonl",
                                                                                        n_shards))
                         for e in cfg.models}
    log.info("evaluation: merged %d shards: %s", n_shards, reports)
    return reports


def write_skipped(bench, pred_dir: Path) -> dict:
    """The benchmark's skipped photos (missing images) to `<pred_dir>/skipped.csv`; returns {"skipped_images": n}
    for the metrics (empty when nothing was skipped, so runs without skips keep their metrics unchanged)."""
    import pandas as pd

    ids = bench.attrs.get("skipped_ids", {})
    path = pred_dir / "skipped.csv"
    if not ids:
        path.unlink(missing_ok=True)
        return {}
    rows = [{"id": i, "reason": reason} for reason, group in ids.items() for i in group]
    pd.DataFrame(rows, columns=["id", "reason"]).to_csv(path, index=False)
    return {"skipped_images": len(rows)}


def _summary(m: dict) -> str:
    return ", ".join(f"{k}={m[k]:.3g}" for k in ("acc_25km", "acc_750km", "median_km") if m.get(k) is not None)




__all__ = ["ACCURACY_COLUMNS", "BASELINES", "BENCHMARKS", "DISPLAY", "HEADLINE", "EvalParams", "MissingBenchmark",
           "ModelEntry", "add_localizability", "baseline_predictions", "completion_key", "evaluate", "headline",
           "load_benchmark", "merge_shards",
           "load_train_coords", "main_table", "medoid", "metrics_of", "per_continent", "predict", "published",
           "random_land", "score", "table_frame", "top_city", "truth_places"]
