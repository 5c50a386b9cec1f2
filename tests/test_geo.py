"""globe.geo: distances, the named accuracy metrics, km metrics and their intervals, scoring files, `globe score`.

The geocoder itself (gazetteer, forward and reverse geocoding, the realistic answer set) is in test_geocode.py.
"""

from __future__ import annotations

import json
import math

import numpy as np
import pandas as pd
import pytest

from globe import geo
from globe.geo import (
    THRESHOLDS_KM,
    ScoreInputError,
    accuracy_flags,
    bootstrap_ci,
    distance_km,
    geo_metrics,
    geodesic_km,
    geoscore,
    globe_string_match,
    haversine_km,
    paired_bootstrap,
    same_city,
    same_country,
    score_files,
)

R = geo.EARTH_RADIUS_KM
Z95 = 1.959963984540054


# ---- distance: absolute reference values (a wrong constant or formula moves them by far more than 0.05 km) -------


def test_reference_distances_are_pinned():
    assert R == 6371.0088
    assert haversine_km(0, 0, 0, 1) == pytest.approx(111.19508, abs=0.05)  # 2*pi*6371.0088/360
    assert haversine_km(48.8566, 2.3522, 51.5074, -0.1278) == pytest.approx(343.5565, abs=0.05)  # Paris-London
    assert haversine_km(0, 0, 0, 180) == pytest.approx(20015.087, abs=0.05)
    # WGS84 (a = 6378.137 km, f = 1/298.257223563): the equatorial degree is a*pi/180; the quarter meridian is
    # the published 10,001.965729 km; a meridian degree at the equator 110.574 km
    assert geodesic_km(0, 0, 0, 1) == pytest.approx(111.31949, abs=0.05)
    assert geodesic_km(0, 0, 90, 0) == pytest.approx(10001.9657, abs=0.05)
    assert geodesic_km(0, 0, 1, 0) == pytest.approx(110.574, abs=0.05)
    assert geodesic_km(48.8566, 2.3522, 51.5074, -0.1278) == pytest.approx(343.923, abs=0.05)


def test_distance_methods_and_broadcasting():
    lat = np.array([0.0, 48.8566, np.nan])
    lon = np.array([0.0, 2.3522, 0.0])
    for method, fn in (("geodesic", geodesic_km), ("haversine", haversine_km)):
        d = distance_km(lat, lon, lat, lon + 1, method=method, invalid="nan")
        assert d.shape == (3,) and np.isnan(d[2]) and d[0] == pytest.approx(fn(0, 0, 0, 1))
        assert isinstance(distance_km(1, 2, 3, 4, method=method), float)
    assert geo.DEFAULT_DISTANCE == "geodesic"
    with pytest.raises(ValueError, match="unknown distance"):
        distance_km(0, 0, 0, 1, method="manhattan")
    # the two agree within the ellipsoid's flattening (< 0.56%) everywhere
    rng = np.random.default_rng(0)
    a = rng.uniform(-89, 89, (2, 5000))
    b = rng.uniform(-179, 179, (2, 5000))
    g, h = geodesic_km(a[0], b[0], a[1], b[1]), haversine_km(a[0], b[0], a[1], b[1])
    assert np.all(np.abs(g - h) <= 0.0056 * h + 1e-6)


def test_antipodes_poles_dateline():
    assert haversine_km(0, 0, 0, 180) == pytest.approx(math.pi * R, rel=1e-12)
    assert haversine_km(90, 0, -90, 0) == pytest.approx(math.pi * R, rel=1e-12)
    assert haversine_km(40, -74, -40, 106) == pytest.approx(math.pi * R, abs=1e-3)
    assert haversine_km(90, 0, 90, 123) == pytest.approx(0.0, abs=1e-9)  # every longitude is the pole
    assert haversine_km(0, 179.5, 0, -179.5) == pytest.approx(2 * math.pi * R / 360, rel=1e-9)  # across the dateline
    assert geodesic_km(10, 179.9, 10, -179.9) == pytest.approx(2 * geodesic_km(10, 0, 10, 0.1), rel=1e-6)
    assert haversine_km(10, 180, 10, -180) == pytest.approx(0.0, abs=1e-9)


