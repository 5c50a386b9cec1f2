"""Figures for the paper: maps, error CDFs, accuracy bars, training curves, localizability, a reasoning gallery.

Every function takes plain DataFrames (or dicts), draws one figure, saves it (PNG; HTML where interactive) and returns
the path. Maps are drawn from the committed Natural Earth countries (globe/assets/naturalearth), so nothing is fetched
at run time or at view time: the interactive map draws country outlines itself instead of using plotly's geo base map,
whose topojson comes from a CDN when the page is opened.

Prediction frames use the columns `globe.evaluate` writes: id, true_lat, true_lon, pred_lat, pred_lon, distance_km
(NaN when unresolved), continent, country_code, and optionally think, country, city, localizability.
"""

from __future__ import annotations

import logging
import math
import textwrap
from collections.abc import Mapping
from functools import lru_cache
from pathlib import Path
from typing import Any

import numpy as np

from globe.geo.distance import MAX_DISTANCE_KM
from globe.geo.metrics import THRESHOLD_NAMES, THRESHOLDS_KM

log = logging.getLogger(__name__)

NATURAL_EARTH = Path(__file__).parent / "assets" / "naturalearth" / "naturalearth_lowres.shp"
DPI = 150


def _plt():
    import matplotlib

    matplotlib.use("Agg")  # files, not windows; notebooks display the saved PNGs
    import matplotlib.pyplot as plt

    return plt


def _save(fig, path: str | Path) -> Path:
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path, dpi=DPI, bbox_inches="tight")
    _plt().close(fig)
    return path


@lru_cache(maxsize=1)
def countries():
    """Natural Earth 1:110m countries as a GeoDataFrame, with an `iso_a2` column."""
    import geopandas as gpd
    import pycountry

    gdf = gpd.read_file(NATURAL_EARTH)
    # Natural Earth's lowres layer leaves France and Norway without ISO codes.
    gdf.loc[gdf["name"] == "France", "iso_a3"] = "FRA"
    gdf.loc[gdf["name"] == "Norway", "iso_a3"] = "NOR"

    def a2(a3: str) -> str | None:
        c = pycountry.countries.get(alpha_3=a3)
        return c.alpha_2 if c else None

    gdf["iso_a2"] = [a2(v) for v in gdf["iso_a3"]]
    return gdf


def _basemap(ax, facecolor: str = "#eeeeee", edgecolor: str = "#999999") -> None:
    countries().plot(ax=ax, color=facecolor, edgecolor=edgecolor, linewidth=0.3)
    ax.set_xlim(-180, 180)
    ax.set_ylim(-60, 85)
    ax.set_xlabel("longitude (°)")
    ax.set_ylabel("latitude (°)")
    ax.set_aspect("equal")


def _resolved(df):
    return df[np.isfinite(df["pred_lat"].astype(float)) & np.isfinite(df["pred_lon"].astype(float))]


def coverage_map(df, path: str | Path, *, lat: str = "lat", lon: str = "lon", hue: str | None = None,
                 title: str = "Photo locations") -> Path:
    """Where the photos are: one dot each on the world map, coloured by `hue` (e.g. the split)."""
    plt = _plt()
    fig, ax = plt.subplots(figsize=(11, 5.2))
    _basemap(ax)
    if hue and hue in df:
        # Largest group first so that the smaller ones (say, the test split) are drawn on top and stay visible.
        groups = sorted(df.groupby(hue), key=lambda g: -len(g[1]))
        for z, ((name, group), color) in enumerate(zip(groups, plt.cm.tab10.colors)):
            ax.scatter(group[lon], group[lat], s=14, color=color, edgecolor="white", linewidth=0.4,
                       label=f"{name} ({len(group)})", zorder=3 + z)
        ax.legend(loc="lower left", title=hue)
    else:
        ax.scatter(df[lon], df[lat], s=12, color="tab:blue", label=f"photos ({len(df)})", zorder=3)
        ax.legend(loc="lower left")
    ax.set_title(title)
    return _save(fig, path)


