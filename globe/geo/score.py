"""Score any predictions file against any labels file (`globe score`).

Predictions are coordinates, or free text (a place name, "City, Country", GLOBE's labelled answer or a whole
completion with <answer> tags) resolved by the forward geocoder. Both files are CSV, JSONL or parquet, joined on
an id column (they may be the same file). Every label is scored: a label with no prediction, or a prediction
that cannot be resolved, counts as wrong (worst-case distance, see `globe.geo.metrics`) and is reported by count
with examples. Predictions whose id has no label cannot be scored and are reported by count.

Country accuracy compares ISO codes: the labels' `country_code` column if present, else the reverse-geocoded
true point, against the prediction's resolved country (text) or reverse-geocoded point (coordinates). City
accuracy: the prediction resolved to a city (or a point) that is the true point's nearest GeoNames place or lies
within `city_km` of the true point.
"""

from __future__ import annotations

import json
import math
import os
from pathlib import Path

import numpy as np

from globe.geo.distance import haversine_km, validate_coords
from globe.geo.metrics import THRESHOLDS_KM, geo_metrics

ID_COLS = ("id", "IMG_ID", "img_id", "image_id", "name", "image", "filename", "file", "key")
LAT_COLS = ("lat", "latitude", "LAT", "Latitude", "pred_lat")
LON_COLS = ("lon", "lng", "longitude", "LON", "Longitude", "long", "pred_lon")
TEXT_COLS = ("prediction", "answer", "completion", "text", "pred", "output", "response", "place")


def read_table(path: str | os.PathLike):
    """A CSV / JSONL / JSON / parquet file as a DataFrame (CSV read as strings so ids keep their exact form)."""
    import pandas as pd

    p = Path(path)
    if not p.is_file():
        raise FileNotFoundError(f"{p}: no such file")
    suf = "".join(p.suffixes[-2:]).lower() if p.suffix.lower() == ".gz" else p.suffix.lower()
    if suf.startswith(".csv") or suf.startswith(".tsv"):
        return pd.read_csv(p, dtype=str, keep_default_na=False, na_values=[""], sep="\t" if "tsv" in suf else ",")
    if suf.startswith(".jsonl") or suf.startswith(".ndjson"):
        return pd.read_json(p, lines=True, dtype=False)
    if suf.startswith(".json"):
        return pd.read_json(p, dtype=False)
    if suf.startswith(".parquet") or suf.startswith(".pq"):
        return pd.read_parquet(p)
    raise ValueError(f"{p}: unsupported extension {p.suffix!r} (use .csv, .jsonl, .json or .parquet)")


def write_table(df, path: str | os.PathLike) -> Path:
    """Write CSV or parquet by extension (atomic rename, so a killed run leaves no half file)."""
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


def _pick(df, wanted: str | None, candidates, what: str, required: bool = True) -> str | None:
    if wanted:
        if wanted not in df.columns:
            raise KeyError(f"{what} column {wanted!r} not found; columns are {list(df.columns)}")
        return wanted
    for c in candidates:
        if c in df.columns:
            return c
    if required:
        raise KeyError(f"no {what} column (tried {list(candidates)}); name it with a flag. Columns: {list(df.columns)}")
    return None


def _ids(col, what: str, name: str):
    """Ids as a string Series (0..n-1 index); duplicates are an error (a join on them would be ambiguous)."""
    import pandas as pd

    s = col.reset_index(drop=True)
    if not pd.api.types.is_string_dtype(s.dtype) or pd.api.types.infer_dtype(s, skipna=False) != "string":
        s = s.astype(str)  # ints in parquet, strings in CSV: compare as text
    if not s.is_unique:
        dup = s[s.duplicated()].unique()
        raise ValueError(f"{what}: {len(dup)} duplicated id(s) in {name!r}, e.g. {list(dup[:3])}")
    return s


