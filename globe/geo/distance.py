"""Great-circle distance and coordinate validation.

Haversine on numpy arrays with the IUGG mean Earth radius. Scalars in give a float out, arrays give arrays.
Invalid coordinates (NaN, latitude outside [-90, 90], non-finite longitude) raise a ValueError naming how many
and which, unless the caller asks for them to become NaN (`invalid="nan"`) so they can be counted as unresolved.
"""

from __future__ import annotations

from typing import Literal

import numpy as np

EARTH_RADIUS_KM = 6371.0088  # IUGG mean radius R1
MAX_DISTANCE_KM = float(np.pi * EARTH_RADIUS_KM)  # half a great circle: the worst possible error


def wrap_lon(lon):
    """Longitude wrapped into [-180, 180)."""
    lon = np.asarray(lon, dtype=np.float64)
    return (lon + 180.0) % 360.0 - 180.0


def validate_coords(lat, lon, invalid: Literal["raise", "nan"] = "raise") -> tuple[np.ndarray, np.ndarray]:
    """Float64 arrays (lat, lon) with longitude wrapped; bad values raise or become NaN (both coordinates)."""
    lat = np.asarray(lat, dtype=np.float64)
    lon = np.asarray(lon, dtype=np.float64)
    lat, lon = np.broadcast_arrays(lat, lon)
    with np.errstate(invalid="ignore"):
        bad = ~(np.isfinite(lat) & np.isfinite(lon) & (np.abs(lat) <= 90.0))
    if bad.any():
        if invalid == "raise":
            idx = np.flatnonzero(bad.ravel())
            ex = ", ".join(f"({lat.ravel()[i]}, {lon.ravel()[i]})" for i in idx[:5])
            raise ValueError(
                f"{idx.size} invalid coordinate(s): latitude must be in [-90, 90] and both finite; e.g. {ex}"
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