def world_map(pred, path: str | Path, *, title: str = "Predictions and truths") -> Path:
    """Truths and predictions joined by error lines (unresolved answers are counted in the legend)."""
    plt = _plt()
    fig, ax = plt.subplots(figsize=(11, 5.2))
    _basemap(ax)
    ok = _resolved(pred)
    segs = np.stack([ok[["true_lon", "true_lat"]].to_numpy(float), ok[["pred_lon", "pred_lat"]].to_numpy(float)], axis=1)
    from matplotlib.collections import LineCollection

    ax.add_collection(LineCollection(segs, colors="tab:red", alpha=0.35, linewidths=0.7, label="error", zorder=2))
    ax.scatter(pred["true_lon"], pred["true_lat"], s=14, color="tab:green", label=f"truth ({len(pred)})", zorder=3)
    ax.scatter(ok["pred_lon"], ok["pred_lat"], s=14, marker="x", color="tab:red",
               label=f"prediction ({len(ok)} resolved, {len(pred) - len(ok)} unresolved)", zorder=4)
    ax.legend(loc="lower left")
    ax.set_title(f"{title} — median error {median_error_km(pred):,.0f} km (unresolved answers at the worst "
                 f"distance, {MAX_DISTANCE_KM:,.0f} km, as in the tables)")
    return _save(fig, path)


def median_error_km(pred) -> float:
    """The median error the tables report: over every photo, an unresolved answer at the worst distance."""
    d = pred["distance_km"].to_numpy(float)
    return float(np.median(np.where(np.isfinite(d), d, MAX_DISTANCE_KM))) if len(d) else float("nan")


def country_choropleth(pred, path: str | Path, *, threshold_km: float = 750, min_photos: int = 1,
                       title: str | None = None) -> Path:
    """Per-country accuracy (share of a country's photos predicted within `threshold_km`) as a choropleth."""
    plt = _plt()
    df = pred.assign(hit=(pred["distance_km"].fillna(np.inf) <= threshold_km).astype(float))
    per = df.groupby("country_code").agg(accuracy=("hit", "mean"), photos=("hit", "size")).reset_index()
    per = per[per["photos"] >= min_photos]
    world = countries().merge(per, left_on="iso_a2", right_on="country_code", how="left")
    fig, ax = plt.subplots(figsize=(11, 5.2))
    world.plot(ax=ax, color="#f2f2f2", edgecolor="#aaaaaa", linewidth=0.3)
    has = world[world["accuracy"].notna()]
    if len(has):
        has.plot(ax=ax, column="accuracy", cmap="viridis", vmin=0, vmax=1, edgecolor="#555555", linewidth=0.3,
                 legend=True, legend_kwds={"label": f"share of photos within {threshold_km:g} km", "shrink": 0.6})
    ax.set_xlim(-180, 180)
    ax.set_ylim(-60, 85)
    ax.set_xlabel("longitude (°)")
    ax.set_ylabel("latitude (°)")
    ax.set_title(title or f"Accuracy per country at {threshold_km:g} km ({int(per['photos'].sum())} photos, "
                          f"{len(per)} countries; grey: no photos)")
    return _save(fig, path)


def _outline_xy() -> tuple[list[float | None], list[float | None]]:
    """Country outlines as one lon/lat polyline with None breaks (for a plain plotly Scatter)."""
    xs: list[float | None] = []
    ys: list[float | None] = []
    for geom in countries().geometry:
        polys = getattr(geom, "geoms", [geom])
        for poly in polys:
            x, y = poly.exterior.coords.xy
            xs.extend(np.round(np.asarray(x), 2).tolist() + [None])
            ys.extend(np.round(np.asarray(y), 2).tolist() + [None])
    return xs, ys