def _text_of(value) -> str | None:
    if value is None or (isinstance(value, float) and math.isnan(value)):
        return None
    return str(value)  # whole completions are cut to their <answer> by the geocoder


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
    n_boot: int = 1000,
    seed: int = 0,
    n_examples: int = 5,
):
    """Score two DataFrames; returns (metrics dict, per-label rows DataFrame). See the module docstring."""
    import pandas as pd

    from globe.geo.forward import geocode_many
    from globe.geo.gazetteer import gazetteer, reverse_geocode

    lid = _pick(labels, label_id or id_col, ID_COLS, "label id")
    pid = _pick(predictions, id_col, (lid, *ID_COLS), "prediction id")
    llat = _pick(labels, label_lat, LAT_COLS, "label latitude")
    llon = _pick(labels, label_lon, LON_COLS, "label longitude")

    lab_ids = _ids(labels[lid], "labels", lid)
    pred_ids = lab_ids if predictions is labels and pid == lid else _ids(predictions[pid], "predictions", pid)

    true_lat = pd.to_numeric(labels[llat], errors="coerce").to_numpy(np.float64)
    true_lon = pd.to_numeric(labels[llon], errors="coerce").to_numpy(np.float64)
    true_lat, true_lon = validate_coords(true_lat, true_lon)  # labels must be valid: raise, naming examples

    # predictions aligned to labels (a missing prediction stays NaN / None -> unresolved)
    # same ids in the same order (or the same file): no join needed
    same = pred_ids is lab_ids or (
        len(lab_ids) == len(pred_ids) and bool((lab_ids == pred_ids.astype(lab_ids.dtype)).all())
    )
    if same:
        take, has, n_orphans = np.arange(len(lab_ids)), np.ones(len(lab_ids), dtype=bool), 0
    else:
        where = pd.Index(pred_ids).get_indexer(pd.Index(lab_ids))
        has = where >= 0
        take = np.where(has, where, 0)
        n_orphans = int((pd.Index(lab_ids).get_indexer(pd.Index(pred_ids)) < 0).sum())

    mode_text = text_col is not None or (
        lat_col is None and _pick(predictions, None, LAT_COLS, "", required=False) is None
    )
    n = len(labels)
    if mode_text:
        tcol = _pick(predictions, text_col, TEXT_COLS, "prediction text", required=False)
        if tcol is None and {"city", "country"} & set(predictions.columns):
            parts = [predictions[c].where(predictions[c].notna(), "").astype(str) for c in ("city", "country")
                     if c in predictions.columns]
            texts_all = parts[0] if len(parts) == 1 else parts[0].str.cat(parts[1], sep=", ")
            texts_all = texts_all.str.strip(", ")
        elif tcol is None:
            raise KeyError(
                f"predictions have neither coordinates nor a text column; columns: {list(predictions.columns)}"
            )
        else:
            texts_all = predictions[tcol]
        texts = [(_text_of(v) if h else None) for v, h in zip(texts_all.to_numpy()[take], has)]
        geo = geocode_many(texts)
        plat, plon = geo["lat"].to_numpy(), geo["lon"].to_numpy()
        level = geo["level"].to_numpy(object)
        matched = geo["matched"].to_numpy(object)
        pred_cc = geo["country_code"].to_numpy(object)
        pred_gid = geo["geonameid"].to_numpy(np.int64)
        raw = np.array([t if t is not None else "" for t in texts], dtype=object)
    else:
        plc = _pick(predictions, lat_col, LAT_COLS, "prediction latitude")
        pln = _pick(predictions, lon_col, LON_COLS, "prediction longitude")
        plat = pd.to_numeric(predictions[plc], errors="coerce").to_numpy(np.float64)[take]
        plon = pd.to_numeric(predictions[pln], errors="coerce").to_numpy(np.float64)[take]
        plat, plon = np.where(has, plat, np.nan), np.where(has, plon, np.nan)
        pred_lat_raw, pred_lon_raw = plat, plon  # as given, for the examples of unresolved predictions
        plat, plon = validate_coords(plat, plon, invalid="nan")
        ok = np.isfinite(plat)
        gaz = gazetteer()
        near = gaz.nearest(plat, plon, invalid="nan")
        pred_cc = gaz.country_at(plat, near)
        pred_gid = np.where(ok, gaz.geonameid[np.maximum(near, 0)], -1)
        level = np.where(ok, "coords", "none").astype(object)
        matched = np.where(ok, gaz.name[np.maximum(near, 0)], "").astype(object)
        raw = None  # coordinates are in the lat / lon columns

    d = haversine_km(plat, plon, true_lat, true_lon, invalid="nan")
    resolved = np.isfinite(d)

    gaz = gazetteer()
    tnear = gaz.nearest(true_lat, true_lon)
    if "country_code" in labels.columns:
        true_cc = labels["country_code"].fillna("").astype(str).str.upper().to_numpy(object)
    else:
        true_cc = gaz.country_at(true_lat, tnear)
    conts = {c: v["continent"] for c, v in gaz.countries.items()}
    continent = pd.Series(true_cc).map(conts).fillna("").replace("", "unknown").to_numpy(object)
    country_ok = (pred_cc == true_cc) & (pred_cc != "")
    city_level = np.isin(level, ("city", "coords"))
    city_ok = city_level & resolved & ((pred_gid == gaz.geonameid[tnear]) | (np.nan_to_num(d, nan=np.inf) <= city_km))

    metrics = geo_metrics(d, country_correct=country_ok, city_correct=city_ok, continent=continent,
                          n_boot=n_boot, seed=seed)
    metrics["mode"] = "text" if mode_text else "coords"
    metrics["n_missing_predictions"] = int((~has).sum())
    metrics["n_predictions_without_label"] = n_orphans
    metrics["levels"] = {str(k): int(v) for k, v in pd.Series(level).value_counts().sort_index().items()}
    bad = np.flatnonzero(~resolved)[:n_examples]
    def shown(i: int) -> str:
        if not has[i]:
            return "(missing)"
        return str(raw[i]) if raw is not None else f"{pred_lat_raw[i]}, {pred_lon_raw[i]}"

    metrics["unresolved_examples"] = [{"id": str(lab_ids.iat[i]), "prediction": shown(i)} for i in bad]
    obj = lambda a: pd.Series(a, dtype=object)  # noqa: E731 - skip pandas' per-string dtype inference
    cols = {"id": lab_ids}
    if raw is not None:
        cols["prediction"] = obj(raw)
    rows = pd.DataFrame({
        **cols,
        "lat": plat,
        "lon": plon,
        "level": obj(level),
        "matched": obj(matched),
        "country_code": obj(pred_cc),
        "true_lat": true_lat,
        "true_lon": true_lon,
        "true_country_code": obj(true_cc),
        "distance_km": d,
        "country_correct": country_ok,
        "city_correct": city_ok,
    })
    return metrics, rows


