"""Matching a predicted place against the true one, for rewards and accuracy.

Two families:

- normalised matchers (`same_country`, `same_city`): names go through the gazetteer, so "USA" == "United States"
  == "US", "Munich" == "München", and a city matches by GeoNames id, by any alternate name, or by distance;
- GLOBE's original rule (`globe_string_match`) for paper-faithful runs: lower-cased substring containment in
  either direction with a length ratio of at least 0.7.
"""

from __future__ import annotations

import math

from globe.geo.distance import haversine_km
from globe.geo.forward import POINT_LEVELS, GeoResult, geocode
from globe.geo.gazetteer import gazetteer, normalize

CITY_KM = 25.0  # default: two city answers this close count as the same city


def _blank(x) -> bool:
    return x is None or (isinstance(x, float) and math.isnan(x)) or (isinstance(x, str) and not x.strip())


def country_code(x) -> str:
    """ISO alpha-2 code of a country name / alias / code, a GeoResult, or free text naming a place ('' if none)."""
    if _blank(x):
        return ""
    if isinstance(x, GeoResult):
        return x.country_code
    cc = gazetteer().country_of(str(x))
    if cc:
        return cc
    return geocode(str(x)).country_code


def same_country(a, b) -> bool:
    """True when both name the same country (ISO code after alias resolution; territories are their own code)."""
    ca, cb = country_code(a), country_code(b)
    return bool(ca) and ca == cb


def globe_string_match(pred, truth, ratio: float = 0.7) -> bool:
    """GLOBE's rule: lower-cased substring containment either way, and len(shorter) / len(longer) >= ratio."""
    if _blank(pred) or _blank(truth):
        return False
    p, t = str(pred).strip().lower(), str(truth).strip().lower()
    if not (p in t or t in p):
        return False
    return min(len(p), len(t)) / max(len(p), len(t)) >= ratio


def _as_city(x, country) -> GeoResult | None:
    if isinstance(x, GeoResult):
        return x
    if _blank(x):
        return None
    return geocode(str(x), country=country if not _blank(country) else None)


def same_city(a, b, country=None, km: float = CITY_KM) -> bool:
    """True when a and b (city names, "City, Country" strings or GeoResults) are the same city.

    Same GeoNames id; or one's text is an alternate name of the other's place; or both resolve to a point
    (`POINT_LEVELS`: coordinates, a landmark or a city) within `km`. `country` (either side's country) narrows the name lookup. Two unresolvable
    names still match when they are equal after normalisation (a village missing from GeoNames).
    """
    if _blank(a) or _blank(b):
        return False
    na = normalize(a) if isinstance(a, str) else ""
    nb = normalize(b) if isinstance(b, str) else ""
    if na and na == nb:
        return True
    ra, rb = _as_city(a, country), _as_city(b, country)
    if ra is None or rb is None:
        return False
    if ra.geonameid >= 0 and ra.geonameid == rb.geonameid and ra.level == rb.level == "city":
        return True
    if ra.level not in POINT_LEVELS or rb.level not in POINT_LEVELS:
        return False
    gaz = gazetteer()
    for text, other in ((na, rb), (nb, ra)):
        if text and other.geonameid >= 0:
            i = gaz.index_of(other.geonameid)
            if i >= 0 and i in gaz.places_named(text):  # `text` is one of that place's names
                return True
    return haversine_km(ra.lat, ra.lon, rb.lat, rb.lon) <= km
