"""Offline geography for GLOBE: distances, a GeoNames gazetteer (forward / reverse), matchers, metrics, scoring.

One concern per file: `distance` (haversine, validation), `gazetteer` (the index, reverse geocoding),
`forward` (free text -> coordinates), `match` (same country / city, GLOBE's string rule), `metrics`
(km thresholds, GeoScore, bootstrap), `score` (score a predictions file against a labels file).
Importing is cheap; the gazetteer loads on first use (< 2 s from its cache).
"""

from globe.geo.distance import EARTH_RADIUS_KM, MAX_DISTANCE_KM, haversine_km, validate_coords, wrap_lon
from globe.geo.forward import GeoResult, geocode, geocode_many, parse_coordinates
from globe.geo.gazetteer import CONTINENTS, Gazetteer, gazetteer, normalize, reverse_geocode
from globe.geo.match import country_code, globe_string_match, same_city, same_country
from globe.geo.metrics import (
    POINT_LEVELS,
    THRESHOLD_NAMES,
    THRESHOLDS_KM,
    accuracy_flags,
    bootstrap_ci,
    geo_metrics,
    geoscore,
    paired_bootstrap,
)
from globe.geo.score import score_files, score_frames

__all__ = [
    "EARTH_RADIUS_KM", "MAX_DISTANCE_KM", "haversine_km", "validate_coords", "wrap_lon",
    "GeoResult", "geocode", "geocode_many", "parse_coordinates",
    "CONTINENTS", "Gazetteer", "gazetteer", "normalize", "reverse_geocode",
    "country_code", "globe_string_match", "same_city", "same_country",
    "POINT_LEVELS", "THRESHOLD_NAMES", "THRESHOLDS_KM", "accuracy_flags", "bootstrap_ci", "geo_metrics", "geoscore", "paired_bootstrap",
    "score_files", "score_frames",
]
