"""Ingest, canonical schema, safe image loading, rejects and splits (stage 01).

Every source (a CSV plus an image folder, a Hugging Face dataset, a folder of photos with GPS EXIF) becomes a stream of
*records* (`id`, image path or bytes, `lat`, `lon`, `licence`, `owner`, `title`). `build_rows` checks each record in
a fixed order -- id, coordinates, image -- and either turns it into a canonical row (image decoded safely, downscaled,
re-encoded as JPEG; country/admin1/city/continent from the offline reverse geocoder) or into one row of the rejects
table with a reason from `REJECT_REASONS`. Nothing is dropped silently: every input row is either kept or rejected.

`split` makes the {train, test} DatasetDict: deterministic by seed, optionally stratified by country, optionally
holding whole countries or continents out of training. `build_dataset(cfg)` runs the lot from a `DataParams`
(params.yaml's `data` group) and saves the dataset and the rejects table.
"""

from __future__ import annotations

import csv
import json
import logging
import math
import os
import shutil
import tempfile
from collections.abc import Callable, Iterable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any, ClassVar, Literal

if TYPE_CHECKING:  # pragma: no cover
    import pandas as pd
    from datasets import Dataset, DatasetDict, Features

from globe.config import StageConfig
from globe.images import IMAGE_REJECT_REASONS, ImageRejected, encode_jpeg, load_image
from globe.splits import split, split_counts

log = logging.getLogger(__name__)

# The canonical columns of one photo (docs/architecture.md); `FEATURES` (built lazily) gives their types.
COLUMNS = ["id", "image", "lat", "lon", "country_code", "country", "admin1", "city", "continent", "source", "licence",
           "owner", "title"]
LOCATION_COLUMNS = ["country_code", "country", "admin1", "city", "continent"]

REJECT_COLUMNS = ["id", "path", "reason", "detail"]
REJECT_REASONS: dict[str, str] = {
    "missing_id": "the row has no id",
    "duplicate_id": "an earlier row had the same id (only the first row with an id is considered)",
    "bad_coordinates": "latitude/longitude missing, not a number, or outside [-90, 90] / [-180, 180]",
    "null_island": "exactly 0, 0: the usual placeholder for an unknown position",
    "no_gps": "a photo in an EXIF folder whose EXIF has no GPS position",
    "outside_image_dir": "the row's file is an absolute path or escapes the image folder (../), refused unopened",
    **IMAGE_REJECT_REASONS,
}

IMAGE_EXTENSIONS = {".jpg", ".jpeg", ".png", ".tif", ".tiff", ".webp", ".bmp", ".gif"}

# CSV layouts: canonical field -> column. `auto` picks the first layout whose columns are all present.
LAYOUTS: dict[str, dict[str, str]] = {
    # data/sample/metadata.csv (scripts/make_sample.py)
    "sample": {"id": "id", "file": "file", "lat": "lat", "lon": "lon", "licence": "licence", "owner": "owner",
               "title": "title"},
    # IM2GPS3K images.csv / labels.csv
    "im2gps3k": {"id": "IMG_ID", "file": "IMG_ID", "lat": "LAT", "lon": "LON", "licence": "license",
                 "owner": "owner", "title": "title"},
    # YFCC4K (named columns; coordinates are lon, lat)
    "yfcc4k": {"id": "name", "file": "name", "lat": "lat", "lon": "lon", "licence": "LicenseName",
               "owner": "OwnerNSID", "title": "Title"},
    # MP16-Pro metadata (IMG_ID, author, LAT, LON, neighbourhood, city, ..., country, continent)
    "mp16pro": {"id": "IMG_ID", "file": "IMG_ID", "lat": "LAT", "lon": "LON", "owner": "author"},
    # the original IM2GPS test set
    "im2gps": {"id": "IMG_ID", "file": "IMG_ID", "lat": "LAT", "lon": "LON", "owner": "AUTHOR"},
}


