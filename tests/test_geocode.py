"""The offline geocoder: gazetteer and places index, reverse geocoding, forward resolution of what models write,
the realistic answer set (tests/data/geo_places.csv) and the GeoNames dump loader."""

from __future__ import annotations

import dataclasses
import math
import zipfile
from pathlib import Path

import numpy as np
import pandas as pd
import pytest

from globe import geo
from globe.geo import geocode, geocode_many, haversine_km, parse_coordinates, reverse_geocode

DATA = Path(__file__).parent / "data"
PLACES = pd.read_csv(DATA / "geo_places.csv", keep_default_na=False, dtype=str)
# The categories of the first version of the set: every row there resolved exactly before the resolver grew, and
# must keep doing so (level, country and point). The later categories are held to shares, below.
STRICT = {"city_country", "city_region_country", "city_alone", "country_alone", "landmark", "exonym_native",
          "diacritics_case", "country_alias", "ambiguous", "coords", "labelled", "admin", "city_alias_country",
          "no_comma", "territory"}


# ---- reverse ----------------------------------------------------------------------------------------------------


def test_reverse_geocode():
    df = reverse_geocode([48.857, 40.713, -33.869, 35.69, -77.85], [2.352, -74.006, 151.209, 139.692, 166.67])
    assert list(df.columns) == ["country_code", "country", "admin1", "city", "continent"]
    assert df.country_code.tolist() == ["FR", "US", "AU", "JP", "AQ"]
    assert df.country.tolist()[:4] == ["France", "United States", "Australia", "Japan"]
    assert df.continent.tolist()[:4] == ["Europe", "North America", "Oceania", "Asia"]
    assert df.admin1.tolist()[:3] == ["Île-de-France", "New York", "New South Wales"]
    assert set(df.continent) <= set(geo.CONTINENTS.values())


def test_reverse_geocode_invalid():
    with pytest.raises(ValueError):
        reverse_geocode([100.0], [0.0])
    with pytest.raises(ValueError):
        reverse_geocode([40.0], [400.0])  # not wrapped to 40
    df = reverse_geocode([float("nan"), 48.857], [0.0, 2.352], invalid="nan", extra=True)
    assert df.country_code.tolist() == ["", "FR"] and df.geonameid.iloc[0] == -1
    assert df.place_km.iloc[1] < 5


def test_nearest_city_skips_districts():
    gaz = geo.gazetteer()
    i = int(gaz.nearest_city(48.8566, 2.3522)[0])
    assert gaz.name[i] == "Paris" and not gaz.section[i]
    assert gaz.nearest_city([np.nan], [0.0], invalid="nan")[0] == -1


# ---- the index: sources, names, countries -------------------------------------------------------------------------


def test_place_index_sources_and_levels():
    places = geo.gazetteer().places
    assert places.sources["features"] == 4783 and places.sources["world_heritage"] == 1103
    assert places.sources["airportsdata"] > 7000
    assert set(places.level) == {"landmark", "feature"}
    ids = list(places.id)
    assert len(ids) == len(set(ids))  # de-duplicated, one id per entry
    i = ids.index("nps:yosemite-national-park")
    assert places.level[i] == "feature" and places.country_code[i] == "US"
    assert places.level[ids.index("airport:BKK")] == "landmark" and places.codes["VTBS"] == ids.index("airport:BKK")


def test_vendored_tables_are_valid_and_licensed():
    from globe.geo.places import ASSETS

    for fname, licence in (("features.csv", "CC0"), ("world_heritage.csv", "CC BY-SA 3.0 IGO")):
        df = pd.read_csv(ASSETS / fname, keep_default_na=False)
        assert df["lat"].between(-90, 90).all() and df["lon"].between(-180, 180).all()
        assert (df["name"].str.len() > 0).all() and df["id"].is_unique
        assert df["country_code"].str.fullmatch(r"[A-Z]{2}|").all()
    provenance = (ASSETS / "PROVENANCE.md").read_text()
    for needed in ("Natural Earth", "public domain", "CC0", "CC BY-SA 3.0 IGO", "UNESCO World Heritage Centre",
                   "airportsdata", "MIT", "GeoNames", "CC BY 4.0", "4783", "1103"):
        assert needed.lower() in provenance.lower(), needed


