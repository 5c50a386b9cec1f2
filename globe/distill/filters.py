"""The candidates (one per photo and teacher) and the filters that keep trustworthy traces (see the package
docstring). Every filter is `fn(df, cfg, *, images, detector, **models) -> df`: it keeps rows, and may add columns;
`models` holds what `apply_filters` was given besides (`embedder` for `alignment`, `segmenter` for `clues` with the
segmentation verifier)."""

from __future__ import annotations

import re
from collections.abc import Callable, Mapping, Sequence
from typing import TYPE_CHECKING, Any

from globe.distill.query import META_COLUMNS, answer_key, teacher_kinds

if TYPE_CHECKING:  # pragma: no cover
    from globe.distill import DistillParams

GROUND_TRUTH = "ground truth"


def collect_candidates(teachers: Sequence, splits: Mapping[str, Any], cache):
    """One row per (split, photo, teacher) with both answers cached: parsed answer, judgement and ground truth."""
    import pandas as pd

    from globe.answer import parse_completion, parse_localizability
    from globe.teachers import parse_gps

    vlms = [t for t in teachers if "reasoning" in teacher_kinds(t)]
    locators = [t for t in teachers if "gps" in teacher_kinds(t)]
    rows = []
    for split, ds in splits.items():
        gt = ds.select_columns([c for c in META_COLUMNS if c in ds.column_names]).to_pandas()
        for row, sample in enumerate(gt.to_dict("records")):
            gps = None
            for locator in locators[:1]:  # GeoCLIP's point for this photo, beside every VLM candidate
                rec = cache.get(answer_key(sample["id"], locator, "gps"))
                gps = parse_gps(rec["text"]) if rec else None
            for order, teacher in enumerate(vlms):
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
                    **({"geoclip_lat": gps[0], "geoclip_lon": gps[1], "geoclip_conf": gps[2]} if gps else
                       {"geoclip_lat": None, "geoclip_lon": None, "geoclip_conf": None} if locators else {}),
                })
    cols = ["split", "row", "id", "teacher", "teacher_order", "completion", "reasoning", "format_ok", "pred_country",
            "pred_city", "loc_text", "loc_label", "loc_score"] + [f"gt_{c}" for c in META_COLUMNS if c != "id"]
    if locators:
        cols += ["geoclip_lat", "geoclip_lon", "geoclip_conf"]
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


def filter_geoclip(df, cfg: DistillParams, **_: Any):
    """(3b) The teacher's answered place (geocoded offline) lies within `geoclip_km` (null: `agreement_km`) of
    GeoCLIP's point for the photo. Below `geoclip_min_confidence` GeoCLIP abstains and the row passes (counted in
    `geoclip_vote`); a photo GeoCLIP did not answer, or an answer that cannot be geocoded, fails."""
    from globe.geo import geocode, haversine_km

    if "geoclip_lat" not in df.columns:
        raise ValueError("the geoclip filter needs a teacher with backend geoclip in distill.teachers")
    df = df.copy()
    km = cfg.geoclip_km if cfg.geoclip_km is not None else cfg.agreement_km
    dist, vote = [], []
    for country, city, lat, lon, conf in zip(df["pred_country"], df["pred_city"], df["geoclip_lat"],
                                             df["geoclip_lon"], df["geoclip_conf"]):
        if lat is None or lat != lat:
            dist.append(float("nan"))
            vote.append("no_answer")
            continue
        place = geocode(", ".join(p for p in (city, country) if p)) if (city or country) else None
        if place is None or place.lat != place.lat:
            dist.append(float("nan"))
            vote.append("unresolved")
            continue
        d = float(haversine_km(place.lat, place.lon, float(lat), float(lon)))
        dist.append(d)
        vote.append("abstain" if float(conf) < cfg.geoclip_min_confidence else "agree" if d <= km else "disagree")
    df["geoclip_distance_km"], df["geoclip_vote"] = dist, vote
    return df[df["geoclip_vote"].isin(["agree", "abstain"])]


def lexical_embedder(texts: Sequence[str], dim: int = 4096):
    """The deterministic stand-in for a sentence encoder: hashed, L2-normalised bag-of-words vectors (lower-cased
    words, stable SHA-1 buckets), so the cosine of two texts measures their shared wording."""
    import hashlib

    import numpy as np

    out = np.zeros((len(texts), dim), dtype=np.float64)
    for i, text in enumerate(texts):
        for word in re.findall(r"[^\W\d_]{2,}", (text or "").lower()):
            out[i, int(hashlib.sha1(word.encode("utf-8")).hexdigest()[:8], 16) % dim] += 1.0
    norms = np.linalg.norm(out, axis=1, keepdims=True)
    return out / np.where(norms > 0, norms, 1.0)


