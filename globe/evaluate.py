"""Evaluation: benchmarks, resumable batched inference, baselines, metrics and the paper's main table.

A run (`evaluate(cfg)`) goes benchmark by benchmark:

1. `load_benchmark(name, cfg)` gives a frame of `id, lat, lon, image` (a file path, or the image itself for
   Hugging Face datasets) from the registry `BENCHMARKS` (im2gps3k, yfcc4k, mp16-reason-test, osv5m, sample, custom).
2. Each model entry (base VLM with the reasoning or the direct prompt, SFT / GRPO adapters, any hub id or path) is
   run by `predict`: batched generation through `globe.models.generate` (or vLLM), with every batch's completions
   appended to `results/predictions/<benchmark>/<model>.jsonl` and flushed, so a killed run resumes where it stopped
   without redoing or duplicating an image.
3. `score` parses completions with `globe.prompts.parse_completion`, geocodes the answers offline with `globe.geo`,
   and measures great-circle errors; the scored frame is saved as `<model>.parquet` beside the JSONL.
4. Weight-free baselines (the training set's geographic medoid, its most frequent city, random points on land) are
   scored the same way, as sanity rows.

`results/metrics.json` holds {benchmark: {model: metrics}} (DVC metrics) and `results/tables/main.md` lays our rows
beside the published ones (`globe/assets/published.csv`, each with its source) like the paper's Table 2.
"""

from __future__ import annotations

import hashlib
import json
import logging
import math
import os
import time
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass, field, fields
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

from globe.data import open_saved
from globe.images import load_image

log = logging.getLogger(__name__)

THRESHOLD_NAMES = {1: "Street", 25: "City", 200: "Region", 750: "Country", 2500: "Continent"}
PUBLISHED_CSV = Path(__file__).parent / "assets" / "published.csv"
BASELINES = ("medoid", "top_city", "random_land")
# Benchmark names as the paper's table prints them.
DISPLAY = {"im2gps3k": "IM2GPS3K", "yfcc4k": "YFCC4K", "mp16-reason-test": "MP16-Reason test", "osv5m": "OSV-5M",
           "sample": "sample", "custom": "custom"}


# ---------------------------------------------------------------------------------------------------------------------
# Configuration


@dataclass
class ModelEntry:
    """One evaluated model: `model` a hub id or local path (None: common.base_model), an optional PEFT `adapter`, and
    `prompt` a key of `globe.prompts.PROMPTS` ('reasoning', 'direct') or literal prompt text."""

    name: str
    model: str | None = None
    adapter: str | None = None
    prompt: str = "reasoning"

    def prompt_text(self) -> str:
        from globe.prompts import PROMPTS

        return PROMPTS.get(self.prompt, self.prompt)


@dataclass
class EvalConfig:
    """The `eval` group of params.yaml (plus `common`'s seed, base_model and offline)."""

    out: str = "results"
    run_benchmarks: list[str] = field(default_factory=lambda: ["sample"])
    benchmarks: dict[str, dict] = field(default_factory=dict)
    models: list[ModelEntry] = field(default_factory=list)
    baselines: list[str] = field(default_factory=lambda: list(BASELINES))
    baseline_train: dict = field(default_factory=dict)
    max_images: int | None = None
    batch_size: int = 4
    max_new_tokens: int = 256
    temperature: float = 0.0
    top_p: float = 1.0
    backend: str = "transformers"
    dtype: str = "auto"
    image_max_side: int | None = 512
    device: str = "auto"
    reward_model: str | None = None  # the localizability reward-model adapter (on base_model); None: skip
    land_mask: str | None = "globe/assets/naturalearth/naturalearth_lowres.shp"
    n_bootstrap: int = 1000
    seed: int = 0
    base_model: str | None = None
    offline: bool = True

    @classmethod
    def from_params(cls, params: dict) -> EvalConfig:
        """From `globe.config.stage_params('05_eval')` (common + eval); unknown keys are an error, not ignored."""
        params = {k: v for k, v in params.items() if k != "profile"}
        known = {f.name for f in fields(cls)}
        unknown = sorted(set(params) - known)
        if unknown:
            raise KeyError(f"unknown eval parameter(s) {unknown}; known: {sorted(known)}")
        params = dict(params)
        params["models"] = [m if isinstance(m, ModelEntry) else ModelEntry(**m) for m in params.get("models") or []]
        rb = params.get("run_benchmarks")
        params["run_benchmarks"] = [rb] if isinstance(rb, str) else list(rb or [])
        cfg = cls(**params)
        cfg.validate()
        return cfg

    def validate(self) -> None:
        names = [m.name for m in self.models] + list(self.baselines)
        dup = sorted({n for n in names if names.count(n) > 1})
        if dup:
            raise ValueError(f"eval.models / eval.baselines: duplicate names {dup}")
        for n in names:
            if not n or "/" in n or n.startswith("."):
                raise ValueError(f"eval model name {n!r} must be a plain file name (it names the predictions file)")
        bad = sorted(set(self.baselines) - set(BASELINES))
        if bad:
            raise ValueError(f"eval.baselines: unknown {bad}; known: {list(BASELINES)}")
        bad = sorted(set(self.run_benchmarks) - set(BENCHMARKS))
        if bad:
            raise ValueError(f"eval.run_benchmarks: unknown benchmark(s) {bad}; known: {sorted(BENCHMARKS)}")
        if self.batch_size < 1 or self.max_new_tokens < 1:
            raise ValueError("eval.batch_size and eval.max_new_tokens must be >= 1")
        if self.backend not in ("auto", "transformers", "unsloth", "vllm"):
            raise ValueError(f"eval.backend must be auto, transformers, unsloth or vllm, not {self.backend!r}")

    @property
    def predictions_dir(self) -> Path:
        return Path(self.out) / "predictions"


