"""Score any predictions file against any labels file (`globe score`).

Predictions are coordinates, or free text (a place name, "City, Country", GLOBE's labelled answer or a whole
completion with <answer> tags) resolved by the forward geocoder. Both files are CSV / TSV, JSONL / JSON or parquet,
joined on an id column (they may be the same file). Every label is scored: a label with no prediction, or a
prediction that cannot be resolved (including coordinates outside [-90, 90] x [-180, 180], which are never
wrapped), counts as wrong (worst-case distance, see `globe.geo.metrics`) and is reported by count with examples.
Predictions whose id has no label cannot be scored and are reported by count.

Accuracy metrics are the named ones of `globe.geo.metrics.accuracy_flags` (country_acc, city_name_acc,
city_25km_acc, and the official string rule's country_string_acc / city_string_acc when the labels have `country`
and `city` name columns and the predictions name them). The true country is the labels' `country_code` column if
present, else the reverse-geocoded true point's; the true city is the GeoNames place nearest the true point.
Distances are WGS84 geodesics by default (`distance="haversine"` for the sphere; see `globe.geo.distance`).

Every user mistake (a missing, empty or header-only file, one that is not UTF-8 or uses another separator, no or
duplicated ids, missing columns, bad label coordinates) raises `ScoreInputError` with one line saying what and
where; `globe score` prints it and exits with status 2.
"""

from __future__ import annotations

import json
import math
import os
from pathlib import Path

import numpy as np

from globe.geo.distance import DEFAULT_DISTANCE, DISTANCES, distance_km, invalid_mask, validate_coords
from globe.geo.metrics import THRESHOLDS_KM, accuracy_flags, geo_metrics

ID_COLS = ("id", "IMG_ID", "img_id", "image_id", "name", "image", "filename", "file", "key")
LAT_COLS = ("lat", "latitude", "LAT", "Latitude", "pred_lat")
LON_COLS = ("lon", "lng", "longitude", "LON", "Longitude", "long", "pred_lon")
TEXT_COLS = ("prediction", "answer", "completion", "text", "pred", "output", "response", "place")
FALLBACK_LEVELS = ("feature", "admin", "country", "none")  # levels shown with examples: the answer was not a point


class ScoreInputError(ValueError):
    """A problem with the user's files or arguments, described in one line (`globe score` exits with status 2)."""


# ---- reading files -----------------------------------------------------------------------------------------------


def _suffix(p: Path) -> str:
    return "".join(p.suffixes[-2:]).lower() if p.suffix.lower() == ".gz" else p.suffix.lower()


def _read_csv(p: Path, sep: str, numeric: tuple[str, ...] = ()):
    """Every column as text (ids keep their exact form) except the coordinate columns `numeric`, which the C
    parser reads as numbers far faster (a value that is no number leaves its column text, checked later)."""
    import pandas as pd

    try:
        header = pd.read_csv(p, nrows=0, sep=sep, encoding="utf-8-sig").columns
        dtype = {c: str for c in header if c not in numeric}
        df = pd.read_csv(p, dtype=dtype, keep_default_na=False, na_values=[""], sep=sep, encoding="utf-8-sig")
    except UnicodeDecodeError as e:
        raise ScoreInputError(f"{p}: not UTF-8 text (byte 0x{e.object[e.start]:02x} at offset {e.start}); "
                              "re-save it as UTF-8") from None
    except pd.errors.EmptyDataError:
        raise ScoreInputError(f"{p}: the file is empty") from None
    except pd.errors.ParserError as e:
        raise ScoreInputError(f"{p}: not a valid {'tab' if sep == chr(9) else repr(sep)}-separated file: "
                              f"{str(e).strip().splitlines()[-1]}") from None
    if df.shape[1] == 1:
        header = str(df.columns[0])
        for other, hint in ((";", "--sep ';'"), ("\t", "--sep $'\\t' (or name the file .tsv)"), ("|", "--sep '|'"),
                            (",", "--sep ','")):
            if other != sep and other in header:
                raise ScoreInputError(f"{p}: a single column named {header!r}: the file looks "
                                      f"{'tab' if other == chr(9) else repr(other)}-separated; pass {hint}")
    return df


