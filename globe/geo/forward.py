"""Forward geocoding: free-form answer text -> coordinates, offline, deterministic.

How an answer is read (`geocode`):

1. A whole completion is cut to its <answer> by the one answer parser (`globe.answer.parse_completion`); hedged or
   missing answers resolve to nothing. Coordinates written in the text win ("48.8566, 2.3522",
   "48°51'24\"N 2°21'07\"E"): level "coords".
2. The text becomes parts, most specific first (`globe.geo.parts.split_answer`): labelled fields through the
   answer parser, otherwise comma-separated parts; hedges ("near", "rural area in", "(approximate)") are removed,
   airport codes in parentheses kept as codes.
3. Context: the rightmost part naming a country (in any language, an alias or an ISO code) is the country; a
   `country=` argument overrides it and is authoritative. Parts naming admin-1 regions ("Texas", "Bavaria", "TX",
   "NSW", "Washington State") are noted; an abbreviation may name regions of several countries ("WA").
4. The other parts are resolved from the most general to the most specific. Each part's candidates
   (`globe.geo.candidates`) are the populated places (GeoNames cities500), features, landmarks and airports
   (`globe.geo.places`) indexed under its text; a part with no exact hit is searched word by word (n-grams up to 4
   words, "Eiffel Tower in Paris" -> "paris") as weaker evidence, and an n-gram counts only when delimited by stop
   words, descriptive words or other names, so an invented name ("Nowhereville-sur-Rien") falls back instead of
   crediting a fragment. A city must lie in the regions broader parts name ("Bartlett, NH" is never Tennessee).
   A candidate must be consistent with what the broader parts resolved to: inside `ANCHOR_KM` of the city (100 km
   for an airport, `FEATURE_ANCHOR_KM` of an extended feature), or, where the broader part names a region as well
   as a city ("Kingston, New York"), inside that region if matched by its primary name. Same-name candidates are
   ranked by consistency with the named country (or its sovereign, for territories such as Hong Kong) and
   regions, then exact match over n-gram, then a prior: log10(population) + 1 for a place's primary name (so
   "Bombay" reaches Mumbai rather than a village called Bombay), 4.5 for a curated feature or landmark (a town
   of ~30,000), 3 for an airport. The most specific consistent part wins; a part resolves to nothing only when
   none of its candidates is consistent, and then the next part decides.
5. A part naming both a region and a city reads as the city when the region is named again by a broader part
   ("New York, NY"; "Washington, D.C."); when the city lies in the region and has >= 100,000 people or at least
   1/`CITY_REGION_RATIO` of the region's GeoNames population (its namesake: "New York", "Valencia", "Oaxaca",
   "Valletta"); or when a city of >= 100,000 outside the region, in its country (a capital district), holds that
   share ("Buenos Aires"). Otherwise the part is the region ("Washington, USA" is the state: D.C. holds 1/9.5 of
   it and lies outside it; "Texas"; "Guanajuato", a city of 72,000 in a state of 5 million).
6. Without a resolved part, a named region resolves to its population-weighted centroid (level "admin"), a country
   to its point (level "country", see `globe.geo.gazetteer`), and anything else to level "none" (NaN coordinates).

Levels, most specific first: coords, landmark (a point: a peak, a monument, a heritage site, an airport), city,
feature (an extended feature: a lake, a range, a park; its representative point), admin, country, none.
"""

from __future__ import annotations

import math
from dataclasses import asdict, dataclass, field
from functools import lru_cache

import numpy as np

from globe.geo.candidates import (
    _Cand,
    _cand_info,
    _code,
    _exact,
    _km,
    _memoized,
    _ngram_cands,
    _part_info,
)
from globe.geo.countries import PARENT
from globe.geo.gazetteer import Gazetteer, gazetteer
from globe.geo.parts import Part, parse_coordinates, split_answer

