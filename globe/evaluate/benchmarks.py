"""The benchmark registry: each benchmark's files (paths in params.yaml's `eval.benchmarks`) as one frame of `id, lat,
lon, image` (a file path, or the image itself for Hugging Face datasets).

A photo whose image is missing (absent from the image folder, or an empty image in a hub dataset whose archives are
incomplete, as MP16-Reason's are) is a counted, reported skip, never a crash: the frame's `attrs["skipped"]` holds
{reason: count} and `attrs["skipped_ids"]` the ids, and evaluation writes them beside the predictions. Only a
benchmark with no usable photo at all is an error (its folder is surely wrong).

Hub sources (profiles `paper` and `released`): `mp16-reason-test` reads a dataset id (`path`, e.g.
`globe-project/MP16-Reason`, split `test`) through `datasets`; `osv5m` with `hub: osv5m/osv5m` downloads the test
CSV and the image archives once into `csv` / `image_dir`, extracting only the photos of the benchmark (`subset: 3000`
is GLOBE's test-mini-3k size: a fixed subset, the 3,000 ids with the smallest SHA-256, since GLOBE's own id list is not
published).
"""

from __future__ import annotations

import logging
import os
from collections.abc import Callable
from pathlib import Path
from typing import TYPE_CHECKING

import numpy as np
import pandas as pd

from globe.data import open_saved

log = logging.getLogger(__name__)

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


def stable_subset(ids, n: int | None) -> list[bool]:
    """A fixed subset of `n` ids (those with the smallest SHA-256), the same on every machine and for any row order."""
    import hashlib

    ids = [str(i) for i in ids]
    if n is None or n >= len(ids):
        return [True] * len(ids)
    chosen = set(sorted(ids, key=lambda i: hashlib.sha256(i.encode("utf-8")).hexdigest())[:n])
    return [i in chosen for i in ids]


def _skip(df: pd.DataFrame, missing, name: str, reason: str, where: str, hint: str) -> pd.DataFrame:
    """Drop the rows flagged `missing`, recording them as skips; all of them missing is an error."""
    missing = np.asarray(missing, dtype=bool)
    if len(df) and missing.all():
        raise MissingBenchmark(f"benchmark {name!r}: none of the {len(df)} images is there ({where}); {hint}")
    skipped = dict(df.attrs.get("skipped", {}))
    ids = list(df.attrs.get("skipped_ids", {}).get(reason, []))
    if missing.any():
        skipped[reason] = skipped.get(reason, 0) + int(missing.sum())
        ids += list(df["id"][missing])
        log.warning("benchmark %s: %d of %d photos skipped (%s; %s), e.g. %s", name, int(missing.sum()), len(df),
                    reason, where, df["id"][missing].iloc[0])
    out = df[~missing].reset_index(drop=True)
    out.attrs["skipped"] = skipped
    out.attrs["skipped_ids"] = {**df.attrs.get("skipped_ids", {}), **({reason: ids} if ids else {})}
    return out


def _csv_benchmark(name: str, entry: dict, *, id_col: str, lat_col: str, lon_col: str, file_col: str | None,
                   file_pattern: str = "{}") -> pd.DataFrame:
    """A CSV of coordinates beside a folder of images; a row whose image file is missing is a counted skip."""
    csv = _need(entry, "csv", name, "the label CSV")
    image_dir = _need(entry, "image_dir", name, "the image folder")
    id_col, lat_col, lon_col = entry.get("id_col", id_col), entry.get("lat_col", lat_col), entry.get("lon_col", lon_col)
    file_col = entry.get("file_col", file_col)
    df = pd.read_csv(csv, dtype={id_col: str})
    missing_cols = [c for c in (id_col, lat_col, lon_col, file_col) if c and c not in df.columns]
    if missing_cols:
        raise KeyError(f"benchmark {name!r}: {csv} lacks column(s) {missing_cols}; columns: {list(df.columns)}")
    if entry.get("subset") is not None:
        df = df[stable_subset(df[id_col], int(entry["subset"]))].reset_index(drop=True)
    files = df[file_col].astype(str) if file_col else df[id_col].astype(str).map(file_pattern.format)
    out = pd.DataFrame({
        "id": df[id_col].astype(str),
        "lat": pd.to_numeric(df[lat_col], errors="coerce"),
        "lon": pd.to_numeric(df[lon_col], errors="coerce"),
        "image": [str(image_dir / f) for f in files],
    })
    return _skip(out, [not os.path.isfile(p) for p in out["image"]], name, "missing_image",
                 f"listed in {csv}, absent from {image_dir}",
                 f"set eval.benchmarks.{name}.image_dir to the folder holding them")