def read_table(path: str | os.PathLike, sep: str | None = None, numeric: tuple[str, ...] = LAT_COLS + LON_COLS):
    """A CSV / TSV / JSONL / JSON / parquet file as a DataFrame (CSV columns read as text, so ids keep their exact
    form, except the coordinate columns `numeric`).

    `sep` overrides the CSV separator (default: tab for .tsv, comma otherwise). Raises ScoreInputError on a missing,
    empty, header-only, undecodable or mis-separated file.
    """
    import pandas as pd

    p = Path(path)
    if not p.exists():
        raise ScoreInputError(f"{p}: no such file")
    if not p.is_file():
        raise ScoreInputError(f"{p}: not a file")
    if p.stat().st_size == 0:
        raise ScoreInputError(f"{p}: the file is empty")
    suf = _suffix(p)
    try:
        if suf in (".csv", ".csv.gz", ".tsv", ".tsv.gz", ".txt"):
            df = _read_csv(p, sep or ("\t" if suf.startswith(".tsv") else ","), numeric)
        elif suf in (".jsonl", ".jsonl.gz", ".ndjson"):
            df = pd.read_json(p, lines=True, dtype=False, encoding="utf-8")
        elif suf in (".json", ".json.gz"):
            df = pd.read_json(p, dtype=False, encoding="utf-8")
        elif suf in (".parquet", ".pq"):
            df = pd.read_parquet(p)
        else:
            raise ScoreInputError(f"{p}: unsupported extension {p.suffix!r} (use .csv, .tsv, .jsonl, .json or "
                                  ".parquet)")
    except ScoreInputError:
        raise
    except UnicodeDecodeError as e:
        raise ScoreInputError(f"{p}: not UTF-8 text (offset {e.start}); re-save it as UTF-8") from None
    except (ValueError, OSError) as e:  # pandas / pyarrow parse errors: malformed JSON, not parquet, ...
        raise ScoreInputError(f"{p}: cannot be read as {suf.lstrip('.')}: {str(e).strip().splitlines()[0]}") from None
    if len(df) == 0:
        raise ScoreInputError(f"{p}: no rows" + (f" (only a header: {list(df.columns)})" if len(df.columns) else ""))
    return df


def write_table(df, path: str | os.PathLike) -> Path:
    """Write CSV, JSONL or parquet by extension (atomic rename, so a killed run leaves no half file)."""
    p = Path(path)
    p.parent.mkdir(parents=True, exist_ok=True)
    tmp = p.with_name(p.name + ".tmp")
    if p.suffix.lower() in (".parquet", ".pq"):
        df.to_parquet(tmp, index=False)
    elif p.suffix.lower() == ".jsonl":
        df.to_json(tmp, orient="records", lines=True, force_ascii=False)
    else:
        df.to_csv(tmp, index=False)
    os.replace(tmp, p)
    return p


# ---- columns, ids, alignment -------------------------------------------------------------------------------------


def _pick(df, wanted: str | None, candidates, what: str, name: str, required: bool = True) -> str | None:
    if wanted:
        if wanted not in df.columns:
            raise ScoreInputError(f"{name}: no {what} column {wanted!r}; columns are {list(df.columns)}")
        return wanted
    for c in candidates:
        if c in df.columns:
            return c
    if required:
        raise ScoreInputError(f"{name}: no {what} column (tried {list(candidates)}); name it with a flag. "
                              f"Columns: {list(df.columns)}")
    return None


def _ids(col, what: str, column: str):
    """Ids as a string Series (0..n-1 index); empty or duplicated ids are an error (the join would be ambiguous)."""
    import pandas as pd

    s = col.reset_index(drop=True)
    if not pd.api.types.is_string_dtype(s.dtype) or pd.api.types.infer_dtype(s, skipna=False) != "string":
        s = s.astype(str).where(s.notna(), "")  # ints in parquet, strings in CSV: compare as text
    blank = s.isna() | (s.str.strip() == "")
    if blank.any():
        raise ScoreInputError(f"{what}: {int(blank.sum())} row(s) with an empty id in column {column!r}, e.g. row "
                              f"{int(np.flatnonzero(blank.to_numpy())[0]) + 2} of the file")
    if not s.is_unique:
        dup = s[s.duplicated()].unique()
        raise ScoreInputError(f"{what}: {len(dup)} duplicated id(s) in column {column!r}, e.g. {list(dup[:3])}")
    return s


