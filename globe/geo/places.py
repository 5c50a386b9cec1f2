"""Named features, landmarks and airports: the second half of the offline gazetteer.

Sources (all offline; licences in `globe/assets/places/PROVENANCE.md`):

- `globe/assets/places/features.csv`: Natural Earth 10m regions, peaks, lakes, marine areas, playas and US
  national parks (public domain) and OpenGeographyRegions (CC0 1.0), de-duplicated (`scripts/vendor_places.py`);
- `globe/assets/places/world_heritage.csv`: the UNESCO World Heritage List 2019 (CC BY-SA 3.0 IGO);
- airports with an IATA code from `airportsdata` (MIT): name, IATA and ICAO codes;
- GeoNames dumps (feature classes T / H / L / S) when `$GLOBE_GEONAMES_DIR` holds them (`globe.geo.geonames_dump`).

Every entry has a level: "landmark" for things that locate a point (a peak, a waterfall, a cape, a monument, a
cultural heritage site, an airport, a GeoNames spot or building) and "feature" for extended ones (a lake, a
range, an island, a sea, a park, a desert, a natural heritage area), which resolve to one representative point
inside them. Entries are indexed by `globe.geo.names.feature_keys` (name variants) and airports also by their
codes. Each entry's admin-1 region and, when its source leaves it empty (a lake shared by two countries), its
country come from the nearest GeoNames populated place within `ADMIN_KM`.
"""

from __future__ import annotations

import re
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from globe.geo.names import feature_keys, normalize

ASSETS = Path(__file__).resolve().parents[1] / "assets" / "places"
ADMIN_KM = 100.0
# A feature or landmark near a border belongs to both sides for consistency checks ("Lake Geneva, Switzerland",
# "Iguazu Falls, Argentina"): every country with a populated place this close to its point (km).
BORDER_KM = {"landmark": 25.0, "feature": 50.0}

LANDMARK_FEATURES = {"peak", "waterfall", "cape", "pole", "pass", "monument", "landmark", "heritage_cultural",
                     "airport"}
# GeoNames dump feature codes that locate a point (classes T and H); class S is always a landmark, L a feature.
_DUMP_POINT_CODES = {"MT", "PK", "PKS", "HLL", "RK", "RKS", "CLF", "PASS", "VLC", "CRTR", "CAVE", "CAPE", "PT",
                     "FLLS", "FLLSX", "GYSR", "SPNG", "SPNGS", "WLL"}
# Ranking priors (on the scale of log10(population) the cities use): curated features compare with a town of
# ~30,000 people, airports and GeoNames dump entries below (there are many, most obscure).
PRIOR = {"curated": 4.5, "airport": 3.0, "dump": 2.5}
_AIRPORT_SUFFIX = re.compile(r"\b(?:international|intl|regional|municipal|domestic|airport|airfield|aerodrome|"
                             r"air base|airstrip|field)\b", re.IGNORECASE)


@dataclass
class PlaceIndex:
    """Arrays of named places (one row per entry) and their name / code indexes."""

    id: np.ndarray  # object: "nps:yosemite-national-park", "whc:angkor", "airport:BKK", "geonames:5350937"
    name: np.ndarray  # object
    norm_name: np.ndarray  # object: normalize(name)
    norm_head: np.ndarray  # object: normalize(name_head(name)): "stonehenge" counts as a primary name too
    lat: np.ndarray  # float64
    lon: np.ndarray
    feature: np.ndarray  # object: "lake", "peak", "airport", "heritage_cultural", "S.CH" (GeoNames class.code)
    level: np.ndarray  # object: "landmark" or "feature"
    country_code: np.ndarray  # object: ISO alpha-2, "" unknown (open sea)
    admin_id: np.ndarray  # int32 into the gazetteer's admins, -1 none
    near_countries: np.ndarray  # object: frozenset of countries with a populated place within BORDER_KM
    prior: np.ndarray  # float32 (see PRIOR)
    names: dict[str, int]  # key -> posting; rows of posting k are postings[starts[k]:starts[k + 1]]
    postings: np.ndarray
    starts: np.ndarray
    codes: dict[str, int] = field(default_factory=dict)  # "BKK" / "VTBS" -> row
    sources: dict[str, int] = field(default_factory=dict)  # source -> row count

    def __len__(self) -> int:
        return int(self.lat.size)

    def named(self, key: str) -> list[int]:
        """Rows indexed under a normalised key."""
        k = self.names.get(key)
        if k is None:
            return []
        lists = self.lists
        return lists.postings[lists.starts[k] : lists.starts[k + 1]]

    @property
    def lists(self):
        """Python-list copies of the per-entry arrays (fast element access for the resolver), built on first use."""
        got = self.__dict__.get("_lists")
        if got is None:
            from types import SimpleNamespace

            got = SimpleNamespace(**{k: getattr(self, k).tolist() for k in (
                "lat", "lon", "country_code", "admin_id", "prior", "level", "norm_name", "norm_head", "feature",
                "near_countries", "postings", "starts")})
            self.__dict__["_lists"] = got
        return got


