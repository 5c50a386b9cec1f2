"""Every figure is drawn, is not trivial, and the interactive map loads nothing from outside."""

from __future__ import annotations

import json
import re

import numpy as np
import pandas as pd
import pytest
from PIL import Image

from globe import plots


@pytest.fixture(scope="module")
def pred() -> pd.DataFrame:
    rng = np.random.default_rng(0)
    n = 40
    true_lat, true_lon = rng.uniform(-40, 60, n), rng.uniform(-120, 140, n)
    pred_lat, pred_lon = true_lat + rng.normal(0, 5, n), true_lon + rng.normal(0, 5, n)
    pred_lat[:3] = np.nan  # unresolved answers
    pred_lon[:3] = np.nan
    from globe.geo import haversine_km

    d = np.full(n, np.nan)
    ok = np.isfinite(pred_lat)
    d[ok] = haversine_km(true_lat[ok], true_lon[ok], pred_lat[ok], pred_lon[ok])
    return pd.DataFrame({
        "id": [f"img{i}" for i in range(n)], "true_lat": true_lat, "true_lon": true_lon, "pred_lat": pred_lat,
        "pred_lon": pred_lon, "distance_km": d, "continent": rng.choice(["Europe", "Asia", "North America"], n),
        "country_code": rng.choice(["FR", "JP", "US", "NO"], n), "country": "France", "city": "Lyon",
        "think": "A red roof and a church tower near a river.", "localizability": rng.uniform(0, 1, n)})


def _png_ok(path, min_bytes=15_000, min_side=400):
    assert path.is_file() and path.stat().st_size > min_bytes, f"{path} missing or tiny"
    with Image.open(path) as im:
        assert min(im.size) >= min_side, f"{path}: {im.size}"
        # Not a blank canvas: several distinct colours.
        assert len(im.convert("RGB").getcolors(1 << 20) or []) > 20


def test_maps(pred, tmp_path):
    _png_ok(plots.world_map(pred, tmp_path / "map.png"))
    _png_ok(plots.country_choropleth(pred, tmp_path / "choropleth.png"))
    _png_ok(plots.coverage_map(pred.rename(columns={"true_lat": "lat", "true_lon": "lon"}), tmp_path / "cov.png"))


def test_countries_have_iso2_for_france_and_norway():
    c = plots.countries()
    assert set(c.loc[c["name"].isin(["France", "Norway"]), "iso_a2"]) == {"FR", "NO"}


def test_interactive_map_is_self_contained(pred, tmp_path):
    path = plots.interactive_map(pred, tmp_path / "map.html")
    html = path.read_text(encoding="utf-8")
    assert path.stat().st_size > 1_000_000  # plotly.js inlined
    assert not re.search(r"<script[^>]+src=", html), "external script"
    assert not re.search(r"<link[^>]+href=", html), "external stylesheet"
    # The figure itself (data, layout, config) names no URL and uses no geo trace (whose base map would load a
    # topojson file from a CDN when the page is opened).
    call = html[html.index("Plotly.newPlot("):]
    figure_json = call[:call.index("</script>")]
    assert "http" not in figure_json and "topojson" not in figure_json
    traces = json.loads(re.search(r'\[\{"(?:hoverinfo|line|marker|mode|name|x)".*?\}\]', figure_json).group(0))
    assert {t["type"] for t in traces} == {"scatter"}
    assert "img5" in figure_json and "predicted: Lyon, France" in figure_json


def test_error_cdf_and_bars(pred, tmp_path):
    _png_ok(plots.error_cdf({"tiny": pred, "other": pred.assign(distance_km=pred["distance_km"] * 3)}, tmp_path / "cdf.png"))
    rows = {"ours": {f"acc_{t}km": v for t, v in zip(plots.THRESHOLDS_KM, [1, 5, 20, 40, 70])},
            "GLOBE-7B": dict(zip([f"acc_{t}km" for t in plots.THRESHOLDS_KM], [9.84, 40.18, 56.19, 71.45, 82.38]))}
    _png_ok(plots.accuracy_bars(rows, tmp_path / "bars.png", published={"GLOBE-7B"}))
    _png_ok(plots.continent_accuracy({"tiny": pred}, tmp_path / "cont.png"))


def test_training_curves_with_and_without_logs(tmp_path):
    steps = np.arange(1, 11)
    sft = pd.DataFrame({"step": steps, "loss": 5 / steps, "eval_loss": [np.nan] * 9 + [1.0]})
    grpo = pd.DataFrame({"step": steps, "reward": steps / 10, "rewards/accuracy/mean": steps / 20,
                         "rewards/format/mean": steps / 10, "kl": steps * 1e-3, "completion_length": 50 + steps, "loss": 0.1})
    _png_ok(plots.training_curves(tmp_path / "curves.png", sft_log=sft, grpo_log=grpo))
    # A stage that did not run: the figure still draws, saying so, instead of failing.
    _png_ok(plots.training_curves(tmp_path / "empty.png", sft_log=None, grpo_log=pd.DataFrame(columns=["step"])),
            min_bytes=5_000)