@pytest.mark.parametrize("lat,lon", [(91, 0), (-90.5, 0), (float("nan"), 0), (0, float("inf")), (10, 190),
                                     (0, -180.01), (48.85, 400)])
def test_invalid_coordinates_are_never_wrapped(lat, lon):
    for fn in (haversine_km, geodesic_km):
        with pytest.raises(ValueError, match="invalid coordinate"):
            fn(lat, lon, 0, 0)
        assert math.isnan(fn(lat, lon, 0, 0, invalid="nan"))


# ---- the named accuracy metrics -----------------------------------------------------------------------------


def test_accuracy_flags_definitions():
    gaz = geo.gazetteer()
    mumbai = int(gaz.geonameid[gaz.places_named("mumbai")[np.argmax(gaz.population[gaz.places_named("mumbai")])]])
    f = accuracy_flags(
        distance_km=[3.0, 3.0, 10.0, 40.0, 12.0, np.nan, 5.0],
        level=["city", "city", "coords", "city", "admin", "none", "landmark"],
        pred_country_code=["IN", "IN", "FR", "IN", "IN", "", "US"],
        true_country_code=["IN", "IN", "DE", "IN", "IN", "IN", "CA"],
        pred_geonameid=[mumbai, -1, 1, 2, -1, -1, -1],
        true_geonameid=[mumbai, mumbai, 1, mumbai, mumbai, mumbai, 3],
        pred_city=[None, "Bombay", "x", "Pune", None, None, None],
    )
    assert f["country_acc"].tolist() == [True, True, False, True, True, False, False]
    # name match needs the country: row 2 has the right id but the wrong country
    assert f["city_name_acc"].tolist() == [True, True, False, False, False, False, False]
    # a point within 25 km, any country; an admin answer 12 km away is not a point
    assert f["city_25km_acc"].tolist() == [True, True, True, False, False, False, True]
    assert "city_string_acc" not in f
    g = accuracy_flags(distance_km=[1.0, 1.0], level=["city", "city"], pred_country_code=["FR", "FR"],
                       true_country_code=["FR", "FR"], pred_geonameid=[-1, -1], true_geonameid=[-1, -1],
                       pred_city=["Lyons", "Paris"], true_city=["Lyon", "Lyon"], pred_country=["france", "Spain"],
                       true_country=["France", "France"], city_km=0.5)
    assert g["city_string_acc"].tolist() == [True, False] and g["country_string_acc"].tolist() == [True, False]
    assert "city_0.5km_acc" in g and not g["city_0.5km_acc"].any()
    with pytest.raises(ValueError, match="level"):
        accuracy_flags(distance_km=[1.0], level=[], pred_country_code=[""], true_country_code=[""],
                       pred_geonameid=[-1], true_geonameid=[-1])


def test_geo_metrics_values():
    d = np.array([0.5, 10, 100, 500, 2000, 5000, np.nan])
    m = geo_metrics(d, correct={"country_acc": [1, 1, 1, 0, 0, 0, 0], "city_name_acc": [1, 1, 0, 0, 0, 0, 0]},
                    continent=["Europe"] * 3 + ["Asia"] * 4, n_boot=200)
    assert m["n"] == 7 and m["n_unresolved"] == 1
    assert [m[f"acc_{t}km"] for t in THRESHOLDS_KM] == pytest.approx([1 / 7, 2 / 7, 3 / 7, 4 / 7, 5 / 7])
    assert m["median_km"] == 500
    assert m["mean_km"] == pytest.approx((0.5 + 10 + 100 + 500 + 2000 + 5000 + geo.MAX_DISTANCE_KM) / 7)
    assert m["geoscore"] == pytest.approx(np.mean(np.r_[5000 * np.exp(-d[:6] / 1492.7), 0.0]))
    assert m["country_acc"] == pytest.approx(3 / 7) and m["city_name_acc"] == pytest.approx(2 / 7)
    assert "city_acc" not in m
    assert m["by_continent"]["Europe"]["acc_25km"] == pytest.approx(2 / 3)
    assert m["by_continent"]["Asia"]["n"] == 4 and m["by_continent"]["Europe"]["city_name_acc"] == pytest.approx(2 / 3)
    for k, (lo, hi) in m["ci"].items():
        assert lo <= m[k] <= hi, k
    json.dumps(m)  # plain types only