def interactive_map(pred, path: str | Path, *, title: str = "Predictions (hover for details)",
                    excerpt_chars: int = 160) -> Path:
    """Self-contained HTML map (plotly.js inlined, outlines drawn from Natural Earth): nothing loads from outside."""
    import plotly.graph_objects as go

    xs, ys = _outline_xy()
    fig = go.Figure()
    fig.add_trace(go.Scatter(x=xs, y=ys, mode="lines", line=dict(color="#999999", width=0.6), hoverinfo="skip",
                             name="countries", showlegend=False))
    ok = _resolved(pred)
    lx: list[float | None] = []
    ly: list[float | None] = []
    for r in ok.itertuples():
        lx += [r.true_lon, r.pred_lon, None]
        ly += [r.true_lat, r.pred_lat, None]
    fig.add_trace(go.Scatter(x=lx, y=ly, mode="lines", line=dict(color="rgba(214,39,40,0.35)", width=1),
                             hoverinfo="skip", name="error"))

    def place(r) -> str:
        parts = [str(v) for v in (getattr(r, "city", None), getattr(r, "country", None)) if isinstance(v, str) and v]
        return ", ".join(parts) or "(no answer)"

    def excerpt(r) -> str:
        t = getattr(r, "think", None)
        t = t if isinstance(t, str) else ""
        t = t if len(t) <= excerpt_chars else t[:excerpt_chars] + "…"
        return "<br>".join(textwrap.wrap(t, 60)) or "(no reasoning)"

    hover = [f"<b>{r.id}</b><br>predicted: {place(r)}<br>error: {r.distance_km:,.0f} km<br>{excerpt(r)}"
             for r in ok.itertuples()]
    fig.add_trace(go.Scatter(x=pred["true_lon"], y=pred["true_lat"], mode="markers", name="truth",
                             marker=dict(color="#2ca02c", size=7), text=[f"<b>{i}</b> (truth)" for i in pred["id"]],
                             hoverinfo="text"))
    fig.add_trace(go.Scatter(x=ok["pred_lon"], y=ok["pred_lat"], mode="markers", name="prediction",
                             marker=dict(color="#d62728", size=7, symbol="x"), text=hover, hoverinfo="text"))
    # Equal degrees on both axes (scaleanchor) by shrinking the plot area (constrain="domain"), not by widening the
    # ranges: the map stays the world, undistorted, with no axis running past ±180.
    fig.update_layout(title=title, template="plotly_white", width=1100, height=560, legend=dict(orientation="h"),
                      xaxis=dict(title="longitude (°)", range=[-180, 180], constrain="domain", autorange=False),
                      yaxis=dict(title="latitude (°)", range=[-60, 85], scaleanchor="x", scaleratio=1,
                                 constrain="domain", autorange=False))
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    # plotly.js inlined; no MathJax; no link back to the plotly server.
    # A fixed div id: plotly draws a random one per call, which would change the tracked file on every rerun.
    fig.write_html(path, include_plotlyjs=True, include_mathjax=False, full_html=True, div_id=f"globe-{path.stem}",
                   config={"displaylogo": False, "plotlyServerURL": ""})
    return path


def error_cdf(preds: Mapping[str, Any], path: str | Path, *, title: str = "Cumulative error distribution") -> Path:
    """Share of photos within d km against d (log scale), one curve per model, the five thresholds marked.

    Unresolved answers count as infinitely far, so every curve ends below 1 when some answers were unresolved."""
    plt = _plt()
    fig, ax = plt.subplots(figsize=(8, 5))
    grid = np.logspace(-1, math.log10(20038), 400)  # 0.1 km to half the Earth's circumference
    for (name, df), color in zip(preds.items(), plt.cm.tab10.colors):
        d = df["distance_km"].to_numpy(float)
        d = np.where(np.isfinite(d), d, np.inf)
        if not len(d):
            continue
        ax.plot(grid, [(d <= g).mean() for g in grid], label=f"{name} (n={len(d)})", color=color)
    for t in THRESHOLDS_KM:
        ax.axvline(t, color="#888888", linestyle=":", linewidth=1)
        ax.text(t, 1.01, f"{t} km\n{THRESHOLD_NAMES[t]}", ha="center", va="bottom", fontsize=8, color="#555555")
    ax.set_xscale("log")
    ax.set_xlim(grid[0], grid[-1])
    ax.set_ylim(0, 1)
    ax.set_xlabel("great-circle error (km, log scale)")
    ax.set_ylabel("share of photos within error")
    ax.set_title(title, pad=28)
    ax.grid(alpha=0.3)
    ax.legend(loc="upper left", fontsize=8)
    return _save(fig, path)


