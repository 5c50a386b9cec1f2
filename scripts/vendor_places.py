"""Vendor the prepared named features and landmarks into the package (`globe/assets/places/`), de-duplicated.

    python scripts/vendor_places.py [--src ../shared/data/places]

Reads the per-source CSVs of `../shared/data/places/` (Natural Earth 10m, OpenGeographyRegions, UNESCO World
Heritage 2019; see their PROVENANCE.md) and writes two tables split by licence, so the share-alike one stays
separate:

- `features.csv`: Natural Earth (public domain) and OpenGeographyRegions (CC0 1.0) rows;
- `world_heritage.csv`: UNESCO World Heritage List rows (CC BY-SA 3.0 IGO: attribution and share-alike apply).

De-duplication: rows of the public-domain sources naming the same feature (a shared normalised name or alias, the
same feature family, points within `MERGE_KM`) become one row: the first source in `PRIORITY` gives the name and
the point, the others add their names as aliases. A UNESCO row sharing a normalised name with a public-domain row
within `UNESCO_DUP_KM`, whatever its family, is dropped (its names are not copied into the public-domain table). Aliases that would mislead the geocoder are
dropped: country names ("Fuji Station (Japan)" had the alias "Japan"), bare generic terms ("Lough"), names of three
letters or fewer, and group names shared by three or more rows ("Great Lakes"). Every count is printed and written
to PROVENANCE.md. Nothing here runs at import or test time: the package reads only the vendored files.
"""

from __future__ import annotations

import argparse
import re
import sys
from collections import Counter, defaultdict
from pathlib import Path

import numpy as np
import pandas as pd

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

OUT = ROOT / "globe" / "assets" / "places"
UNESCO_DUP_KM = 50.0
MERGE_KM = 300.0  # OpenGeographyRegions re-draws Natural Earth polygons, moving representative points by up to ~250 km

# Which source's row names and places a merged feature (points before polygons; OGR's edited polygons before NE's).
PRIORITY = [
    "ne_us_nps_parks.csv", "ne_geography_regions_points.csv", "ne_geography_elevation_points.csv", "ne_lakes.csv",
    "ne_playas.csv", "ogr_geography_regions.csv", "ne_geography_regions_polys.csv", "ne_geography_marine_polys.csv",
]
UNESCO = "unesco_world_heritage_2019.csv"
ID_PREFIX = {
    "ne_us_nps_parks.csv": "nps", "ne_geography_regions_points.csv": "ne-point",
    "ne_geography_elevation_points.csv": "ne-elev", "ne_lakes.csv": "ne-lake", "ne_playas.csv": "ne-playa",
    "ogr_geography_regions.csv": "ogr", "ne_geography_regions_polys.csv": "ne-region",
    "ne_geography_marine_polys.csv": "ne-marine", UNESCO: "whc",
}
# Feature families: rows of different families never merge (a lake and an island may share a name).
FAMILY = {
    "lake": "water", "reservoir": "water", "lagoon": "water", "playa": "water", "sea": "marine", "gulf": "marine",
    "bay": "marine", "strait": "marine", "sound": "marine", "channel": "marine", "fjord": "marine",
    "ocean": "marine", "estuary": "marine", "reef": "marine", "inlet": "marine", "island": "island",
    "island_group": "island", "peak": "relief", "range": "relief", "plateau": "relief", "pass": "relief",
    "foothills": "relief", "park": "park", "monument": "park", "landmark": "park",
}
GENERIC = {
    "lake", "lakes", "lough", "loch", "lac", "lago", "island", "islands", "isle", "mount", "mountain", "mountains",
    "range", "peak", "bay", "gulf", "sea", "cape", "desert", "plateau", "river", "park", "national park", "valley",
    "reservoir", "sound", "strait", "channel", "coast", "peninsula", "plain", "basin", "delta", "the",
}


def slug(text: str) -> str:
    from globe.geo.names import normalize

    return re.sub(r"\s+", "-", normalize(text)) or "x"


def load(src: Path) -> pd.DataFrame:
    frames = []
    for name in [*PRIORITY, UNESCO]:
        df = pd.read_csv(src / name, keep_default_na=False, dtype=str)
        df["file"] = name
        frames.append(df)
    df = pd.concat(frames, ignore_index=True)
    df["lat"] = df["lat"].astype(float)
    df["lon"] = df["lon"].astype(float)
    return df


def country_names() -> set[str]:
    import pycountry

    from globe.geo.names import normalize

    out = set()
    for c in pycountry.countries:
        for attr in ("name", "common_name", "official_name"):
            if getattr(c, attr, None):
                out.add(normalize(getattr(c, attr)))
    return out | {"usa", "uk", "america", "england", "scotland", "wales"}


def clean_aliases(df: pd.DataFrame) -> tuple[list[list[str]], Counter]:
    """Per row, the aliases kept (normalised duplicates of the name removed) and why the others were dropped."""
    from globe.geo.names import normalize

    countries = country_names()
    alias_rows: Counter = Counter()
    for alts in df["alt_names"]:
        for a in {normalize(x) for x in alts.split("|") if x.strip()}:
            alias_rows[a] += 1
    dropped: Counter = Counter()
    kept = []
    for name, alts in zip(df["name"], df["alt_names"]):
        own = normalize(name)
        out, seen = [], {own}
        for a in (x.strip() for x in alts.split("|")):
            k = normalize(a)
            if not k or k in seen:
                continue
            seen.add(k)
            why = ("country name" if k in countries else "generic term" if k in GENERIC
                   else "3 letters or fewer" if len(k.replace(" ", "")) <= 3
                   else "group name (3+ rows)" if alias_rows[k] >= 3 else None)
            if why:
                dropped[why] += 1
            else:
                out.append(a)
        kept.append(out)
    return kept, dropped