def _align(lab_ids, pred_ids):
    """(take, has, n_orphans): for each label the prediction row to use, whether it exists, and how many
    predictions have no label."""
    import pandas as pd

    if pred_ids is lab_ids or (len(lab_ids) == len(pred_ids) and bool((lab_ids == pred_ids).all())):
        return np.arange(len(lab_ids)), np.ones(len(lab_ids), dtype=bool), 0
    where = pd.Index(pred_ids).get_indexer(pd.Index(lab_ids))
    has = where >= 0
    n_orphans = int((pd.Index(lab_ids).get_indexer(pd.Index(pred_ids)) < 0).sum())
    return np.where(has, where, 0), has, n_orphans


def _label_points(labels, llat: str, llon: str, lab_ids, name: str) -> tuple[np.ndarray, np.ndarray]:
    """True coordinates; any missing, non-numeric or out-of-range value is an error naming the rows."""
    import pandas as pd

    lat = pd.to_numeric(labels[llat], errors="coerce").to_numpy(np.float64)
    lon = pd.to_numeric(labels[llon], errors="coerce").to_numpy(np.float64)
    bad = invalid_mask(lat, lon)
    if bad.any():
        idx = np.flatnonzero(bad)[:3]
        ex = "; ".join(f"id {lab_ids.iat[i]!r}: ({labels[llat].iat[i]!r}, {labels[llon].iat[i]!r})" for i in idx)
        raise ScoreInputError(f"{name}: {int(bad.sum())} label(s) with invalid coordinates in {llat}/{llon} "
                              f"(latitude in [-90, 90], longitude in [-180, 180], numbers), e.g. {ex}")
    return validate_coords(lat, lon)


# ---- predictions -------------------------------------------------------------------------------------------------


def _text_of(value) -> str | None:
    if value is None or (isinstance(value, float) and math.isnan(value)):
        return None
    return str(value)  # whole completions are cut to their <answer> by the geocoder


def _named_fields(texts: list[str | None]) -> tuple[list[str | None], list[str | None]]:
    """(country, city) each answer names, read by the one answer parser (for the official string rule)."""
    from globe.answer import answer_fields, parse_completion

    countries, cities = [], []
    memo: dict[str, tuple] = {}
    for t in texts:
        if t is None:
            countries.append(None)
            cities.append(None)
            continue
        if t not in memo:
            f = parse_completion(t).fields if "<answer>" in t.lower() else answer_fields(t)
            memo[t] = (f.get("country"), f.get("city"))
        countries.append(memo[t][0])
        cities.append(memo[t][1])
    return countries, cities


def _text_predictions(predictions, text_col: str | None, take, has, name: str) -> dict:
    """Free-text predictions resolved by the geocoder, aligned to the labels."""
    from globe.geo.forward import geocode_many

    tcol = _pick(predictions, text_col, TEXT_COLS, "prediction text", name, required=False)
    if tcol is None and {"city", "country"} & set(predictions.columns):
        cols = [c for c in ("city", "country") if c in predictions.columns]
        parts = [predictions[c].where(predictions[c].notna(), "").astype(str) for c in cols]
        texts_all = (parts[0] if len(parts) == 1 else parts[0].str.cat(parts[1], sep=", ")).str.strip(", ")
        named = {c: predictions[c].to_numpy(object)[take] for c in cols}
    elif tcol is None:
        raise ScoreInputError(f"{name}: predictions have neither coordinates ({list(LAT_COLS)}) nor a text column "
                              f"({list(TEXT_COLS)}); columns: {list(predictions.columns)}")
    else:
        texts_all, named = predictions[tcol], None
    texts = [(_text_of(v) if h else None) for v, h in zip(texts_all.to_numpy()[take], has)]
    geo = geocode_many(texts)
    if named is None:
        pred_country, pred_city = _named_fields(texts)
    else:
        pick = lambda c: [(v if h and isinstance(v, str) else None) for v, h in zip(named.get(c, [None] * len(has)), has)]
        pred_country, pred_city = pick("country"), pick("city")
    return {
        "lat": geo["lat"].to_numpy(), "lon": geo["lon"].to_numpy(), "level": geo["level"].to_numpy(object),
        "matched": geo["matched"].to_numpy(object), "entry": geo["entry"].to_numpy(object),
        "country_code": geo["country_code"].to_numpy(object), "geonameid": geo["geonameid"].to_numpy(np.int64),
        "shown": np.array([t if t is not None else "" for t in texts], dtype=object),
        "pred_country": pred_country, "pred_city": pred_city, "invalid": np.zeros(len(texts), dtype=bool),
    }