# ---------------------------------------------------------------------------------------------------------------------
# Benchmarks


class MissingBenchmark(FileNotFoundError):
    """A benchmark's files are not where params.yaml says; the message names the key to set."""


def _need(cfg_entry: dict, key: str, bench: str, what: str) -> Path:
    value = cfg_entry.get(key)
    if not value or not Path(value).exists():
        raise MissingBenchmark(
            f"benchmark {bench!r}: {what} not found ({value!r}); set eval.benchmarks.{bench}.{key} in params.yaml "
            "to its location"
        )
    return Path(value)


def _csv_benchmark(name: str, entry: dict, *, id_col: str, lat_col: str, lon_col: str, file_col: str | None,
                   file_pattern: str = "{}") -> pd.DataFrame:
    """A CSV of coordinates beside a folder of images; a row whose image file is missing is an error, not a skip."""
    csv = _need(entry, "csv", name, "the label CSV")
    image_dir = _need(entry, "image_dir", name, "the image folder")
    id_col, lat_col, lon_col = entry.get("id_col", id_col), entry.get("lat_col", lat_col), entry.get("lon_col", lon_col)
    file_col = entry.get("file_col", file_col)
    df = pd.read_csv(csv, dtype={id_col: str})
    missing_cols = [c for c in (id_col, lat_col, lon_col, file_col) if c and c not in df.columns]
    if missing_cols:
        raise KeyError(f"benchmark {name!r}: {csv} lacks column(s) {missing_cols}; columns: {list(df.columns)}")
    files = df[file_col].astype(str) if file_col else df[id_col].astype(str).map(file_pattern.format)
    out = pd.DataFrame({
        "id": df[id_col].astype(str),
        "lat": pd.to_numeric(df[lat_col], errors="coerce"),
        "lon": pd.to_numeric(df[lon_col], errors="coerce"),
        "image": [str(image_dir / f) for f in files],
    })
    absent = [p for p in out["image"] if not os.path.isfile(p)]
    if absent:
        raise MissingBenchmark(
            f"benchmark {name!r}: {len(absent)} of {len(out)} images listed in {csv} are missing from {image_dir} "
            f"(e.g. {absent[0]}); set eval.benchmarks.{name}.image_dir, or keep only the rows you have in the CSV"
        )
    return out


def load_im2gps3k(entry: dict) -> pd.DataFrame:
    """IM2GPS3K: `IMG_ID, LAT, LON` (IMG_ID is the file name)."""
    return _csv_benchmark("im2gps3k", entry, id_col="IMG_ID", lat_col="LAT", lon_col="LON", file_col="IMG_ID")


def load_yfcc4k(entry: dict) -> pd.DataFrame:
    """YFCC4K: named columns, the file name in `name`, coordinates in `lon`, `lat`."""
    return _csv_benchmark("yfcc4k", entry, id_col="name", lat_col="lat", lon_col="lon", file_col="name")


def load_osv5m(entry: dict) -> pd.DataFrame:
    """OSV-5M: test.csv (`id, latitude, longitude, ...`) and images/<id>.jpg."""
    return _csv_benchmark("osv5m", entry, id_col="id", lat_col="latitude", lon_col="longitude", file_col=None,
                          file_pattern="{}.jpg")


def load_custom(entry: dict) -> pd.DataFrame:
    """Any CSV + image folder; `id_col`, `lat_col`, `lon_col`, `file_col` name its columns (defaults id, lat, lon,
    file; without a file column the image is `<id>.jpg`)."""
    csv = _need(entry, "csv", "custom", "the label CSV")
    # An explicit file_col must exist (checked in _csv_benchmark); by default a `file` column is used when present.
    has_file = "file" in pd.read_csv(csv, nrows=0).columns
    return _csv_benchmark("custom", entry, id_col="id", lat_col="lat", lon_col="lon",
                          file_col="file" if has_file else None, file_pattern="{}.jpg")


def _from_hf(ds, name: str, entry: dict) -> pd.DataFrame:
    """A datasets.Dataset with canonical columns (id, image, lat, lon) as a benchmark frame; images stay lazy."""
    cols = {k: entry.get(f"{k}_col", k) for k in ("id", "lat", "lon", "image")}
    missing = [c for c in cols.values() if c not in ds.column_names]
    if missing:
        raise KeyError(f"benchmark {name!r}: dataset lacks column(s) {missing}; columns: {ds.column_names}")
    from datasets import Image

    # Undecoded images (bytes/path dicts): a frame of thousands of decoded photos would not fit in memory.
    ds = ds.cast_column(cols["image"], Image(decode=False))
    return pd.DataFrame({
        "id": [str(x) for x in ds[cols["id"]]],
        "lat": np.asarray(ds[cols["lat"]], dtype=float),
        "lon": np.asarray(ds[cols["lon"]], dtype=float),
        "image": list(ds[cols["image"]]),
    })