@pytest.mark.parametrize("name, cc", [
    ("日本", "JP"), ("Ísland", "IS"), ("Deutschland", "DE"), ("the Netherlands", "NL"), ("UK", "GB"),
    ("USA", "US"), ("DRC", "CD"), ("Россия", "RU"), ("中国", "CN"), ("Ελλάδα", "GR"), ("대한민국", "KR"),
    ("Magyarország", "HU"), ("Česko", "CZ"), ("Suomi", "FI"), ("مصر", "EG"), ("Belgique", "BE"), ("ไทย", "TH"),
])
def test_country_names_in_many_languages(name, cc):
    assert geo.gazetteer().country_of(name) == cc


def test_region_abbreviations():
    gaz = geo.gazetteer()
    keys = lambda code: sorted(gaz.admin_key[a] for a in gaz.admins_coded(code))
    assert keys("TX") == ["US.TX"] and keys("NSW") == ["AU.02"] and keys("BC") == ["CA.02"]
    assert keys("WA") == ["AU.08", "US.WA"] and keys("NT") == ["AU.03", "CA.13"]


# ---- forward: the realistic set ------------------------------------------------------------------------------------


def _entry_point(gaz, entry: str) -> tuple[float, float]:
    import sys

    sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "scripts"))
    from make_geo_places import entry_point

    return entry_point(gaz, entry)[:2]


def test_place_set_points_come_from_the_data():
    """Every expected point is its entry's point in the sources (scripts/make_geo_places.py), never typed in."""
    gaz = geo.gazetteer()
    assert len(PLACES) >= 600 and PLACES.text.is_unique
    for r in PLACES.to_dict("records"):
        lat, lon = _entry_point(gaz, r["expected"])
        assert (float(r["lat"]), float(r["lon"])) == pytest.approx((lat, lon), abs=1e-5), r


def _resolve_set() -> pd.DataFrame:
    df = geocode_many(PLACES.text.tolist())
    d = haversine_km(PLACES.lat.astype(float).to_numpy(), PLACES.lon.astype(float).to_numpy(),
                     df.lat.to_numpy(), df.lon.to_numpy(), invalid="nan")
    return PLACES.assign(got_level=df.level, got_cc=df.country_code, within=np.nan_to_num(d, nan=np.inf) <= 25.0)


def test_place_set_shares_by_category():
    """>= 90% of the realistic set resolves within 25 km of its expected entry, no category below 75%."""
    res = _resolve_set()
    by = res.groupby("case")["within"].mean()
    print("\n" + by.to_string() + f"\nALL {res.within.mean():.4f} of {len(res)}")
    assert res.within.mean() >= 0.90
    assert by.min() >= 0.75, by[by < 0.75]
    new = res[~res.case.isin(STRICT)]
    assert len(new) >= 400 and new.case.nunique() >= 9


@pytest.mark.parametrize("row", PLACES[PLACES.case.isin(STRICT)].to_dict("records"),
                         ids=[f"{c}:{t}" for c, t in zip(PLACES.case, PLACES.text) if c in STRICT])
def test_place_set_strict_rows(row):
    r = geocode(row["text"])
    assert r.level == row["level"], r
    assert r.country_code == row["country_code"], r
    assert haversine_km(float(row["lat"]), float(row["lon"]), r.lat, r.lon) <= 25.0, r


def test_gazetteer_self_test():
    """Every GeoNames city with population >= 100k, written "City, Country", resolves within 25 km: 0.9874 before
    the resolver read regions, features and landmarks (commit d0aa3bd), and no lower since."""
    gaz = geo.gazetteer()
    idx = np.flatnonzero(gaz.population >= 100_000)
    assert idx.size > 5000
    texts = [f"{gaz.name[i]}, {gaz.country_name(gaz.country_code[i])}" for i in idx]
    df = geocode_many(texts)
    d = haversine_km(df.lat.to_numpy(), df.lon.to_numpy(), gaz.lat[idx], gaz.lon[idx], invalid="nan")
    share = float(np.mean(np.nan_to_num(d, nan=np.inf) <= 25.0))
    print(f"gazetteer self-test: {share:.4f} of {idx.size} within 25 km")
    assert share >= 0.9874