def features() -> Features:
    """The canonical schema as `datasets.Features`."""
    from datasets import Features, Image, Value

    string = Value("string")
    return Features({
        "id": string, "image": Image(), "lat": Value("float64"), "lon": Value("float64"),
        **{c: string for c in LOCATION_COLUMNS}, "source": string, "licence": string, "owner": string,
        "title": string,
    })


def __getattr__(name: str) -> Any:
    # `FEATURES` is built on first access so `import globe.data` does not import `datasets`.
    if name == "FEATURES":
        return features()
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")


# --------------------------------------------------------------------------------------------------------------------
# Configuration


@dataclass
class DataParams(StageConfig):
    """params.yaml's `data` group (plus `seed` and `offline` from `common`). See params.yaml for each key."""

    group: ClassVar[str] = "data"

    source: Literal["csv", "hf", "exif"] = "csv"
    csv: str | None = "data/sample/metadata.csv"
    image_dir: str | None = "data/sample/images"
    layout: str = "auto"
    id_col: str | None = None
    lat_col: str | None = None
    lon_col: str | None = None
    file_col: str | None = None
    hf_dataset: str | None = None
    hf_split: str = "train"
    hf_image_col: str = "image"
    exif_dir: str | None = None
    max_images: int | None = None
    max_side: int = 512
    max_pixels: int = 100_000_000
    jpeg_quality: int = 90
    test_fraction: float = 0.3
    stratify: bool = True
    holdout_countries: list[str] = field(default_factory=list)
    holdout_continents: list[str] = field(default_factory=list)
    seed: int = 0
    offline: bool = True
    out: str = "data/processed/dataset"
    rejects: str | None = "results/data/rejects.csv"
    summary_dir: str | None = "results/data"

    def validate(self) -> None:
        self.require(0.0 <= self.test_fraction < 1.0, "test_fraction", f"must be in [0, 1), got {self.test_fraction}")
        self.require(self.max_side >= 1 and self.max_pixels >= 1, "max_side", "max_side and max_pixels must be > 0")
        self.require(1 <= self.jpeg_quality <= 100, "jpeg_quality", f"must be in [1, 100], got {self.jpeg_quality}")
        self.require(self.max_images is None or self.max_images >= 1, "max_images", "must be >= 1 or null")
        self.require(self.layout == "auto" or self.layout in LAYOUTS, "layout",
                     f"must be auto or one of {list(LAYOUTS)}, got {self.layout!r}")


# --------------------------------------------------------------------------------------------------------------------
# Sources -> records


def _clean(value: Any) -> str:
    """A metadata value as a string ('' for missing)."""
    if value is None or (isinstance(value, float) and math.isnan(value)):
        return ""
    return str(value).strip()


def resolve_layout(columns: Iterable[str], layout: str = "auto", **overrides: str | None) -> tuple[str, dict[str, str]]:
    """(layout name, canonical field -> column) for a table with these columns.

    `auto` picks, among the layouts whose id, file, lat and lon columns are all present, the one matching the most
    columns (so an MP16-Pro file with `author` is not taken for IM2GPS3K); licence/owner/title are used when present.
    `overrides` are `id`, `lat`, `lon`, `file` -> column name (None: keep the layout's). With overrides for id, lat
    and lon a table in no known layout works too (name `custom`; file names from a `file` column, else the id).
    """
    columns = list(columns)
    overrides = {k: v for k, v in overrides.items() if v}
    required = ("id", "file", "lat", "lon")
    if layout == "auto":
        fits = [n for n, m in LAYOUTS.items() if all(m[k] in columns for k in required)]
        name = max(fits, key=lambda n: sum(c in columns for c in LAYOUTS[n].values()), default="custom")
    elif layout in LAYOUTS:
        name = layout
    else:
        raise ValueError(f"unknown CSV layout {layout!r}; known: auto, {', '.join(LAYOUTS)}")
    mapping = {**LAYOUTS.get(name, {}), **overrides}
    if "file" not in mapping and "id" in mapping:
        mapping["file"] = "file" if "file" in columns else mapping["id"]
    missing = [k for k in required if mapping.get(k) not in columns]
    if missing:
        raise ValueError(
            f"columns {columns} fit no known layout ({', '.join(LAYOUTS)}): no column for {missing}; "
            "set data.layout or data.id_col / lat_col / lon_col / file_col"
        )
    return name, {k: v for k, v in mapping.items() if v in columns}