def load_im2gps3k(entry: dict) -> pd.DataFrame:
    """IM2GPS3K: `IMG_ID, LAT, LON` (IMG_ID is the file name)."""
    return _csv_benchmark("im2gps3k", entry, id_col="IMG_ID", lat_col="LAT", lon_col="LON", file_col="IMG_ID")


def load_yfcc4k(entry: dict) -> pd.DataFrame:
    """YFCC4K: named columns, the file name in `name`, coordinates in `lon`, `lat`."""
    return _csv_benchmark("yfcc4k", entry, id_col="name", lat_col="lat", lon_col="lon", file_col="name")


def load_osv5m(entry: dict) -> pd.DataFrame:
    """OSV-5M: test.csv (`id, latitude, longitude, ...`) and images/<id>.jpg; with `hub` (a dataset id such as
    osv5m/osv5m) and files missing, they are downloaded first (`fetch_osv5m`); `subset` keeps a fixed subset."""
    if entry.get("hub") and not (entry.get("csv") and Path(entry["csv"]).is_file()
                                 and entry.get("image_dir") and Path(entry["image_dir"]).is_dir()):
        fetch_osv5m(entry)
    return _csv_benchmark("osv5m", entry, id_col="id", lat_col="latitude", lon_col="longitude", file_col=None,
                          file_pattern="{}.jpg")


def fetch_osv5m(entry: dict) -> None:
    """Download OSV-5M's test CSV and extract the benchmark's photos (its `subset`, or all) from the hub's image
    archives into `csv` / `image_dir` (a one-time download of the test archives; needs hub access)."""
    import zipfile

    repo, csv, image_dir = entry["hub"], entry.get("csv"), entry.get("image_dir")
    if not csv or not image_dir:
        raise MissingBenchmark("benchmark 'osv5m': set eval.benchmarks.osv5m.csv and .image_dir (where the hub copy "
                               "goes) together with .hub")
    if os.environ.get("HF_HUB_OFFLINE", "0") not in ("", "0", "false", "False"):
        raise MissingBenchmark(f"benchmark 'osv5m': {csv} or {image_dir} is missing and the hub is off (offline); "
                               f"download {repo} (test.csv, images/test/*.zip) with hub access first")
    from huggingface_hub import HfApi, hf_hub_download

    csv, image_dir = Path(csv), Path(image_dir)
    cache = csv.parent / ".hub"
    if not csv.is_file():
        csv.parent.mkdir(parents=True, exist_ok=True)
        os.replace(hf_hub_download(repo, "test.csv", repo_type="dataset", local_dir=str(cache)), csv)
    ids = pd.read_csv(csv, usecols=["id"], dtype={"id": str})["id"]
    wanted = set(ids[stable_subset(ids, entry.get("subset"))])
    image_dir.mkdir(parents=True, exist_ok=True)
    wanted -= {p.stem for p in image_dir.glob("*.jpg")}
    archives = sorted(f for f in HfApi().list_repo_files(repo, repo_type="dataset")
                      if f.startswith("images/test/") and f.endswith(".zip"))
    for name in archives:
        if not wanted:
            break
        local = hf_hub_download(repo, name, repo_type="dataset", local_dir=str(cache))
        with zipfile.ZipFile(local) as zf:
            for member in zf.namelist():
                stem = Path(member).stem
                if stem in wanted and member.endswith(".jpg"):
                    with zf.open(member) as src, open(image_dir / f"{stem}.jpg", "wb") as dst:
                        dst.write(src.read())
                    wanted.discard(stem)
    log.info("osv5m: %s and %s ready (%d wanted photos not in the archives)", csv, image_dir, len(wanted))


def load_custom(entry: dict) -> pd.DataFrame:
    """Any CSV + image folder; `id_col`, `lat_col`, `lon_col`, `file_col` name its columns (defaults id, lat, lon,
    file; without a file column the image is `<id>.jpg`)."""
    csv = _need(entry, "csv", "custom", "the label CSV")
    # An explicit file_col must exist (checked in _csv_benchmark); by default a `file` column is used when present.
    has_file = "file" in pd.read_csv(csv, nrows=0).columns
    return _csv_benchmark("custom", entry, id_col="id", lat_col="lat", lon_col="lon",
                          file_col="file" if has_file else None, file_pattern="{}.jpg")