def test_geo_metrics_errors():
    with pytest.raises(ValueError):
        geo_metrics([])
    with pytest.raises(ValueError):
        geo_metrics([1.0, -2.0])
    with pytest.raises(ValueError, match="country_acc"):
        geo_metrics([1.0, 2.0], correct={"country_acc": [True]})
    with pytest.raises(ValueError, match="continent"):
        geo_metrics([1.0, 2.0], continent=["Asia"])


def test_geoscore():
    assert geoscore([0.0])[0] == 5000.0
    assert geoscore([1492.7])[0] == pytest.approx(5000 / math.e)
    assert geoscore([np.nan])[0] == 0.0


# ---- intervals: widths against the analytic standard error and quantiles of the same resamples -----------------


def test_proportion_interval_width_is_95_percent():
    rng = np.random.default_rng(1)
    d = rng.exponential(800, size=10_000)
    m = geo_metrics(d, n_boot=4000, seed=3)
    for t in (25, 750, 2500):
        p = float(np.mean(d <= t))
        se = math.sqrt(p * (1 - p) / d.size)
        lo, hi = m["ci"][f"acc_{t}km"]
        assert (hi - lo) == pytest.approx(2 * Z95 * se, rel=0.06), t  # a 90% interval is 16% narrower
        assert lo < p < hi


def test_bootstrap_ci_is_the_quantiles_of_its_resamples():
    rng = np.random.default_rng(2)
    v = rng.exponential(800, size=400)
    lo, hi = bootstrap_ci(v, np.mean, n_boot=2000, seed=7)
    idx = np.random.default_rng(7).integers(0, v.size, size=(2000, v.size))  # the same resamples
    reps = v[idx].mean(axis=1)
    assert (lo, hi) == pytest.approx(tuple(np.quantile(reps, [0.025, 0.975])), rel=1e-12)
    se = v.std() / math.sqrt(v.size)
    assert hi - lo == pytest.approx(2 * Z95 * se, rel=0.06)
    assert bootstrap_ci(np.ones(10)) == (1.0, 1.0)
    lo90, hi90 = bootstrap_ci(v, np.mean, n_boot=2000, seed=7, alpha=0.10)
    assert (hi90 - lo90) / (hi - lo) == pytest.approx(1.6449 / Z95, rel=0.08)


