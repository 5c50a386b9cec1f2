"""Distances on the Earth and coordinate validation.

Two distances, both vectorised over numpy arrays (scalars in give a float out, arrays give arrays):

- `geodesic_km`: the shortest path on the WGS84 ellipsoid (Karney's algorithm, through pyproj's `Geod`). This is
  what the common image geo-localization baselines score with (GeoCLIP's and Img2Loc's evaluation code call
  geopy's `geodesic`, the same WGS84 geodesic); the GLOBE paper and its official code do not say which distance
  they use (the official evaluation scores city and country names only). It is the default of `distance_km`.
- `haversine_km`: the great circle on a sphere of the IUGG mean radius (6371.0088 km); within 0.56% of the
  geodesic everywhere (PIGEON and many reward functions use it), and what GLOBE's distance reward uses.

Invalid coordinates (NaN, latitude outside [-90, 90], longitude outside [-180, 180]) raise a ValueError naming how
many and which, unless the caller asks for them to become NaN (`invalid="nan"`) so they can be counted as
unresolved. A longitude of 400 is a data error, not 40: nothing is wrapped silently.
"""

from __future__ import annotations

from typing import Literal

import numpy as np

EARTH_RADIUS_KM = 6371.0088  # IUGG mean radius R1
MAX_DISTANCE_KM = float(np.pi * EARTH_RADIUS_KM)  # half a great circle: the worst possible error
DISTANCES = ("geodesic", "haversine")
DEFAULT_DISTANCE = "geodesic"


def wrap_lon(lon):
    """Longitude wrapped into [-180, 180)."""
    lon = np.asarray(lon, dtype=np.float64)
    return (lon + 180.0) % 360.0 - 180.0


def invalid_mask(lat, lon) -> np.ndarray:
    """True where (lat, lon) is not a coordinate: NaN / inf, |lat| > 90 or |lon| > 180."""
    lat = np.asarray(lat, dtype=np.float64)
    lon = np.asarray(lon, dtype=np.float64)
    with np.errstate(invalid="ignore"):
        return ~(np.isfinite(lat) & np.isfinite(lon) & (np.abs(lat) <= 90.0) & (np.abs(lon) <= 180.0))


def validate_coords(lat, lon, invalid: Literal["raise", "nan"] = "raise") -> tuple[np.ndarray, np.ndarray]:
    """Float64 arrays (lat, lon); bad values raise or become NaN (both coordinates). Longitude 180 becomes -180."""
    lat = np.asarray(lat, dtype=np.float64)
    lon = np.asarray(lon, dtype=np.float64)
    lat, lon = np.broadcast_arrays(lat, lon)
    bad = invalid_mask(lat, lon)
    if bad.any():
        if invalid == "raise":
            idx = np.flatnonzero(bad.ravel())
            ex = ", ".join(f"({lat.ravel()[i]}, {lon.ravel()[i]})" for i in idx[:5])
            raise ValueError(
                f"{idx.size} invalid coordinate(s): latitude must be in [-90, 90], longitude in [-180, 180], both"
                f" finite; e.g. {ex}"
            )
        lat = np.where(bad, np.nan, lat)
        lon = np.where(bad, np.nan, lon)
    return lat, wrap_lon(lon)


def haversine_km(lat1, lon1, lat2, lon2, invalid: Literal["raise", "nan"] = "raise"):
    """Great-circle distance in km between (lat1, lon1) and (lat2, lon2), degrees, broadcasting like numpy.

    `invalid="nan"` turns invalid coordinates into NaN distances instead of raising.
    """
    scalar = all(np.ndim(x) == 0 for x in (lat1, lon1, lat2, lon2))
    lat1, lon1 = validate_coords(lat1, lon1, invalid)
    lat2, lon2 = validate_coords(lat2, lon2, invalid)
    p1, p2 = np.radians(lat1), np.radians(lat2)
    dphi = p2 - p1
    dlmb = np.radians(lon2 - lon1)
    a = np.sin(dphi / 2) ** 2 + np.cos(p1) * np.cos(p2) * np.sin(dlmb / 2) ** 2
    # clip: rounding can push `a` a hair above 1 for antipodes
    d = 2 * EARTH_RADIUS_KM * np.arcsin(np.sqrt(np.clip(a, 0.0, 1.0)))
    return float(d) if scalar else d


_GEOD = None


def geodesic_km(lat1, lon1, lat2, lon2, invalid: Literal["raise", "nan"] = "raise"):
    """WGS84 geodesic distance in km (pyproj `Geod.inv`, Karney's algorithm), broadcasting like numpy.

    `invalid="nan"` turns invalid coordinates into NaN distances instead of raising.
    """
    global _GEOD
    if _GEOD is None:
        from pyproj import Geod  # imported on first use: `import globe` stays fast

        _GEOD = Geod(ellps="WGS84")
    scalar = all(np.ndim(x) == 0 for x in (lat1, lon1, lat2, lon2))
    lat1, lon1 = validate_coords(lat1, lon1, invalid)
    lat2, lon2 = validate_coords(lat2, lon2, invalid)
    lat1, lon1, lat2, lon2 = np.broadcast_arrays(lat1, lon1, lat2, lon2)
    ok = np.isfinite(lat1) & np.isfinite(lat2)
    d = np.full(lat1.shape, np.nan)
    if ok.any():
        # pyproj wants contiguous float64 arrays; NaN rows are left out rather than handed to PROJ
        _, _, m = _GEOD.inv(np.ascontiguousarray(lon1[ok]), np.ascontiguousarray(lat1[ok]),
                            np.ascontiguousarray(lon2[ok]), np.ascontiguousarray(lat2[ok]))
        d[ok] = np.asarray(m) / 1000.0
    return float(d) if scalar else d


def distance_km(lat1, lon1, lat2, lon2, method: str = DEFAULT_DISTANCE, invalid: Literal["raise", "nan"] = "raise"):
    """Distance in km by `method` ("geodesic": WGS84, the default; "haversine": sphere of the IUGG mean radius)."""
    if method == "geodesic":
        return geodesic_km(lat1, lon1, lat2, lon2, invalid)
    if method == "haversine":
        return haversine_km(lat1, lon1, lat2, lon2, invalid)
    raise ValueError(f"unknown distance {method!r}; choose one of {DISTANCES}")


def to_unit_xyz(lat, lon) -> np.ndarray:
    """(n, 3) unit vectors; chord distance on the sphere is monotone in great-circle distance (for KD-trees)."""
    la, lo = np.radians(np.asarray(lat, dtype=np.float64)), np.radians(np.asarray(lon, dtype=np.float64))
    cl = np.cos(la)
    return np.stack([cl * np.cos(lo), cl * np.sin(lo), np.sin(la)], axis=-1)


def from_unit_xyz(xyz: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Inverse of to_unit_xyz for (not necessarily unit) vectors: (lat, lon) in degrees."""
    xyz = np.asarray(xyz, dtype=np.float64)
    x, y, z = xyz[..., 0], xyz[..., 1], xyz[..., 2]
    lat = np.degrees(np.arctan2(z, np.hypot(x, y)))
    lon = wrap_lon(np.degrees(np.arctan2(y, x)))
    return lat, lon