def load_embedder(model: str, batch_size: int = 32, device: str | None = None) -> Callable:
    """texts -> L2-normalised sentence embeddings (numpy rows): `lexical` (the stand-in), or a sentence-embedding
    model from the hub / a folder through plain transformers, mean-pooled over the tokens (how sentence-transformers
    reads all-MiniLM-L6-v2 and its kin)."""
    if model == "lexical":
        return lexical_embedder
    import torch
    from transformers import AutoModel, AutoTokenizer

    dev = device or ("cuda" if torch.cuda.is_available() else "cpu")
    tok = AutoTokenizer.from_pretrained(str(model))
    enc = AutoModel.from_pretrained(str(model)).to(dev).eval()
    limit = min(int(getattr(tok, "model_max_length", 512) or 512), 512)

    def embed(texts: Sequence[str]):
        rows = []
        for start in range(0, len(texts), batch_size):
            batch = tok([t or "" for t in texts[start:start + batch_size]], padding=True, truncation=True,
                        max_length=limit, return_tensors="pt").to(dev)
            with torch.inference_mode():
                hidden = enc(**batch).last_hidden_state
            mask = batch["attention_mask"].unsqueeze(-1).to(hidden.dtype)
            pooled = (hidden * mask).sum(1) / mask.sum(1).clamp(min=1e-9)
            rows.append(torch.nn.functional.normalize(pooled.float(), dim=-1).cpu())
        return torch.cat(rows).numpy() if rows else torch.zeros((0, 1)).numpy()

    return embed


def filter_alignment(df, cfg: DistillParams, *, embedder: Callable | None = None, **_: Any):
    """(3c) The reasoning chains of the teachers still in the running on a photo are semantically aligned: a row's
    `alignment` is the mean cosine similarity of its reasoning's embedding to the other survivors' of the same
    photo, and must reach `min_alignment`. A row alone on its photo has nothing to align with: it passes when
    `min_agreeing_teachers` is 1, else fails."""
    import numpy as np

    df = df.copy()
    if len(df) == 0:
        df["alignment"] = []
        return df
    embed = embedder if embedder is not None else load_embedder(cfg.alignment_model)
    vectors = np.asarray(embed(list(df["reasoning"])), dtype=np.float64)
    keys = list(zip(df["split"], df["id"]))
    groups: dict[tuple, list[int]] = {}
    for i, k in enumerate(keys):
        groups.setdefault(k, []).append(i)
    alignment = np.full(len(df), np.nan)
    for idx in groups.values():
        if len(idx) < 2:
            continue
        sims = vectors[idx] @ vectors[idx].T
        for j, i in enumerate(idx):
            alignment[i] = float((sims[j].sum() - sims[j, j]) / (len(idx) - 1))
    df["alignment"] = alignment
    alone_ok = cfg.min_agreeing_teachers <= 1
    keep = np.where(np.isnan(alignment), alone_ok, alignment >= cfg.min_alignment)
    return df[keep]


# ADE20K labels (and other segmenters' common labels) that name clue-vocabulary terms in other words; a label also
# verifies every vocabulary term its own words spell (`globe.vocabulary.find_clues`).
SEGMENT_ALIASES: dict[str, tuple[str, ...]] = {
    "signboard": ("sign", "signage", "shop sign", "street sign", "road sign", "traffic sign", "billboard"),
    "trade name": ("logo", "lettering", "text", "shop sign"), "poster": ("poster", "banner"),
    "palm": ("palm tree", "coconut palm"), "tree": ("tree",), "plant": ("vegetation", "shrub"),
    "streetlight": ("street lamp", "lamp post"), "windowpane": ("window",), "earth": ("soil",), "land": ("soil",),
    "minibike": ("motorcycle", "scooter", "moped"), "ship": ("boat", "ferry"), "sculpture": ("statue", "monument"),
    "hovel": ("house",), "building": ("building", "architecture", "facade"), "sea": ("sea", "ocean", "coast"),
    "sand": ("sand", "beach", "dune"), "field": ("field", "farmland"), "grass": ("grass", "grassland"),
    "apparel": ("clothing",), "person": ("person", "people", "crowd"), "sidewalk": ("sidewalk", "pavement"),
    "railing": ("guardrail",), "pier": ("pier", "harbour", "harbor"), "skyscraper": ("skyscraper", "building"),
}