# Column names a hub dataset may use for each canonical column (the first one present wins; `<col>_col` in the
# benchmark's entry names it outright).
HF_COLUMNS = {"id": ("id", "IMG_ID", "img_id", "image_id"), "lat": ("lat", "LAT", "latitude", "Latitude"),
              "lon": ("lon", "LON", "longitude", "Longitude"), "image": ("image", "images", "img")}


def _column(ds, name: str, entry: dict, key: str) -> str:
    if entry.get(f"{key}_col"):
        col = entry[f"{key}_col"]
        if col not in ds.column_names:
            raise KeyError(f"benchmark {name!r}: dataset lacks column {col!r} ({key}_col); columns: {ds.column_names}")
        return col
    for col in HF_COLUMNS[key]:
        if col in ds.column_names:
            return col
    raise KeyError(f"benchmark {name!r}: dataset has no {key} column (tried {list(HF_COLUMNS[key])}; set "
                   f"eval.benchmarks.{name}.{key}_col); columns: {ds.column_names}")


def _present(image, image_dir: Path | None):
    """An undecoded datasets image (bytes/path dict, a path, or a list of them: the first); None when absent."""
    if isinstance(image, (list, tuple)):
        image = image[0] if image else None
    if isinstance(image, dict):
        if image.get("bytes"):
            return image
        image = image.get("path")
    if isinstance(image, str) and image:
        path = Path(image) if image_dir is None or Path(image).is_absolute() else image_dir / image
        return str(path) if path.is_file() else None
    return None


def _from_hf(ds, name: str, entry: dict) -> pd.DataFrame:
    """A datasets.Dataset with id, image, lat, lon columns (names detected, or `<col>_col`) as a benchmark frame;
    images stay lazy. A row without its image (or whose file is not under `image_dir`) is a counted skip."""
    from datasets import Image, Sequence

    cols = {k: _column(ds, name, entry, k) for k in ("id", "lat", "lon")}
    image_dir = Path(entry["image_dir"]) if entry.get("image_dir") else None
    if image_dir is not None and not any(c in ds.column_names for c in (entry.get("image_col"), *HF_COLUMNS["image"])):
        # Labels only (GLOBE's eval CSVs: IMG_ID, LAT, LON, ...): the image is <image_dir>/<id>(.jpg), as eval.py has it
        ds = ds.add_column("image", [i if Path(str(i)).suffix else f"{i}.jpg" for i in ds[cols["id"]]])
    cols["image"] = _column(ds, name, entry, "image")
    # Undecoded images (bytes/path dicts): a frame of thousands of decoded photos would not fit in memory.
    feature = ds.features[cols["image"]]
    if isinstance(feature, Image):
        ds = ds.cast_column(cols["image"], Image(decode=False))
    elif isinstance(feature, (list, Sequence)) and isinstance(getattr(feature, "feature", None) or feature[0], Image):
        ds = ds.cast_column(cols["image"], [Image(decode=False)] if isinstance(feature, list)
                            else Sequence(Image(decode=False)))
    if entry.get("subset") is not None:
        ds = ds.select([i for i, keep in enumerate(stable_subset(ds[cols["id"]], int(entry["subset"]))) if keep])
    images = [_present(im, image_dir) for im in ds[cols["image"]]]
    out = pd.DataFrame({
        "id": [str(x) for x in ds[cols["id"]]],
        "lat": np.asarray(ds[cols["lat"]], dtype=float),
        "lon": np.asarray(ds[cols["lon"]], dtype=float),
        "image": images,
    })
    return _skip(out, [im is None for im in images], name, "missing_image", "no image in the dataset",
                 f"check eval.benchmarks.{name} (its image column, or image_dir for image paths)")


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
    attrs = dict(df.attrs)
    if cfg.max_images is not None and len(df) > cfg.max_images:
        df = df.sample(n=cfg.max_images, random_state=cfg.seed).sort_index()
    df = df.reset_index(drop=True)
    df.attrs.update(skipped=attrs.get("skipped", {}), skipped_ids=attrs.get("skipped_ids", {}))
    return df
