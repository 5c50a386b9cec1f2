"""Geolocation metrics: accuracy within 1 / 25 / 200 / 750 / 2500 km, median / mean error, GeoScore, country and
city accuracy, a per-continent breakdown, bootstrap 95% intervals and a paired bootstrap comparison.

Unresolved predictions (NaN distances) are never dropped: they count as wrong at every threshold and enter the
error statistics at the worst possible distance (half a great circle, `MAX_DISTANCE_KM`), so a model cannot look
better by abstaining. `n_unresolved` reports how many there were.

Bootstrap intervals (percentile, `n_boot` resamples of the images) are computed exactly and cheaply so scoring a
million predictions stays fast: a resampled proportion is Binomial(n, p) / n, drawn directly; a resampled (lower)
median is an order statistic whose distribution is known in closed form; means are resampled by index when
n * n_boot <= 2e7 and otherwise from their (then indistinguishable) normal limit.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence

import numpy as np

from globe.geo.distance import MAX_DISTANCE_KM

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


def _summary(d: np.ndarray, thresholds: Sequence[float]) -> dict:
    dd = np.where(np.isnan(d), MAX_DISTANCE_KM, d)
    out = {f"acc_{t:g}km": float(np.mean(dd <= t)) for t in thresholds}
    out["median_km"] = float(np.median(dd))
    out["mean_km"] = float(np.mean(dd))
    out["geoscore"] = float(np.mean(geoscore(d)))
    return out


def geo_metrics(
    distances_km,
    *,
    correct=None,
    country_correct=None,
    city_correct=None,
    continent=None,
    thresholds: Sequence[float] = THRESHOLDS_KM,
    n_boot: int = 1000,
    seed: int = 0,
    ci: bool = True,
    alpha: float = 0.05,
) -> dict:
    """All metrics for one prediction set.

    Keys: acc_1km ... acc_2500km (shares in [0, 1]), median_km, mean_km, geoscore (mean GeoGuessr points), n,
    n_unresolved (NaN distances), country_acc / city_acc when the boolean arrays are given, `by_continent`
    (continent name -> the same figures) when `continent` labels (of the true locations) are given, and `ci`
    (key -> [low, high], 95% percentile bootstrap) when ci=True.
    """
    d = np.asarray(distances_km, dtype=np.float64).ravel()
    n = d.size
    if n == 0:
        raise ValueError("geo_metrics: no predictions to score")
    if np.any(d < 0):
        raise ValueError("geo_metrics: negative distances")
    out: dict = _summary(d, thresholds)
    out["n"] = int(n)
    out["n_unresolved"] = int(np.isnan(d).sum())
    extra = {}
    named = dict(correct or {})
    if country_correct is not None:  # deprecated keywords: the names of `accuracy_flags`
        named.setdefault("country_acc", country_correct)
    if city_correct is not None:
        named.setdefault("city_name_acc", city_correct)
    for key, arr in named.items():
        if arr is not None:
            a = np.asarray(arr, dtype=bool).ravel()
            if a.size != n:
                raise ValueError(f"geo_metrics: {key} has {a.size} values for {n} distances")
            out[key] = float(a.mean())
            extra[key] = a
    if continent is not None:
        cont = np.asarray(continent, dtype=object).ravel()
        if cont.size != n:
            raise ValueError(f"geo_metrics: continent has {cont.size} values for {n} distances")
        by = {}
        import pandas as pd  # hash-based factorize: far faster than sorting a million strings

        inv, names = pd.factorize(pd.Series(cont).astype(str), sort=True)
        for j, c in enumerate(list(names)):
            m = inv == j
            s = _summary(d[m], thresholds)
            s["n"] = int(m.sum())
            for key, a in extra.items():
                s[key] = float(a[m].mean())
            by[c] = s
        out["by_continent"] = by
    if ci:
        rng = np.random.default_rng(seed)
        dd = np.where(np.isnan(d), MAX_DISTANCE_KM, d)
        cis = {}
        for t in thresholds:
            cis[f"acc_{t:g}km"] = _ci_proportion(int((dd <= t).sum()), n, n_boot, rng, alpha)
        cis["median_km"] = _ci_median(np.sort(dd), n_boot, rng, alpha)
        cis["mean_km"] = _ci_mean(dd, n_boot, rng, alpha)
        cis["geoscore"] = _ci_mean(geoscore(d), n_boot, rng, alpha)
        for key, a in extra.items():
            cis[key] = _ci_proportion(int(a.sum()), n, n_boot, rng, alpha)
        out["ci"] = cis
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


POINT_LEVELS = ("coords", "city")


def accuracy_flags(*, distance_km, level, pred_country_code, true_country_code, pred_geonameid, true_geonameid,
                   pred_city=None, true_city=None, pred_country=None, true_country=None,
                   city_km: float = 25.0) -> dict[str, np.ndarray]:
    """Per-prediction booleans for the named accuracies, one definition each:

    - `country_acc`: the predicted ISO country code is the true one (non-empty);
    - `city_name_acc`: the country is right and the prediction resolved to the true point's city (GeoNames id);
    - `city_{km}km_acc`: the prediction resolved to a point-like level (`POINT_LEVELS`) within `city_km` of the truth;
    - `country_string_acc` / `city_string_acc` (only with the four texts): GLOBE's official string rule on the names.
    """
    from globe.geo.match import globe_string_match

    d = np.asarray(distance_km, dtype=np.float64)
    pcc = np.asarray(pred_country_code, dtype=object)
    tcc = np.asarray(true_country_code, dtype=object)
    country = (pcc == tcc) & np.array([bool(c) for c in pcc], dtype=bool)
    point = np.isin(np.asarray(level, dtype=object), POINT_LEVELS)
    pg, tg = np.asarray(pred_geonameid, dtype=np.int64), np.asarray(true_geonameid, dtype=np.int64)
    same = (pg >= 0) & (pg == tg)
    if pred_city is not None and true_city is not None:
        from globe.geo.gazetteer import normalize

        same |= np.array([bool(p) and bool(t) and normalize(str(p)) == normalize(str(t))
                          for p, t in zip(pred_city, true_city)], dtype=bool)
    out = {"country_acc": country, "city_name_acc": country & point & same,
           f"city_{city_km:g}km_acc": point & (np.nan_to_num(d, nan=np.inf) <= city_km)}
    if all(x is not None for x in (pred_city, true_city, pred_country, true_country)):
        out["country_string_acc"] = np.array([globe_string_match(p, t) for p, t in zip(pred_country, true_country)],
                                             dtype=bool)
        out["city_string_acc"] = np.array([globe_string_match(p, t) for p, t in zip(pred_city, true_city)], dtype=bool)
    return out
