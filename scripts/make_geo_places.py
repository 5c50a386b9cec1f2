"""Fill the expected coordinates of the geocoder's test set (`tests/data/geo_places.csv`) from the data sources.

    python scripts/make_geo_places.py [--check]

Each row of the set is `case, text, expected, level, lat, lon, country_code`: an answer as models write it, the
entry it should resolve to, and that entry's level, coordinates and country. `expected` is written by hand, either
as an entry id or as a hint this script turns into one:

- `geonames:<id>` (a GeoNames cities500 place), `admin:<CC.code>` (an admin-1 region: its population-weighted
  point), `country:<CC>` (a country's point), `airport:<IATA>` (airportsdata), `<source>:<slug>` (a vendored
  feature or landmark, e.g. `nps:yosemite-national-park`, `whc:angkor`), `coords:<lat>,<lon>` (written in the
  answer itself);
- the hint `city:<name>@<CC or CC.admin1>`: the most populous GeoNames place having that primary or alternate
  name in that country or region, written back as its `geonames:<id>`.

The coordinates and country are then copied from the entry (never typed in), so the set measures whether the
geocoder finds the entry, not whether someone remembered a coordinate. `--check` fails if a row's coordinates
differ from its entry's (the test suite checks the same).
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))
PATH = ROOT / "tests" / "data" / "geo_places.csv"
COLUMNS = ["case", "text", "expected", "level", "lat", "lon", "country_code"]


def resolve_hint(gaz, hint: str) -> str:
    """`city:<name>@<where>` -> `geonames:<id>` (the most populous match); other ids unchanged."""

    from globe.geo.names import normalize

    if not hint.startswith("city:"):
        return hint
    name, where = hint[5:].rsplit("@", 1)
    idx = gaz.places_named(normalize(name))
    keep = [int(i) for i in idx if gaz.country_code[i] == where[:2]
            and (len(where) == 2 or (gaz.admin_id[i] >= 0 and gaz.admin_key[gaz.admin_id[i]] == where))]
    if not keep:
        raise KeyError(f"no GeoNames place named {name!r} in {where}")
    best = max(keep, key=lambda i: (int(gaz.population[i]), -i))
    return f"geonames:{int(gaz.geonameid[best])}"


def entry_point(gaz, entry: str) -> tuple[float, float, str]:
    """(lat, lon, country code) of an entry id (see the module docstring)."""
    kind, _, key = entry.partition(":")
    if kind == "geonames":
        i = gaz.index_of(int(key))
        if i < 0:
            raise KeyError(f"{entry}: not a GeoNames cities500 place")
        return float(gaz.lat[i]), float(gaz.lon[i]), str(gaz.country_code[i])
    if kind == "admin":
        j = gaz.admin_key.index(key)
        return float(gaz.admin_lat[j]), float(gaz.admin_lon[j]), key.split(".")[0]
    if kind == "country":
        info = gaz.countries[key]
        return float(info["lat"]), float(info["lon"]), key
    if kind == "coords":
        lat, lon = key.split(",")
        return float(lat), float(lon), ""
    places = gaz.places
    rows = [i for i, e in enumerate(places.id) if e == entry]
    if len(rows) != 1:
        raise KeyError(f"{entry}: {len(rows)} entries with this id in the place index")
    i = rows[0]
    return float(places.lat[i]), float(places.lon[i]), str(places.country_code[i])


def main() -> int:
    import pandas as pd

    from globe.geo import gazetteer, reverse_geocode

    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--check", action="store_true", help="only check that every row matches its entry")
    args = ap.parse_args()
    gaz = gazetteer()
    df = pd.read_csv(PATH, keep_default_na=False, dtype=str)
    for c in COLUMNS:
        if c not in df.columns:
            df[c] = ""
    bad = 0
    for i, row in df.iterrows():
        entry = resolve_hint(gaz, row["expected"])
        lat, lon, cc = entry_point(gaz, entry)
        if not cc:  # coordinates written in the answer: the country they fall in
            cc = str(reverse_geocode(lat, lon).country_code.iloc[0])
        new = {"expected": entry, "lat": f"{lat:.5f}", "lon": f"{lon:.5f}", "country_code": cc}
        if args.check:
            if any(str(row[k]) != v for k, v in new.items()):
                print(f"row {i + 2}: {row['text']!r}: {dict(row[list(new)])} != {new}")
                bad += 1
        else:
            for k, v in new.items():
                df.at[i, k] = v
    if args.check:
        print(f"{len(df)} rows, {bad} differ from their entries")
        return int(bad > 0)
    df[COLUMNS].to_csv(PATH, index=False)
    print(f"wrote {PATH} ({len(df)} rows; {df['case'].nunique()} categories)")
    return 0


if __name__ == "__main__":
    sys.exit(main())
