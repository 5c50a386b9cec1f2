"""The candidates (one per photo and teacher) and the four filters that keep trustworthy traces (see the package
docstring). Every filter is `fn(df, cfg, *, images, detector) -> df`: it keeps rows, and may add columns."""

from __future__ import annotations

import re
from collections.abc import Callable, Mapping, Sequence
from typing import TYPE_CHECKING, Any

from globe.distill.query import META_COLUMNS, answer_key

if TYPE_CHECKING:  # pragma: no cover
    from globe.distill import DistillParams

GROUND_TRUTH = "ground truth"


def collect_candidates(teachers: Sequence, splits: Mapping[str, Any], cache):
    """One row per (split, photo, teacher) with both answers cached: parsed answer, judgement and ground truth."""
    import pandas as pd

    from globe.answer import parse_completion, parse_localizability

    rows = []
    for split, ds in splits.items():
        gt = ds.select_columns([c for c in META_COLUMNS if c in ds.column_names]).to_pandas()
        for row, sample in enumerate(gt.to_dict("records")):
            for order, teacher in enumerate(teachers):
                r = cache.get(answer_key(sample["id"], teacher, "reasoning"))
                loc = cache.get(answer_key(sample["id"], teacher, "localizability"))
                if r is None or loc is None:
                    continue
                p = parse_completion(r["text"])
                label, score = parse_localizability(loc["text"])
                rows.append({
                    "split": split, "row": row, "id": str(sample["id"]), "teacher": teacher.name,
                    "teacher_order": order, "completion": r["text"], "reasoning": p.think or "",
                    "format_ok": p.format_ok, "pred_country": p.country, "pred_city": p.city,
                    "loc_text": loc["text"], "loc_label": label, "loc_score": score,
                    **{f"gt_{c}": sample.get(c) for c in META_COLUMNS if c != "id"},
                })
    cols = ["split", "row", "id", "teacher", "teacher_order", "completion", "reasoning", "format_ok", "pred_country",
            "pred_city", "loc_text", "loc_label", "loc_score"] + [f"gt_{c}" for c in META_COLUMNS if c != "id"]
    return pd.DataFrame(rows, columns=cols)


# ------------------------------------------------------------------------------------------------------- matching


def city_matches(pred: str | None, truth: str | None, country: str | None, rule: str, km: float) -> bool:
    """The ground-truth city check: `string` is GLOBE's string rule, `gazetteer` the same place or within `km`."""
    from globe.geo import globe_string_match, same_city

    if not pred or not truth:
        return False
    if rule == "string":
        return bool(globe_string_match(pred, truth))
    if rule == "gazetteer":
        return bool(same_city(pred, truth, country=country, km=km))
    raise ValueError(f"distill.city_rule must be 'string' or 'gazetteer', got {rule!r}")


def answers_agree(a_country, a_city, b_country, b_city, km: float) -> bool:
    """Two answers agree: same country (normalised) and cities within `km` (by the gazetteer), or equal names."""
    from globe.geo import same_city, same_country

    if not a_country or not b_country or not same_country(a_country, b_country):
        return False
    if not a_city or not b_city:
        return False
    return bool(same_city(a_city, b_city, country=a_country, km=km))


_WORDS = re.compile(r"[^\W\d_]+(?:['’.-][^\W\d_]+)*")


def countries_named(text: str | None) -> set[str]:
    """ISO codes of the countries a text names, by the gazetteer's country names and aliases (whole words; short
    aliases such as "US" or "UK" only when written in capitals, so "us" in a sentence is not the United States)."""
    from globe.geo import gazetteer, normalize

    gaz = gazetteer()
    words = _WORDS.findall(text or "")
    found = set()
    for n in range(min(6, len(words)), 0, -1):
        for i in range(len(words) - n + 1):
            raw = " ".join(words[i:i + n])
            key = normalize(raw)
            if len(key) <= 3 and not raw.isupper():
                continue
            cc = gaz.country_index.get(key)
            if cc:
                found.add(cc)
    return found


def reasoning_consistent(completion: str, country: str | None) -> bool:
    """The `agreement` filter's self-consistency check: a well-formed completion whose answered country is among
    the countries its reasoning names (when it names any)."""
    from globe.answer import parse_completion
    from globe.geo import same_country

    p = parse_completion(completion)
    if not p.format_ok or not country:
        return False
    named = countries_named(p.think or "")
    return not named or any(same_country(country, code) for code in named)


# -------------------------------------------------------------------------------------------------------- entities


def load_detector(model: str, device: str | int | None = None):
    """The open-vocabulary detector as a transformers `zero-shot-object-detection` pipeline."""
    from transformers import pipeline

    if device is None:
        import torch

        device = 0 if torch.cuda.is_available() else -1
    return pipeline("zero-shot-object-detection", model=str(model), device=device)