def load_mp16_reason_test(entry: dict) -> pd.DataFrame:
    """The MP16-Reason test split: a local copy (`path`, saved with save_to_disk or a dataset folder) or a Hugging
    Face dataset id for users with hub access."""
    path = entry.get("path")
    if not path:
        raise MissingBenchmark("benchmark 'mp16-reason-test': no dataset given; set "
                               "eval.benchmarks.mp16-reason-test.path to a local copy or a Hugging Face dataset id")
    import datasets

    split = entry.get("split", "test")
    if Path(path).exists():
        try:
            ds = open_saved(path)
        except FileNotFoundError:
            ds = datasets.load_dataset(path, split=split)
    else:
        try:
            ds = datasets.load_dataset(path, split=split)
        except Exception as e:  # offline or no access: one clear message
            raise MissingBenchmark(f"benchmark 'mp16-reason-test': cannot load {path!r} ({type(e).__name__}: {e}); "
                                   "set eval.benchmarks.mp16-reason-test.path to a local copy") from e
    if isinstance(ds, datasets.DatasetDict):
        ds = ds[split]
    return _from_hf(ds, "mp16-reason-test", entry)


def load_sample(entry: dict) -> pd.DataFrame:
    """The test split of the ingested dataset (`dataset`, from notebook 01) when present, else the committed
    data/sample photos (`csv` + `image_dir`, all of them)."""
    ds_path = entry.get("dataset")
    if ds_path and Path(ds_path).exists():
        import datasets

        dd = open_saved(ds_path)
        split = entry.get("split", "test")
        if isinstance(dd, datasets.DatasetDict):
            if split not in dd:
                raise KeyError(f"benchmark 'sample': {ds_path} has no split {split!r} (splits: {list(dd)})")
            dd = dd[split]
        return _from_hf(dd, "sample", entry)
    return _csv_benchmark("sample", entry, id_col="id", lat_col="lat", lon_col="lon", file_col="file")


BENCHMARKS: dict[str, Callable[[dict], pd.DataFrame]] = {
    "im2gps3k": load_im2gps3k,
    "yfcc4k": load_yfcc4k,
    "mp16-reason-test": load_mp16_reason_test,
    "osv5m": load_osv5m,
    "sample": load_sample,
    "custom": load_custom,
}


def load_benchmark(name: str, cfg: EvalConfig) -> pd.DataFrame:
    """A benchmark as `id, lat, lon, image`, invalid rows refused, capped at `cfg.max_images` (seeded subsample)."""
    if name not in BENCHMARKS:
        raise KeyError(f"unknown benchmark {name!r}; known: {sorted(BENCHMARKS)}")
    entry = cfg.benchmarks.get(name)
    if entry is None:
        raise MissingBenchmark(f"benchmark {name!r} has no entry; set eval.benchmarks.{name} in params.yaml")
    df = BENCHMARKS[name](entry)
    dup = df["id"].duplicated()
    if dup.any():
        raise ValueError(f"benchmark {name!r}: {int(dup.sum())} duplicate ids (e.g. {df['id'][dup].iloc[0]!r})")
    bad = ~(np.isfinite(df["lat"]) & np.isfinite(df["lon"]) & (df["lat"].abs() <= 90) & (df["lon"].abs() <= 180))
    if bad.any():
        raise ValueError(f"benchmark {name!r}: {int(bad.sum())} rows with invalid coordinates "
                         f"(e.g. id {df['id'][bad].iloc[0]!r}); fix the label file")
    if cfg.max_images is not None and len(df) > cfg.max_images:
        df = df.sample(n=cfg.max_images, random_state=cfg.seed).sort_index()
    return df.reset_index(drop=True)


# ---------------------------------------------------------------------------------------------------------------------
# Resumable inference


def cache_key(entry: ModelEntry, cfg: EvalConfig) -> str:
    """What makes completions comparable: model, adapter, prompt, the image size the model sees and decoding. A
    changed key ignores old lines."""
    spec = dict(model=entry.model or cfg.base_model, adapter=entry.adapter, prompt=entry.prompt_text(),
                max_new_tokens=cfg.max_new_tokens, temperature=cfg.temperature, top_p=cfg.top_p, seed=cfg.seed,
                image_max_side=cfg.image_max_side)
    return hashlib.sha1(json.dumps(spec, sort_keys=True).encode()).hexdigest()[:16]


def read_cache(path: Path, key: str | None = None) -> tuple[dict[str, dict], dict[str, int]]:
    """Records by id from a predictions JSONL (first record of an id wins) and counts of what was not used:
    `torn` (a line cut by a kill), `stale` (another cache key), `duplicate`."""
    records: dict[str, dict] = {}
    counts = {"torn": 0, "stale": 0, "duplicate": 0}
    if not path.is_file():
        return records, counts
    with open(path, encoding="utf-8") as f:
        for line in f:
            if not line.strip():
                continue
            try:
                rec = json.loads(line)
                rec["id"]
            except (json.JSONDecodeError, TypeError, KeyError):
                counts["torn"] += 1
                continue
            if key is not None and rec.get("key") != key:
                counts["stale"] += 1
            elif rec["id"] in records:
                counts["duplicate"] += 1
            else:
                records[rec["id"]] = rec
    return records, counts