def test_median_and_mean_intervals_match_brute_force():
    rng = np.random.default_rng(1)
    d = rng.exponential(800, size=400)
    m = geo_metrics(d, n_boot=4000, seed=3)
    idx = rng.integers(0, d.size, size=(4000, d.size))
    brute_med = np.quantile(np.sort(d[idx], axis=1)[:, (d.size - 1) // 2], [0.025, 0.975])
    lo, hi = m["ci"]["median_km"]
    assert (hi - lo) == pytest.approx(brute_med[1] - brute_med[0], rel=0.08)
    assert (lo, hi) == pytest.approx(tuple(brute_med), rel=0.04)
    lo, hi = m["ci"]["mean_km"]
    assert (hi - lo) == pytest.approx(2 * Z95 * d.std() / math.sqrt(d.size), rel=0.06)


def test_paired_bootstrap():
    rng = np.random.default_rng(0)
    a = (rng.random(500) < 0.6).astype(float)
    same = paired_bootstrap(a, a, n_boot=500)
    assert same["diff"] == 0 and same["p_value"] == 1.0
    b = np.where(rng.random(500) < 0.3, 0.0, a)  # b loses 30% of a's hits
    res = paired_bootstrap(a, b, n_boot=2000, seed=5)
    assert res["diff"] > 0 and res["ci"][0] > 0 and res["p_value"] < 0.01
    idx = np.random.default_rng(5).integers(0, a.size, size=(2000, a.size))  # the same resamples
    reps = a[idx].mean(1) - b[idx].mean(1)
    assert res["ci"] == pytest.approx(list(np.quantile(reps, [0.025, 0.975])), rel=1e-12)
    with pytest.raises(ValueError):
        paired_bootstrap([1.0, 0.0], [1.0])


# ---- matchers ---------------------------------------------------------------------------------------------------


def test_same_country():
    assert same_country("USA", "United States")
    assert same_country("U.S.", "us")
    assert same_country("England", "United Kingdom")
    assert same_country("Holland", "Netherlands")
    assert same_country("Czech Republic", "Czechia")
    assert same_country("Ivory Coast", "Côte d'Ivoire")
    assert same_country("Deutschland", "Germany") and same_country("日本", "Japan")
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
    assert same_city("Suvarnabhumi Airport", "Bangkok", km=40)  # a landmark is a point


def test_globe_string_match():
    assert globe_string_match("Paris", "paris")
    assert globe_string_match("New York City", "New York City, NY")  # 13/17 = 0.76
    assert globe_string_match("United States", "United States of America") is False  # 13/24 < 0.7
    assert globe_string_match("Kyoto ", "kyoto")
    assert globe_string_match("Saint Petersburg", "St Petersburg") is False  # no containment
    assert globe_string_match("Lyon", "Lyons")  # 4/5 = 0.8
    assert not globe_string_match("York", "New York")  # 4/8 = 0.5
    assert not globe_string_match("", "Paris") and not globe_string_match(None, "Paris")
    assert globe_string_match("abcdefg", "abcdefghij")  # 7/10 = 0.7 exactly
    assert not globe_string_match("abcdef", "abcdefghij")  # 0.6


# ---- scoring files ----------------------------------------------------------------------------------------------


@pytest.fixture()
def labels_csv(tmp_path):
    df = pd.DataFrame({
        "IMG_ID": ["a.jpg", "b.jpg", "c.jpg", "d.jpg"],
        "LAT": [48.8566, 35.6895, -33.8688, 40.7128],
        "LON": [2.3522, 139.6917, 151.2093, -74.0060],
        "country": ["France", "Japan", "Australia", "United States"],
        "city": ["Paris", "Tokyo", "Sydney", "New York"],
    })
    p = tmp_path / "labels.csv"
    df.to_csv(p, index=False)
    return p


def test_score_same_file_is_perfect(labels_csv, tmp_path):
    m, _rows = score_files(labels_csv, labels_csv, json_out=tmp_path / "m.json", rows_out=tmp_path / "rows.parquet")
    assert all(m[f"acc_{t}km"] == 1.0 for t in THRESHOLDS_KM)
    assert m["country_acc"] == 1.0 and m["city_name_acc"] == 1.0 and m["city_25km_acc"] == 1.0
    assert m["n_unresolved"] == 0 and m["mode"] == "coords" and m["distance"] == "geodesic"
    assert json.loads((tmp_path / "m.json").read_text())["n"] == 4
    back = pd.read_parquet(tmp_path / "rows.parquet")
    assert {"id", "lat", "lon", "level", "matched", "entry", "distance_km", "country_acc", "city_name_acc",
            "city_25km_acc"} <= set(back.columns)


def test_score_text_predictions_jsonl(labels_csv, tmp_path):
    preds = pd.DataFrame({
        "IMG_ID": ["a.jpg", "b.jpg", "c.jpg", "zzz.jpg"],  # d.jpg missing, zzz.jpg has no label
        "answer": ["<think>Haussmann facades</think><answer>country: France\ncity: Paris</answer>", "Japan",
                   "no idea at all qqq", "Berlin"],
    })
    p = tmp_path / "preds.jsonl"
    preds.to_json(p, orient="records", lines=True)
    m, _rows = score_files(p, labels_csv, id_col="IMG_ID", text_col="answer", rows_out=tmp_path / "rows.csv",
                          n_boot=100)
    assert m["mode"] == "text" and m["n"] == 4
    assert m["n_unresolved"] == 2 and m["n_missing_predictions"] == 1 and m["n_predictions_without_label"] == 1
    assert m["acc_25km"] == 0.25 and m["country_acc"] == 0.5 and m["city_name_acc"] == 0.25
    assert m["city_25km_acc"] == 0.25
    # the labels name country and city, the predictions (through the parser) name them: the official string rule
    assert m["country_string_acc"] == 0.25 and m["city_string_acc"] == 0.25
    assert {e["id"]: e["reason"] for e in m["unresolved_examples"]} == {"c.jpg": "not resolved",
                                                                        "d.jpg": "no prediction"}
    assert m["levels"] == {"city": 1, "country": 1, "none": 2}
    assert m["level_examples"]["country"][0]["id"] == "b.jpg"
    got = pd.read_csv(tmp_path / "rows.csv")
    assert got.level.tolist() == ["city", "country", "none", "none"]


def test_score_haversine_option_and_yfcc_layout(tmp_path):
    labels = pd.DataFrame({"name": ["x", "y"], "lon": [2.3522, -0.1278], "lat": [48.8566, 51.5074]})
    preds = pd.DataFrame({"name": ["y", "x"], "plat": [51.5, 51.5], "plon": [-0.12, -0.12]})
    labels.to_parquet(tmp_path / "l.parquet")
    preds.to_csv(tmp_path / "p.csv", index=False)
    kw = {"id_col": "name", "lat_col": "plat", "lon_col": "plon", "label_lat": "lat", "label_lon": "lon", "n_boot": 50}
    _, rows_g = score_files(tmp_path / "p.csv", tmp_path / "l.parquet", **kw)
    m, rows_h = score_files(tmp_path / "p.csv", tmp_path / "l.parquet", distance="haversine", **kw)
    assert rows_h.distance_km.iloc[0] == pytest.approx(haversine_km(51.5, -0.12, 48.8566, 2.3522))
    assert rows_g.distance_km.iloc[0] == pytest.approx(geodesic_km(51.5, -0.12, 48.8566, 2.3522))
    assert m["acc_25km"] == 0.5 and m["acc_750km"] == 1.0 and m["distance"] == "haversine"


def test_prediction_longitude_out_of_range_is_unresolved_and_reported(labels_csv, tmp_path):
    preds = pd.DataFrame({"IMG_ID": ["a.jpg", "b.jpg", "c.jpg", "d.jpg"], "lat": [48.8566, 35.6895, 95.0, "x"],
                          "lon": [402.3522, 139.6917, 151.2, 2.0]})
    preds.to_csv(tmp_path / "p.csv", index=False)
    m, rows = score_files(tmp_path / "p.csv", labels_csv, n_boot=50)
    assert m["n_invalid_predictions"] == 3 and m["n_unresolved"] == 3  # 400 is not wrapped to 40
    assert np.isnan(rows.distance_km.iloc[0]) and rows.distance_km.iloc[1] < 1
    reasons = {e["id"]: e["reason"] for e in m["unresolved_examples"]}
    assert reasons == {"a.jpg": "invalid coordinates", "c.jpg": "invalid coordinates", "d.jpg": "invalid coordinates"}


# every user mistake: one ScoreInputError line (and exit code 2 from `globe score`, below)
BAD_INPUTS = {
    "missing file": (None, "no such file"),
    "empty file": ("", "empty"),
    "header only": ("IMG_ID,LAT,LON\n", "no rows"),
    "no id column": ("x,LAT,LON\na,1,2\n", "no id column"),
    "duplicate ids": ("IMG_ID,LAT,LON\na,1,2\na,3,4\n", "duplicated id"),
    "empty id": ("IMG_ID,LAT,LON\na,1,2\n,3,4\n", "empty id"),
    "non-UTF-8": ("IMG_ID,LAT,LON\nM\xfcnchen,48.1,11.6\n".encode("latin-1"), "not UTF-8"),
    "semicolons": ("IMG_ID;LAT;LON\na;1;2\n", "looks ';'-separated"),
    "tabs in .csv": ("IMG_ID\tLAT\tLON\na\t1\t2\n", "looks tab-separated"),
    "latitude out of range": ("IMG_ID,LAT,LON\na,123,1\n", "invalid coordinates"),
    "longitude out of range": ("IMG_ID,LAT,LON\na,40,400\n", "invalid coordinates"),
    "non-numeric coordinate": ("IMG_ID,LAT,LON\na,north,1\n", "invalid coordinates"),
    "missing coordinate": ("IMG_ID,LAT,LON\na,,1\n", "invalid coordinates"),
    "no latitude column": ("IMG_ID,where\na,Paris\n", "no latitude column"),
    "bad JSON lines": ("{not json", "cannot be read"),
}


def _write(tmp_path, name: str, content) -> str:
    suffix = ".jsonl" if name == "bad JSON lines" else ".csv"
    p = tmp_path / (name.replace(" ", "_") + suffix)
    if content is not None:
        p.write_bytes(content if isinstance(content, bytes) else content.encode())
    return str(p)


@pytest.mark.parametrize("name", list(BAD_INPUTS))
def test_bad_labels_raise_one_clear_error(name, tmp_path, labels_csv):
    content, message = BAD_INPUTS[name]
    path = _write(tmp_path, name, content)
    with pytest.raises(ScoreInputError, match=message) as e:
        score_files(labels_csv, path)
    assert "\n" not in str(e.value) and path.split("/")[-1] in str(e.value)


@pytest.mark.parametrize("name", ["missing file", "empty file", "header only", "duplicate ids", "non-UTF-8",
                                  "semicolons"])
def test_cli_bad_input_exits_2_without_traceback(name, tmp_path, labels_csv, capsys):
    from globe.cli import main

    content, message = BAD_INPUTS[name]
    assert main(["score", _write(tmp_path, name, content), str(labels_csv)]) == 2
    err = capsys.readouterr().err
    assert err.startswith("globe score: ") and message in err and "Traceback" not in err and err.count("\n") == 1


def test_score_argument_errors(labels_csv, tmp_path):
    with pytest.raises(ScoreInputError, match="nope"):
        score_files(labels_csv, labels_csv, text_col="nope")
    (tmp_path / "x.txt2").write_text("hi")
    with pytest.raises(ScoreInputError, match="unsupported"):
        score_files(tmp_path / "x.txt2", labels_csv)
    with pytest.raises(ScoreInputError, match="n_boot"):
        score_files(labels_csv, labels_csv, n_boot=0)
    with pytest.raises(ScoreInputError, match="distance"):
        score_files(labels_csv, labels_csv, distance="flat")
    semi, semi_labels = tmp_path / "semi.csv", tmp_path / "semi_labels.csv"
    semi.write_text("IMG_ID;LAT;LON\na.jpg;48.8566;2.3522\n")
    pd.read_csv(labels_csv).to_csv(semi_labels, sep=";", index=False)
    m, _ = score_files(semi, semi_labels, sep=";", n_boot=20)  # the separator the error message suggests
    assert m["n_missing_predictions"] == 3 and m["acc_1km"] == 0.25


def test_cli_score(labels_csv, tmp_path, capsys):
    from globe.cli import main

    shuffled = pd.read_csv(labels_csv)
    shuffled["LAT"], shuffled["LON"] = shuffled.LAT.to_numpy()[::-1], shuffled.LON.to_numpy()[::-1]
    shuffled.to_csv(tmp_path / "shuf.csv", index=False)
    assert main(["score", str(tmp_path / "shuf.csv"), str(labels_csv), "--json", str(tmp_path / "o.json"),
                 "--n-boot", "100", "--distance", "haversine"]) == 0
    out = capsys.readouterr().out
    for name in ("<= 25 km", "GeoScore", "country_acc", "city_name_acc", "city_25km_acc", "unresolved = 0",
                 "distance: haversine"):
        assert name in out
    got = json.loads((tmp_path / "o.json").read_text())
    assert got["acc_25km"] == 0.0 and got["distance"] == "haversine" and "city_25km_acc" in got["ci"]


def test_cli_prints_levels_and_fallback_examples(labels_csv, tmp_path, capsys):
    from globe.cli import main

    preds = pd.DataFrame({"IMG_ID": ["a.jpg", "b.jpg", "c.jpg", "d.jpg"],
                          "answer": ["Eiffel Tower, Paris", "Japan", "Sydney Opera House", "Lake Tahoe"]})
    preds.to_csv(tmp_path / "p.csv", index=False)
    assert main(["score", str(tmp_path / "p.csv"), str(labels_csv), "--n-boot", "20"]) == 0
    out = capsys.readouterr().out
    assert "resolved as: city 1, country 1, feature 1, landmark 1" in out
    assert "country: b.jpg: 'Japan' -> Japan" in out and "feature: d.jpg: 'Lake Tahoe' -> Lake Tahoe (lake)" in out