LEVELS = ("coords", "landmark", "city", "feature", "admin", "country", "none")
POINT_LEVELS: tuple[str, ...] = ("coords", "landmark", "city")  # levels that locate a point finer than a region

ANCHOR_KM = 35.0  # a place named before a city lies within this of it ("Montmartre, Paris")
ALT_NAME_ANCHOR_KM = 20.0  # ... when matched only by an alternate (often historic) name
AIRPORT_ANCHOR_KM = 100.0  # airports serve cities from far out (Narita - Tokyo: 60 km)
FEATURE_ANCHOR_KM = 150.0  # a landmark inside an extended feature ("Half Dome, Yosemite National Park")
CITY_REGION_RATIO = 8.0
_MAJOR_CITY = 100_000

_NATIONS = {"england", "scotland", "wales", "northern ireland"}  # country aliases that are also GB regions


@dataclass(frozen=True)
class GeoResult:
    """One resolved answer. `level` is one of LEVELS; lat/lon are NaN when level == "none".

    `city` / `geonameid` name the populated place the answer resolved to, or for a landmark the city the answer
    placed it in; `feature` is the entry's type ("lake", "airport", "PPL" for a populated place) and `entry` its id
    in the source ("geonames:2996944", "airport:BKK", "nps:yosemite-national-park", "whc:angkor").
    """

    text: str
    lat: float
    lon: float
    level: str
    country_code: str = ""
    country: str = ""
    admin1: str = ""
    city: str = ""
    geonameid: int = -1
    matched: str = ""  # the entries the resolution rests on, e.g. "Lyon, Auvergne-Rhône-Alpes, France"
    feature: str = ""
    entry: str = ""

    @property
    def resolved(self) -> bool:
        return self.level != "none"

    def to_dict(self) -> dict:
        return asdict(self)


def _none(text: str, country_code: str = "", gaz: Gazetteer | None = None) -> GeoResult:
    return GeoResult(text, math.nan, math.nan, "none", country_code, gaz.country_name(country_code) if gaz else "")


def _country_ok(cand_cc: str, countries: set[str]) -> bool:
    return cand_cc in countries or PARENT.get(cand_cc, "") in countries


# ---- candidates ----------------------------------------------------------------------------------------------


@dataclass
class _Context:
    countries: set[str]
    forced: bool
    country_part: int
    admins: dict[int, int]  # admin id -> the part naming it (wholly, or in a phrase: "Southern California")
    region_parts: set[int] = field(default_factory=set)  # parts read as regions only ("Washington State", "TX")
    whole: dict[int, list[int]] = field(default_factory=dict)  # part -> regions the whole part names
    _named: set[int] | None = None

    def named(self, gaz: Gazetteer) -> set[int]:
        """The named regions that agree with the named country (all when no country is named)."""
        if self._named is None:
            self._named = {a for a in self.admins
                           if not self.countries or _country_ok(gaz.admin_key[a][:2], self.countries)}
        return self._named


# ---- context: country and regions ------------------------------------------------------------------------------


def _read_context(gaz: Gazetteer, parts: list[Part], forced: str | None) -> _Context:
    infos = [_memoized(gaz, "info", p, _part_info) for p in parts]
    country_part, named = -1, None
    for k in range(len(parts) - 1, -1, -1):
        if infos[k].country and not (parts[k].code and parts[k].airport_code):
            named, country_part = infos[k].country, k
            break
    if named is None and not forced:  # "Lyon France", "somewhere near Kyoto Japan": a country inside a part
        named = next((i.phrase_country for i in infos if i.phrase_country), None)
    countries = {forced} if forced else ({named} if named else set())
    ctx = _Context(countries, bool(forced), country_part, {})
    for k, (part, info) in enumerate(zip(parts, infos)):  # regions named anywhere, the country part too
        ctx.whole[k] = list(info.regions)  # ("Atlanta, Georgia")
        for a in info.regions:
            ctx.admins.setdefault(a, k)
        if info.explicit or (info.regions and part.label in ("state", "region", "province", "county")):
            ctx.region_parts.add(k)  # "Washington State", "TX", "state: New York": the region, never a city
        if k != country_part:
            for a in info.phrase_regions:  # "Southern California": a region in a phrase
                ctx.admins.setdefault(a, k)
    return ctx