def accuracy_bars(rows: Mapping[str, Mapping[str, float]], path: str | Path, *, title: str = "Accuracy by threshold",
                  published: set[str] | None = None, note: str | None = None) -> Path:
    """Grouped bars: accuracy (%) at each threshold per method, coloured by kind so that no colour pairs one of ours
    with a baseline: ours in blues, baselines in greys, published rows in oranges (hatched). `note` is printed under
    the axes (say, why no published row shares this benchmark).

    `rows` maps a method name to {"acc_1km": %, ..., "acc_2500km": %} (values in percent); names ending in
    "[baseline]" or "[published]" (or listed in `published`) set the kind."""
    plt = _plt()
    published = set(published or ()) | {n for n in rows if n.endswith("[published]")}
    names = list(rows)
    kinds = {n: "published" if n in published else "baseline" if n.endswith("[baseline]") else "ours" for n in names}
    palettes = {"ours": plt.cm.Blues, "baseline": plt.cm.Greys, "published": plt.cm.Oranges}
    colours = {}
    for kind, cmap in palettes.items():
        members = [n for n in names if kinds[n] == kind]
        for j, n in enumerate(members):
            colours[n] = cmap(0.45 + 0.45 * (j + 1) / (len(members) + 1))
    fig, ax = plt.subplots(figsize=(max(8, 1.2 * len(THRESHOLDS_KM) * max(1, len(names)) * 0.35 + 4), 5))
    width = 0.8 / max(1, len(names))
    x = np.arange(len(THRESHOLDS_KM))
    for i, name in enumerate(names):
        vals = [float(rows[name].get(f"acc_{t}km", np.nan)) for t in THRESHOLDS_KM]
        ax.bar(x + (i - (len(names) - 1) / 2) * width, vals, width, label=name, color=colours[name],
               hatch="//" if kinds[name] == "published" else None, edgecolor="white")
    ax.set_xticks(x, [f"{THRESHOLD_NAMES[t]}\n{t} km" for t in THRESHOLDS_KM])
    ax.set_ylabel("accuracy (% of photos within threshold)")
    ax.set_ylim(0, 100)
    ax.set_title(title)
    ax.grid(axis="y", alpha=0.3)
    ax.legend(fontsize=8, ncol=2, loc="upper left")
    if note:
        fig.text(0.01, -0.02, "\n".join(textwrap.wrap(note, 150)), fontsize=8, color="#555555", va="top")
    return _save(fig, path)


def continent_accuracy(preds: Mapping[str, Any], path: str | Path, *, threshold_km: float = 750,
                       title: str | None = None) -> Path:
    """Accuracy at `threshold_km` per continent of the true location, one bar per model (n per continent on the axis)."""
    plt = _plt()
    import pandas as pd

    frames = []
    for name, df in preds.items():
        hit = (df["distance_km"].fillna(np.inf) <= threshold_km).astype(float) * 100
        frames.append(pd.DataFrame({"model": name, "continent": df["continent"].fillna("unknown"), "hit": hit}))
    if not frames:
        raise ValueError("continent_accuracy needs at least one prediction set")
    all_ = pd.concat(frames)
    table = all_.pivot_table(index="continent", columns="model", values="hit", aggfunc="mean")
    counts = all_.groupby(["continent", "model"]).size().groupby("continent").max()
    fig, ax = plt.subplots(figsize=(9, 5))
    width = 0.8 / max(1, table.shape[1])
    x = np.arange(len(table))
    for i, (model, color) in enumerate(zip(table.columns, plt.cm.tab10.colors)):
        ax.bar(x + (i - (table.shape[1] - 1) / 2) * width, table[model].to_numpy(), width, label=model, color=color)
    ax.set_xticks(x, [f"{c}\n(n={counts[c]})" for c in table.index], fontsize=8)
    ax.set_ylabel(f"accuracy (% within {threshold_km:g} km)")
    ax.set_ylim(0, 100)
    ax.set_title(title or f"Accuracy per continent at {threshold_km:g} km")
    ax.grid(axis="y", alpha=0.3)
    ax.legend(fontsize=8)
    return _save(fig, path)


def _reward_columns(df) -> list[str]:
    cols = [c for c in df.columns if c.startswith("rewards/") and c.endswith("/mean")]
    return cols or [c for c in df.columns if c.startswith("reward_") or c.startswith("rewards/")]