# ---- sources ---------------------------------------------------------------------------------------------------


def _vendored_rows() -> list[dict]:
    import csv

    rows = []
    for fname, source in (("features.csv", "features"), ("world_heritage.csv", "world_heritage")):
        with open(ASSETS / fname, encoding="utf-8", newline="") as f:
            for r in csv.DictReader(f):
                rows.append({
                    "id": r["id"], "name": r["name"], "alts": [a for a in r["alt_names"].split("|") if a],
                    "lat": float(r["lat"]), "lon": float(r["lon"]), "feature": r["feature"],
                    "country_code": r["country_code"], "prior": PRIOR["curated"], "source": source,
                    "level": "landmark" if r["feature"] in LANDMARK_FEATURES else "feature", "codes": (),
                })
    return rows


def airport_names(name: str, city: str) -> list[str]:
    """Name variants of an airport: as written; its core (the name without generic words such as "International
    Airport") and the core without a leading city name, each + "Airport" and + "International Airport"
    ("London Heathrow Airport" -> "Heathrow Airport"; "Stockholm-Arlanda Airport" -> "Arlanda Airport"); and a
    core of two words or more on its own ("Oslo Gardermoen"), never a bare city name ("Dublin")."""
    core = " ".join(_AIRPORT_SUFFIX.sub(" ", name).split())
    cores = [core] if core else []
    ncore, ncity = normalize(core), normalize(city)
    if ncity and ncore.startswith(ncity + " ") and len(ncore) > len(ncity) + 3:
        cores.append(" ".join(ncore[len(ncity) :].split()))
    out = [name]
    for c in cores:
        out += [f"{c} Airport", f"{c} International Airport"]
    if len(ncore.split()) >= 2:
        out.append(core)
    return list(dict.fromkeys(out))


def _airport_rows() -> list[dict]:
    import airportsdata

    rows = []
    for code, a in sorted(airportsdata.load("IATA").items()):
        codes = tuple(c for c in (code, a.get("icao", "")) if c)
        names = airport_names(a["name"], a.get("city", ""))
        rows.append({
            "id": f"airport:{code}", "name": a["name"], "alts": names[1:] + [f"{c} Airport" for c in codes],
            "lat": float(a["lat"]), "lon": float(a["lon"]), "feature": "airport", "country_code": a["country"],
            "prior": PRIOR["airport"], "source": "airportsdata", "level": "landmark", "codes": codes,
        })
    return rows


def _dump_rows(directory: Path | None) -> list[dict]:
    from globe.geo.geonames_dump import dump_files, read_alternate_names, read_dump

    if directory is None:
        return []
    files, alt_file = dump_files(directory)
    if not files:
        raise FileNotFoundError(f"{directory}: no GeoNames dump (allCountries.zip/.txt or XX.zip/.txt) found")
    df = read_dump(files)
    extra = read_alternate_names(alt_file, set(df["geonameid"].tolist())) if alt_file else {}
    rows = []
    for g, name, alts, lat, lon, fc, fcode, cc in zip(df["geonameid"], df["name"], df["alternatenames"], df["lat"],
                                                      df["lon"], df["fclass"], df["fcode"], df["country_code"]):
        point = fc == "S" or (fc in ("T", "H") and fcode in _DUMP_POINT_CODES)
        rows.append({
            "id": f"geonames:{int(g)}", "name": name,
            "alts": [a for a in alts.split(",") if a] + extra.get(int(g), []), "lat": float(lat), "lon": float(lon),
            "feature": f"{fc}.{fcode}", "country_code": cc, "prior": PRIOR["dump"], "source": "geonames_dump",
            "level": "landmark" if point else "feature", "codes": (),
        })
    return rows


# ---- building ----------------------------------------------------------------------------------------------------


_GENERIC_HEADS = {"port", "city", "town", "island", "islands", "lake", "park", "area", "site", "sites", "church",
                  "churches", "monuments", "temple", "palace", "old town", "historic centre", "national park"}