def _part_admins(gaz: Gazetteer, ctx: _Context, k: int) -> list[int]:
    """Regions the whole of part k names that agree with the named country (all of them when none is named) and
    with the countries of the regions broader parts name ("Moscow, Idaho": not Moscow, Russia)."""
    broader = {gaz.admin_key[a][:2] for a, kk in ctx.admins.items() if kk > k}
    # a territory's region is no reading under its sovereign: "Salinas, United States" is not Salinas, Puerto Rico
    return [a for a in ctx.whole.get(k, ())
            if (not ctx.countries or gaz.admin_key[a][:2] in ctx.countries)
            and (not broader or gaz.admin_key[a][:2] in broader)]


def _city_reading_ok(gaz: Gazetteer, ctx: _Context, c: _Cand, regions: list[int]) -> bool:
    """Whether a city named like a region of its own country that its part names is read as the city (rule 5 of
    the module docstring). The city may be a capital district beside its namesake province (Buenos Aires);
    Floridablanca (Colombia) is no reading of "Florida"."""
    L = gaz.lists
    aid = L.admin[c.i]
    if any(kk > c.part and a == aid for a, kk in ctx.admins.items()):
        return True  # the region is named again by a broader part: "New York, NY"
    pop = L.pop[c.i]
    if aid in regions:  # the region's namesake city: "New York", "Valencia", "Québec", "Valletta" (a small region,
        # when it is the name's main region: Florida, Uruguay (33,000 people) is no reading of "Florida")
        top = max(regions, key=lambda a: gaz.admin_pop[a])
        return pop >= _MAJOR_CITY or (aid == top and pop * CITY_REGION_RATIO >= gaz.admin_pop[aid])
    same = [a for a in regions if gaz.admin_key[a][:2] == L.cc[c.i]]
    return pop >= _MAJOR_CITY and any(pop * CITY_REGION_RATIO >= gaz.admin_pop[a] for a in same)


# ---- ranking and resolution -------------------------------------------------------------------------------------


@dataclass
class _Anchor:
    """What a broader part resolved to: a point with a radius, and the region it also named (if any)."""

    lat: float
    lon: float
    kind: str  # "city", "landmark" or "feature" ("feature" too for a city found only in a phrase)
    region: int = -1  # "Kingston, New York": inside New York state counts too
    city: int = -1  # gazetteer row of the anchoring city (named in the result of a landmark)
    city_admin: int = -1  # that city's region: a feature or landmark in it is consistent ("Machu Picchu, Cusco")


def _consistent(gaz: Gazetteer, c: _Cand, info, anchor: _Anchor | None) -> bool:
    if anchor is None:
        return True
    lat, lon, _, aid, _, _ = info
    airport = c.src == "place" and gaz.places.lists.feature[c.i] == "airport"
    if anchor.kind == "feature":
        radius = FEATURE_ANCHOR_KM
    else:
        radius = AIRPORT_ANCHOR_KM if airport else (ANCHOR_KM if c.primary or c.src == "place" else ALT_NAME_ANCHOR_KM)
    if _km(lat, lon, anchor.lat, anchor.lon) <= radius:
        return True
    if c.src == "place" and aid >= 0 and aid == anchor.city_admin:
        return True
    return anchor.region >= 0 and aid == anchor.region and (c.primary or c.src == "place")


def _country_score(gaz: Gazetteer, c: _Cand, cc: str, countries: set[str]) -> int:
    """2: in a named country (a feature or landmark: within its border distance of one); 1: a territory of one
    (Hong Kong for China); 0: neither."""
    if cc in countries or (c.src == "place" and not countries.isdisjoint(gaz.places.lists.near_countries[c.i] or ())):
        return 2
    return int(PARENT.get(cc, "") in countries)


