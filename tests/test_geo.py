"""globe.geo: distances, gazetteer (reverse / forward), matchers, metrics, scoring files, `globe score`."""

from __future__ import annotations

import json
import math
from pathlib import Path

import numpy as np
import pandas as pd
import pytest

from globe import geo
from globe.geo import (
    THRESHOLDS_KM,
    bootstrap_ci,
    geo_metrics,
    geocode,
    geocode_many,
    geoscore,
    globe_string_match,
    haversine_km,
    paired_bootstrap,
    parse_coordinates,
    reverse_geocode,
    same_city,
    same_country,
    score_files,
)

DATA = Path(__file__).parent / "data"
R = geo.EARTH_RADIUS_KM


# ---- distance -------------------------------------------------------------------------------------------------


def test_paris_london():
    assert haversine_km(48.8566, 2.3522, 51.5074, -0.1278) == pytest.approx(343.5, abs=0.6)


def test_antipodes_poles_dateline():
    assert haversine_km(0, 0, 0, 180) == pytest.approx(math.pi * R, rel=1e-12)
    assert haversine_km(90, 0, -90, 0) == pytest.approx(math.pi * R, rel=1e-12)
    assert haversine_km(40, -74, -40, 106) == pytest.approx(math.pi * R, abs=1e-3)  # haversine: ~0.2 m here
    assert haversine_km(90, 0, 90, 123) == pytest.approx(0.0, abs=1e-9)  # every longitude is the pole
    one_degree = 2 * math.pi * R / 360
    assert haversine_km(0, 179.5, 0, -179.5) == pytest.approx(one_degree, rel=1e-9)  # across the dateline
    assert haversine_km(10, 190, 10, -170) == pytest.approx(0.0, abs=1e-9)  # longitude wrapped


def test_vectorized_and_scalar_types():
    lat = np.array([0.0, 48.8566])
    d = haversine_km(lat, np.array([0.0, 2.3522]), lat, np.array([1.0, 2.3522]))
    assert isinstance(d, np.ndarray) and d.shape == (2,)
    assert d[0] == pytest.approx(2 * math.pi * R / 360) and d[1] == pytest.approx(0.0, abs=1e-9)
    assert isinstance(haversine_km(1, 2, 3, 4), float)
    assert geo.wrap_lon(180.0) == -180.0 and geo.wrap_lon(-180.0) == -180.0


@pytest.mark.parametrize("lat,lon", [(91, 0), (-90.5, 0), (float("nan"), 0), (0, float("inf"))])
def test_invalid_coordinates(lat, lon):
    with pytest.raises(ValueError, match="invalid coordinate"):
        haversine_km(lat, lon, 0, 0)
    assert math.isnan(haversine_km(lat, lon, 0, 0, invalid="nan"))


# ---- reverse ------------------------------------------------------------------------------------------------


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
    df = reverse_geocode([float("nan"), 48.857], [0.0, 2.352], invalid="nan", extra=True)
    assert df.country_code.tolist() == ["", "FR"] and df.geonameid.iloc[0] == -1
    assert df.place_km.iloc[1] < 5


# ---- forward ------------------------------------------------------------------------------------------------

PLACES = pd.read_csv(DATA / "geo_places.csv", keep_default_na=False)


def test_place_table_covers_every_case():
    assert len(PLACES) >= 200
    assert {"city_country", "city_region_country", "city_alone", "country_alone", "landmark", "exonym_native",
            "diacritics_case", "country_alias", "ambiguous", "coords", "labelled", "admin"} <= set(PLACES.case)


@pytest.mark.parametrize("row", PLACES.to_dict("records"), ids=[f"{c}:{t}" for c, t in zip(PLACES.case, PLACES.text)])
def test_place_table(row):
    r = geocode(row["text"])
    assert r.level == row["level"], r
    assert r.country_code == row["country_code"], r
    if row["lat"] != "":
        assert haversine_km(float(row["lat"]), float(row["lon"]), r.lat, r.lon) <= 25.0, r
    else:
        assert np.isfinite(r.lat) and np.isfinite(r.lon)


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


def test_country_argument_is_authoritative():
    assert geocode("Paris", country="US").matched.startswith("Paris, Texas")
    assert geocode("Paris", country="France").country_code == "FR"
    # a city that is not in the named country falls back to the country
    r = geocode("Lyon, Spain")
    assert r.level == "country" and r.country_code == "ES"


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
    assert parse_coordinates("lat 10.5, lon 200.0") == pytest.approx((10.5, -160.0))


