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