def ingest_csv(csv_path: str | os.PathLike, image_dir: str | os.PathLike, layout: str = "auto",
               id_col: str | None = None, lat_col: str | None = None, lon_col: str | None = None,
               file_col: str | None = None, source: str | None = None) -> Iterator[dict]:
    """Records from a CSV (IM2GPS3K, YFCC4K, MP16-Pro, our sample, or any with column overrides) + an image folder."""
    import pandas as pd

    df = pd.read_csv(csv_path, dtype=str, keep_default_na=False, quoting=csv.QUOTE_MINIMAL)
    name, m = resolve_layout(df.columns, layout, id=id_col, lat=lat_col, lon=lon_col, file=file_col)
    source = source or (name if name != "custom" else Path(csv_path).stem)
    image_dir = Path(image_dir)
    for row in df.to_dict("records"):
        file = _clean(row[m["file"]])
        rec = {
            "id": _clean(row[m["id"]]), "path": str(image_dir / file) if file else str(image_dir),
            "lat": row[m["lat"]], "lon": row[m["lon"]], "source": source,
            **{k: _clean(row.get(m[k])) if k in m else "" for k in ("licence", "owner", "title")},
        }
        if file and not inside(file):
            rec["reject"] = ("outside_image_dir", f"{file!r} is not a path inside {image_dir}")
        yield rec


def inside(relative: str) -> bool:
    """Whether a file name from a metadata table stays inside its image folder: relative, no `..` escape.

    Lexical on purpose: image folders may be symlinks (DVC caches), which resolving would wrongly reject."""
    if os.path.isabs(relative) or Path(relative).drive or relative.startswith(("/", "\\")):
        return False
    norm = os.path.normpath(relative.replace("\\", "/"))
    return norm != ".." and not norm.startswith(".." + os.sep) and not norm.startswith("../")


def _load_hf(name_or_path: str, split: str):
    """A local `save_to_disk` folder, a local dataset folder/script, or a hub id (hub access needed)."""
    from datasets import DatasetDict, load_dataset, load_from_disk

    p = Path(name_or_path)
    if p.is_dir() and any((p / f).is_file() for f in ("state.json", "dataset_dict.json")):
        ds = load_from_disk(str(p))
        return ds[split] if isinstance(ds, DatasetDict) else ds
    return load_dataset(name_or_path, split=split)