def _region_counts(gaz: Gazetteer, ctx: _Context, aid: int) -> bool:
    """Whether a named region supports a candidate in it. A region the country part names counts only where that
    part is not simply the country: "Atlanta, Georgia" (Georgia the US state), not "Cholula, Mexico" (México
    state)."""
    if ctx.admins[aid] != ctx.country_part:
        return True
    part_cc = gaz.admin_key[aid][:2]
    return part_cc not in ctx.countries


def _key(gaz: Gazetteer, ctx: _Context, c: _Cand, info) -> tuple | None:
    """Ranking key of a consistent candidate (higher is better), or None when the named country or a broader
    region rules it out."""
    _, _, cc, aid, prior, _ = info
    in_country = _country_score(gaz, c, cc, ctx.countries)
    if ctx.forced and not in_country:
        return None
    if not c.strong and not in_country:
        pop_ok = c.src == "city" and gaz.lists.pop[c.i] >= (5000 if c.primary else 100_000)
        if not pop_ok and not (c.src == "place" and not ctx.countries):
            return None  # a loose word ("idea") hitting a village's alternate name is noise, not an answer
    named = ctx.named(gaz)
    if not c.strong and named and aid not in named:
        return None  # "Yosemite National Park, California": not National Park, New Jersey
    broader = {a for a in named if ctx.admins[a] > c.part and ctx.admins[a] != ctx.country_part}
    if c.src == "city" and broader and aid >= 0 and aid not in broader:
        return None  # "Bartlett, NH": not Bartlett, Tennessee (a place's region is its GeoNames admin-1)
    score = in_country + int(aid in ctx.admins and ctx.admins[aid] != c.part and _region_counts(gaz, ctx, aid))
    return (score, c.strong, c.words, prior + (1.0 if c.primary else 0.0), -c.i)


def _candidates(gaz: Gazetteer, parts: list[Part], k: int, ctx: _Context) -> list[_Cand]:
    """Every candidate of part k (rules 4 and 5): codes, exact names, then n-grams when nothing exact."""
    part = parts[k]
    if part.code and part.airport_code:
        return _code(gaz, part, k)
    regions = [] if part.label in ("city", "town") else _part_admins(gaz, ctx, k)  # "city: Oaxaca" is the city
    cands = _exact(gaz, part, k)
    if regions:  # a region's name: its cities where rule 5 reads it as the city, and landmarks inside it
        pl = gaz.places  # ("Kilimanjaro": the peak in the Kilimanjaro region; "Washington": not Mt. Washington, NH)
        P = pl.lists
        return [c for c in cands if (c.src == "city" and _city_reading_ok(gaz, ctx, c, regions))
                or (c.src == "place" and P.level[c.i] == "landmark" and P.admin_id[c.i] in regions)]
    if not cands and part.code:
        cands = _code(gaz, part, k)
    if not cands and " " in part.norm:
        cands = _ngram_cands(gaz, part, k)
    return cands


def _best(gaz: Gazetteer, ctx: _Context, cands: list[_Cand], anchor: _Anchor | None):
    best, best_key, best_info = None, None, None
    for c in cands:
        info = _cand_info(gaz, c)
        if not _consistent(gaz, c, info, anchor):
            continue
        key = _key(gaz, ctx, c, info)
        if key is not None and (best_key is None or key > best_key):
            best, best_key, best_info = c, key, info
    if best is None or (ctx.countries and best_key[0] == 0):
        return None  # a candidate must agree with the named country or region ("Lyon, Spain" is Spain)
    return best, best_info


