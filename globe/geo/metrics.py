"""Geolocation metrics: the named accuracy metrics, accuracy within 1 / 25 / 200 / 750 / 2500 km, median / mean
error, GeoScore, a per-continent breakdown, bootstrap 95% intervals and a paired bootstrap comparison.

The named accuracy metrics (`accuracy_flags`; one definition each, used by `globe score` and the evaluation):

- `country_acc`: the predicted country's ISO code equals the true point's (both non-empty). The prediction's
  country is its resolved country (text) or the reverse-geocoded country of its point (coordinates).
- `city_name_acc`: the country is right and the predicted place is the true point's city: the same GeoNames id
  as the place the true point belongs to (`Gazetteer.nearest_city`: the nearest populated place, or the bigger
  place of its country it is a district of), or the predicted city name is one of that place's names ("Bombay"
  for Mumbai). A name is needed: a landmark or a country answer earns it only through the city it named.
- `city_25km_acc` (generally f"city_{city_km:g}km_acc"): the prediction locates a point (its level is one of
  `POINT_LEVELS`: coordinates, a landmark or a city) within `city_km` of the truth. No country condition: a point
  across a border 10 km away is right. A region, feature or country answer never earns it, however close its
  representative point happens to lie.
- `country_string_acc` / `city_string_acc` (only when the four name texts are given): GLOBE's official string rule
  (`globe.geo.match.globe_string_match`: lower-cased containment either way with a length ratio >= 0.7) on the
  predicted and true names, each on its own, as the official evaluation script computes them (no country
  condition on the city).

Unresolved predictions (NaN distances) are never dropped: they count as wrong at every threshold and enter the
error statistics at the worst possible distance (half a great circle, `MAX_DISTANCE_KM`), so a model cannot look
better by abstaining. `n_unresolved` reports how many there were.

Bootstrap intervals (percentile, `n_boot` resamples of the images) are computed exactly and cheaply so scoring a
million predictions stays fast: a resampled proportion is Binomial(n, p) / n, drawn directly; a resampled (lower)
median is an order statistic whose distribution is known in closed form; means are resampled by index when
n * n_boot <= 2e7 and otherwise from their (then indistinguishable) normal limit.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping, Sequence

import numpy as np

from globe.geo.distance import MAX_DISTANCE_KM
from globe.geo.forward import POINT_LEVELS

THRESHOLDS_KM = (1, 25, 200, 750, 2500)
THRESHOLD_NAMES = {1: "Street", 25: "City", 200: "Region", 750: "Country", 2500: "Continent"}
GEOSCORE_SCALE_KM = 1492.7  # GeoGuessr's world-map constant
_INDEX_RESAMPLE_MAX = 20_000_000


def geoscore(distances_km):
    """GeoGuessr points 5000 * exp(-d / 1492.7) per prediction (NaN -> 0)."""
    d = np.asarray(distances_km, dtype=np.float64)
    return np.where(np.isnan(d), 0.0, 5000.0 * np.exp(-np.nan_to_num(d, nan=0.0) / GEOSCORE_SCALE_KM))


def _resample_stat(values: np.ndarray, stat: Callable, n_boot: int, rng: np.random.Generator) -> np.ndarray:
    n = values.shape[0]
    chunk = max(1, min(n_boot, _INDEX_RESAMPLE_MAX // max(n, 1) // 4 or 1))
    out = []
    for start in range(0, n_boot, chunk):
        m = min(chunk, n_boot - start)
        idx = rng.integers(0, n, size=(m, n))
        out.append(np.asarray(stat(values[idx], axis=1), dtype=np.float64))
    return np.concatenate(out)


def bootstrap_ci(
    values, stat: Callable = np.mean, n_boot: int = 1000, seed: int = 0, alpha: float = 0.05
) -> tuple[float, float]:
    """Percentile bootstrap interval of `stat` (a numpy reducer taking `axis=`) over resampled rows of `values`."""
    v = np.asarray(values, dtype=np.float64)
    if v.size == 0:
        return (float("nan"), float("nan"))
    reps = _resample_stat(v, stat, n_boot, np.random.default_rng(seed))
    lo, hi = np.quantile(reps, [alpha / 2, 1 - alpha / 2])
    return (float(lo), float(hi))


def _ci_proportion(k: int, n: int, n_boot: int, rng, alpha: float) -> list[float]:
    reps = rng.binomial(n, k / n, size=n_boot) / n
    return [float(x) for x in np.quantile(reps, [alpha / 2, 1 - alpha / 2])]


def _ci_median(sorted_d: np.ndarray, n_boot: int, rng, alpha: float) -> list[float]:
    from scipy.special import bdtrc  # binomial survival function; scipy.special imports far faster than stats

    n = sorted_d.size
    # resample lower median <= x_(j)  <=>  at least ceil(n/2) of n draws fall among the j smallest
    j = np.arange(1, n + 1)
    cdf = bdtrc(int(np.ceil(n / 2)) - 1, n, j / n)
    pick = np.searchsorted(cdf, rng.random(n_boot), side="left").clip(0, n - 1)
    return [float(x) for x in np.quantile(sorted_d[pick], [alpha / 2, 1 - alpha / 2])]


def _ci_mean(v: np.ndarray, n_boot: int, rng, alpha: float) -> list[float]:
    n = v.size
    if n * n_boot <= _INDEX_RESAMPLE_MAX:
        reps = _resample_stat(v, np.mean, n_boot, rng)
    else:
        reps = rng.normal(v.mean(), v.std(ddof=1) / np.sqrt(n), size=n_boot)
    return [float(x) for x in np.quantile(reps, [alpha / 2, 1 - alpha / 2])]


def _codes(x, n: int, what: str) -> np.ndarray:
    """Country codes as stripped upper-case strings ('' for a missing one). A few hundred distinct values: each is
    cleaned once (a million rows in ~0.1 s)."""
    import pandas as pd

    a = np.asarray(x, dtype=object).ravel()
    if a.size != n:
        raise ValueError(f"accuracy_flags: {what} has {a.size} values for {n} distances")
    codes, uniques = pd.factorize(a, use_na_sentinel=True)  # None / NaN -> -1
    clean = np.array([v.strip().upper() if isinstance(v, str) else "" for v in uniques] + [""], dtype=object)
    return clean[codes]


def _texts(x, n: int, what: str) -> list[str | None]:
    a = list(np.asarray(x, dtype=object).ravel())
    if len(a) != n:
        raise ValueError(f"accuracy_flags: {what} has {len(a)} values for {n} distances")
    return [v if isinstance(v, str) and v.strip() else None for v in a]


def accuracy_flags(*, distance_km, level, pred_country_code, true_country_code, pred_geonameid, true_geonameid,
                   pred_city=None, true_city=None, pred_country=None, true_country=None,
                   city_km: float = 25.0) -> dict[str, np.ndarray]:
    """Per-prediction booleans of the named accuracy metrics (see the module docstring for each definition).

    Keys: country_acc, city_name_acc, f"city_{city_km:g}km_acc", and country_string_acc / city_string_acc when
    pred_city, true_city, pred_country and true_country are all given. `true_geonameid` is the populated place
    the true point belongs to (`gazetteer().nearest_city(lat, lon)`); -1 or a missing `pred_city` never matches.
    """
    d = np.asarray(distance_km, dtype=np.float64).ravel()
    n = d.size
    lv = np.asarray(level, dtype=object).ravel()
    if lv.size != n:
        raise ValueError(f"accuracy_flags: level has {lv.size} values for {n} distances")
    pcc, tcc = _codes(pred_country_code, n, "pred_country_code"), _codes(true_country_code, n, "true_country_code")
    pg = np.asarray(pred_geonameid, dtype=np.int64).ravel()
    tg = np.asarray(true_geonameid, dtype=np.int64).ravel()
    if pg.size != n or tg.size != n:
        raise ValueError(f"accuracy_flags: geonameids have {pg.size} / {tg.size} values for {n} distances")
    country = (pcc == tcc) & (pcc != "")
    same = (pg == tg) & (pg >= 0)
    if pred_city is not None:
        same |= _named_as(_texts(pred_city, n, "pred_city"), tg) & (tg >= 0)
    out = {"country_acc": country, "city_name_acc": country & same}
    with np.errstate(invalid="ignore"):
        out[f"city_{city_km:g}km_acc"] = np.isin(lv, POINT_LEVELS) & (np.nan_to_num(d, nan=np.inf) <= city_km)
    texts = (pred_city, true_city, pred_country, true_country)
    if all(t is not None for t in texts):
        from globe.geo.match import globe_string_match

        pc, tc, pk, tk = (_texts(t, n, w) for t, w in zip(texts, ("pred_city", "true_city", "pred_country",
                                                                     "true_country")))
        out["country_string_acc"] = np.array([globe_string_match(a, b) for a, b in zip(pk, tk)], dtype=bool)
        out["city_string_acc"] = np.array([globe_string_match(a, b) for a, b in zip(pc, tc)], dtype=bool)
    return out


def _named_as(names: list[str | None], geonameids: np.ndarray) -> np.ndarray:
    """Whether each name is one of the names (primary or alternate) of the GeoNames place with that id."""
    from globe.geo.gazetteer import gazetteer
    from globe.geo.names import normalize

    gaz = gazetteer()
    out = np.zeros(len(names), dtype=bool)
    memo: dict[tuple[str, int], bool] = {}
    for j, (nm, g) in enumerate(zip(names, geonameids.tolist())):
        if nm is None or g < 0:
            continue
        key = (nm, g)
        if key not in memo:
            i = gaz.index_of(g)
            memo[key] = i >= 0 and bool(np.isin(i, gaz.places_named(normalize(nm))).any())
        out[j] = memo[key]
    return out


def _summary(d: np.ndarray, thresholds: Sequence[float]) -> dict:
    dd = np.where(np.isnan(d), MAX_DISTANCE_KM, d)
    out = {f"acc_{t:g}km": float(np.mean(dd <= t)) for t in thresholds}
    out["median_km"] = float(np.median(dd))
    out["mean_km"] = float(np.mean(dd))
    out["geoscore"] = float(np.mean(geoscore(d)))
    return out


def _correct_arrays(correct, n: int) -> dict[str, np.ndarray]:
    """The boolean arrays to report, checked against the number of distances."""
    arrays = dict(correct or {})
    out = {}
    for key, arr in arrays.items():
        a = np.asarray(arr, dtype=bool).ravel()
        if a.size != n:
            raise ValueError(f"geo_metrics: {key} has {a.size} values for {n} distances")
        out[key] = a
    return out


def _by_continent(d: np.ndarray, continent, extra: dict, thresholds: Sequence[float]) -> dict:
    import pandas as pd  # hash-based factorize: far faster than sorting a million strings

    cont = np.asarray(continent, dtype=object).ravel()
    if cont.size != d.size:
        raise ValueError(f"geo_metrics: continent has {cont.size} values for {d.size} distances")
    inv, names = pd.factorize(pd.Series(cont).astype(str), sort=True)
    by = {}
    for j, c in enumerate(list(names)):
        m = inv == j
        s = _summary(d[m], thresholds)
        s["n"] = int(m.sum())
        for key, a in extra.items():
            s[key] = float(a[m].mean())
        by[c] = s
    return by


def _intervals(d: np.ndarray, extra: dict, thresholds: Sequence[float], n_boot: int, seed: int,
               alpha: float) -> dict:
    rng = np.random.default_rng(seed)
    n = d.size
    dd = np.where(np.isnan(d), MAX_DISTANCE_KM, d)
    cis = {}
    for t in thresholds:
        cis[f"acc_{t:g}km"] = _ci_proportion(int((dd <= t).sum()), n, n_boot, rng, alpha)
    cis["median_km"] = _ci_median(np.sort(dd), n_boot, rng, alpha)
    cis["mean_km"] = _ci_mean(dd, n_boot, rng, alpha)
    cis["geoscore"] = _ci_mean(geoscore(d), n_boot, rng, alpha)
    for key, a in extra.items():
        cis[key] = _ci_proportion(int(a.sum()), n, n_boot, rng, alpha)
    return cis


def geo_metrics(
    distances_km,
    *,
    correct: Mapping[str, np.ndarray] | None = None,
    continent=None,
    thresholds: Sequence[float] = THRESHOLDS_KM,
    n_boot: int = 1000,
    seed: int = 0,
    ci: bool = True,
    alpha: float = 0.05,
) -> dict:
    """All metrics for one prediction set.

    Keys: acc_1km ... acc_2500km (shares in [0, 1]), median_km, mean_km, geoscore (mean GeoGuessr points), n,
    n_unresolved (NaN distances); each key of `correct` (boolean arrays, e.g. from `accuracy_flags`) as a share;
    `by_continent` (continent name -> the same figures) when `continent` labels (of the true locations) are given;
    and `ci` (key -> [low, high], the 1 - alpha percentile bootstrap interval) when ci=True.
    """
    d = np.asarray(distances_km, dtype=np.float64).ravel()
    n = d.size
    if n == 0:
        raise ValueError("geo_metrics: no predictions to score")
    if np.any(d < 0):
        raise ValueError("geo_metrics: negative distances")
    extra = _correct_arrays(correct, n)
    out: dict = _summary(d, thresholds)
    out["n"] = int(n)
    out["n_unresolved"] = int(np.isnan(d).sum())
    for key, a in extra.items():
        out[key] = float(a.mean())
    if continent is not None:
        out["by_continent"] = _by_continent(d, continent, extra, thresholds)
    if ci:
        out["ci"] = _intervals(d, extra, thresholds, n_boot, seed, alpha)
    return out


def paired_bootstrap(a, b, stat: Callable = np.mean, n_boot: int = 10000, seed: int = 0, alpha: float = 0.05) -> dict:
    """Compare two prediction sets on the same images: stat(a) - stat(b) with a paired bootstrap.

    `a`, `b`: per-image values in the same order (e.g. `d <= 25` as floats, or GeoScores). Returns diff, ci
    ([low, high]), p_value (two-sided: twice the smaller tail share of resampled differences at or beyond 0), n.
    """
    a = np.asarray(a, dtype=np.float64).ravel()
    b = np.asarray(b, dtype=np.float64).ravel()
    if a.size != b.size:
        raise ValueError(f"paired_bootstrap: {a.size} vs {b.size} values; pairs must be the same images")
    if a.size == 0:
        raise ValueError("paired_bootstrap: no pairs")
    rng = np.random.default_rng(seed)
    ab = np.stack([a, b], axis=1)
    reps = _resample_stat(ab, lambda x, axis: stat(x[..., 0], axis=axis) - stat(x[..., 1], axis=axis), n_boot, rng)
    diff = float(stat(a) - stat(b))
    lo, hi = np.quantile(reps, [alpha / 2, 1 - alpha / 2])
    p = min(1.0, 2 * min(np.mean(reps <= 0), np.mean(reps >= 0)))
    return {"diff": diff, "ci": [float(lo), float(hi)], "p_value": float(p), "n": int(a.size), "n_boot": n_boot}