class _Shown:
    """A prediction's coordinates as written, formatted on demand (a million f-strings cost a second)."""

    def __init__(self, lat, lon):
        self.lat, self.lon = lat, lon

    def __getitem__(self, i: int) -> str:
        return f"{self.lat[i]}, {self.lon[i]}"


def _coord_predictions(predictions, lat_col, lon_col, take, has, name: str) -> dict:
    """Coordinate predictions aligned to the labels; invalid ones (never wrapped) become unresolved."""
    import pandas as pd

    from globe.geo.gazetteer import gazetteer

    plc = _pick(predictions, lat_col, LAT_COLS, "prediction latitude", name)
    pln = _pick(predictions, lon_col, LON_COLS, "prediction longitude", name)
    raw_lat, raw_lon = predictions[plc].to_numpy(object)[take], predictions[pln].to_numpy(object)[take]
    plat = pd.to_numeric(predictions[plc], errors="coerce").to_numpy(np.float64)[take]
    plon = pd.to_numeric(predictions[pln], errors="coerce").to_numpy(np.float64)[take]
    plat, plon = np.where(has, plat, np.nan), np.where(has, plon, np.nan)
    invalid = has & invalid_mask(plat, plon)
    plat, plon = validate_coords(plat, plon, invalid="nan")
    ok = np.isfinite(plat)
    gaz = gazetteer()
    near = gaz.nearest(plat, plon, invalid="nan")
    city = np.maximum(gaz.city_of(near), 0)  # the point's city, as for the truth
    return {
        "lat": plat, "lon": plon, "level": np.where(ok, "coords", "none").astype(object),
        "matched": np.where(ok, gaz.name[city], "").astype(object), "entry": np.where(ok, "coords", "").astype(object),
        "country_code": gaz.country_at(plat, near), "geonameid": np.where(ok, gaz.geonameid[city], -1),
        "shown": _Shown(raw_lat, raw_lon),  # formatted only for the examples shown
        "pred_country": None, "pred_city": None, "invalid": invalid,
    }


def _truth(labels, true_lat, true_lon, lab_ids, label_name: str) -> dict:
    """True country code, city (`Gazetteer.nearest_city`), continent and (if the labels have them) country / city
    names."""
    import pandas as pd

    from globe.geo.gazetteer import gazetteer

    gaz = gazetteer()
    tnear = gaz.nearest(true_lat, true_lon)
    if "country_code" in labels.columns:
        true_cc = labels["country_code"].fillna("").astype(str).str.strip().str.upper().to_numpy(object)
    else:
        true_cc = gaz.country_at(true_lat, tnear)
    conts = {c: v["continent"] for c, v in gaz.countries.items()}
    continent = pd.Series(true_cc).map(conts).fillna("").replace("", "unknown").to_numpy(object)
    names = {}
    if {"country", "city"} <= set(labels.columns):
        names = {k: labels[k].to_numpy(object) for k in ("country", "city")}
    city = gaz.city_of(tnear)
    return {"country_code": true_cc, "geonameid": gaz.geonameid[city], "continent": continent, "names": names}


# ---- scoring -----------------------------------------------------------------------------------------------------