def _resolve_parts(gaz: Gazetteer, parts: list[Part], ctx: _Context):
    """Resolve parts from the most general to the most specific; the most specific consistent one wins."""
    resolved, anchor = None, None
    for k in range(len(parts) - 1, -1, -1):
        if k == ctx.country_part or k in ctx.region_parts:
            continue
        got = _best(gaz, ctx, _candidates(gaz, parts, k, ctx), anchor)
        if got is None:
            continue
        c, info = got
        if c.src == "place" and info[2] not in ctx.countries and _country_score(gaz, c, "", ctx.countries):
            # a border feature named with its other country ("Lake Geneva, Switzerland"): the answer's country
            info = (*info[:2], next(iter(ctx.countries)), -1, *info[4:])
        regions = _part_admins(gaz, ctx, k)
        city = c.i if c.src == "city" else (anchor.city if anchor else -1)
        # a city found only inside a phrase ("Banff National Park" -> Banff) anchors loosely, like a feature
        kind = info[5] if c.strong else "feature"
        anchor = _Anchor(info[0], info[1], kind, regions[0] if len(regions) == 1 else -1, city,
                         info[3] if c.src == "city" else -1)
        resolved = (c, info, anchor.city)
    return resolved


def _place_result(gaz: Gazetteer, text: str, c: _Cand, info, city: int) -> GeoResult:
    lat, lon, cc, aid, _, level = info
    admin = gaz.admin_name[aid] if aid >= 0 else ""
    if c.src == "city":
        i = c.i
        matched = ", ".join(x for x in (gaz.name[i], admin, gaz.country_name(cc)) if x)
        return GeoResult(text, float(lat), float(lon), "city", cc, gaz.country_name(cc), admin, str(gaz.name[i]),
                         int(gaz.geonameid[i]), matched, "PPL", f"geonames:{int(gaz.geonameid[i])}")
    p = gaz.places
    city_name = str(gaz.name[city]) if city >= 0 else ""
    matched = ", ".join(x for x in (f"{p.name[c.i]} ({p.feature[c.i]})", city_name, admin, gaz.country_name(cc)) if x)
    return GeoResult(text, float(lat), float(lon), str(level), cc, gaz.country_name(cc), admin, city_name,
                     int(gaz.geonameid[city]) if city >= 0 else -1, matched, str(p.feature[c.i]), str(p.id[c.i]))


def _fallback(gaz: Gazetteer, text: str, parts: list[Part], ctx: _Context) -> GeoResult:
    """No part resolved: a named region (level admin), else the country (level country), else nothing."""
    countries = ctx.countries
    cand_admins = [a for a in ctx.admins if not countries or _country_ok(gaz.admin_key[a][:2], countries)]
    if cand_admins:
        a = max(cand_admins, key=lambda a: (ctx.admins[a] != ctx.country_part or not countries, gaz.admin_pop[a], -a))
        cc = gaz.admin_key[a].split(".")[0]
        # the country part is read as a region only for the UK's nations ("Scotland"), never "Mexico" (a state)
        only_nation = ctx.country_part >= 0 and parts[ctx.country_part].norm in _NATIONS
        if ctx.admins[a] != ctx.country_part or only_nation:
            return GeoResult(text, float(gaz.admin_lat[a]), float(gaz.admin_lon[a]), "admin", cc,
                             gaz.country_name(cc), gaz.admin_name[a], "", -1,
                             f"{gaz.admin_name[a]}, {gaz.country_name(cc)}", "ADM1", f"admin:{gaz.admin_key[a]}")
    if countries:
        cc = next(iter(countries))
        info = gaz.countries.get(cc)
        if info is None or not np.isfinite(info["lat"]):
            return _none(text, cc, gaz)
        return GeoResult(text, info["lat"], info["lon"], "country", cc, info["name"], "", "", -1, info["name"],
                         "PCL", f"country:{cc}")
    return _none(text)