def score_files(
    predictions: str | os.PathLike,
    labels: str | os.PathLike,
    *,
    json_out: str | os.PathLike | None = None,
    rows_out: str | os.PathLike | None = None,
    **kwargs,
):
    """Read both files, `score_frames` them, write --json / --rows outputs; returns (metrics, rows)."""
    pred_df = read_table(predictions)
    lab_df = pred_df if Path(predictions).resolve() == Path(labels).resolve() else read_table(labels)
    metrics, rows = score_frames(pred_df, lab_df, **kwargs)
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
    """A plain-text table of the headline figures with their 95% intervals."""
    ci = metrics.get("ci", {})
    lines = [f"{'metric':<14}{'value':>12}   95% CI"]

    def row(key: str, label: str, pct: bool) -> None:
        if key not in metrics:
            return
        v = metrics[key]
        lo, hi = ci.get(key, (float("nan"), float("nan")))
        if pct:
            lines.append(f"{label:<14}{100 * v:>11.2f}%   [{100 * lo:.2f}, {100 * hi:.2f}]")
        else:
            lines.append(f"{label:<14}{v:>12.1f}   [{lo:.1f}, {hi:.1f}]")

    for t in THRESHOLDS_KM:
        row(f"acc_{t:g}km", f"<= {t:g} km", True)
    row("median_km", "median km", False)
    row("mean_km", "mean km", False)
    row("geoscore", "GeoScore", False)
    row("country_acc", "country", True)
    row("city_acc", "city", True)
    lines.append(f"n = {metrics['n']}, unresolved = {metrics['n_unresolved']}"
                 f" (missing predictions {metrics.get('n_missing_predictions', 0)},"
                 f" predictions without label {metrics.get('n_predictions_without_label', 0)})")
    if metrics.get("levels"):
        lines.append("resolved as: " + ", ".join(f"{k} {v}" for k, v in metrics["levels"].items()))
    for ex in metrics.get("unresolved_examples", []):
        lines.append(f"  unresolved: {ex['id']}: {ex['prediction']!r}")
    return "\n".join(lines)
