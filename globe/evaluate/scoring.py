"""Scoring: completions parsed and geocoded offline, errors measured, the named accuracies, and the metrics."""

from __future__ import annotations

import logging
import math
import os
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np
import pandas as pd

from globe.images import load_image

if TYPE_CHECKING:  # pragma: no cover
    from globe.evaluate import EvalParams

log = logging.getLogger(__name__)


def truth_places(bench: pd.DataFrame) -> pd.DataFrame:
    """Country, city (name and GeoNames id) and continent of each true location, offline: the city is the place the
    point belongs to (`Gazetteer.nearest_city`; a district of a city, such as "Paris 04", is named by its city)."""
    from globe.geo import gazetteer

    gaz = gazetteer()
    lat, lon = bench["lat"].to_numpy(float), bench["lon"].to_numpy(float)
    near = gaz.nearest(lat, lon, invalid="nan")
    city = gaz.city_of(near)
    ok = city >= 0
    cc = gaz.country_at(lat, near)
    cnames = {c: v["name"] for c, v in gaz.countries.items()}
    conts = {c: v["continent"] for c, v in gaz.countries.items()}
    j = np.maximum(city, 0)
    return pd.DataFrame({"true_country_code": cc, "true_country": [cnames.get(c, "") for c in cc],
                         "true_city": np.where(ok, gaz.name[j], "").astype(object),
                         "true_geonameid": np.where(ok, gaz.geonameid[j], -1).astype(np.int64),
                         "continent": [conts.get(c, "") for c in cc]})


def _resolve_coordinates(out: pd.DataFrame, preds: pd.DataFrame) -> None:
    """Predicted points (baselines): their place is the city the point belongs to, as for the truth."""
    out["think"], out["answer"], out["country"], out["city"] = None, None, None, None
    out["format_ok"], out["geocoded_text"] = False, ""
    lat, lon = preds["pred_lat"].to_numpy(float), preds["pred_lon"].to_numpy(float)
    places = truth_places(pd.DataFrame({"lat": lat, "lon": lon}))
    out["pred_lat"], out["pred_lon"] = lat, lon
    out["level"] = np.where(np.isfinite(lat), "coords", "none")  # globe.geo's level names
    out["pred_country_code"] = places["true_country_code"].to_numpy()
    out["pred_country"], out["pred_city"] = places["true_country"].to_numpy(), places["true_city"].to_numpy()
    out["pred_geonameid"] = places["true_geonameid"].to_numpy(np.int64)


def _resolve_answers(out: pd.DataFrame) -> None:
    """Completions: parsed with the one parser, the answer geocoded offline."""
    from globe.answer import parse_completion
    from globe.geo import geocode_many

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
    out["pred_geonameid"] = geo["geonameid"].to_numpy(np.int64)


def score(bench: pd.DataFrame, preds: pd.DataFrame, truth: pd.DataFrame | None = None,
          distance: str = "geodesic") -> pd.DataFrame:
    """One row per benchmark image: the completion parsed, geocoded and measured against the truth.

    `preds` holds `id` and either `raw` completions (parsed and geocoded here) or `pred_lat`/`pred_lon` (baselines).
    Distances are `distance` ("geodesic": WGS84 ellipsoid, or "haversine": the sphere GLOBE's eval.py uses). Images
    without a usable answer keep NaN coordinates and distance: they count as misses at every threshold. The
    per-image accuracy columns are `globe.geo.accuracy_flags`'s (country_acc, city_name_acc, city_25km_acc and,
    for completions, GLOBE's string rule on the names: country_string_acc, city_string_acc).
    """
    from globe.geo import accuracy_flags, distance_km

    truth = truth_places(bench) if truth is None else truth
    preds = preds.set_index("id").reindex(bench["id"])
    out = pd.DataFrame({"id": bench["id"].to_numpy()})
    out["raw"] = preds["raw"].to_numpy() if "raw" in preds else None
    out["error"] = preds["error"].to_numpy() if "error" in preds else None
    if "pred_lat" in preds:
        _resolve_coordinates(out, preds)
    else:
        _resolve_answers(out)
    out["true_lat"], out["true_lon"] = bench["lat"].to_numpy(float), bench["lon"].to_numpy(float)
    for c in truth.columns:
        out[c] = truth[c].to_numpy()
    out["country_code"] = out["true_country_code"]  # the photo's country, as the canonical dataset column names it
    out["distance_km"] = distance_km(out["true_lat"].to_numpy(), out["true_lon"].to_numpy(),
                                     out["pred_lat"].to_numpy(), out["pred_lon"].to_numpy(), method=distance,
                                     invalid="nan")
    texts = {} if "pred_lat" in preds else dict(pred_city=out["city"].tolist(), true_city=out["true_city"].tolist(),
                                                pred_country=out["country"].tolist(),
                                                true_country=out["true_country"].tolist())
    flags = accuracy_flags(distance_km=out["distance_km"].to_numpy(), level=out["level"].to_numpy(),
                           pred_country_code=out["pred_country_code"].to_numpy(),
                           true_country_code=out["true_country_code"].to_numpy(),
                           pred_geonameid=out["pred_geonameid"].to_numpy(),
                           true_geonameid=out["true_geonameid"].to_numpy(), **texts)
    for name, values in flags.items():
        out[name] = values
    return out


ACCURACY_COLUMNS = ("country_acc", "city_name_acc", "city_25km_acc", "country_string_acc", "city_string_acc")


def metrics_of(scored: pd.DataFrame, seed: int = 0, n_bootstrap: int = 1000) -> dict:
    """`globe.geo.geo_metrics` (unresolved = miss) with country / city accuracy, per-continent figures and bootstrap
    intervals, plus the share of completions in GLOBE's exact format and the count of unreadable images."""
    from globe.geo import geo_metrics

    correct = {c: scored[c].to_numpy(bool) for c in ACCURACY_COLUMNS if c in scored.columns}
    m = geo_metrics(scored["distance_km"].to_numpy(float), correct=correct,
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


def localizability_scorer(cfg: EvalParams):
    """The localizability reward model (`cfg.reward_model`, an adapter on common.base_model), loaded once per run."""
    from globe.reward_model import LocalizabilityScorer

    if not Path(cfg.reward_model).exists():
        raise FileNotFoundError(f"eval.reward_model {cfg.reward_model!r} not found; train it (notebook 03) or set "
                                "eval.reward_model: null")
    backend = "auto" if cfg.backend == "vllm" else cfg.backend
    return LocalizabilityScorer(cfg.base_model, cfg.reward_model, batch_size=cfg.batch_size, dtype=cfg.dtype,
                                device=cfg.device, backend=backend)


def add_localizability(scored: pd.DataFrame, bench: pd.DataFrame, scorer, cfg: EvalParams,
                       chunk: int = 64) -> pd.DataFrame:
    """The reward model's P(yes) for each (image, reasoning), for score-vs-error plots (notebook 06); NaN where the
    image cannot be opened or the model has no reasoning to judge."""
    if getattr(scorer, "input_text", "reasoning") == "completion":  # GLOBE's official reward-model input
        reasonings = [r if isinstance(r, str) else "" for r in scored["raw"]]
    else:
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