def _examples(ids, pred: dict, has: np.ndarray, d: np.ndarray, n_examples: int) -> tuple[list, dict]:
    """Examples of unresolved predictions (with the reason) and of each fallback level."""
    def shown(i: int) -> str:
        return "(missing)" if not has[i] else str(pred["shown"][i])

    unresolved = []
    for i in np.flatnonzero(~np.isfinite(d))[:n_examples]:
        why = "no prediction" if not has[i] else ("invalid coordinates" if pred["invalid"][i] else "not resolved")
        unresolved.append({"id": str(ids.iat[i]), "prediction": shown(i), "reason": why})
    by_level: dict[str, list] = {}
    level = pred["level"]
    for lv in FALLBACK_LEVELS[:-1]:
        idx = np.flatnonzero(level == lv)[:n_examples]
        if idx.size:
            by_level[lv] = [{"id": str(ids.iat[i]), "prediction": shown(i), "matched": str(pred["matched"][i])}
                            for i in idx]
    return unresolved, by_level


def score_frames(
    predictions,
    labels,
    *,
    id_col: str | None = None,
    lat_col: str | None = None,
    lon_col: str | None = None,
    text_col: str | None = None,
    label_lat: str | None = None,
    label_lon: str | None = None,
    label_id: str | None = None,
    city_km: float = 25.0,
    distance: str = DEFAULT_DISTANCE,
    n_boot: int = 1000,
    seed: int = 0,
    n_examples: int = 5,
    names: tuple[str, str] = ("predictions", "labels"),
):
    """Score two DataFrames; returns (metrics dict, per-label rows DataFrame). See the module docstring."""
    import pandas as pd

    if distance not in DISTANCES:
        raise ScoreInputError(f"unknown distance {distance!r}; choose one of {list(DISTANCES)}")
    if not (isinstance(n_boot, int) and n_boot >= 1):
        raise ScoreInputError(f"n_boot must be a positive integer, got {n_boot!r}")
    if not (city_km > 0 and math.isfinite(city_km)):
        raise ScoreInputError(f"city_km must be a positive number of km, got {city_km!r}")
    pname, lname = names
    lid = _pick(labels, label_id or id_col, ID_COLS, "id", lname)
    pid = _pick(predictions, id_col, tuple(dict.fromkeys((lid, *ID_COLS))), "id", pname)
    llat = _pick(labels, label_lat, LAT_COLS, "latitude", lname)
    llon = _pick(labels, label_lon, LON_COLS, "longitude", lname)
    lab_ids = _ids(labels[lid], lname, lid)
    pred_ids = lab_ids if predictions is labels and pid == lid else _ids(predictions[pid], pname, pid)
    true_lat, true_lon = _label_points(labels, llat, llon, lab_ids, lname)
    take, has, n_orphans = _align(lab_ids, pred_ids)

    mode_text = text_col is not None or (lat_col is None and _pick(predictions, None, LAT_COLS, "", pname,
                                                                    required=False) is None)
    pred = (_text_predictions(predictions, text_col, take, has, pname) if mode_text
            else _coord_predictions(predictions, lat_col, lon_col, take, has, pname))
    d = distance_km(pred["lat"], pred["lon"], true_lat, true_lon, method=distance, invalid="nan")
    truth = _truth(labels, true_lat, true_lon, lab_ids, lname)
    string_texts = {}
    if truth["names"] and pred["pred_country"] is not None:
        string_texts = {"pred_city": pred["pred_city"], "true_city": truth["names"]["city"],
                        "pred_country": pred["pred_country"], "true_country": truth["names"]["country"]}
    flags = accuracy_flags(distance_km=d, level=pred["level"], pred_country_code=pred["country_code"],
                           true_country_code=truth["country_code"], pred_geonameid=pred["geonameid"],
                           true_geonameid=truth["geonameid"], city_km=city_km,
                           **({"pred_city": pred["pred_city"]} if pred["pred_city"] is not None and not string_texts
                              else {}), **string_texts)
    metrics = geo_metrics(d, correct=flags, continent=truth["continent"], n_boot=n_boot, seed=seed)
    metrics.update(mode="text" if mode_text else "coords", distance=distance, city_km=city_km,
                   n_missing_predictions=int((~has).sum()), n_predictions_without_label=n_orphans,
                   n_invalid_predictions=int(pred["invalid"].sum()),
                   levels={str(k): int(v) for k, v in pd.Series(pred["level"]).value_counts().sort_index().items()})
    metrics["unresolved_examples"], metrics["level_examples"] = _examples(lab_ids, pred, has, d, n_examples)
    obj = lambda a: pd.Series(a, dtype=object)
    cols = {"id": lab_ids}
    if mode_text:
        cols["prediction"] = obj(pred["shown"])
    rows = pd.DataFrame({
        **cols, "lat": pred["lat"], "lon": pred["lon"], "level": obj(pred["level"]), "matched": obj(pred["matched"]),
        "entry": obj(pred["entry"]), "country_code": obj(pred["country_code"]), "true_lat": true_lat,
        "true_lon": true_lon, "true_country_code": obj(truth["country_code"]), "distance_km": d, **flags,
    })
    return metrics, rows


