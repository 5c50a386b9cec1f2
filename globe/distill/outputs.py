"""What distillation writes: the funnel and agreement tables, the MP16-Reason-style dataset, the reward model's
localizability labels, and the dataset card."""

from __future__ import annotations

import json
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Any

from globe.distill.filters import GROUND_TRUTH, answers_agree

if TYPE_CHECKING:  # pragma: no cover
    from globe.distill import DistillParams


def funnel_table(stages: Sequence[tuple[str, Any]], teachers: Sequence[str], splits: Sequence[str]):
    """Survivors after each filter per split and teacher (+ distinct photos as teacher 'images'), and the drops."""
    import pandas as pd

    rows = []
    for split in splits:
        prev: dict[str, int] = {}
        for stage, df in stages:
            d = df[df["split"] == split]
            counts = {t: int((d["teacher"] == t).sum()) for t in teachers}
            counts["images"] = int(d["id"].nunique())
            for t, n in counts.items():
                rows.append({"split": split, "stage": stage, "teacher": t, "kept": n,
                             "dropped": prev.get(t, n) - n})
            prev = counts
    return pd.DataFrame(rows, columns=["split", "stage", "teacher", "kept", "dropped"])


def agreement_matrix(df, teachers: Sequence[str], km: float):
    """Share of photos on which two teachers' answers agree (same country, cities within `km`), with the ground truth
    as an extra row/column; over all judged photos both answered. NaN where they share no photo."""
    import numpy as np
    import pandas as pd

    names = list(teachers) + [GROUND_TRUTH]
    answers: dict[str, dict] = {t: {} for t in names}
    for r in df.itertuples():
        answers[r.teacher][(r.split, r.id)] = (r.pred_country, r.pred_city)
        answers[GROUND_TRUTH][(r.split, r.id)] = (r.gt_country, r.gt_city)
    mat = pd.DataFrame(np.nan, index=names, columns=names)
    memo: dict = {}
    for a in names:
        for b in names:
            shared = answers[a].keys() & answers[b].keys()
            if not shared:
                continue
            agree = 0
            for k in shared:
                pair = (answers[a][k], answers[b][k])
                if pair not in memo:
                    memo[pair] = answers_agree(*pair[0], *pair[1], km)
                agree += memo[pair]
            mat.loc[a, b] = agree / len(shared)
    return mat


OUTPUT_COLUMNS = ("id", "image", "prompt", "reasoning", "answer", "country", "country_code", "city", "lat", "lon",
                  "continent", "localizability", "localizable", "entities", "teacher", "licence", "owner")


def pick_per_photo(df, keep: str = "best"):
    """One survivor per photo (highest localizability score, then teacher order), or all with `keep: all`."""
    if keep == "all":
        return df.sort_values(["split", "row", "teacher_order"])
    if keep != "best":
        raise ValueError(f"distill.keep must be 'best' or 'all', got {keep!r}")
    ranked = df.assign(_s=df["loc_score"].astype(float).fillna(-1)).sort_values(["split", "row", "_s", "teacher_order"],
                                                                               ascending=[True, True, False, True])
    return ranked.drop_duplicates(["split", "row"]).drop(columns="_s").sort_values(["split", "row"])


def build_reason_dataset(chosen, splits: Mapping[str, Any]):
    """The MP16-Reason-style DatasetDict: the chosen candidates' rows of each split plus the distilled columns."""
    from datasets import DatasetDict, Value
    from datasets import List as ListFeature

    from globe.prompts import REASONING_PROMPT, format_target

    out = {}
    for split, ds in splits.items():
        d = chosen[chosen["split"] == split]
        think = list(d["reasoning"])
        columns = {
            "prompt": ([REASONING_PROMPT] * len(d), Value("string")),
            "reasoning": (think, Value("string")),
            # The target names the true place (canonical names), which the teacher's answer matched.
            "answer": ([format_target(t, c, y) for t, c, y in zip(think, d["gt_country"], d["gt_city"])], Value("string")),
            "localizability": ([float(x) for x in d["loc_score"]], Value("float32")),
            "localizable": ([bool(x) for x in d["loc_label"]], Value("bool")),
            "entities": ([list(e) for e in d["entities"]] if "entities" in d else [[] for _ in think],
                         ListFeature(Value("string"))),
            "teacher": (list(d["teacher"]), Value("string")),
        }
        out[split] = _with_columns(ds, [int(r) for r in d["row"]], OUTPUT_COLUMNS, columns)
    return DatasetDict(out)