def test_generated_feature_and_airport_self_test():
    """Generated, not hand-picked: every vendored entry with a country and a name no other entry of that country
    shares, written "<name>, <country>", and every airport written "<name> (<IATA>)", resolves within 25 km of
    itself (measured 0.985 of 3,876 and 0.962 of 7,884; a name that is also a city's or region's reads as that,
    and a few airports share a name)."""
    gaz = geo.gazetteer()
    pl = gaz.places
    rows = [i for i in range(len(pl)) if pl.country_code[i] and not str(pl.id[i]).startswith("airport:")]
    df = pd.DataFrame({"i": rows, "key": [f"{pl.norm_name[i]}|{pl.country_code[i]}" for i in rows]})
    unique = df[~df.key.duplicated(keep=False)].i.to_numpy()
    texts = [f"{pl.name[i]}, {gaz.country_name(pl.country_code[i])}" for i in unique]
    got = geocode_many(texts)
    d = haversine_km(got.lat.to_numpy(), got.lon.to_numpy(), pl.lat[unique], pl.lon[unique], invalid="nan")
    share = float(np.mean(np.nan_to_num(d, nan=np.inf) <= 25.0))
    airports = [i for i in range(len(pl)) if str(pl.id[i]).startswith("airport:")]
    got = geocode_many([f"{pl.name[i]} ({str(pl.id[i])[8:]})" for i in airports])
    d = haversine_km(got.lat.to_numpy(), got.lon.to_numpy(), pl.lat[airports], pl.lon[airports], invalid="nan")
    share_air = float(np.mean(np.nan_to_num(d, nan=np.inf) <= 25.0))
    print(f"features: {share:.4f} of {len(unique)}; airports: {share_air:.4f} of {len(airports)}")
    assert share >= 0.97 and share_air >= 0.95


# ---- forward: behaviours ---------------------------------------------------------------------------------------------


@pytest.mark.parametrize("text, level, entry", [
    ("Half Dome, Yosemite National Park, California, USA", "feature", "nps:yosemite-national-park"),
    ("Suvarnabhumi Airport (BKK), Bangkok", "landmark", "airport:BKK"),
    ("Frankfurt Airport (FRA), Germany", "landmark", "airport:FRA"),  # FRA is also France's ISO code
    ("Kingston, NY", "city", "geonames:5123477"),
    ("Washington, USA", "admin", "admin:US.WA"),
    ("Washington, D.C.", "city", "geonames:4140963"),
    ("Dolomites, Italy", "feature", "whc:dolomites"),
    ("Near Lake Tahoe, California", "feature", "ne-lake:lake-tahoe"),
    ("Central Park, New York, NY, USA", "city", "geonames:5128581"),
    ("Mt. Fuji", "landmark", "ne-elev:fuji"),
    ("Lago di Como", "feature", "ne-lake:lago-di-como"),
    ("Como Lake", "feature", "ne-lake:lago-di-como"),  # "Lake X" / "X Lake"
    ("Halong Bay, Vietnam", "feature", "whc:ha-long-bay"),  # written together
    ("Lake Geneva, Switzerland", "feature", "ne-lake:lake-geneva"),  # a border lake, its point on the French side
])
def test_resolution_examples(text, level, entry):
    r = geocode(text)
    assert (r.level, r.entry) == (level, entry), r


def test_bartlett_nh_is_never_tennessee():
    """GeoNames cities500 has no Bartlett in New Hampshire: the named state decides, not Bartlett, Tennessee."""
    r = geocode("Bartlett, NH")
    assert (r.level, r.admin1, r.country_code) == ("admin", "New Hampshire", "US")


def test_hedges_are_stripped():
    base = geocode("Lyon, France")
    for text in ["near Lyon, France", "Lyon area", "probably Lyon, France", "Lyon, France (approximate)",
                 "outskirts of Lyon", "somewhere near Lyon", "Lyon (?)", "I think this is Lyon, France"]:
        r = geocode(text)
        assert (r.level, r.geonameid) == ("city", base.geonameid), (text, r)
    assert geocode("rural area in Tuscany, Italy").level == "admin"
    assert geocode("Central Park, New York City").city == "New York City"  # "central" is kept where it names