def name_head(name: str) -> str:
    """A name's head: the part before a comma or a bracket ("Stonehenge, Avebury and Associated Sites" ->
    "Stonehenge"; "Hiroshima Peace Memorial (Genbaku Dome)" -> "Hiroshima Peace Memorial"), '' if generic."""
    head = re.split(r",|\(", name, maxsplit=1)[0].strip()
    k = normalize(head)
    return "" if head == name or len(k) < 5 or k in _GENERIC_HEADS else head


def _keys_of(row: dict) -> set[str]:
    feature = row["feature"].split(".")[-1] if row["source"] == "geonames_dump" else row["feature"]
    keys = set()
    head = name_head(row["name"])
    inner = re.findall(r"\(([^()]{5,})\)", row["name"])  # "(Genbaku Dome)"
    for n in [row["name"], *row["alts"], *([head] if head else []), *inner]:
        keys |= feature_keys(n, feature)
    return {k for k in keys if len(k) > 2 and any(ch.isalpha() for ch in k)}


def _context(rows: list[dict], gaz_cc, gaz_admin, tree) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """(country code, admin id, near countries) of each entry: its own code (or the nearest place's when empty),
    the admin-1 region of the nearest place within ADMIN_KM in that country (-1 otherwise), and the countries with
    a populated place within BORDER_KM of it (its own code included)."""
    from globe.geo.distance import EARTH_RADIUS_KM, to_unit_xyz

    lat = np.array([r["lat"] for r in rows])
    lon = np.array([r["lon"] for r in rows])
    xyz = to_unit_xyz(lat, lon)
    chord = lambda km: 2 * np.sin(km / EARTH_RADIUS_KM / 2)
    dist, near = tree.query(xyz, k=1, distance_upper_bound=chord(ADMIN_KM))
    found = np.isfinite(dist)
    j = np.where(found, near, 0)
    cc = np.array([r["country_code"] for r in rows], dtype=object)
    near_cc = np.where(found, gaz_cc[j], "")
    cc = np.where(cc == "", near_cc, cc)
    admin = np.where(found & (near_cc == cc), gaz_admin[j], -1).astype(np.int32)
    near_sets = np.empty(len(rows), dtype=object)
    for level, km in BORDER_KM.items():
        idx = [i for i, r in enumerate(rows) if r["level"] == level]
        for i, hits in zip(idx, tree.query_ball_point(xyz[idx], chord(km)) if idx else []):
            near_sets[i] = frozenset({str(cc[i]), *(str(gaz_cc[h]) for h in hits)} - {""})
    return cc.astype(object), admin, near_sets


def build_places(gaz_lat, gaz_lon, gaz_cc, gaz_admin, tree, dump_directory: Path | None = None) -> PlaceIndex:
    """The place index from every source (see the module docstring), located against the gazetteer's places."""
    rows = _vendored_rows() + _airport_rows() + _dump_rows(dump_directory)
    cc, admin, near = _context(rows, gaz_cc, gaz_admin, tree)
    by_key: dict[str, list[int]] = {}
    codes: dict[str, int] = {}
    for i, r in enumerate(rows):
        for k in _keys_of(r):
            by_key.setdefault(k, []).append(i)
        for c in r["codes"]:
            codes.setdefault(c.upper(), i)
    names, starts, flat = {}, [0], []
    for k, (key, idx) in enumerate(by_key.items()):
        names[key] = k
        flat.extend(idx)
        starts.append(len(flat))
    sources: dict[str, int] = {}
    for r in rows:
        sources[r["source"]] = sources.get(r["source"], 0) + 1
    obj = lambda key: np.array([r[key] for r in rows], dtype=object)
    return PlaceIndex(
        id=obj("id"), name=obj("name"), norm_name=np.array([normalize(r["name"]) for r in rows], dtype=object),
        norm_head=np.array([normalize(name_head(r["name"])) for r in rows], dtype=object),
        lat=np.array([r["lat"] for r in rows], dtype=np.float64), lon=np.array([r["lon"] for r in rows]),
        feature=obj("feature"), level=obj("level"), country_code=cc, admin_id=admin, near_countries=near,
        prior=np.array([r["prior"] for r in rows], dtype=np.float32), names=names,
        postings=np.asarray(flat, dtype=np.int32), starts=np.asarray(starts, dtype=np.int64), codes=codes,
        sources=sources,
    )


def assets_fingerprint() -> str:
    """A short hash of the vendored tables (part of the gazetteer cache key)."""
    import hashlib

    h = hashlib.sha1()
    for fname in ("features.csv", "world_heritage.csv"):
        h.update((ASSETS / fname).read_bytes())
    return h.hexdigest()[:10]