def training_curves(path: str | Path, *, sft_log=None, grpo_log=None, reward_model_log=None,
                    title: str = "Training curves") -> Path:
    """SFT loss (train / eval), GRPO reward components, KL, completion length and loss against the step.

    Panels whose log is missing or empty are drawn with a note saying so (the stage was not run)."""
    plt = _plt()
    fig, axes = plt.subplots(2, 3, figsize=(15, 8))
    axes = axes.ravel()

    def empty(ax, what: str) -> None:
        ax.text(0.5, 0.5, f"no {what} logged", ha="center", va="center", transform=ax.transAxes, color="#777777")

    def line(ax, df, col, label=None, **kw) -> bool:
        if df is None or col not in df or df[col].notna().sum() == 0:
            return False
        d = df[["step", col]].dropna()
        ax.plot(d["step"], d[col], marker="o" if len(d) < 30 else None, markersize=3, label=label or col, **kw)
        return True

    ax = axes[0]
    drew = line(ax, sft_log, "loss", "SFT train loss") | line(ax, sft_log, "eval_loss", "SFT eval loss")
    drew |= line(ax, reward_model_log, "loss", "reward-model train loss")
    (ax.legend(fontsize=8) if drew else empty(ax, "SFT loss"))
    ax.set(title="SFT loss", xlabel="step", ylabel="cross-entropy (assistant tokens)")

    ax = axes[1]
    cols = _reward_columns(grpo_log) if grpo_log is not None else []
    drew = False
    for c in cols:
        drew |= line(ax, grpo_log, c, c.replace("rewards/", "").replace("/mean", ""))
    (ax.legend(fontsize=8) if drew else empty(ax, "GRPO reward components"))
    ax.set(title="GRPO reward components (mean per step)", xlabel="step", ylabel="reward")

    ax = axes[2]
    drew = line(ax, grpo_log, "reward", "total (weighted)")
    (ax.legend(fontsize=8) if drew else empty(ax, "GRPO total reward"))
    ax.set(title="GRPO total reward", xlabel="step", ylabel="weighted reward")

    for ax, col, name, unit in ((axes[3], "kl", "KL to the reference", "KL (nats/token)"),
                                (axes[4], "completion_length", "completion length", "tokens"),
                                (axes[5], "loss", "GRPO loss", "loss")):
        alt = {"completion_length": "completions/mean_length"}.get(col)
        use = col if grpo_log is not None and col in grpo_log else alt
        (None if line(ax, grpo_log, use or col, name) else empty(ax, name))
        ax.set(title=name, xlabel="step", ylabel=unit)
    for ax in axes:
        ax.grid(alpha=0.3)
    fig.suptitle(title)
    fig.tight_layout()
    return _save(fig, path)


def localizability_plot(pred, path: str | Path, *, threshold_km: float = 750, bins: int = 10,
                        title: str = "Does “locatable” predict being right?") -> Path:
    """Left: reward-model localizability score against the error. Right: reliability diagram (score bin against the
    share of photos within `threshold_km`), with bin counts and the expected calibration error."""
    plt = _plt()
    if "localizability" not in pred:
        pred = pred.assign(localizability=np.nan)
    df = pred[pred["localizability"].notna()]
    fig, (ax1, ax2) = plt.subplots(1, 2, figsize=(12, 5))
    if not len(df):
        for ax in (ax1, ax2):
            ax.text(0.5, 0.5, "no localizability scores (reward model not run)", ha="center", va="center",
                    transform=ax.transAxes, color="#777777")
    score = df["localizability"].to_numpy(float)
    err = df["distance_km"].to_numpy(float)
    shown = np.where(np.isfinite(err), np.clip(err, 0.1, None), 20038.0)
    ax1.scatter(score, shown, s=14, alpha=0.6, color="tab:blue")
    ax1.set_yscale("log")
    ax1.axhline(threshold_km, color="#888888", linestyle=":", label=f"{threshold_km:g} km")
    if len(df) > 2 and np.ptp(score) > 0:
        from scipy.stats import spearmanr

        rho = spearmanr(score, shown).statistic
        ax1.set_title(f"score vs error (Spearman ρ = {rho:.2f}, n = {len(df)})")
    else:
        ax1.set_title("score vs error")
    ax1.set(xlabel="localizability score P(yes)/(P(yes)+P(no))", ylabel="error (km, log; unresolved at top)", xlim=(0, 1))
    ax1.legend(fontsize=8)
    hit = (np.nan_to_num(err, nan=np.inf) <= threshold_km).astype(float)
    edges = np.linspace(0, 1, bins + 1)
    idx = np.clip(np.digitize(score, edges) - 1, 0, bins - 1)
    centers, acc, counts = [], [], []
    ece = 0.0
    for b in range(bins):
        m = idx == b
        if m.any():
            centers.append(score[m].mean())
            acc.append(hit[m].mean())
            counts.append(int(m.sum()))
            ece += m.sum() / len(score) * abs(hit[m].mean() - score[m].mean())
    ax2.plot([0, 1], [0, 1], color="#888888", linestyle="--", label="perfect calibration")
    if centers:
        ax2.bar(edges[:-1] + 0.5 / bins, [0] * bins, width=1 / bins, alpha=0)  # keeps the bin grid visible
        ax2.plot(centers, acc, marker="o", color="tab:orange", label=f"observed (ECE = {ece:.3f})")
        for c, a, n in zip(centers, acc, counts):
            ax2.annotate(f"n={n}", (c, a), textcoords="offset points", xytext=(0, 6), ha="center", fontsize=7)
    ax2.set(xlim=(0, 1), ylim=(0, 1.05), xlabel="localizability score (bin mean)",
            ylabel=f"share of photos within {threshold_km:g} km", title="reliability diagram")
    ax2.legend(fontsize=8, loc="upper left")
    for ax in (ax1, ax2):
        ax.grid(alpha=0.3)
    fig.suptitle(title)
    fig.tight_layout()
    return _save(fig, path)