def test_country_argument_is_authoritative():
    assert geocode("Paris", country="US").matched.startswith("Paris, Texas")
    assert geocode("Paris", country="France").country_code == "FR"
    r = geocode("Lyon, Spain")  # a city that is not in the named country falls back to the country
    assert r.level == "country" and r.country_code == "ES"


def test_country_point_is_documented_centroid():
    """A country-only answer is the population-weighted centroid of its places (see globe.geo.gazetteer)."""
    gaz = geo.gazetteer()
    m = gaz.country_code == "FR"
    w = gaz.population[m].astype(float)
    v = (geo.distance.to_unit_xyz(gaz.lat[m], gaz.lon[m]) * np.maximum(w, 1)[:, None]).sum(0)
    lat, lon = geo.distance.from_unit_xyz(v)
    r = geocode("France")
    assert (r.lat, r.lon) == pytest.approx((float(lat), float(lon)))
    assert reverse_geocode(r.lat, r.lon).country_code.iloc[0] == "FR"


def test_unresolvable_and_junk():
    for t in ["", "   ", "Unknown", None, float("nan"), "asdkjhqwe zzqx", "city: unknown\ncountry: unknown"]:
        r = geocode(t)
        assert r.level == "none" and math.isnan(r.lat) and not r.resolved


def test_parse_coordinates():
    assert parse_coordinates("Route 66, 2 miles out") is None
    assert parse_coordinates("somewhere in Lyon") is None
    lat, lon = parse_coordinates("33°52′S 151°12′E")
    assert lat == pytest.approx(-33.8667, abs=1e-3) and lon == pytest.approx(151.2, abs=1e-3)
    assert parse_coordinates("151.2093 E, 33.8688 S") == pytest.approx((-33.8688, 151.2093))
    assert parse_coordinates("lat 10.5, lon 200.0") is None  # a longitude of 200 is not wrapped to -160
    assert parse_coordinates("lat 10.5, lon -179.9") == pytest.approx((10.5, -179.9))


def test_geocode_many_order_and_repetition():
    texts = ["Lyon, France", None, "Lyon, France", "Kyoto", "garbage qqq"]
    df = geocode_many(texts)
    assert list(df.columns) == ["lat", "lon", "level", "country_code", "country", "admin1", "city", "geonameid",
                                "matched", "feature", "entry"]
    assert df.level.tolist() == ["city", "none", "city", "city", "none"]
    assert df.iloc[0].equals(df.iloc[2]) and df.geonameid.iloc[0] == 2996944  # GeoNames id of Lyon
    df2 = geocode_many(["Paris", "Paris"], country=["FR", "US"])
    assert df2.country_code.tolist() == ["FR", "US"]
    with pytest.raises(ValueError):
        geocode_many(["a", "b"], country=["FR"])


def test_whole_completions_use_the_answer_only():
    done = "<think>Looks like Paris, France, but the signs say</think>\n<answer>country: Japan\ncity: Kyoto</answer>"
    r = geocode(done)
    assert r.level == "city" and r.city == "Kyoto"
    assert geocode("<think>x</think><answer>35.0116, 135.7681</answer>").level == "coords"
    hedged = "<think>x</think><answer>country: France\ncountry: Spain\ncity: Lyon</answer>"
    assert geocode(hedged).country_code in ("FR", "")  # country hedged: the parser drops it, the city decides
    assert geocode("<think>x</think><answer></answer>").level == "none"
    bold = "<think>x</think><answer>**Country:** Japan\n**City:** Osaka</answer>"
    assert geocode(bold).city == "Osaka"  # the same parser as the rewards read