def segment_clues(label: str, aliases: Mapping[str, Sequence[str]] | None = None,
                  vocabulary: Sequence[str] | None = None) -> set[str]:
    """The clue-vocabulary terms a segment label verifies ("palm, palm tree" -> {"palm tree", "coconut palm"})."""
    from globe.vocabulary import find_clues

    aliases = SEGMENT_ALIASES if aliases is None else aliases
    out: set[str] = set()
    for part in re.split(r"[,;]", str(label)):
        part = part.strip().lower()
        if part:
            out |= set(aliases.get(part, ())) | set(find_clues(part, vocabulary))
    return out


def load_segmenter(model: str, device: str | int | None = None):
    """The segmentation model as a transformers `image-segmentation` pipeline (semantic or panoptic)."""
    from transformers import pipeline

    if device is None:
        import torch

        device = 0 if torch.cuda.is_available() else -1
    return pipeline("image-segmentation", model=str(model), device=device)


def segment_images(segmenter, images: Sequence, aliases=None, vocabulary=None,
                   min_area: float = 0.0) -> list[dict[str, float]]:
    """For each image, {clue term: the largest share of the image a segment verifying it covers}, over segments
    covering at least `min_area` of the image."""
    import numpy as np

    from globe.images import load_image

    out = []
    for im in images:
        found: dict[str, float] = {}
        for seg in segmenter(load_image(im)):
            mask = np.asarray(seg["mask"]) > 0
            area = float(mask.mean()) if mask.size else 0.0
            if area < min_area:
                continue
            for term in segment_clues(seg["label"], aliases, vocabulary):
                found[term] = max(found.get(term, 0.0), area)
        out.append(found)
    return out


def filter_clues(df, cfg: DistillParams, *, images: Callable | None = None, detector=None, segmenter=None,
                 **_: Any):
    """(4) Entities named in the reasoning are verified in the photo, by the open-vocabulary detector
    (`verifier: detector`: a detection of the entity scoring >= `detector_threshold`) or by a segmentation model
    (`verifier: segmentation`, GLOBE's: the entity is among the visual elements the segmenter finds, mapped to the
    clue vocabulary, covering >= `segment_min_area` of the photo); `entities` keeps the verified ones."""
    from globe.vocabulary import extract_entities

    df = df.copy()
    named = [extract_entities(r, cfg.clue_vocabulary, cfg.max_entities) for r in df["reasoning"]]
    df["named_entities"] = named
    if len(df) == 0:
        df["entities"], df["verified_share"], df["entity_scores"] = [], [], []
        return df
    if images is None:
        raise ValueError("the clues filter needs images")
    if cfg.verifier == "segmentation":
        segmenter = segmenter if segmenter is not None else load_segmenter(cfg.segmenter)
        photos = list(dict.fromkeys(zip(df["split"], df["row"])))
        found = dict(zip(photos, segment_images(segmenter, [images(s, r) for s, r in photos], cfg.segment_aliases,
                                                cfg.clue_vocabulary, cfg.segment_min_area)))
        df["entity_scores"] = [{lab: found[(s, r)].get(lab, 0.0) for lab in labels}
                               for s, r, labels in zip(df["split"], df["row"], named)]
        df["entities"] = [[lab for lab, sc in es.items() if sc > 0] for es in df["entity_scores"]]
        df["verified_share"] = [len(v) / len(n) if n else 0.0 for v, n in zip(df["entities"], named)]
        return df[df["verified_share"] >= cfg.min_verified_share]
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
    "geoclip": filter_geoclip,
    "alignment": filter_alignment,
    "clues": filter_clues,
}


# The default profile's filters (GLOBE's four, filter 3 as teacher agreement alone); the paper profile adds
# `geoclip` and `alignment` after `agreement`.
DEFAULT_FILTERS = ("localizability", "ground_truth", "agreement", "clues")


def apply_filters(df, cfg: DistillParams, *, images: Callable | None = None, detector=None,
                  names: Sequence[str] | None = None, **models: Any):
    """Run the filters in order; returns (survivors, [(stage, survivors after it), ...] starting with 'judged').
    `models` (`embedder`, `segmenter`) go to every filter; one left out is loaded from `cfg` when needed."""
    names = list(names if names is not None else cfg.filters)
    unknown = [n for n in names if n not in FILTERS]
    if unknown:
        raise ValueError(f"unknown distill filters {unknown}; known: {list(FILTERS)}")
    stages = [("judged", df)]
    for name in names:
        df = FILTERS[name](df, cfg, images=images, detector=detector, **models)
        stages.append((name, df))
    return df, stages