def _append(path: Path, records: Iterable[dict]) -> None:
    """Append records as one write, then flush and fsync: a kill loses at most the batch in flight."""
    text = "".join(json.dumps(r, ensure_ascii=False) + "\n" for r in records)
    with open(path, "a+b") as f:
        f.seek(0, os.SEEK_END)
        if f.tell() > 0:
            f.seek(-1, os.SEEK_END)
            if f.read(1) != b"\n":  # the last line was cut by a kill: start on a fresh line
                text = "\n" + text
        f.write(text.encode("utf-8"))
        f.flush()
        os.fsync(f.fileno())


class _VLLMGenerator:
    """vLLM offline inference (GPU machines with `pip install vllm`): same prompts, one engine for all batches."""

    def __init__(self, model: str, adapter: str | None, cfg: EvalConfig):
        try:
            from vllm import LLM, SamplingParams
        except ImportError as e:
            raise RuntimeError("eval.backend is 'vllm' but vllm is not installed: pip install vllm (Linux + CUDA), "
                               "or set eval.backend: transformers") from e
        from globe.models import adapter_rank, load_processor, vllm_lora_rank

        self.processor = load_processor(model)
        lora_kw: dict = {}
        if adapter is not None:
            # vLLM allocates LoRA slots of max_lora_rank (default 16) up front and rejects a larger adapter (the
            # paper's are r64): size them from the adapter itself.
            lora_kw = {"enable_lora": True, "max_lora_rank": vllm_lora_rank(adapter_rank(adapter))}
        self.llm = LLM(model=model, seed=cfg.seed, limit_mm_per_prompt={"image": 1}, **lora_kw)
        self.lora = None
        if adapter is not None:
            from vllm.lora.request import LoRARequest

            self.lora = LoRARequest("adapter", 1, str(adapter))
        self.params = SamplingParams(max_tokens=cfg.max_new_tokens, temperature=cfg.temperature, top_p=cfg.top_p,
                                     seed=cfg.seed)

    def __call__(self, images: list, prompts: list[str]) -> list[str]:
        from globe.models import chat_texts

        texts = chat_texts(self.processor, prompts, [True] * len(prompts))
        reqs = [{"prompt": t, "multi_modal_data": {"image": im}} for t, im in zip(texts, images)]
        outs = self.llm.generate(reqs, self.params, lora_request=self.lora, use_tqdm=False)
        return [o.outputs[0].text for o in outs]


def _generator(entry: ModelEntry, cfg: EvalConfig) -> Callable[[list, list[str], int], list[str]]:
    model = entry.model or cfg.base_model
    if not model:
        raise ValueError(f"eval model {entry.name!r}: no model given and common.base_model is empty")
    if entry.adapter is not None and not Path(entry.adapter).exists():
        raise FileNotFoundError(f"eval model {entry.name!r}: adapter {entry.adapter!r} not found; train it first "
                                "(notebooks 03/04) or fix its `adapter` in eval.models")
    if cfg.backend == "vllm":
        gen = _VLLMGenerator(str(model), entry.adapter, cfg)
        return lambda images, prompts, seed: gen(images, prompts)
    from globe.models import generate, load_vlm

    vlm, processor = load_vlm(model, entry.adapter, dtype=cfg.dtype, device=cfg.device, training=False,
                              backend=cfg.backend)

    def run(images: list, prompts: list[str], seed: int) -> list[str]:
        return generate(vlm, processor, images, prompts, max_new_tokens=cfg.max_new_tokens,
                        temperature=cfg.temperature, top_p=cfg.top_p, batch_size=cfg.batch_size, seed=seed)

    return run


def predict(bench: pd.DataFrame, entry: ModelEntry, cfg: EvalConfig, cache_path: str | os.PathLike,
            progress: bool = True) -> pd.DataFrame:
    """Completions (`id, raw, error`) for every benchmark image, resuming from `cache_path` (JSONL).

    Only images without a cached completion are generated; the model is loaded only when some are. An image that
    cannot be opened is recorded with its error (counted as unresolved, not retried).
    """
    path = Path(cache_path)
    path.parent.mkdir(parents=True, exist_ok=True)
    key = cache_key(entry, cfg)
    done, counts = read_cache(path, key)
    if any(counts.values()):
        log.warning("%s: ignored cache lines %s", path, counts)
    todo = bench[~bench["id"].isin(done)]
    if len(todo):
        from tqdm.auto import tqdm

        run = _generator(entry, cfg)
        prompt = entry.prompt_text()
        t0, n_new = time.perf_counter(), 0
        bar = tqdm(total=len(bench), initial=len(bench) - len(todo), desc=f"{entry.name}", unit="img",
                   disable=not progress, dynamic_ncols=True)
        for start in range(0, len(todo), cfg.batch_size):
            batch = todo.iloc[start:start + cfg.batch_size]
            images, ok_ids, records = [], [], []
            for i, img in zip(batch["id"], batch["image"]):
                try:
                    images.append(load_image(img, max_side=cfg.image_max_side))
                    ok_ids.append(i)
                except Exception as e:  # a broken file is recorded and counted, never silently dropped
                    records.append({"id": i, "key": key, "raw": None, "error": f"{type(e).__name__}: {e}"})
            if images:
                # Seeded per batch position so a sampled run repeats exactly from scratch.
                texts = run(images, [prompt] * len(images), cfg.seed + start)
                records += [{"id": i, "key": key, "raw": t, "error": None} for i, t in zip(ok_ids, texts)]
            _append(path, records)
            n_new += len(records)
            bar.update(len(records))
        bar.close()
        gen_s = time.perf_counter() - t0
        log.info("%s: %d images in %.1f s (%.2f images/s, model loading excluded)", entry.name, n_new, gen_s,
                 n_new / gen_s)
        done, _ = read_cache(path, key)
    recs = [done[i] for i in bench["id"] if i in done]
    out = pd.DataFrame({"id": [r["id"] for r in recs], "raw": [r["raw"] for r in recs],
                        "error": [r.get("error") for r in recs]})
    # Throughput of this call (generation and image decoding; model loading excluded), for benchmark scripts.
    out.attrs.update(n_generated=len(todo), generate_s=gen_s if len(todo) else 0.0)
    return out