def clean_text(text: str | None) -> str:
    """Text safe to draw: no U+FFFD (what a tokenizer decodes from a byte sequence cut mid-character), no control
    characters but newlines, no lone surrogates."""
    import unicodedata

    text = (text or "").encode("utf-8", errors="ignore").decode("utf-8").replace("\ufffd", "")
    return "".join(ch for ch in text if ch == "\n" or unicodedata.category(ch)[0] != "C")


def highlight(text: str, entities: list[str], mark: tuple[str, str] = ("[", "]")) -> str:
    """`text` with each (case-insensitive) mention of a verified entity wrapped in `mark`."""
    import re

    ents = sorted({e for e in entities if isinstance(e, str) and e.strip()}, key=len, reverse=True)
    if not ents or not text:
        return text or ""
    pattern = re.compile("|".join(re.escape(e) for e in ents), re.I)
    return pattern.sub(lambda m: f"{mark[0]}{m.group(0)}{mark[1]}", text)


def reasoning_gallery(rows: list[dict], path: str | Path, *, title: str = "Reasoning gallery",
                      text_chars: int = 420, html: bool = True) -> Path:
    """For each row (image, think, entities, answer, distance_km, id): the photo, the reasoning with verified entities
    marked ⟦like this⟧ (PNG) or <mark>ed (HTML), the answer and the error."""
    plt = _plt()
    from PIL import Image

    k = len(rows)
    if k == 0:
        raise ValueError("reasoning_gallery needs at least one row")
    fig, axes = plt.subplots(k, 2, figsize=(13, 3.2 * k), gridspec_kw={"width_ratios": [1, 2.4]}, squeeze=False)
    for (ax_img, ax_txt), r in zip(axes, rows):
        img = r.get("image")
        if isinstance(img, (str, Path)):
            img = Image.open(img)
        if img is not None:
            ax_img.imshow(img.convert("RGB"))
        ax_img.set_axis_off()
        ax_img.set_title(str(r.get("id", ""))[:40], fontsize=8)
        think = clean_text(r.get("think"))
        think = think if len(think) <= text_chars else think[:text_chars].rstrip() + "…"
        think = highlight(think, r.get("entities") or [], ("⟦", "⟧"))
        d = r.get("distance_km")
        err = "unresolved" if d is None or not np.isfinite(d) else f"{d:,.0f} km"
        ents = ", ".join(r.get("entities") or []) or "none"
        body = "\n".join(textwrap.wrap(think, 95)) or "(no reasoning)"
        ax_txt.text(0, 1, f"verified entities: {ents}", va="top", fontsize=8, color="tab:green", transform=ax_txt.transAxes)
        ax_txt.text(0, 0.88, body, va="top", fontsize=8, family="monospace", transform=ax_txt.transAxes)
        ax_txt.text(0, 0.02, f"answer: {clean_text(r.get('answer')) or '(none)'}    truth: {r.get('truth') or '?'}"
                    f"    error: {err}", va="bottom", fontsize=9, weight="bold", transform=ax_txt.transAxes)
        ax_txt.set_axis_off()
    fig.suptitle(f"{title} (⟦…⟧: verified visual entities)")
    fig.tight_layout()
    out = _save(fig, path)
    if html:
        _gallery_html(rows, Path(path).with_suffix(".html"), title)
    return out