def score_files(
    predictions: str | os.PathLike,
    labels: str | os.PathLike,
    *,
    json_out: str | os.PathLike | None = None,
    rows_out: str | os.PathLike | None = None,
    sep: str | None = None,
    **kwargs,
):
    """Read both files, `score_frames` them, write --json / --rows outputs; returns (metrics, rows)."""
    numeric = (*LAT_COLS, *LON_COLS, *(kwargs.get(k) for k in ("lat_col", "lon_col", "label_lat", "label_lon")
                                       if kwargs.get(k)))
    pred_df = read_table(predictions, sep=sep, numeric=numeric)
    same = Path(predictions).resolve() == Path(labels).resolve()
    lab_df = pred_df if same else read_table(labels, sep=sep, numeric=numeric)
    metrics, rows = score_frames(pred_df, lab_df, names=(str(predictions), str(labels)), **kwargs)
    metrics["predictions"] = str(predictions)
    metrics["labels"] = str(labels)
    if json_out:
        p = Path(json_out)
        p.parent.mkdir(parents=True, exist_ok=True)
        tmp = p.with_name(p.name + ".tmp")
        tmp.write_text(json.dumps(metrics, indent=2, ensure_ascii=False) + "\n", encoding="utf-8")
        os.replace(tmp, p)
    if rows_out:
        write_table(rows, rows_out)
    return metrics, rows


def format_table(metrics: dict) -> str:
    """A plain-text table of the headline figures with their intervals, the level counts and fallback examples."""
    ci = metrics.get("ci", {})
    lines = [f"{'metric':<20}{'value':>10}   95% CI"]

    def row(key: str, label: str, pct: bool) -> None:
        if key not in metrics:
            return
        v = metrics[key]
        lo, hi = ci.get(key, (float("nan"), float("nan")))
        if pct:
            lines.append(f"{label:<20}{100 * v:>9.2f}%   [{100 * lo:.2f}, {100 * hi:.2f}]")
        else:
            lines.append(f"{label:<20}{v:>10.1f}   [{lo:.1f}, {hi:.1f}]")

    for t in THRESHOLDS_KM:
        row(f"acc_{t:g}km", f"<= {t:g} km", True)
    row("median_km", "median km", False)
    row("mean_km", "mean km", False)
    row("geoscore", "GeoScore", False)
    for key in ("country_acc", "city_name_acc", f"city_{metrics.get('city_km', 25.0):g}km_acc", "country_string_acc",
                "city_string_acc"):
        row(key, key, True)
    lines.append(f"n = {metrics['n']}, unresolved = {metrics['n_unresolved']}"
                 f" (missing predictions {metrics.get('n_missing_predictions', 0)},"
                 f" invalid coordinates {metrics.get('n_invalid_predictions', 0)},"
                 f" predictions without label {metrics.get('n_predictions_without_label', 0)});"
                 f" distance: {metrics.get('distance', DEFAULT_DISTANCE)}")
    if metrics.get("levels"):
        lines.append("resolved as: " + ", ".join(f"{k} {v}" for k, v in metrics["levels"].items()))
    for lv, exs in metrics.get("level_examples", {}).items():
        for ex in exs:
            lines.append(f"  {lv}: {ex['id']}: {ex['prediction']!r} -> {ex['matched']}")
    for ex in metrics.get("unresolved_examples", []):
        lines.append(f"  unresolved ({ex['reason']}): {ex['id']}: {ex['prediction']!r}")
    return "\n".join(lines)