def build_localizability_dataset(judged, ds):
    """Every judged (photo, teacher) of one split with a readable yes/no: the reward model's training data."""
    from datasets import Value

    d = judged[judged["loc_label"].notna()]
    columns = {
        "reasoning": ([r or c for r, c in zip(d["reasoning"], d["completion"])], Value("string")),
        # The teacher's whole answer: what GLOBE's official reward-model format judges (reward_model.input_format).
        "completion": (list(d["completion"]), Value("string")),
        "label": ([int(bool(x)) for x in d["loc_label"]], Value("int64")),
        "score": ([None if s is None or s != s else float(s) for s in d["loc_score"]], Value("float32")),
        "teacher": (list(d["teacher"]), Value("string")),
    }
    return _with_columns(ds, [int(r) for r in d["row"]], ("id", "image", *columns), columns)


def _with_columns(ds, rows: list[int], keep: Sequence[str], columns: Mapping[str, tuple]):
    """`ds`'s `rows` (repeats allowed) with new `columns` {name: (values, feature)}, in `keep` order."""
    from datasets import Dataset, Features

    base = [c for c in ds.column_names if c in keep]
    features = Features({**{c: ds.features[c] for c in base}, **{k: f for k, (_, f) in columns.items()}})
    order = [c for c in keep if c in features]
    if not rows:  # datasets cannot add columns to an empty selection
        return Dataset.from_dict({c: [] for c in order}, features=Features({c: features[c] for c in order}))
    sub = ds.select(rows).select_columns(base)
    for name, (values, feature) in columns.items():
        sub = sub.add_column(name, values, feature=feature)
    return sub.select_columns(order)


def write_card(path: Path, dataset, funnel, cfg: DistillParams, stats: Mapping, teachers: Sequence) -> None:
    """The dataset card (README.md): provenance, the funnel, sizes, countries, continents, licences."""
    import pandas as pd

    lines = ["# MP16-Reason-style distilled dataset (GLOBE reimplementation)", "",
             "Built by `globe.distill.run_distillation` (notebook 02_distill). Each row: a photo, the GLOBE reasoning "
             "prompt, a teacher's reasoning trace, the training target `<think>…</think><answer>…</answer>` (ground-"
             "truth country and city names), the teacher's localizability judgement and the detector-verified visual "
             "entities.", "", f"Teachers: {', '.join(t.name for t in teachers)}. Clue verifier: {cfg.verifier} "
             f"`{cfg.detector if cfg.verifier == 'detector' else cfg.segmenter}`. Filters: {', '.join(cfg.filters)}.",
             ""]
    oracles = [t.name for t in teachers if getattr(t, "is_oracle", False)]
    if oracles:
        lines += [f"> **Oracle teacher ({', '.join(oracles)}).** It is NOT a model: it copies each photo's labels (the "
                  "true place, the caption) into a trace and answers with the true location, so that the offline smoke "
                  "pipeline has data of the right shape. Rows it wrote say nothing about what a VLM can infer. The "
                  "paper profile uses real teachers (Qwen2.5-VL-72B, InternVL3-78B).", ""]
    lines += ["## Sizes", "", "| split | rows |", "| --- | --- |"]
    lines += [f"| {s} | {len(ds)} |" for s, ds in dataset.items()]
    pivot = funnel.pivot_table(index=["split", "stage"], columns="teacher", values="kept", aggfunc="sum", sort=False)
    lines += ["", "## Funnel (survivors after each filter)", "", pivot.reset_index().to_markdown(index=False), ""]
    for col, title in (("country", "Countries (top 30)"), ("continent", "Continents"), ("licence", "Licences")):
        frames = [ds.select_columns([col]).to_pandas().assign(split=s) for s, ds in dataset.items()
                  if col in ds.column_names]
        if not frames:
            continue
        counts = pd.concat(frames).groupby([col, "split"]).size().unstack(fill_value=0)
        counts = counts.loc[counts.sum(axis=1).sort_values(ascending=False).index].head(30)
        lines += [f"## {title}", "", counts.reset_index().to_markdown(index=False), ""]
    lines += ["## Run", "", "```json", json.dumps(stats, indent=1, default=str), "```", "",
              "Photos keep their original licences (column `licence`, author in `owner`); attribute them when you "
              "reuse them.", ""]
    path.write_text("\n".join(lines), encoding="utf-8")
