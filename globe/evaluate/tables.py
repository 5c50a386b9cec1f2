"""The paper's Table 2: our accuracies beside the published ones (`globe/assets/published.csv`, each with its
source), as a frame and as markdown."""

from __future__ import annotations

import math
import os
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import pandas as pd

from globe.evaluate.baselines import BASELINES
from globe.geo.metrics import THRESHOLD_NAMES

PUBLISHED_CSV = Path(__file__).resolve().parents[1] / "assets" / "published.csv"
# Benchmark names as the paper's table prints them.
DISPLAY = {"im2gps3k": "IM2GPS3K", "yfcc4k": "YFCC4K", "mp16-reason-test": "MP16-Reason test", "osv5m": "OSV-5M",
           "sample": "sample", "custom": "custom"}


def published(path: str | os.PathLike = PUBLISHED_CSV) -> pd.DataFrame:
    """Published accuracies (%) from the papers, one row per (method, benchmark), with their source."""
    return pd.read_csv(path)


def _pct(v: Any) -> float | None:
    """A metric as a percentage (geo_metrics gives shares in [0, 1])."""
    return None if v is None else 100.0 * float(v)


def table_frame(metrics: dict, published_rows: pd.DataFrame | None = None, baselines: Sequence[str] = BASELINES,
                benchmarks: Sequence[str] | None = None) -> pd.DataFrame:
    """Rows = methods (published, then ours), columns = (benchmark, threshold) accuracies in %."""
    from globe.geo import THRESHOLDS_KM

    pub = published() if published_rows is None else published_rows
    benchmarks = list(benchmarks or dict.fromkeys([*pub["benchmark"], *metrics]))
    cols = pd.MultiIndex.from_tuples([(DISPLAY.get(b, b), f"{THRESHOLD_NAMES.get(t, '')} {t:g}km".strip())
                                      for b in benchmarks for t in THRESHOLDS_KM])
    rows: dict[str, list] = {}
    for method, g in pub.groupby("method", sort=False):
        vals = []
        for b in benchmarks:
            r = g[g["benchmark"] == b]
            vals += [float(r[f"acc_{t:g}km"].iloc[0]) if len(r) else None for t in THRESHOLDS_KM]
        rows[f"{method} [published]"] = vals
    ours = list(dict.fromkeys(m for b in metrics.values() for m in b))
    for method in ours:
        label = f"{method} [baseline]" if method in baselines else f"{method} [ours]"
        rows[label] = [_pct(metrics.get(b, {}).get(method, {}).get(f"acc_{t:g}km")) for b in benchmarks
                       for t in THRESHOLDS_KM]
    return pd.DataFrame.from_dict(rows, orient="index", columns=cols)


def main_table(metrics: dict, published_rows: pd.DataFrame | None = None, baselines: Sequence[str] = BASELINES) -> str:
    """The paper's Table 2 as markdown: accuracy (%) within 1 / 25 / 200 / 750 / 2500 km per benchmark, published
    rows (with sources) beside ours."""
    pub = published() if published_rows is None else published_rows
    df = table_frame(metrics, pub, baselines)
    header = ["Method"] + [f"{b} {t}" for b, t in df.columns]
    lines = ["| " + " | ".join(header) + " |", "|" + "---|" * len(header)]
    for label, row in df.iterrows():
        cells = ["–" if v is None or (isinstance(v, float) and math.isnan(v)) else f"{v:.2f}" for v in row]
        lines.append("| " + " | ".join([label, *cells]) + " |")
    notes = ["", "Accuracy (%) of photos localized within each distance of the truth. Unresolved answers count as "
                 "misses.", "", "Our rows (n = images evaluated):"]
    for b, ms in metrics.items():
        for m, v in ms.items():
            notes.append(f"- {DISPLAY.get(b, b)} / {m}: n = {v.get('n')}, unresolved = {v.get('n_unresolved')}, "
                         f"median error = {_fmt_km(v.get('median_km'))}")
    notes += ["", "Published rows and their sources (`globe/assets/published.csv`):"]
    for (method, src), g in pub.groupby(["method", "source"], sort=False):
        notes.append(f"- {method} ({', '.join(DISPLAY.get(b, b) for b in g['benchmark'])}): {src}")
    notes += ["", "Not shown: Qwen2.5-VL-7B / -72B zero-shot and GeoReasoner, whose figures we could not source. "
                  "Published rows are on the full benchmarks (IM2GPS3K: 2,997 photos, YFCC4K: 4,536); ours on a "
                  "subset are not directly comparable."]
    return "\n".join(lines + notes) + "\n"


def _fmt_km(v: Any) -> str:
    return "–" if v is None else f"{v:,.0f} km"


def per_continent(metrics: dict) -> pd.DataFrame:
    """One model's per-continent accuracy (%) at each threshold, with counts, from `metrics_of`'s `by_continent`."""
    from globe.geo import THRESHOLDS_KM

    rows = {c: {"n": v["n"], **{f"{t:g} km": _pct(v.get(f"acc_{t:g}km")) for t in THRESHOLDS_KM}}
            for c, v in metrics.get("by_continent", {}).items()}
    return pd.DataFrame.from_dict(rows, orient="index").rename_axis("continent")