# ---------------------------------------------------------------------------------------------------------------------
# Baselines


def load_train_coords(cfg: EvalConfig) -> pd.DataFrame:
    """Training coordinates for the baselines: the ingested train split (`dataset`) when present, else `csv`."""
    entry = cfg.baseline_train
    ds_path = entry.get("dataset")
    if ds_path and Path(ds_path).exists():
        import datasets

        dd = open_saved(ds_path)
        split = entry.get("split", "train")
        ds = dd[split] if isinstance(dd, datasets.DatasetDict) else dd
        return pd.DataFrame({"lat": np.asarray(ds["lat"], float), "lon": np.asarray(ds["lon"], float)})
    csv = entry.get("csv")
    if not csv or not Path(csv).is_file():
        raise MissingBenchmark(f"baselines need training coordinates: {ds_path!r} and {csv!r} are both missing; set "
                               "eval.baseline_train.dataset or eval.baseline_train.csv")
    df = pd.read_csv(csv)
    lat, lon = entry.get("lat_col", "lat"), entry.get("lon_col", "lon")
    coords = pd.DataFrame({"lat": pd.to_numeric(df[lat], errors="coerce"),
                           "lon": pd.to_numeric(df[lon], errors="coerce")})
    bad = ~(np.isfinite(coords["lat"]) & np.isfinite(coords["lon"]) & (coords["lat"].abs() <= 90))
    if bad.any():
        log.warning("baseline training coordinates: skipped %d of %d rows of %s without valid coordinates",
                    int(bad.sum()), len(coords), csv)
    return coords[~bad].reset_index(drop=True)


def medoid(lat: np.ndarray, lon: np.ndarray, seed: int = 0, max_points: int = 4000) -> tuple[float, float]:
    """The training point with the smallest summed great-circle distance to the others (on a seeded subsample of
    `max_points` when the set is larger: the exact medoid is quadratic)."""
    from globe.geo import haversine_km

    lat, lon = np.asarray(lat, float), np.asarray(lon, float)
    if len(lat) > max_points:
        idx = np.random.default_rng(seed).choice(len(lat), max_points, replace=False)
        lat, lon = lat[idx], lon[idx]
    totals = np.array([haversine_km(lat[i], lon[i], lat, lon).sum() for i in range(len(lat))])
    j = int(np.argmin(totals))
    return float(lat[j]), float(lon[j])


def top_city(lat: np.ndarray, lon: np.ndarray) -> tuple[float, float, str]:
    """The GeoNames place nearest to the most training photos: its coordinates and 'city, CC'."""
    from globe.geo import gazetteer, reverse_geocode

    places = reverse_geocode(lat, lon, extra=True)
    counts = places["geonameid"].value_counts()
    gid = min(counts.index[counts == counts.max()])  # ties broken by GeoNames id, so the choice is deterministic
    gaz = gazetteer()
    j = int(np.flatnonzero(np.asarray(gaz.geonameid) == gid)[0])
    row = places[places["geonameid"] == gid].iloc[0]
    return float(gaz.lat[j]), float(gaz.lon[j]), f"{row['city']}, {row['country_code']}"


def random_land(n: int, seed: int = 0, land_mask: str | None = None,
                max_place_km: float = 100.0) -> tuple[np.ndarray, np.ndarray]:
    """`n` points uniform on the sphere, kept when on land: inside the Natural Earth countries (`land_mask`) when
    that file exists, else within `max_place_km` of a GeoNames place. Seeded; rejection sampling."""
    rng = np.random.default_rng(seed)
    inside = _land_test(land_mask, max_place_km)
    lats, lons = [], []
    have = 0
    while have < n:
        m = max(64, 4 * (n - have))
        lat = np.degrees(np.arcsin(rng.uniform(-1, 1, m)))  # uniform on the sphere, not in lat/lon
        lon = rng.uniform(-180, 180, m)
        keep = inside(lat, lon)
        lats.append(lat[keep])
        lons.append(lon[keep])
        have += int(keep.sum())
    return np.concatenate(lats)[:n], np.concatenate(lons)[:n]


def _land_test(land_mask: str | None, max_place_km: float) -> Callable[[np.ndarray, np.ndarray], np.ndarray]:
    if land_mask and Path(land_mask).is_file():
        import geopandas as gpd
        import shapely

        world = gpd.read_file(land_mask)
        land = shapely.union_all(world.geometry.values)
        shapely.prepare(land)
        return lambda lat, lon: shapely.contains_xy(land, lon, lat)
    from globe.geo import reverse_geocode

    return lambda lat, lon: reverse_geocode(lat, lon, extra=True)["place_km"].to_numpy() <= max_place_km


