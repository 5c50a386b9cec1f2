"""Weight-free baselines any model must beat: the training set's geographic medoid, its most frequent city, and
uniform random points on land."""

from __future__ import annotations

import logging
from collections.abc import Callable
from pathlib import Path
from typing import TYPE_CHECKING

import numpy as np
import pandas as pd

from globe.data import open_saved
from globe.evaluate.benchmarks import MissingBenchmark

if TYPE_CHECKING:  # pragma: no cover
    from globe.evaluate import EvalParams

log = logging.getLogger(__name__)

BASELINES = ("medoid", "top_city", "random_land")


def load_train_coords(cfg: EvalParams) -> pd.DataFrame:
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
    from globe.geo.distance import invalid_mask

    bad = pd.Series(invalid_mask(coords["lat"].to_numpy(), coords["lon"].to_numpy()), index=coords.index)
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


def baseline_predictions(name: str, bench: pd.DataFrame, train: pd.DataFrame, cfg: EvalParams) -> pd.DataFrame:
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