def test_geocode_many_order_and_repetition():
    texts = ["Lyon, France", None, "Lyon, France", "Kyoto", "garbage qqq"]
    df = geocode_many(texts)
    assert list(df.columns) == ["lat", "lon", "level", "country_code", "country", "admin1", "city", "geonameid",
                                "matched"]
    assert df.level.tolist() == ["city", "none", "city", "city", "none"]
    assert df.iloc[0].equals(df.iloc[2]) and df.geonameid.iloc[0] == 2996944  # GeoNames id of Lyon
    df2 = geocode_many(["Paris", "Paris"], country=["FR", "US"])
    assert df2.country_code.tolist() == ["FR", "US"]
    with pytest.raises(ValueError):
        geocode_many(["a", "b"], country=["FR"])


def test_gazetteer_self_test():
    """Every GeoNames city with population >= 100k, written "City, Country", resolves within 25 km (>= 97%)."""
    gaz = geo.gazetteer()
    idx = np.flatnonzero(gaz.population >= 100_000)
    assert idx.size > 5000
    texts = [f"{gaz.name[i]}, {gaz.country_name(gaz.country_code[i])}" for i in idx]
    df = geocode_many(texts)
    d = haversine_km(df.lat.to_numpy(), df.lon.to_numpy(), gaz.lat[idx], gaz.lon[idx], invalid="nan")
    share = float(np.mean(np.nan_to_num(d, nan=np.inf) <= 25.0))
    print(f"gazetteer self-test: {share:.4f} of {idx.size} within 25 km")
    assert share >= 0.97


# ---- matchers -----------------------------------------------------------------------------------------------


def test_same_country():
    assert same_country("USA", "United States")
    assert same_country("U.S.", "us")
    assert same_country("England", "United Kingdom")
    assert same_country("Holland", "Netherlands")
    assert same_country("Czech Republic", "Czechia")
    assert same_country("Ivory Coast", "Côte d'Ivoire")
    assert same_country("Lyon, France", "FR")
    assert not same_country("France", "Germany")
    assert not same_country("", "")
    assert not same_country(None, "France")


def test_same_city():
    assert same_city("Munich", "München")
    assert same_city("Bombay", "Mumbai")
    assert same_city("Peking", "Beijing", country="China")
    assert same_city("Paris", "Paris, France")
    assert not same_city("Paris, France", "Paris, Texas")
    assert same_city("Paris", "paris", country="US")
    assert same_city("Saint-Denis, France", "Paris, France", km=25)
    assert not same_city("Saint-Denis, France", "Paris, France", km=1)
    assert not same_city("France", "France, Paris")  # a country is not a city
    assert not same_city("", "Paris") and not same_city(None, None)
    assert same_city("Qwertyville", "qwertyville")  # unknown village: equal names still match


def test_globe_string_match():
    assert globe_string_match("Paris", "paris")
    assert globe_string_match("New York City", "New York City, NY")  # 13/17 = 0.76
    assert globe_string_match("United States", "United States of America") is False  # 13/24 < 0.7
    assert globe_string_match("Kyoto ", "kyoto")
    assert globe_string_match("Saint Petersburg", "St Petersburg") is False  # no containment
    assert globe_string_match("Lyon", "Lyons")  # 4/5 = 0.8
    assert not globe_string_match("York", "New York")  # 4/8 = 0.5
    assert not globe_string_match("", "Paris") and not globe_string_match(None, "Paris")


def test_globe_string_match_ratio_boundary():
    assert globe_string_match("abcdefg", "abcdefghij")  # 7/10 = 0.7 exactly
    assert not globe_string_match("abcdef", "abcdefghij")  # 0.6


# ---- metrics ------------------------------------------------------------------------------------------------


