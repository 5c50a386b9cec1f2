"""The benchmark registry: each benchmark's files (paths in params.yaml's `eval.benchmarks`) as one frame of `id, lat,
lon, image` (a file path, or the image itself for Hugging Face datasets)."""

from __future__ import annotations

import os
from collections.abc import Callable
from pathlib import Path
from typing import TYPE_CHECKING

import numpy as np
import pandas as pd

from globe.data import open_saved

if TYPE_CHECKING:  # pragma: no cover
    from globe.evaluate import EvalParams


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


def load_benchmark(name: str, cfg: EvalParams) -> pd.DataFrame:
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