def baseline_predictions(name: str, bench: pd.DataFrame, train: pd.DataFrame, cfg: EvalConfig) -> pd.DataFrame:
    """A weight-free baseline's prediction for every benchmark image: `id, pred_lat, pred_lon, raw`."""
    n = len(bench)
    if name == "medoid":
        la, lo = medoid(train["lat"].to_numpy(), train["lon"].to_numpy(), seed=cfg.seed)
        lat, lon, raw = np.full(n, la), np.full(n, lo), f"medoid ({la:.4f}, {lo:.4f})"
    elif name == "top_city":
        la, lo, place = top_city(train["lat"].to_numpy(), train["lon"].to_numpy())
        lat, lon, raw = np.full(n, la), np.full(n, lo), f"most frequent city: {place}"
    elif name == "random_land":
        lat, lon = random_land(n, seed=cfg.seed, land_mask=cfg.land_mask)
        raw = "uniform random point on land"
    else:
        raise KeyError(f"unknown baseline {name!r}; known: {list(BASELINES)}")
    return pd.DataFrame({"id": bench["id"].to_numpy(), "pred_lat": lat, "pred_lon": lon, "raw": raw})


# ---------------------------------------------------------------------------------------------------------------------
# Scoring


def truth_places(bench: pd.DataFrame) -> pd.DataFrame:
    """Country, city and continent of each true location (offline reverse geocoding)."""
    from globe.geo import reverse_geocode

    rg = reverse_geocode(bench["lat"].to_numpy(), bench["lon"].to_numpy())
    return pd.DataFrame({"true_country_code": rg["country_code"].to_numpy(), "true_country": rg["country"].to_numpy(),
                         "true_city": rg["city"].to_numpy(), "continent": rg["continent"].to_numpy()})


def score(bench: pd.DataFrame, preds: pd.DataFrame, truth: pd.DataFrame | None = None) -> pd.DataFrame:
    """One row per benchmark image: the completion parsed, geocoded and measured against the truth.

    `preds` holds `id` and either `raw` completions (parsed and geocoded here) or `pred_lat`/`pred_lon` (baselines).
    Images without a usable answer keep NaN coordinates and distance: they count as misses at every threshold.

    Columns: id, raw, error, think, answer, country, city (parsed), format_ok, geocoded_text, pred_lat, pred_lon,
    level, pred_country_code, pred_country, pred_city, true_lat, true_lon, true_country_code, true_country,
    true_city, continent, country_code (the photo's), distance_km, country_ok, city_ok.
    """
    from globe.geo import geocode_many, haversine_km, reverse_geocode, same_city, same_country
    from globe.answer import parse_completion

    truth = truth_places(bench) if truth is None else truth
    preds = preds.set_index("id").reindex(bench["id"])
    out = pd.DataFrame({"id": bench["id"].to_numpy()})
    out["raw"] = preds["raw"].to_numpy() if "raw" in preds else None
    out["error"] = preds["error"].to_numpy() if "error" in preds else None
    if "pred_lat" in preds:  # coordinates given: name the predicted place by reverse geocoding
        out["think"], out["answer"], out["country"], out["city"] = None, None, None, None
        out["format_ok"], out["geocoded_text"] = False, ""
        lat, lon = preds["pred_lat"].to_numpy(float), preds["pred_lon"].to_numpy(float)
        rg = reverse_geocode(lat, lon, invalid="nan")
        out["pred_lat"], out["pred_lon"] = lat, lon
        out["level"] = np.where(np.isfinite(lat), "coords", "none")  # globe.geo's level names
        out["pred_country_code"] = rg["country_code"].to_numpy()
        out["pred_country"], out["pred_city"] = rg["country"].to_numpy(), rg["city"].to_numpy()
    else:
        parsed = [parse_completion(r if isinstance(r, str) else "") for r in out["raw"]]
        out["think"] = [p.think for p in parsed]
        out["answer"] = [p.answer for p in parsed]
        out["country"] = [p.country for p in parsed]
        out["city"] = [p.city for p in parsed]
        out["format_ok"] = [p.format_ok for p in parsed]
        # The parsed country/city when present; else the answer block as written (geocode reads coordinates and
        # other phrasings); no answer block: unresolved (free reasoning text would geocode to stray words).
        out["geocoded_text"] = [p.place or (p.answer or "") for p in parsed]
        geo = geocode_many(out["geocoded_text"]).reset_index(drop=True)
        out["pred_lat"], out["pred_lon"] = geo["lat"].to_numpy(float), geo["lon"].to_numpy(float)
        out["level"] = geo["level"].to_numpy()
        out["pred_country_code"] = geo["country_code"].to_numpy()
        out["pred_country"], out["pred_city"] = geo["country"].to_numpy(), geo["city"].to_numpy()
    out["true_lat"], out["true_lon"] = bench["lat"].to_numpy(float), bench["lon"].to_numpy(float)
    for c in truth.columns:
        out[c] = truth[c].to_numpy()
    out["country_code"] = out["true_country_code"]  # the photo's country, as the canonical dataset column names it
    out["distance_km"] = haversine_km(out["true_lat"].to_numpy(), out["true_lon"].to_numpy(),
                                      out["pred_lat"].to_numpy(), out["pred_lon"].to_numpy(), invalid="nan")
    out["country_ok"] = [same_country(p, t) for p, t in zip(out["pred_country_code"], out["true_country_code"])]
    # A city counts only inside the right country (names repeat across countries: Paris, Texas).
    out["city_ok"] = [ok and same_city(pc, tc, country=tcc)
                      for ok, pc, tc, tcc in zip(out["country_ok"], out["pred_city"], out["true_city"],
                                                 out["true_country_code"])]
    return out