def test_geo_metrics_values():
    d = np.array([0.5, 10, 100, 500, 2000, 5000, np.nan])
    m = geo_metrics(d, country_correct=[1, 1, 1, 0, 0, 0, 0], city_correct=[1, 1, 0, 0, 0, 0, 0],
                    continent=["Europe"] * 3 + ["Asia"] * 4, n_boot=200)
    assert m["n"] == 7 and m["n_unresolved"] == 1
    assert [m[f"acc_{t}km"] for t in THRESHOLDS_KM] == pytest.approx([1 / 7, 2 / 7, 3 / 7, 4 / 7, 5 / 7])
    assert m["median_km"] == 500
    assert m["mean_km"] == pytest.approx((0.5 + 10 + 100 + 500 + 2000 + 5000 + geo.MAX_DISTANCE_KM) / 7)
    assert m["geoscore"] == pytest.approx(np.mean(np.r_[5000 * np.exp(-d[:6] / 1492.7), 0.0]))
    assert m["country_acc"] == pytest.approx(3 / 7) and m["city_name_acc"] == pytest.approx(2 / 7)
    assert m["by_continent"]["Europe"]["acc_25km"] == pytest.approx(2 / 3)
    assert m["by_continent"]["Asia"]["n"] == 4
    for k, (lo, hi) in m["ci"].items():
        assert lo <= m[k] <= hi, k
    json.dumps(m)  # plain types only


def test_geo_metrics_errors():
    with pytest.raises(ValueError):
        geo_metrics([])
    with pytest.raises(ValueError):
        geo_metrics([1.0, -2.0])
    with pytest.raises(ValueError):
        geo_metrics([1.0, 2.0], country_correct=[True])


def test_geoscore():
    assert geoscore([0.0])[0] == 5000.0
    assert geoscore([1492.7])[0] == pytest.approx(5000 / math.e)
    assert geoscore([np.nan])[0] == 0.0