def ingest_hf(name_or_path: str, split: str = "train", id_col: str | None = "id", lat_col: str = "lat",
              lon_col: str = "lon", image_col: str = "image", image_dir: str | os.PathLike | None = None,
              source: str | None = None) -> Iterator[dict]:
    """Records from a Hugging Face dataset (hub id or local copy).

    The image column may be a datasets `Image` (read as raw bytes and decoded safely here) or a string file name
    relative to `image_dir` (metadata-only datasets such as MP16-Pro, whose images ship as an archive). Without an
    id column the id is `<split>/<row index>`. Column names follow the layouts when left at their defaults.
    """
    from datasets import Image

    ds = _load_hf(name_or_path, split)
    cols = ds.column_names
    if (lat_col, lon_col) == ("lat", "lon") and not {"lat", "lon"} <= set(cols):
        _, m = resolve_layout(cols)  # e.g. MP16-Pro's IMG_ID / LAT / LON
        id_col = id_col if id_col in cols else m["id"]
        lat_col, lon_col = m["lat"], m["lon"]
        if image_col not in cols:
            image_col = m["file"]
    for c in (lat_col, lon_col, image_col):
        if c not in cols:
            raise ValueError(f"{name_or_path}: no column {c!r}; columns: {cols}")
    if isinstance(ds.features[image_col], Image):
        ds = ds.cast_column(image_col, Image(decode=False))
    source = source or Path(str(name_or_path)).name
    meta = {k: next((c for c in cands if c in cols), None) for k, cands in
            {"licence": ("licence", "license"), "owner": ("owner", "author"), "title": ("title",)}.items()}
    for i, row in enumerate(ds):
        img = row[image_col]
        rec = {"id": _clean(row[id_col]) if id_col and id_col in cols else f"{split}/{i}",
               "lat": row[lat_col], "lon": row[lon_col], "source": source,
               **{k: _clean(row[c]) if c else "" for k, c in meta.items()}}
        if isinstance(img, dict):
            rec["path"] = img.get("path") or ""
            rec["bytes"] = img.get("bytes")
            if rec["bytes"] is None and rec["path"] and image_dir and not Path(rec["path"]).is_absolute():
                rec["path"] = str(Path(image_dir) / rec["path"])
        else:
            rec["path"] = str(Path(image_dir or ".") / _clean(img))
            if not inside(_clean(img)):
                rec["reject"] = ("outside_image_dir", f"{_clean(img)!r} is not a path inside {image_dir or '.'}")
        yield rec


def _dms_to_degrees(dms: Any, ref: str) -> float:
    d, m, s = (float(x) for x in dms)
    deg = d + m / 60.0 + s / 3600.0
    return -deg if str(ref).strip().upper() in ("S", "W") else deg


def exif_gps(path: str | os.PathLike) -> tuple[float, float] | None:
    """(lat, lon) from a photo's EXIF GPS tags, or None when it has none. Raises ImageRejected if unreadable."""
    from PIL import ExifTags, Image, UnidentifiedImageError

    try:
        with Image.open(path) as im:
            gps = im.getexif().get_ifd(ExifTags.IFD.GPSInfo)
    except UnidentifiedImageError as e:
        raise ImageRejected("corrupt_image", str(e)) from e
    except (OSError, SyntaxError, ValueError) as e:
        raise ImageRejected("corrupt_image", f"EXIF: {type(e).__name__}: {e}") from e
    tags = ExifTags.GPS
    if not gps or tags.GPSLatitude not in gps or tags.GPSLongitude not in gps:
        return None
    try:
        lat = _dms_to_degrees(gps[tags.GPSLatitude], gps.get(tags.GPSLatitudeRef, "N"))
        lon = _dms_to_degrees(gps[tags.GPSLongitude], gps.get(tags.GPSLongitudeRef, "E"))
    except (TypeError, ValueError, ZeroDivisionError):
        return float("nan"), float("nan")  # present but malformed: rejected as bad_coordinates
    return lat, lon


def ingest_exif_folder(folder: str | os.PathLike, source: str = "exif") -> Iterator[dict]:
    """Records from a folder of photos (recursively) positioned by their EXIF GPS tags; id = relative path."""
    from PIL import ExifTags, Image

    folder = Path(folder)
    if not folder.is_dir():
        raise FileNotFoundError(f"EXIF folder {folder} does not exist")
    for path in sorted(p for p in folder.rglob("*") if p.is_file() and p.suffix.lower() in IMAGE_EXTENSIONS):
        rec = {"id": path.relative_to(folder).as_posix(), "path": str(path), "source": source,
               "licence": "", "owner": "", "title": ""}
        try:
            gps = exif_gps(path)
        except ImageRejected as e:
            yield {**rec, "reject": (e.reason, e.detail)}
            continue
        if gps is None:
            yield {**rec, "reject": ("no_gps", "no GPSLatitude/GPSLongitude in EXIF")}
            continue
        with Image.open(path) as im:
            exif = im.getexif()
        # Who and what, when the camera or editor recorded it: Artist, ImageDescription, Copyright.
        rec.update(owner=_clean(exif.get(ExifTags.Base.Artist)), title=_clean(exif.get(ExifTags.Base.ImageDescription)),
                   licence=_clean(exif.get(ExifTags.Base.Copyright)))
        yield {**rec, "lat": gps[0], "lon": gps[1]}