def _answer_text(text: str) -> str | None:
    """The text to resolve: a whole completion's answer block (its labelled fields, else the block as written),
    or the text itself; None when a completion has no single answer (hedged or missing)."""
    if "<answer>" not in text.lower():
        return text
    from globe.answer import parse_completion

    p = parse_completion(text)
    if p.n_answer != 1:
        return None
    parts = p.place_parts
    return "\n".join(f"{k}: {v}" for k, v in p.fields.items() if v) if parts else (p.answer or "")


def _coords_result(gaz: Gazetteer, text: str, lat: float, lon: float) -> GeoResult:
    if lat < -60.0:  # Antarctica has no populated place; see Gazetteer.country_at
        return GeoResult(text, lat, lon, "coords", "AQ", gaz.country_name("AQ"), matched=gaz.country_name("AQ"),
                         entry="coords")
    i = int(gaz.nearest(lat, lon)[0])
    L = gaz.lists
    cc, aid = L.cc[i], L.admin[i]
    admin = gaz.admin_name[aid] if aid >= 0 else ""
    matched = ", ".join(x for x in (gaz.name[i], admin, gaz.country_name(cc)) if x)
    return GeoResult(text, lat, lon, "coords", cc, gaz.country_name(cc), admin, str(gaz.name[i]),
                     int(gaz.geonameid[i]), matched, "coords", "coords")


def _resolve(gaz: Gazetteer, text: str, country: str | None) -> GeoResult:
    body = _answer_text(text)
    if body is None or not body.strip():
        return _none(text)
    xy = parse_coordinates(body)
    if xy is not None:
        return _coords_result(gaz, text, *xy)
    parts = split_answer(body)
    forced = gaz.country_of(country) if country else None
    ctx = _read_context(gaz, parts, forced)
    got = _resolve_parts(gaz, parts, ctx)
    if got is not None:
        return _place_result(gaz, text, *got)
    return _fallback(gaz, text, parts, ctx)


@lru_cache(maxsize=1 << 17)
def _cached(text: str, country: str | None) -> GeoResult:
    return _resolve(gazetteer(), text, country)


def geocode(text: str, country: str | None = None) -> GeoResult:
    """Resolve one free-form answer ("Lyon, France", "country: Japan\\ncity: Kyoto", "48.85N 2.35E").

    `country` (a name, alias or ISO code), when given, is authoritative: only places in it are accepted.
    """
    if text is None or (isinstance(text, float) and math.isnan(text)):
        return _none("")
    return _cached(str(text), country if country else None)


GEOCODE_COLUMNS = ["lat", "lon", "level", "country_code", "country", "admin1", "city", "geonameid", "matched",
                   "feature", "entry"]


def geocode_many(texts, country=None):
    """Resolve many answers into a DataFrame (one row per input, same order).

    Columns: GEOCODE_COLUMNS (lat, lon, level, country_code, country, admin1, city, geonameid, matched, feature,
    entry). `country` is None, one value for all, or a sequence aligned with `texts`. Repeated answers are
    resolved once.
    """
    import pandas as pd

    texts = list(texts)
    if country is None or isinstance(country, str):
        countries = [country] * len(texts)
    else:
        countries = list(country)
        if len(countries) != len(texts):
            raise ValueError(f"country has {len(countries)} values for {len(texts)} texts")
    memo: dict = {}
    rows = []
    for t, c in zip(texts, countries):
        c = None if c is None or (isinstance(c, float) and math.isnan(c)) or c == "" else str(c)
        key = (t if isinstance(t, str) else None, c)
        r = memo.get(key)
        if r is None:
            r = geocode(key[0], c)
            memo[key] = r
        rows.append(r)
    df = pd.DataFrame([[getattr(r, k) for k in GEOCODE_COLUMNS] for r in rows], columns=GEOCODE_COLUMNS)
    df["lat"] = df["lat"].astype(float)
    df["lon"] = df["lon"].astype(float)
    df["geonameid"] = df["geonameid"].astype(np.int64)
    return df