def test_localizability_plot(pred, tmp_path):
    _png_ok(plots.localizability_plot(pred, tmp_path / "loc.png"))
    _png_ok(plots.localizability_plot(pred.drop(columns="localizability"), tmp_path / "loc_empty.png"), min_bytes=5_000)


def test_gallery_highlights_entities(tmp_path):
    img = Image.new("RGB", (64, 48), (200, 30, 30))
    rows = [{"id": "a", "image": img, "think": "A red Church beside the church square.", "entities": ["church"],
             "answer": "France, Lyon", "distance_km": 12.0},
            {"id": "b", "image": img, "think": "", "entities": [], "answer": None, "distance_km": float("nan")}]
    _png_ok(plots.reasoning_gallery(rows, tmp_path / "gallery.png"), min_side=300)
    html = (tmp_path / "gallery.html").read_text(encoding="utf-8")
    assert "<mark>Church</mark>" in html and "<mark>church</mark>" in html
    assert plots.highlight("Church and church", ["church"]) == "[Church] and [church]"


def test_gallery_text_is_clean_and_shows_the_truth_and_entities(tmp_path):
    """What the figures say: no replacement glyph from a cut UTF-8 sequence, the true place, the verified entities."""
    img = Image.new("RGB", (64, 48), (30, 30, 200))
    rows = [{"id": "a", "image": img, "think": "Signs in\ufffd Portuguese\x07 near a tram.", "entities": ["tram"],
             "answer": "Portugal, Lisbon\ufffd", "truth": "Lisbon, Portugal (38.72, -9.14)", "distance_km": 3.0}]
    plots.reasoning_gallery(rows, tmp_path / "g.png")
    html = (tmp_path / "g.html").read_text(encoding="utf-8")
    assert "\ufffd" not in html and "\x07" not in html and "Signs in Portuguese" in html
    assert "<b>verified entities:</b> <mark>tram</mark>" in html and "Lisbon, Portugal (38.72, -9.14)" in html
    assert plots.clean_text("in\ufffd\udc80x") == "inx"
    pred = pd.DataFrame({"id": ["a"], "think": ["t"], "city": ["Lisbon"], "country": ["Portugal"],
                         "true_city": ["Porto"], "true_country": ["Portugal"], "true_lat": [41.15], "true_lon": [-8.61],
                         "distance_km": [274.0]})
    [row] = plots.gallery_rows(pred, None, k=1)
    assert row["truth"] == "Porto, Portugal (41.15, -8.61)" and row["answer"] == "Lisbon, Portugal"


def test_world_map_median_is_the_tables_median(pred):
    from globe.geo import MAX_DISTANCE_KM

    d = pred["distance_km"].to_numpy(float)
    assert plots.median_error_km(pred) == pytest.approx(np.median(np.where(np.isfinite(d), d, MAX_DISTANCE_KM)))
    assert plots.median_error_km(pred) != pytest.approx(np.nanmedian(d))  # unresolved answers count


def test_accuracy_bars_colour_kinds_apart_and_say_why_no_published_row(tmp_path, monkeypatch):
    seen = {}
    real_bar = plots._plt().Axes.bar

    def bar(ax, x, h, w, label=None, color=None, **kw):
        seen[label] = color
        return real_bar(ax, x, h, w, label=label, color=color, **kw)

    monkeypatch.setattr(plots._plt().Axes, "bar", bar)
    rows = {n: {f"acc_{t}km": 10.0 for t in plots.THRESHOLDS_KM}
            for n in ("grpo [ours]", "sft [ours]", "medoid [baseline]", "top_city [baseline]")}
    _png_ok(plots.accuracy_bars(rows, tmp_path / "b.png", note="No published figures for this benchmark."),
            min_bytes=5_000)
    blue = lambda c: c[2] > c[0] and c[2] > c[1]  # noqa: E731
    grey = lambda c: abs(c[0] - c[1]) < 1e-6 and abs(c[1] - c[2]) < 1e-6  # noqa: E731
    assert blue(seen["grpo [ours]"]) and blue(seen["sft [ours]"]) and seen["grpo [ours]"] != seen["sft [ours]"]
    assert grey(seen["medoid [baseline]"]) and grey(seen["top_city [baseline]"])


def test_interactive_map_is_the_same_file_on_a_rerun(pred, tmp_path):
    one = plots.interactive_map(pred, tmp_path / "a" / "map.html").read_bytes()
    assert plots.interactive_map(pred, tmp_path / "b" / "map.html").read_bytes() == one


def test_interactive_map_keeps_the_world_undistorted(pred, tmp_path):
    html = plots.interactive_map(pred, tmp_path / "m.html").read_text(encoding="utf-8")
    layout = html[html.index('"layout":'):]
    assert '"range":[-180,180]' in layout.replace(" ", "") and '"constrain":"domain"' in layout.replace(" ", "")
    assert '"scaleanchor":"x"' in layout.replace(" ", "")
