"""The analysis stage (notebook 06): its settings and the inputs its figures read (`globe.plots` draws them).

Inputs a stage did not produce (say GRPO was skipped) are reported, not fatal: `Inputs.missing` lists them and the
figures say so on their panels.
"""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, ClassVar

from globe.config import StageConfig


@dataclass
class AnalysisParams(StageConfig):
    """params.yaml's `analysis` group (plus `seed` from `common`)."""

    group: ClassVar[str] = "analysis"

    figures: str = "results/figures"
    predictions: str = "results/predictions"
    metrics: str = "results/metrics.json"
    published: str = "globe/assets/published.csv"
    benchmark: str = "sample"  # the benchmark the maps, gallery and localizability figures show
    main_model: str = "grpo"
    sft_log: str = "results/sft_log.csv"
    grpo_log: str = "results/grpo_log.csv"
    reasoning_dataset: str = "data/mp16_reason"  # photos and verified entities for the reasoning gallery
    photos_dataset: str = "data/processed/dataset"  # the gallery's photos when the distilled set has none
    gallery_split: str = "test"
    gallery_k: int = 4
    threshold_km: float = 750.0  # per-country / per-continent accuracy and the reliability diagram count this as right
    seed: int = 0

    def validate(self) -> None:
        self.require(self.gallery_k >= 1, "gallery_k", "must be >= 1")
        self.require(self.threshold_km > 0, "threshold_km", "must be > 0")


@dataclass
class Inputs:
    """What the figures read; `missing` names every input that was not there."""

    predictions: dict[str, Any]  # model -> scored frame (globe.evaluate.score) on `benchmark`
    metrics: dict[str, Any]
    sft_log: Any = None
    grpo_log: Any = None
    missing: list[str] = field(default_factory=list)

    @property
    def main(self):
        return next(iter(self.predictions.values())) if self.predictions else None


def _csv(path: str, missing: list[str]):
    import pandas as pd

    if Path(path).is_file():
        return pd.read_csv(path)
    missing.append(str(path))
    return None


def load_inputs(cfg: AnalysisParams) -> Inputs:
    """The scored predictions of `cfg.benchmark` (main model first), the metrics and the training logs."""
    import pandas as pd

    pred_dir = Path(cfg.predictions) / cfg.benchmark
    preds = {p.stem: pd.read_parquet(p) for p in sorted(pred_dir.glob("*.parquet"))}
    if not preds:
        raise FileNotFoundError(f"no predictions under {pred_dir}: run the eval stage (notebook 05) first")
    if cfg.main_model not in preds:
        raise KeyError(f"analysis.main_model {cfg.main_model!r} has no predictions; have: {sorted(preds)}")
    preds = {cfg.main_model: preds[cfg.main_model], **{k: v for k, v in preds.items() if k != cfg.main_model}}
    missing: list[str] = []
    metrics = json.loads(Path(cfg.metrics).read_text(encoding="utf-8")) if Path(cfg.metrics).is_file() else {}
    if not metrics:
        missing.append(cfg.metrics)
    return Inputs(preds, metrics, _csv(cfg.sft_log, missing), _csv(cfg.grpo_log, missing), missing)


def prediction_summary(preds: dict[str, Any]):
    """Photos, resolved answers and median error (over all photos, an unresolved answer at the worst distance) per
    model: the same median as the metrics table."""
    import numpy as np
    import pandas as pd

    from globe.geo import MAX_DISTANCE_KM

    rows = {}
    for name, df in preds.items():
        d = df["distance_km"].to_numpy(float)
        rows[name] = {"photos": len(df), "resolved": int(np.isfinite(d).sum()),
                      "median km (unresolved = worst)": float(np.median(np.where(np.isfinite(d), d, MAX_DISTANCE_KM)))}
    return pd.DataFrame(rows).T


def accuracy_rows(metrics: dict, published_csv: str, benchmark: str) -> dict[str, dict[str, float]]:
    """Accuracy (%) per threshold for every row of the main table on `benchmark` (published rows included)."""
    import pandas as pd

    from globe.evaluate import DISPLAY, table_frame

    table = table_frame(metrics, pd.read_csv(published_csv))
    shown = DISPLAY.get(benchmark, benchmark)
    rows = {label: {f"acc_{col.split()[-1]}": v for (b, col), v in row.items() if b == shown}
            for label, row in table.iterrows()}
    return {k: v for k, v in rows.items() if any(pd.notna(x) for x in v.values())}


def comparison_note(rows: dict, published_csv: str, benchmark: str) -> str | None:
    """Why no published row stands beside ours, when none does: published figures exist for other benchmarks only."""
    import pandas as pd

    from globe.evaluate import DISPLAY

    if any(k.endswith("[published]") for k in rows):
        return None
    pub = pd.read_csv(published_csv)
    others = sorted({DISPLAY.get(b, b) for b in pub["benchmark"]})
    return (f"No published figures exist for the {DISPLAY.get(benchmark, benchmark)!r} benchmark, so none are shown: "
            f"the published rows ({', '.join(others)}) are on other photos and would not compare like with like. Run "
            "the evaluation on one of those benchmarks (eval.run_benchmarks) to put this run beside them.")


def gallery_dataset(cfg: AnalysisParams, missing: list[str]):
    """The photos (with verified entities when distillation kept them) the reasoning gallery draws."""
    from globe.data import open_saved

    if Path(cfg.reasoning_dataset).exists():
        dsd = open_saved(cfg.reasoning_dataset)
        if cfg.gallery_split in dsd and len(dsd[cfg.gallery_split]):
            return dsd[cfg.gallery_split]
    missing.append(f"{cfg.reasoning_dataset}[{cfg.gallery_split}] (the gallery shows photos without entities)")
    return open_saved(cfg.photos_dataset)[cfg.gallery_split]