def _gallery_html(rows: list[dict], path: Path, title: str) -> Path:
    import base64
    import html as h
    import io

    from PIL import Image

    parts = [f"<!doctype html><meta charset='utf-8'><title>{h.escape(title)}</title>",
             "<style>body{font-family:sans-serif;max-width:1100px;margin:auto} .row{display:flex;gap:16px;"
             "margin:16px 0;border-bottom:1px solid #ddd;padding-bottom:16px} img{max-width:320px} "
             "mark{background:#c7f0c2}</style>", f"<h1>{h.escape(title)}</h1>"]
    for r in rows:
        img = r.get("image")
        if isinstance(img, (str, Path)):
            img = Image.open(img)
        src = ""
        if img is not None:
            buf = io.BytesIO()
            img.convert("RGB").save(buf, format="JPEG", quality=80)
            src = "data:image/jpeg;base64," + base64.b64encode(buf.getvalue()).decode()
        entities = [e for e in r.get("entities") or [] if isinstance(e, str) and e.strip()]
        think = highlight(h.escape(clean_text(r.get("think"))), [h.escape(e) for e in entities], ("<mark>", "</mark>"))
        d = r.get("distance_km")
        err = "unresolved" if d is None or not np.isfinite(d) else f"{d:,.0f} km"
        listed = ", ".join(f"<mark>{h.escape(e)}</mark>" for e in entities) or "none"
        parts.append(f"<div class='row'><img src='{src}' alt='{h.escape(str(r.get('id', '')))}'><div>"
                     f"<p><b>{h.escape(str(r.get('id', '')))}</b></p><p><b>verified entities:</b> {listed}</p>"
                     f"<p>{think or '(no reasoning)'}</p>"
                     f"<p><b>answer:</b> {h.escape(clean_text(r.get('answer')) or '(none)')} — <b>truth:</b> "
                     f"{h.escape(str(r.get('truth') or '?'))} — <b>error:</b> {err}</p></div></div>")
    path.write_text("\n".join(parts), encoding="utf-8")
    return path


def gallery_rows(pred, dataset=None, k: int = 4, seed: int = 0) -> list[dict]:
    """k prediction rows ready for `reasoning_gallery`: photo and verified entities from `dataset` (a datasets
    Dataset with id, image and optionally entities), think / answer / error from `pred`. Rows with reasoning first."""
    import pandas as pd

    if dataset is not None:
        meta = {"id": dataset["id"]}
        if "entities" in dataset.column_names:
            meta["entities"] = dataset["entities"]
        meta = pd.DataFrame(meta)
        pred = pred.merge(meta, on="id", how="inner")
    if not len(pred):
        return []
    has_think = pred["think"].fillna("").str.len() > 0 if "think" in pred else pd.Series(False, index=pred.index)
    chosen = pd.concat([pred[has_think], pred[~has_think]]).head(max(k * 5, k))
    chosen = chosen.sample(n=min(k, len(chosen)), random_state=seed).sort_values("id")
    index = {i: n for n, i in enumerate(dataset["id"])} if dataset is not None else {}
    rows = []
    for r in chosen.to_dict("records"):
        answer = ", ".join(str(r[c]) for c in ("city", "country") if isinstance(r.get(c), str) and r.get(c))
        truth = ", ".join(str(r[c]) for c in ("true_city", "true_country") if isinstance(r.get(c), str) and r.get(c))
        if r.get("true_lat") is not None and np.isfinite(r.get("true_lat")):
            truth = f"{truth} ({r['true_lat']:.2f}, {r['true_lon']:.2f})".strip()
        rows.append({"id": r["id"], "think": r.get("think") if isinstance(r.get("think"), str) else "",
                     "truth": truth or None,
                     "entities": list(r.get("entities")) if r.get("entities") is not None else [],
                     "answer": answer or None, "distance_km": r.get("distance_km"),
                     "image": dataset[index[r["id"]]]["image"] if r["id"] in index else None})
    return rows