def verify_entities(detector, images: Sequence, labels: Sequence[Sequence[str]], threshold: float,
                    batch_size: int = 8) -> list[dict[str, float]]:
    """For each image, the best detection score of each of its labels (0.0 when nothing passes `threshold`)."""
    from globe.images import load_image

    inputs = [{"image": load_image(im), "candidate_labels": list(ls)} for im, ls in zip(images, labels) if ls]
    results = iter(detector(inputs, threshold=threshold, batch_size=batch_size) if inputs else [])
    out = []
    for ls in labels:
        best = {label: 0.0 for label in ls}
        if ls:
            dets = next(results)
            for d in dets if isinstance(dets, list) else [dets]:
                if d["label"] in best:
                    best[d["label"]] = max(best[d["label"]], float(d["score"]))
        out.append(best)
    return out


# --------------------------------------------------------------------------------------------------------- filters


def filter_localizability(df, cfg: DistillParams, **_: Any):
    """(1) The teacher judges the photo localizable: label yes and score >= `min_localizability`."""
    score = df["loc_score"].astype(float)
    keep = (df["loc_label"] == True) & (score >= cfg.min_localizability)  # noqa: E712 (None-safe)
    return df[keep.fillna(False).astype(bool)]


def filter_ground_truth(df, cfg: DistillParams, **_: Any):
    """(2) The teacher's country is the photo's and its city passes `city_rule` (radius `city_km` for gazetteer)."""
    from globe.geo import same_country

    df = df.copy()
    df["country_ok"] = [bool(p) and same_country(p, c or n)
                        for p, c, n in zip(df["pred_country"], df["gt_country_code"], df["gt_country"])]
    df["city_ok"] = [ok and city_matches(p, t, c, cfg.city_rule, cfg.city_km)
                     for ok, p, t, c in zip(df["country_ok"], df["pred_city"], df["gt_city"], df["gt_country_code"])]
    return df[df["country_ok"] & df["city_ok"]]


def filter_agreement(df, cfg: DistillParams, **_: Any):
    """(3) Consistent reasoning, and >= `min_agreeing_teachers` remaining teachers agree (country, `agreement_km`)."""
    df = df.copy()
    df["consistent"] = [reasoning_consistent(c, k) for c, k in zip(df["completion"], df["pred_country"])]
    n_agree = []
    for _, row in df.iterrows():
        peers = df[(df["split"] == row["split"]) & (df["id"] == row["id"]) & df["consistent"]]
        n_agree.append(sum(
            answers_agree(row["pred_country"], row["pred_city"], p["pred_country"], p["pred_city"], cfg.agreement_km)
            for _, p in peers.iterrows()
        ))
    df["n_agree"] = n_agree
    return df[df["consistent"] & (df["n_agree"] >= cfg.min_agreeing_teachers)]


def filter_clues(df, cfg: DistillParams, *, images: Callable | None = None, detector=None, **_: Any):
    """(4) Entities named in the reasoning are checked by the detector; `entities` keeps the verified ones."""
    from globe.vocabulary import extract_entities

    df = df.copy()
    named = [extract_entities(r, cfg.clue_vocabulary, cfg.max_entities) for r in df["reasoning"]]
    df["named_entities"] = named
    if len(df) == 0:
        df["entities"], df["verified_share"], df["entity_scores"] = [], [], []
        return df
    if images is None:
        raise ValueError("the clues filter needs images")
    detector = detector if detector is not None else load_detector(cfg.detector)
    # One detector call per photo, over the union of the labels its teachers named.
    photos: dict[tuple, list[str]] = {}
    for (split, row), labels in zip(zip(df["split"], df["row"]), named):
        photos.setdefault((split, row), [])
        photos[(split, row)] += [lab for lab in labels if lab not in photos[(split, row)]]
    keys = list(photos)
    scores = verify_entities(detector, [images(s, r) for s, r in keys], [photos[k] for k in keys],
                             cfg.detector_threshold, cfg.detector_batch_size)
    by_photo = dict(zip(keys, scores))
    df["entity_scores"] = [{lab: by_photo[(s, r)][lab] for lab in labels}
                           for s, r, labels in zip(df["split"], df["row"], named)]
    df["entities"] = [[lab for lab, sc in es.items() if sc >= cfg.detector_threshold and sc > 0]
                      for es in df["entity_scores"]]
    df["verified_share"] = [len(v) / len(n) if n else 0.0 for v, n in zip(df["entities"], named)]
    return df[df["verified_share"] >= cfg.min_verified_share]


FILTERS: dict[str, Callable] = {
    "localizability": filter_localizability,
    "ground_truth": filter_ground_truth,
    "agreement": filter_agreement,
    "clues": filter_clues,
}


def apply_filters(df, cfg: DistillParams, *, images: Callable | None = None, detector=None,
                  names: Sequence[str] | None = None):
    """Run the filters in order; returns (survivors, [(stage, survivors after it), ...] starting with 'judged')."""
    names = list(names if names is not None else cfg.filters)
    unknown = [n for n in names if n not in FILTERS]
    if unknown:
        raise ValueError(f"unknown distill filters {unknown}; known: {list(FILTERS)}")
    stages = [("judged", df)]
    for name in names:
        df = FILTERS[name](df, cfg, images=images, detector=detector)
        stages.append((name, df))
    return df, stages