# --------------------------------------------------------------------------------------------------------------------
# Records -> canonical rows + rejects


def check_coordinates(lat: Any, lon: Any) -> tuple[float, float] | tuple[str, str]:
    """(lat, lon) as floats, or (reason, detail) for bad ones."""
    try:
        la, lo = float(lat), float(lon)
    except (TypeError, ValueError):
        return "bad_coordinates", f"not numbers: lat={lat!r}, lon={lon!r}"
    if not (math.isfinite(la) and math.isfinite(lo)):
        return "bad_coordinates", f"not finite: lat={la}, lon={lo}"
    if abs(la) > 90 or abs(lo) > 180:
        return "bad_coordinates", f"out of range: lat={la}, lon={lo}"
    if la == 0.0 and lo == 0.0:
        return "null_island", "lat=0, lon=0"
    return la, lo


def build_rows(records: Iterable[dict], rejects: list[dict], max_side: int = 512, max_pixels: int = 100_000_000,
               jpeg_quality: int = 90, chunk_size: int = 256) -> Iterator[dict]:
    """Canonical rows from records, appending every refused record to `rejects` (checked: id, coordinates, image).

    Location fields come from `globe.geo.reverse_geocode`, called once per chunk of kept rows.
    """
    from globe.geo import reverse_geocode

    seen: set[str] = set()
    chunk: list[dict] = []

    def reject(rec: dict, reason: str, detail: str) -> None:
        rejects.append({"id": rec.get("id", ""), "path": rec.get("path") or "", "reason": reason, "detail": detail})

    def flush() -> Iterator[dict]:
        places = reverse_geocode([r["lat"] for r in chunk], [r["lon"] for r in chunk])
        for row, place in zip(chunk, places[LOCATION_COLUMNS].to_dict("records")):
            yield {**row, **{k: _clean(v) for k, v in place.items()}}
        chunk.clear()

    for rec in records:
        rid = rec.get("id", "")
        if not rid:
            reject(rec, "missing_id", "empty id")
            continue
        if rid in seen:
            reject(rec, "duplicate_id", f"id {rid!r} seen before")
            continue
        seen.add(rid)
        if "reject" in rec:
            reject(rec, *rec["reject"])
            continue
        coords = check_coordinates(rec.get("lat"), rec.get("lon"))
        if isinstance(coords[0], str):
            reject(rec, *coords)
            continue
        try:
            im = load_image(rec["bytes"] if rec.get("bytes") is not None else rec["path"], max_pixels, max_side)
        except ImageRejected as e:
            reject(rec, e.reason, e.detail)
            continue
        chunk.append({
            "id": rid, "image": {"bytes": encode_jpeg(im, jpeg_quality), "path": None},
            "lat": coords[0], "lon": coords[1], "source": rec.get("source", ""),
            **{k: rec.get(k, "") for k in ("licence", "owner", "title")},
        })
        if len(chunk) >= chunk_size:
            yield from flush()
    if chunk:
        yield from flush()


def rejects_frame(rejects: list[dict]) -> pd.DataFrame:
    import pandas as pd

    return pd.DataFrame(rejects, columns=REJECT_COLUMNS)


def reject_counts(rejects: pd.DataFrame) -> pd.DataFrame:
    """Count of each reject reason (every reason listed, zeros included)."""
    import pandas as pd

    counts = rejects["reason"].value_counts()
    return pd.DataFrame({"reason": list(REJECT_REASONS), "count": [int(counts.get(r, 0)) for r in REJECT_REASONS],
                         "meaning": list(REJECT_REASONS.values())})