def groups(df: pd.DataFrame, names: list[set[str]]) -> np.ndarray:
    """Union-find labels: rows sharing a normalised name, the same family and lying within MERGE_KM."""
    from globe.geo.distance import haversine_km

    parent = list(range(len(df)))

    def find(i: int) -> int:
        while parent[i] != i:
            parent[i] = parent[parent[i]]
            i = parent[i]
        return i

    by_key: dict[tuple[str, str], list[int]] = defaultdict(list)
    fam = [FAMILY.get(f, f) for f in df["feature"]]
    for i, ks in enumerate(names):
        for k in ks:
            by_key[(k, fam[i])].append(i)
    lat, lon = df["lat"].to_numpy(), df["lon"].to_numpy()
    for rows in by_key.values():
        for a in range(len(rows)):
            for b in range(a + 1, len(rows)):
                i, j = rows[a], rows[b]
                if haversine_km(lat[i], lon[i], lat[j], lon[j]) <= MERGE_KM:
                    parent[find(i)] = find(j)
    return np.array([find(i) for i in range(len(df))])


def build(src: Path) -> tuple[pd.DataFrame, pd.DataFrame, dict]:
    from globe.geo.names import normalize

    df = load(src)
    aliases, dropped = clean_aliases(df)
    df["aliases"] = aliases
    names = [{normalize(n), *(normalize(a) for a in al)} for n, al in zip(df["name"], aliases)]
    dup = unesco_duplicates(df, names)
    stats_dup = int(dup.sum())
    df, names = df[~dup].reset_index(drop=True), [n for n, d in zip(names, dup) if not d]
    label = groups(df, names)
    rank = {f: i for i, f in enumerate([*PRIORITY, UNESCO])}
    df["rank"] = df["file"].map(rank)
    df["group"] = label
    pd_rows, whc_rows = [], []
    stats = {"input_rows": len(df) + stats_dup, "aliases_dropped": dict(dropped), "merged_rows": 0,
             "unesco_duplicates_dropped": stats_dup}
    for _, g in df.sort_values(["rank", "name"]).groupby("group", sort=False):
        public = g[g["file"] != UNESCO]
        if len(public):
            head = public.iloc[0]
            alias = []
            for _, r in public.iterrows():
                alias += [r["name"], *r["aliases"]]
            seen = {normalize(head["name"])}
            alias = [a for a in alias if not (normalize(a) in seen or seen.add(normalize(a)))]
            cc = {c for c in public["country_code"] if c}
            pd_rows.append({
                "name": head["name"], "alt_names": "|".join(alias), "lat": head["lat"], "lon": head["lon"],
                "feature": head["feature"], "country_code": head["country_code"] or (cc.pop() if len(cc) == 1 else ""),
                "source": "+".join(dict.fromkeys(ID_PREFIX[f] for f in public["file"])), "file": head["file"],
            })
            stats["merged_rows"] += len(public) - 1
        else:
            for _, r in g.iterrows():  # UNESCO rows never merge with each other: serial sites share names
                whc_rows.append({"name": r["name"], "alt_names": "|".join(r["aliases"]), "lat": r["lat"],
                                 "lon": r["lon"], "feature": r["feature"], "country_code": r["country_code"],
                                 "source": "whc", "file": r["file"]})
    features, heritage = pd.DataFrame(pd_rows), pd.DataFrame(whc_rows)
    for t in (features, heritage):
        ids = [f"{ID_PREFIX[f]}:{slug(n)}" for f, n in zip(t["file"], t["name"])]
        count: Counter = Counter()
        uniq = []
        for i in ids:
            count[i] += 1
            uniq.append(i if count[i] == 1 else f"{i}-{count[i]}")
        t.insert(0, "id", uniq)
    features = features.drop(columns="file").sort_values("id").reset_index(drop=True)
    heritage = heritage.drop(columns="file").sort_values("id").reset_index(drop=True)
    stats["features_rows"], stats["world_heritage_rows"] = len(features), len(heritage)
    return features, heritage, stats


def unesco_duplicates(df: pd.DataFrame, names: list[set[str]]) -> np.ndarray:
    """UNESCO rows that a public-domain row already covers: a shared normalised name within UNESCO_DUP_KM, any
    family (UNESCO's "Yosemite National Park" is a heritage_natural row, the NPS one a park)."""
    from globe.geo.distance import haversine_km

    pd_by_key: dict[str, list[int]] = defaultdict(list)
    is_whc = (df["file"] == UNESCO).to_numpy()
    for i, ks in enumerate(names):
        if not is_whc[i]:
            for k in ks:
                pd_by_key[k].append(i)
    lat, lon = df["lat"].to_numpy(), df["lon"].to_numpy()
    dup = np.zeros(len(df), dtype=bool)
    for i in np.flatnonzero(is_whc):
        near = [j for k in names[i] for j in pd_by_key.get(k, ())]
        dup[i] = any(haversine_km(lat[i], lon[i], lat[j], lon[j]) <= UNESCO_DUP_KM for j in near)
    return dup


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--src", default=str(ROOT.parent / "shared" / "data" / "places"))
    ap.add_argument("--out", default=str(OUT))
    args = ap.parse_args()
    features, heritage, stats = build(Path(args.src))
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    features.to_csv(out / "features.csv", index=False, float_format="%.5f")
    heritage.to_csv(out / "world_heritage.csv", index=False, float_format="%.5f")
    print(stats)
    print(features.feature.value_counts().to_dict())


if __name__ == "__main__":
    main()