def metrics_of(scored: pd.DataFrame, seed: int = 0, n_bootstrap: int = 1000) -> dict:
    """`globe.geo.geo_metrics` (unresolved = miss) with country / city accuracy, per-continent figures and bootstrap
    intervals, plus the share of completions in GLOBE's exact format and the count of unreadable images."""
    from globe.geo import geo_metrics

    m = geo_metrics(scored["distance_km"].to_numpy(float), country_correct=scored["country_ok"].to_numpy(bool),
                    city_correct=scored["city_ok"].to_numpy(bool),
                    continent=scored["continent"].replace("", "unknown").to_numpy(), n_boot=n_bootstrap, seed=seed)
    m = _plain(m)
    m["format_ok"] = float(scored["format_ok"].astype(bool).mean())
    m["n_image_errors"] = int(scored["error"].notna().sum())
    return m


def _plain(v: Any) -> Any:
    """JSON-friendly: numpy scalars to python, NaN to None, tuples to lists."""
    if isinstance(v, dict):
        return {k: _plain(x) for k, x in v.items()}
    if isinstance(v, (list, tuple, np.ndarray)):
        return [_plain(x) for x in v]
    if isinstance(v, np.bool_):
        return bool(v)
    if isinstance(v, np.integer):
        return int(v)
    if isinstance(v, (float, np.floating)):
        return None if math.isnan(float(v)) else float(v)
    return v


def per_continent(metrics: dict) -> pd.DataFrame:
    """One model's per-continent accuracy (%) at each threshold, with counts, from `metrics_of`'s `by_continent`."""
    from globe.geo import THRESHOLDS_KM

    rows = {c: {"n": v["n"], **{f"{t:g} km": _pct(v.get(f"acc_{t:g}km")) for t in THRESHOLDS_KM}}
            for c, v in metrics.get("by_continent", {}).items()}
    return pd.DataFrame.from_dict(rows, orient="index").rename_axis("continent")


def localizability_scorer(cfg: EvalConfig):
    """The localizability reward model (`cfg.reward_model`, an adapter on common.base_model), loaded once per run."""
    from globe.reward_model import LocalizabilityScorer

    if not Path(cfg.reward_model).exists():
        raise FileNotFoundError(f"eval.reward_model {cfg.reward_model!r} not found; train it (notebook 03) or set "
                                "eval.reward_model: null")
    backend = "auto" if cfg.backend == "vllm" else cfg.backend
    return LocalizabilityScorer(cfg.base_model, cfg.reward_model, batch_size=cfg.batch_size, dtype=cfg.dtype,
                                device=cfg.device, backend=backend)


def add_localizability(scored: pd.DataFrame, bench: pd.DataFrame, scorer, cfg: EvalConfig,
                       chunk: int = 64) -> pd.DataFrame:
    """The reward model's P(yes) for each (image, reasoning), for score-vs-error plots (notebook 06); NaN where the
    image cannot be opened or the model has no reasoning to judge."""
    reasonings = [t if isinstance(t, str) and t else (r if isinstance(r, str) else "")
                  for t, r in zip(scored["think"], scored["raw"])]
    values = np.full(len(scored), np.nan)
    for start in range(0, len(scored), chunk):  # bounded memory: images are opened a chunk at a time
        idx, images = [], []
        for i in range(start, min(start + chunk, len(scored))):
            if not reasonings[i].strip():
                continue
            try:
                images.append(load_image(bench["image"].iloc[i], max_side=cfg.image_max_side))
                idx.append(i)
            except Exception as e:  # counted in the log; the row keeps NaN
                log.warning("localizability: cannot open %s: %s", bench["id"].iloc[i], e)
        if idx:
            values[idx] = scorer.score(images, [reasonings[i] for i in idx])
    scored["localizability"] = values
    return scored


def _write_parquet(df: pd.DataFrame, path: Path) -> None:
    tmp = path.with_suffix(f".{os.getpid()}.tmp")
    df.to_parquet(tmp, index=False)
    os.replace(tmp, path)  # a kill never leaves half a parquet


# ---------------------------------------------------------------------------------------------------------------------
# The run