def records_to_dataset(records: Iterable[dict], cache_dir: str | os.PathLike, max_side: int = 512,
                       max_pixels: int = 100_000_000, jpeg_quality: int = 90) -> tuple[Dataset, pd.DataFrame]:
    """A canonical `Dataset` (Arrow files under `cache_dir`, written as it goes) and the rejects table."""
    import uuid

    from datasets import Dataset
    from datasets.exceptions import DatasetGenerationError

    rejects: list[dict] = []
    kept = [0]

    def rows(**kwargs) -> Iterator[dict]:
        for row in build_rows(**kwargs):
            kept[0] += 1
            yield row

    # A fresh fingerprint: the generator must run every time, or the rejects table would stay empty.
    try:
        ds = Dataset.from_generator(
            rows, features=features(), cache_dir=str(cache_dir), fingerprint=uuid.uuid4().hex,
            gen_kwargs={"records": records, "rejects": rejects, "max_side": max_side, "max_pixels": max_pixels,
                        "jpeg_quality": jpeg_quality},
        )
    except DatasetGenerationError as e:
        # Surface our own error (a bad config, a missing CSV column...) rather than datasets' wrapper.
        raise (e.__cause__ or e) from None
    except ValueError:
        if kept[0]:
            raise
        # Every record was rejected: datasets cannot build from an empty generator, but the stage must still report.
        ds = Dataset.from_dict({c: [] for c in COLUMNS}, features=features())
    return ds, rejects_frame(rejects)


# --------------------------------------------------------------------------------------------------------------------
# The stage

def records_from_config(cfg: DataParams) -> Iterator[dict]:
    """The configured source's records (the first `max_images` of them when set)."""
    import itertools

    if cfg.source == "csv":
        if not cfg.csv or not cfg.image_dir:
            raise ValueError("data.source=csv needs data.csv and data.image_dir")
        records = ingest_csv(cfg.csv, cfg.image_dir, cfg.layout, cfg.id_col, cfg.lat_col, cfg.lon_col, cfg.file_col)
    elif cfg.source == "hf":
        if not cfg.hf_dataset:
            raise ValueError("data.source=hf needs data.hf_dataset (a hub id or a local dataset folder)")
        records = ingest_hf(cfg.hf_dataset, cfg.hf_split, cfg.id_col or "id", cfg.lat_col or "lat",
                            cfg.lon_col or "lon", cfg.hf_image_col, cfg.image_dir)
    else:
        if not cfg.exif_dir:
            raise ValueError("data.source=exif needs data.exif_dir")
        records = ingest_exif_folder(cfg.exif_dir)
    return itertools.islice(records, cfg.max_images) if cfg.max_images else records


def save_dataset(ds, out: str | os.PathLike, *, atomic: bool = True,
                 before_rename: Callable[[Path], None] | None = None) -> Path:
    """`save_to_disk` a Dataset or DatasetDict, working for empty splits too (datasets writes 0 shards for them,
    which it cannot load back). Atomic by default: written to `<out>.partial` (where `before_rename` may add files)
    and renamed into place, so a kill leaves the previous output or none, never half of one."""
    from datasets import DatasetDict

    out = Path(out)
    out.parent.mkdir(parents=True, exist_ok=True)
    target = out.with_name(out.name + ".partial") if atomic else out
    shutil.rmtree(target, ignore_errors=True)
    if isinstance(ds, DatasetDict):
        ds.save_to_disk(str(target), num_shards={k: 1 for k, d in ds.items() if len(d) == 0})
    else:
        ds.save_to_disk(str(target), num_shards=1 if len(ds) == 0 else None)
    pin_fingerprints(target)
    if before_rename is not None:
        before_rename(target)
    if atomic:
        shutil.rmtree(out, ignore_errors=True)
        os.replace(target, out)
    return out