def test_bootstrap_intervals_match_brute_force():
    rng = np.random.default_rng(1)
    d = rng.exponential(800, size=400)
    m = geo_metrics(d, n_boot=4000, seed=3)
    idx = rng.integers(0, d.size, size=(4000, d.size))
    brute_med = np.quantile(np.sort(d[idx], axis=1)[:, (d.size - 1) // 2], [0.025, 0.975])
    brute_acc = np.quantile((d[idx] <= 750).mean(1), [0.025, 0.975])
    assert m["ci"]["median_km"] == pytest.approx(brute_med, rel=0.06)
    assert m["ci"]["acc_750km"] == pytest.approx(brute_acc, abs=0.015)
    lo, hi = bootstrap_ci(d, np.mean, n_boot=2000, seed=0)
    se = d.std() / np.sqrt(d.size)
    assert lo == pytest.approx(d.mean() - 1.96 * se, rel=0.03) and hi == pytest.approx(d.mean() + 1.96 * se, rel=0.03)
    assert bootstrap_ci(np.ones(10)) == (1.0, 1.0)


def test_paired_bootstrap():
    rng = np.random.default_rng(0)
    a = (rng.random(500) < 0.6).astype(float)
    same = paired_bootstrap(a, a, n_boot=500)
    assert same["diff"] == 0 and same["p_value"] == 1.0
    b = np.where(rng.random(500) < 0.3, 0.0, a)  # b loses 30% of a's hits
    res = paired_bootstrap(a, b, n_boot=2000)
    assert res["diff"] > 0 and res["ci"][0] > 0 and res["p_value"] < 0.01
    with pytest.raises(ValueError):
        paired_bootstrap([1.0, 0.0], [1.0])


# ---- scoring files ----------------------------------------------------------------------------------------


@pytest.fixture()
def labels_csv(tmp_path):
    df = pd.DataFrame({
        "IMG_ID": ["a.jpg", "b.jpg", "c.jpg", "d.jpg"],
        "LAT": [48.8566, 35.6895, -33.8688, 40.7128],
        "LON": [2.3522, 139.6917, 151.2093, -74.0060],
    })
    p = tmp_path / "labels.csv"
    df.to_csv(p, index=False)
    return p


def test_score_same_file_is_perfect(labels_csv, tmp_path):
    m, rows = score_files(labels_csv, labels_csv, json_out=tmp_path / "m.json", rows_out=tmp_path / "rows.parquet")
    assert all(m[f"acc_{t}km"] == 1.0 for t in THRESHOLDS_KM)
    assert m["country_acc"] == 1.0 and m["n_unresolved"] == 0 and m["mode"] == "coords"
    assert json.loads((tmp_path / "m.json").read_text())["n"] == 4
    back = pd.read_parquet(tmp_path / "rows.parquet")
    assert {"id", "lat", "lon", "level", "matched", "distance_km"} <= set(back.columns)


def test_score_text_predictions_jsonl(labels_csv, tmp_path):
    preds = pd.DataFrame({
        "IMG_ID": ["a.jpg", "b.jpg", "c.jpg", "zzz.jpg"],  # d.jpg missing, zzz.jpg has no label
        "answer": ["<think>Haussmann facades</think><answer>country: France\ncity: Paris</answer>", "Japan",
                   "no idea at all qqq", "Berlin"],
    })
    p = tmp_path / "preds.jsonl"
    preds.to_json(p, orient="records", lines=True)
    m, rows = score_files(p, labels_csv, id_col="IMG_ID", text_col="answer", rows_out=tmp_path / "rows.csv")
    assert m["mode"] == "text" and m["n"] == 4
    assert m["n_unresolved"] == 2 and m["n_missing_predictions"] == 1 and m["n_predictions_without_label"] == 1
    assert m["acc_25km"] == 0.25 and m["country_acc"] == 0.5 and m["city_name_acc"] == 0.25
    assert {e["id"] for e in m["unresolved_examples"]} == {"c.jpg", "d.jpg"}
    got = pd.read_csv(tmp_path / "rows.csv")
    assert got.level.tolist() == ["city", "country", "none", "none"]


def test_score_yfcc_layout_and_flags(tmp_path):
    labels = pd.DataFrame({"name": ["x", "y"], "lon": [2.3522, -0.1278], "lat": [48.8566, 51.5074]})
    preds = pd.DataFrame({"name": ["y", "x"], "plat": [51.5, 51.5], "plon": [-0.12, -0.12]})
    labels.to_parquet(tmp_path / "l.parquet")
    preds.to_csv(tmp_path / "p.csv", index=False)
    m, rows = score_files(tmp_path / "p.csv", tmp_path / "l.parquet", id_col="name", lat_col="plat", lon_col="plon",
                          label_lat="lat", label_lon="lon")
    assert rows.distance_km.iloc[0] == pytest.approx(343.5, abs=2) and rows.distance_km.iloc[1] < 2
    assert m["acc_25km"] == 0.5 and m["acc_750km"] == 1.0


def test_score_bad_inputs(tmp_path, labels_csv):
    bad = pd.DataFrame({"IMG_ID": ["a", "a"], "LAT": [1, 2], "LON": [1, 2]})
    bad.to_csv(tmp_path / "dup.csv", index=False)
    with pytest.raises(ValueError, match="duplicated"):
        score_files(tmp_path / "dup.csv", labels_csv)
    inv = pd.DataFrame({"IMG_ID": ["a"], "LAT": [123.0], "LON": [1.0]})
    inv.to_csv(tmp_path / "inv.csv", index=False)
    with pytest.raises(ValueError, match="invalid coordinate"):
        score_files(inv_path := tmp_path / "inv.csv", inv_path)
    with pytest.raises(KeyError, match="nope"):
        score_files(labels_csv, labels_csv, text_col="nope")
    (tmp_path / "x.txt").write_text("hi")
    with pytest.raises(ValueError, match="unsupported"):
        score_files(tmp_path / "x.txt", labels_csv)


def test_cli_score(labels_csv, tmp_path, capsys):
    from globe.cli import main

    shuffled = pd.read_csv(labels_csv)
    shuffled["LAT"], shuffled["LON"] = shuffled.LAT.to_numpy()[::-1], shuffled.LON.to_numpy()[::-1]
    shuffled.to_csv(tmp_path / "shuf.csv", index=False)
    assert main(["score", str(tmp_path / "shuf.csv"), str(labels_csv), "--json", str(tmp_path / "o.json"),
                 "--n-boot", "100"]) == 0
    out = capsys.readouterr().out
    assert "<= 25 km" in out and "GeoScore" in out and "unresolved = 0" in out
    assert json.loads((tmp_path / "o.json").read_text())["acc_25km"] == 0.0


def test_whole_completions_use_the_answer_only():
    done = "<think>Looks like Paris, France, but the signs say</think>\n<answer>country: Japan\ncity: Kyoto</answer>"
    r = geocode(done)
    assert r.level == "city" and r.city == "Kyoto"
    assert geocode("<think>x</think><answer>35.0116, 135.7681</answer>").level == "coords"
    hedged = "<think>x</think><answer>country: France\ncountry: Spain\ncity: Lyon</answer>"
    assert geocode(hedged).country_code in ("FR", "")  # country hedged: the parser drops it, the city decides
    assert geocode("<think>x</think><answer></answer>").level == "none"


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