def evaluate(cfg: EvalConfig, progress: bool = True) -> dict:
    """Evaluate every model and baseline on every benchmark in `cfg.run_benchmarks`; write the predictions, the
    metrics and the table. Returns {benchmark: {model: metrics}}."""
    from globe.config import offline_hub, seed_everything

    if cfg.offline:
        offline_hub()
    seed_everything(cfg.seed)
    out = Path(cfg.out)
    all_metrics: dict[str, dict] = {}
    # Every benchmark and the baselines' data are checked before any model runs: a missing file fails in seconds.
    benches = {name: load_benchmark(name, cfg) for name in cfg.run_benchmarks}
    train = load_train_coords(cfg) if cfg.baselines else None
    scorer = None
    for name, bench in benches.items():
        truth = truth_places(bench)
        pred_dir = cfg.predictions_dir / name
        pred_dir.mkdir(parents=True, exist_ok=True)
        all_metrics[name] = {}
        for entry in cfg.models:
            raw = predict(bench, entry, cfg, pred_dir / f"{entry.name}.jsonl", progress=progress)
            scored = score(bench, raw, truth)
            if cfg.reward_model:
                scorer = scorer or localizability_scorer(cfg)
                scored = add_localizability(scored, bench, scorer, cfg)
            _write_parquet(scored, pred_dir / f"{entry.name}.parquet")
            all_metrics[name][entry.name] = metrics_of(scored, cfg.seed, cfg.n_bootstrap)
            log.info("%s / %s: %s", name, entry.name, _summary(all_metrics[name][entry.name]))
        for b in cfg.baselines:
            scored = score(bench, baseline_predictions(b, bench, train, cfg), truth)
            _write_parquet(scored, pred_dir / f"{b}.parquet")
            all_metrics[name][b] = metrics_of(scored, cfg.seed, cfg.n_bootstrap)
    (out / "tables").mkdir(parents=True, exist_ok=True)
    with open(out / "metrics.json", "w", encoding="utf-8") as f:
        json.dump(all_metrics, f, indent=2, sort_keys=True)
    (out / "tables" / "main.md").write_text(main_table(all_metrics, baselines=cfg.baselines), encoding="utf-8")
    return all_metrics


def _summary(m: dict) -> str:
    return ", ".join(f"{k}={m[k]:.3g}" for k in ("acc_25km", "acc_750km", "median_km") if m.get(k) is not None)


# ---------------------------------------------------------------------------------------------------------------------
# Tables


def published(path: str | os.PathLike = PUBLISHED_CSV) -> pd.DataFrame:
    """Published accuracies (%) from the papers, one row per (method, benchmark), with their source."""
    return pd.read_csv(path)


def _pct(v: Any) -> float | None:
    """A metric as a percentage (geo_metrics gives shares in [0, 1])."""
    return None if v is None else 100.0 * float(v)


def table_frame(metrics: dict, published_rows: pd.DataFrame | None = None, baselines: Sequence[str] = BASELINES,
                benchmarks: Sequence[str] | None = None) -> pd.DataFrame:
    """Rows = methods (published, then ours), columns = (benchmark, threshold) accuracies in %."""
    from globe.geo import THRESHOLDS_KM

    pub = published() if published_rows is None else published_rows
    benchmarks = list(benchmarks or dict.fromkeys([*pub["benchmark"], *metrics]))
    cols = pd.MultiIndex.from_tuples([(DISPLAY.get(b, b), f"{THRESHOLD_NAMES.get(t, '')} {t:g}km".strip())
                                      for b in benchmarks for t in THRESHOLDS_KM])
    rows: dict[str, list] = {}
    for method, g in pub.groupby("method", sort=False):
        vals = []
        for b in benchmarks:
            r = g[g["benchmark"] == b]
            vals += [float(r[f"acc_{t:g}km"].iloc[0]) if len(r) else None for t in THRESHOLDS_KM]
        rows[f"{method} [published]"] = vals
    ours = list(dict.fromkeys(m for b in metrics.values() for m in b))
    for method in ours:
        label = f"{method} [baseline]" if method in baselines else f"{method} [ours]"
        rows[label] = [_pct(metrics.get(b, {}).get(method, {}).get(f"acc_{t:g}km")) for b in benchmarks
                       for t in THRESHOLDS_KM]
    return pd.DataFrame.from_dict(rows, orient="index", columns=cols)


def main_table(metrics: dict, published_rows: pd.DataFrame | None = None, baselines: Sequence[str] = BASELINES) -> str:
    """The paper's Table 2 as markdown: accuracy (%) within 1 / 25 / 200 / 750 / 2500 km per benchmark, published
    rows (with sources) beside ours."""
    pub = published() if published_rows is None else published_rows
    df = table_frame(metrics, pub, baselines)
    header = ["Method"] + [f"{b} {t}" for b, t in df.columns]
    lines = ["| " + " | ".join(header) + " |", "|" + "---|" * len(header)]
    for label, row in df.iterrows():
        cells = ["–" if v is None or (isinstance(v, float) and math.isnan(v)) else f"{v:.2f}" for v in row]
        lines.append("| " + " | ".join([label, *cells]) + " |")
    notes = ["", "Accuracy (%) of photos localized within each distance of the truth. Unresolved answers count as "
                 "misses.", "", "Our rows (n = images evaluated):"]
    for b, ms in metrics.items():
        for m, v in ms.items():
            notes.append(f"- {DISPLAY.get(b, b)} / {m}: n = {v.get('n')}, unresolved = {v.get('n_unresolved')}, "
                         f"median error = {_fmt_km(v.get('median_km'))}")
    notes += ["", "Published rows and their sources (`globe/assets/published.csv`):"]
    for (method, src), g in pub.groupby(["method", "source"], sort=False):
        notes.append(f"- {method} ({', '.join(DISPLAY.get(b, b) for b in g['benchmark'])}): {src}")
    notes += ["", "Not shown: Qwen2.5-VL-7B / -72B zero-shot and GeoReasoner, whose figures we could not source. "
                  "Published rows are on the full benchmarks (IM2GPS3K: 2,997 photos, YFCC4K: 4,536); ours on a "
                  "subset are not directly comparable."]
    return "\n".join(lines + notes) + "\n"


def _fmt_km(v: Any) -> str:
    return "–" if v is None else f"{v:,.0f} km"