def pin_fingerprints(saved: str | os.PathLike) -> None:
    """Give each split saved under `saved` a fingerprint derived from its content (Arrow shards and features),
    written into its state.json. `datasets` fingerprints a transform of a loaded dataset with its files' modification
    times, or at random when the transform does not hash, so the same data would get a new fingerprint on every run:
    the saved folder (a DVC output) and the resume checks that read it (`globe.checkpoints.data_fingerprint`) would
    change with nothing changed."""
    from globe.cache import cache_key, files_digest

    for state_path in sorted(Path(saved).glob("**/state.json")):
        split = state_path.parent
        state = json.loads(state_path.read_text(encoding="utf-8"))
        files = [split / d["filename"] for d in state.get("_data_files", [])] + [split / "dataset_info.json"]
        # every byte hashed (no head-and-tail shortcut for big shards: a changed row must change the fingerprint)
        state["_fingerprint"] = cache_key(*(files_digest(f, full_limit=1 << 62) for f in files))[:16]
        state_path.write_text(json.dumps(state, indent=2, sort_keys=True), encoding="utf-8")


def build_dataset(cfg: DataParams) -> tuple[DatasetDict, pd.DataFrame]:
    """Ingest, validate, geocode and split; save the DatasetDict to `cfg.out` and the rejects to `cfg.rejects`.

    The build is deterministic, and atomic (`save_dataset`): an interrupted run leaves the previous dataset or none.
    Returns the saved DatasetDict (memory-mapped from `cfg.out`) and the rejects table.
    """
    from globe.config import prepare_run

    prepare_run(cfg.seed, cfg.offline)
    out = Path(cfg.out)
    out.parent.mkdir(parents=True, exist_ok=True)
    with tempfile.TemporaryDirectory(prefix="globe-data-", dir=out.parent) as tmp:
        ds, rejects = records_to_dataset(records_from_config(cfg), tmp, cfg.max_side, cfg.max_pixels,
                                         cfg.jpeg_quality)
        dd = split(ds, cfg.test_fraction, cfg.seed, cfg.stratify, cfg.holdout_countries, cfg.holdout_continents)
        save_dataset(dd, out)
        del ds, dd  # release the memory-mapped temporary files before the folder goes
    if cfg.rejects:
        Path(cfg.rejects).parent.mkdir(parents=True, exist_ok=True)
        rejects.to_csv(cfg.rejects, index=False)
    return open_saved(out), rejects


def write_summaries(dd: DatasetDict, rejects: pd.DataFrame, summary_dir: str | os.PathLike) -> dict[str, Any]:
    """Small, deterministic tables for DVC to track: counts per country, continent and reject reason + summary.json."""
    d = Path(summary_dir)
    d.mkdir(parents=True, exist_ok=True)
    split_counts(dd, "country").to_csv(d / "counts_country.csv", index=False)
    split_counts(dd, "continent").to_csv(d / "counts_continent.csv", index=False)
    reject_counts(rejects).to_csv(d / "rejects_by_reason.csv", index=False)
    summary = {
        "kept": sum(len(s) for s in dd.values()), "rejected": len(rejects),
        **{f"n_{name}": len(s) for name, s in dd.items()},
        "countries": len({c for s in dd.values() for c in s["country_code"]}),
        "test_countries_unseen_in_train": sorted(set(dd["test"]["country_code"]) - set(dd["train"]["country_code"])),
    }
    (d / "summary.json").write_text(json.dumps(summary, indent=2) + "\n", encoding="utf-8")
    return summary


def open_saved(path: str | os.PathLike):
    """A dataset (or DatasetDict) saved with `save_to_disk`, memory-mapped. Stages call
    `globe.config.prepare_run` first, which keeps `datasets` from writing cache files beside a finished output."""
    import datasets

    p = Path(path)
    if not p.exists():
        raise FileNotFoundError(f"no saved dataset at {p}")
    return datasets.load_from_disk(str(p))