@pytest.mark.parametrize(
    "text, level, cc",
    [
        ("Nowhereville-sur-Rien", "none", ""),  # not Sur, Oman
        ("Nowhereville-sur-Rien, France", "country", "FR"),  # not Sours, France
        ("Nowhereville sur Rien, France", "country", "FR"),
        ("country: France\ncity: Nowhereville-sur-Rien", "country", "FR"),
        ("Frobnitz Springs, USA", "country", "US"),  # not Springs, New York
        ("city: Blorptown\nregion: Bavaria\ncountry: Germany", "admin", "DE"),
    ],
)
def test_invented_city_falls_back_to_next_level(text, level, cc):
    """An unknown city name is not matched through a fragment of it: the answer resolves to what else it names."""
    r = geocode(text)
    assert (r.level, r.country_code, r.city) == (level, cc, ""), r


def test_place_in_a_phrase_still_found():
    """Words around a place that describe rather than name it keep the n-gram search useful."""
    for text in ["Downtown Tokyo", "Tokyo Tower", "somewhere near Kyoto Japan", "Eiffel Tower in Paris",
                 "Montmartre Paris"]:
        r = geocode(text)
        assert r.level == "city" and r.city in ("Tokyo", "Kyoto", "Paris"), r


# ---- GeoNames dumps -------------------------------------------------------------------------------------------------


@pytest.fixture()
def dump_dir(tmp_path) -> Path:
    """The miniature dump of tests/data/geonames_dump, the geography file zipped as GeoNames ships it."""
    src = DATA / "geonames_dump"
    with zipfile.ZipFile(tmp_path / "NO.zip", "w") as zf:
        zf.write(src / "NO.txt", "NO.txt")
        zf.writestr("readme.txt", "GeoNames readme")
    (tmp_path / "alternateNamesV2.txt").write_bytes((src / "alternateNamesV2.txt").read_bytes())
    return tmp_path


def test_geonames_dump_reader(dump_dir):
    from globe.geo.geonames_dump import dump_files, fingerprint, read_alternate_names, read_dump

    files, alt = dump_files(dump_dir)
    assert [f.name for f in files] == ["NO.zip"] and alt.name == "alternateNamesV2.txt"
    df = read_dump(files)
    assert df.geonameid.tolist() == [9900001, 9900002, 9900003, 9900005]  # class P (populated places) skipped
    names = read_alternate_names(alt, set(df.geonameid))
    assert names == {9900002: ["Mount Globetest"], 9900003: ["Qwertykapelle"]}  # links and codes are not names
    before = fingerprint(dump_dir)
    (dump_dir / "IT.txt").write_text("")
    assert fingerprint(dump_dir) != before and fingerprint(None) == ""


def test_geonames_dump_entries_resolve(dump_dir):
    """Dump entries join the same index and resolve like the packaged ones, at their level."""
    from globe.geo.forward import _resolve
    from globe.geo.places import build_places

    gaz = geo.gazetteer()
    places = build_places(gaz.lat, gaz.lon, gaz.country_code, gaz.admin_id, gaz.tree, dump_dir)
    assert places.sources["geonames_dump"] == 4 and len(places) == len(gaz.places) + 4
    g2 = dataclasses.replace(gaz, _places=places, _names_file=None)
    g2.names = gaz.name_index
    for text, level, entry in [("Frobnitz Falls, Norway", "landmark", "geonames:9900001"),
                               ("Mount Globetest", "landmark", "geonames:9900002"),
                               ("Qwertykapelle, Norway", "landmark", "geonames:9900003"),
                               ("Zzyzxq Lake", "feature", "geonames:9900005")]:
        r = _resolve(g2, text, None)
        assert (r.level, r.entry, r.country_code) == (level, entry, "NO"), r


def test_geonames_dump_dir_setting(monkeypatch, tmp_path, dump_dir):
    from globe.geo.gazetteer import cache_path
    from globe.geo.geonames_dump import DUMP_ENV
    from globe.geo.geonames_dump import dump_dir as configured

    monkeypatch.delenv(DUMP_ENV, raising=False)
    plain = cache_path()
    monkeypatch.setenv(DUMP_ENV, str(dump_dir))
    assert configured() == dump_dir and cache_path() != plain  # the dumps are part of the cache key
    monkeypatch.setenv(DUMP_ENV, str(tmp_path / "missing"))
    with pytest.raises(FileNotFoundError, match=DUMP_ENV):
        configured()
