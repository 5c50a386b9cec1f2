"""Offline geography for GLOBE: distances, a gazetteer (forward / reverse), matchers, metrics, scoring.

One concern per file: `distance` (geodesic and haversine distances, validation), `names` (name keys),
`countries` (country and region name tables), `places` (features, landmarks, airports), `geonames_dump`
(optional GeoNames dumps), `gazetteer` (the index, reverse geocoding), `parts` (an answer's text into parts),
`candidates` (what one part can name), `forward` (ranking and resolution: free text -> coordinates), `match` (same country / city, GLOBE's string rule), `metrics` (the named
accuracy metrics, km thresholds, GeoScore, bootstrap), `score` (score a predictions file against a labels file).
Importing is cheap; the gazetteer loads on first use (< 2 s from its cache).
"""

from globe.geo.distance import (
    DEFAULT_DISTANCE,
    DISTANCES,
    EARTH_RADIUS_KM,
    MAX_DISTANCE_KM,
    distance_km,
    geodesic_km,
    haversine_km,
    validate_coords,
    wrap_lon,
)
from globe.geo.forward import LEVELS, POINT_LEVELS, GeoResult, geocode, geocode_many, parse_coordinates
from globe.geo.gazetteer import CONTINENTS, Gazetteer, gazetteer, normalize, reverse_geocode
from globe.geo.match import country_code, globe_string_match, same_city, same_country
from globe.geo.metrics import (
    THRESHOLD_NAMES,
    THRESHOLDS_KM,
    accuracy_flags,
    bootstrap_ci,
    geo_metrics,
    geoscore,
    paired_bootstrap,
)
from globe.geo.score import ScoreInputError, score_files, score_frames

__all__ = [
    "CONTINENTS",
    "DEFAULT_DISTANCE",
    "DISTANCES",
    "EARTH_RADIUS_KM",
    "LEVELS",
    "MAX_DISTANCE_KM",
    "POINT_LEVELS",
    "THRESHOLD_NAMES",
    "THRESHOLDS_KM",
    "Gazetteer",
    "GeoResult",
    "ScoreInputError",
    "accuracy_flags",
    "bootstrap_ci",
    "country_code",
    "distance_km",
    "gazetteer",
    "geo_metrics",
    "geocode",
    "geocode_many",
    "geodesic_km",
    "geoscore",
    "globe_string_match",
    "haversine_km",
    "normalize",
    "paired_bootstrap",
    "parse_coordinates",
    "reverse_geocode",
    "same_city",
    "same_country",
    "score_files",
    "score_frames",
    "validate_coords",
    "wrap_lon",
]
