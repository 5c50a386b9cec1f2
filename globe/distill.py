"""Distillation: teachers answer, filters keep what is trustworthy, an MP16-Reason-style dataset comes out.

GLOBE's recipe (paper §3.1), step by step as `run_distillation` does it:

1. Query. Every teacher answers every photo of every split twice: the reasoning prompt and the localizability prompt
   (`globe.prompts`). Each raw answer is appended to a JSONL cache keyed by (image id, teacher, prompt version,
   prompt, sampling parameters), flushed and fsynced per batch. A run killed at any moment and started again skips
   what the cache holds: nothing lost, nothing asked twice. A torn last line (a write cut by the kill) is detected,
   cut off and reported. Failed requests are not cached (a rerun retries them) and are counted.
2. Filter, in order (`FILTERS`, thresholds in params.yaml `distill`), one candidate per (photo, teacher):
   - `localizability`: the teacher says `localizable: yes` with score >= `min_localizability`;
   - `ground_truth`:   the teacher's country and city agree with the photo's true location (`match: globe` = GLOBE's
                       string rule on names; `match: normalized` = gazetteer-normalised names, cities within `city_km`);
   - `agreement`:      the reasoning is consistent (the completion is well formed — one think block, then one answer
                       with a country and a city line — and if the reasoning names countries, the answered one is
                       among them) and at least `min_agreeing_teachers` teachers (itself included) that are still in
                       the running give the same country and a city within `agreement_km`;
   - `clues`:          the visual entities named in the reasoning (its `Clues:` list and clue-vocabulary nouns) are
                       checked by an open-vocabulary detector (`zero-shot-object-detection`, OWLv2 in the paper
                       profile); verified ones become `entities`; the share verified must reach `min_verified_share`.
   The funnel (survivors after each filter, per teacher, plus distinct photos) and the teacher agreement matrix go
   to `results/distill/`.
3. Write. Per photo the surviving candidate with the highest localizability score (ties: teacher order) becomes one
   row of the dataset at `distill.out` (splits as ingested), with a dataset card README.md. Every judged (photo,
   teacher) of the train split — positives and negatives — becomes a row of the localizability dataset that trains
   the reward model.
"""

from __future__ import annotations

import hashlib
import json
import logging
import os
import re
import shutil
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

log = logging.getLogger(__name__)

PROMPT_KINDS = ("reasoning", "localizability")
STAGES = ("judged", "localizability", "ground_truth", "agreement", "clues")
GROUND_TRUTH = "ground truth"


def prompt_text(kind: str) -> str:
    from globe import prompts

    return {"reasoning": prompts.REASONING_PROMPT, "localizability": prompts.LOCALIZABILITY_PROMPT}[kind]


# ------------------------------------------------------------------------------------------------------ the cache


def cache_key(image_id: str, teacher: str, prompt: str, sampling, prompt_version: str | None = None) -> str:
    """The cache key of one answer: (image id, teacher, prompt version, prompt, sampling parameters).

    `prompt` is a prompt kind (`PROMPT_KINDS`: its current text is part of the key too, so an edited prompt is asked
    again even when nobody bumped `PROMPT_VERSION`) or a prompt text.
    """
    from globe.prompts import PROMPT_VERSION

    text = prompt_text(prompt) if prompt in PROMPT_KINDS else prompt
    parts = [str(image_id), teacher, prompt_version or PROMPT_VERSION, prompt, text, sampling.key()]
    return hashlib.sha256(json.dumps(parts).encode("utf-8")).hexdigest()[:32]


class ResponseCache:
    """An append-only JSONL file of teacher answers, one JSON object per line, keyed by `cache_key`.

    Loading tolerates a torn last line (no trailing newline: a write cut by a kill) by cutting it off the file, and
    counts unreadable lines elsewhere and duplicate keys (the first one wins); `report` says what was found.
    """

    def __init__(self, path: str | os.PathLike):
        self.path = Path(path)
        self.records: dict[str, dict] = {}
        self.torn_bytes = 0
        self.corrupt_lines = 0
        self.duplicates = 0
        self._load()

    def _load(self) -> None:
        if not self.path.exists():
            return
        data = self.path.read_bytes()
        end = data.rfind(b"\n") + 1
        if end < len(data):
            self.torn_bytes = len(data) - end
            log.warning("distill cache %s: torn last line (%d bytes, an interrupted write) ignored and cut off",
                        self.path, self.torn_bytes)
            with open(self.path, "r+b") as f:  # the next append must start on a fresh line
                f.truncate(end)
                f.flush()
                os.fsync(f.fileno())
        for line in data[:end].splitlines():
            if not line.strip():
                continue
            try:
                rec = json.loads(line)
                key = rec["key"]
            except (ValueError, KeyError, TypeError):
                self.corrupt_lines += 1
                continue
            if key in self.records:
                self.duplicates += 1
                continue
            self.records[key] = rec
        if self.corrupt_lines or self.duplicates:
            log.warning("distill cache %s: %d unreadable lines skipped, %d duplicate keys ignored",
                        self.path, self.corrupt_lines, self.duplicates)

    def __contains__(self, key: str) -> bool:
        return key in self.records

    def __len__(self) -> int:
        return len(self.records)

    def get(self, key: str) -> dict | None:
        return self.records.get(key)

    def append(self, records: Sequence[dict]) -> None:
        """Append records durably (one write, flush, fsync): after this returns they survive a kill -9."""
        if not records:
            return
        self.path.parent.mkdir(parents=True, exist_ok=True)
        blob = "".join(json.dumps(r, ensure_ascii=False) + "\n" for r in records)
        with open(self.path, "a", encoding="utf-8") as f:
            f.write(blob)
            f.flush()
            os.fsync(f.fileno())
        for r in records:
            self.records[r["key"]] = r

    def report(self) -> dict:
        return {"records": len(self.records), "torn_bytes": self.torn_bytes, "corrupt_lines": self.corrupt_lines,
                "duplicates": self.duplicates}


_META_COLUMNS = ("id", "lat", "lon", "country_code", "country", "admin1", "city", "continent", "title")


def _record(key: str, split: str, kind: str, request, response, teacher: str, sampling) -> dict:
    """The cache line of one answer."""
    from globe.prompts import PROMPT_VERSION

    return {"key": key, "id": request.id, "split": split, "teacher": teacher, "prompt": kind,
            "prompt_version": PROMPT_VERSION, "sampling": json.loads(sampling.key()), "text": response.text,
            "meta": response.meta}


def query_teachers(teachers: Sequence, splits: Mapping[str, Any], cache: ResponseCache, batch_size: int = 8,
                   kinds: Sequence[str] = PROMPT_KINDS, progress: bool = False) -> dict:
    """Ask every teacher every prompt about every photo of `splits` ({name: datasets.Dataset}) that the cache lacks.

    Answers are cached per batch. Failed requests are not cached (a rerun retries them); they are counted in the
    returned stats: {"asked", "cached", "errors", "seconds": {teacher: n}, "error_examples": [...]}.
    """
    from tqdm.auto import tqdm

    from globe.teachers import ErrorBudgetExceeded, Request

    import time

    stats: dict = {"asked": {}, "cached": {}, "errors": {}, "seconds": {}, "error_examples": []}
    for teacher in teachers:
        t = teacher.name
        t0 = time.perf_counter()
        stats["asked"][t] = stats["cached"][t] = stats["errors"][t] = 0
        todo: list[tuple[str, int, str, str]] = []  # (split, row, kind, key)
        for split, ds in splits.items():
            ids = ds["id"]
            for kind in kinds:
                for row, image_id in enumerate(ids):
                    key = cache_key(image_id, t, kind, teacher.sampling)
                    if key in cache:
                        stats["cached"][t] += 1
                    else:
                        todo.append((split, row, kind, key))
        # A teacher that reads metadata only (the reference stand-in) is spared decoding every photo.
        view = splits if getattr(teacher, "needs_image", True) else {s: d.remove_columns("image") for s, d in splits.items()}
        bar = tqdm(total=len(todo), desc=f"teacher {t}", disable=not progress)
        for start in range(0, len(todo), batch_size):
            batch = todo[start:start + batch_size]
            requests = []
            for split, row, kind, _ in batch:
                sample = view[split][row]
                meta = {c: sample.get(c) for c in _META_COLUMNS}
                requests.append(Request(id=str(sample["id"]), image=sample.get("image"), prompt=prompt_text(kind),
                                        sampling=teacher.sampling, meta=meta))
            try:
                responses = teacher.complete(requests)
            except ErrorBudgetExceeded as e:  # keep the answers of this batch that did complete, then stop
                cache.append([_record(key, split, kind, req, resp, t, teacher.sampling)
                              for (split, _, kind, key), req, resp in zip(batch, requests, e.responses)
                              if resp is not None and resp.error is None])
                raise
            if len(responses) != len(requests):
                raise RuntimeError(f"teacher {t!r} returned {len(responses)} responses for {len(requests)} requests")
            records = []
            for (split, row, kind, key), req, resp in zip(batch, requests, responses):
                stats["asked"][t] += 1
                if resp.error is not None:
                    stats["errors"][t] += 1
                    if len(stats["error_examples"]) < 5:
                        stats["error_examples"].append(f"{t} {req.id} {kind}: {resp.error[:200]}")
                    continue
                records.append(_record(key, split, kind, req, resp, t, teacher.sampling))
            cache.append(records)
            bar.update(len(batch))
        bar.close()
        stats["seconds"][t] = round(time.perf_counter() - t0, 3)
        if stats["errors"][t]:
            log.warning("teacher %s: %d requests failed (not cached; a rerun retries them)", t, stats["errors"][t])
    return stats


# ---------------------------------------------------------------------------------------------------- candidates


def collect_candidates(teachers: Sequence, splits: Mapping[str, Any], cache: ResponseCache):
    """One row per (split, photo, teacher) with both answers cached: parsed answer, judgement and ground truth."""
    import pandas as pd

    from globe.answer import parse_completion, parse_localizability

    rows = []
    for split, ds in splits.items():
        gt = ds.select_columns([c for c in _META_COLUMNS if c in ds.column_names]).to_pandas()
        for row, sample in enumerate(gt.to_dict("records")):
            for order, teacher in enumerate(teachers):
                r = cache.get(cache_key(sample["id"], teacher.name, "reasoning", teacher.sampling))
                loc = cache.get(cache_key(sample["id"], teacher.name, "localizability", teacher.sampling))
                if r is None or loc is None:
                    continue
                p = parse_completion(r["text"])
                label, score = parse_localizability(loc["text"])
                rows.append({
                    "split": split, "row": row, "id": str(sample["id"]), "teacher": teacher.name, "teacher_order": order,
                    "completion": r["text"], "reasoning": p.think or "", "format_ok": p.format_ok,
                    "pred_country": p.country, "pred_city": p.city,
                    "loc_text": loc["text"], "loc_label": label, "loc_score": score,
                    **{f"gt_{c}": sample.get(c) for c in _META_COLUMNS if c != "id"},
                })
    cols = ["split", "row", "id", "teacher", "teacher_order", "completion", "reasoning", "format_ok", "pred_country",
            "pred_city", "loc_text", "loc_label", "loc_score"] + [f"gt_{c}" for c in _META_COLUMNS if c != "id"]
    return pd.DataFrame(rows, columns=cols)


# ------------------------------------------------------------------------------------------------------- matching


def _country_match(pred: str | None, truth_code: str | None, truth_name: str | None) -> bool:
    from globe.geo import same_country

    if not pred:
        return False
    return bool(same_country(pred, truth_code or truth_name))


def _city_match(pred: str | None, truth: str | None, country: str | None, rule: str, km: float) -> bool:
    from globe.geo import globe_string_match, same_city

    if not pred or not truth:
        return False
    if rule == "globe":
        return bool(globe_string_match(pred, truth))
    if rule == "normalized":
        return bool(same_city(pred, truth, country=country, km=km))
    raise ValueError(f"distill.match must be 'globe' or 'normalized', got {rule!r}")


def answers_agree(a_country, a_city, b_country, b_city, km: float) -> bool:
    """Two answers agree: same country (normalised) and cities within `km` (by the gazetteer), or equal names."""
    from globe.geo import same_city, same_country

    if not a_country or not b_country or not same_country(a_country, b_country):
        return False
    if not a_city or not b_city:
        return False
    return bool(same_city(a_city, b_city, country=a_country, km=km))


def countries_named(text: str) -> set[str]:
    """Alpha-2 codes of the countries a text names (English short / common names, whole words)."""
    pattern, lookup = _country_pattern()
    return {lookup[m.group(0).lower()] for m in pattern.finditer(text or "")}


_COUNTRY_RE: tuple | None = None


def _country_pattern():
    global _COUNTRY_RE
    if _COUNTRY_RE is None:
        import pycountry

        lookup: dict[str, str] = {}
        for c in pycountry.countries:
            for attr in ("name", "common_name"):
                name = getattr(c, attr, None)
                # Names with commas ("Korea, Republic of") never occur verbatim in prose.
                if name and "," not in name:
                    lookup[name.lower()] = c.alpha_2
        lookup.update({"usa": "US", "united states of america": "US", "uk": "GB", "britain": "GB", "england": "GB",
                       "scotland": "GB", "wales": "GB", "south korea": "KR", "north korea": "KP", "russia": "RU",
                       "vietnam": "VN", "czech republic": "CZ", "turkey": "TR", "iran": "IR", "syria": "SY",
                       "laos": "LA", "bolivia": "BO", "venezuela": "VE", "tanzania": "TZ", "taiwan": "TW"})
        names = sorted(lookup, key=len, reverse=True)
        _COUNTRY_RE = (re.compile(r"\b(?:" + "|".join(re.escape(n) for n in names) + r")\b", re.I), lookup)
    return _COUNTRY_RE


def reasoning_consistent(completion: str, country: str | None) -> bool:
    """The `agreement` filter's self-consistency check (see the module docstring)."""
    from globe.geo import same_country
    from globe.answer import parse_completion

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
    inputs = [{"image": im.convert("RGB"), "candidate_labels": list(ls)} for im, ls in zip(images, labels) if ls]
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


def filter_localizability(df, cfg: Mapping, images: Callable | None = None):
    """(1) The teacher judges the photo localizable: label yes and score >= `min_localizability`."""
    score = df["loc_score"].astype(float)
    keep = (df["loc_label"] == True) & (score >= float(cfg["min_localizability"]))  # noqa: E712 (None-safe)
    return df[keep.fillna(False).astype(bool)]


def filter_ground_truth(df, cfg: Mapping, images: Callable | None = None):
    """(2) The teacher's country and city agree with the photo's true location (rule `match`, radius `city_km`)."""
    df = df.copy()
    df["country_ok"] = [_country_match(p, c, n) for p, c, n in zip(df["pred_country"], df["gt_country_code"], df["gt_country"])]
    df["city_ok"] = [
        ok and _city_match(p, t, c, cfg.get("match", "globe"), float(cfg.get("city_km", 25)))
        for ok, p, t, c in zip(df["country_ok"], df["pred_city"], df["gt_city"], df["gt_country_code"])
    ]
    return df[df["country_ok"] & df["city_ok"]]


def filter_agreement(df, cfg: Mapping, images: Callable | None = None):
    """(3) Consistent reasoning, and >= `min_agreeing_teachers` remaining teachers agree (country, `agreement_km`)."""
    df = df.copy()
    km, need = float(cfg.get("agreement_km", 100)), int(cfg.get("min_agreeing_teachers", 1))
    df["consistent"] = [reasoning_consistent(c, k) for c, k in zip(df["completion"], df["pred_country"])]
    n_agree = []
    for _, row in df.iterrows():
        peers = df[(df["split"] == row["split"]) & (df["id"] == row["id"]) & df["consistent"]]
        n_agree.append(sum(
            answers_agree(row["pred_country"], row["pred_city"], p["pred_country"], p["pred_city"], km)
            for _, p in peers.iterrows()
        ))
    df["n_agree"] = n_agree
    return df[df["consistent"] & (df["n_agree"] >= need)]


def filter_clues(df, cfg: Mapping, images: Callable | None = None):
    """(4) Entities named in the reasoning are checked by the detector; `entities` keeps the verified ones."""
    df = df.copy()
    from globe.vocabulary import extract_entities

    vocab = cfg.get("clue_vocabulary") or None
    named = [extract_entities(r, vocab, int(cfg.get("max_entities", 8))) for r in df["reasoning"]]
    df["named_entities"] = named
    if len(df) == 0:
        df["entities"], df["verified_share"], df["entity_scores"] = [], [], []
        return df
    if images is None:
        raise ValueError("the clues filter needs images")
    detector = cfg["_detector"] if "_detector" in cfg else load_detector(cfg["detector"])
    threshold = float(cfg.get("detector_threshold", 0.1))
    # One detector call per photo, over the union of the labels its teachers named.
    photos: dict[tuple, list[str]] = {}
    for (split, row), labels in zip(zip(df["split"], df["row"]), named):
        photos.setdefault((split, row), [])
        photos[(split, row)] += [lab for lab in labels if lab not in photos[(split, row)]]
    keys = list(photos)
    scores = verify_entities(detector, [images(s, r) for s, r in keys], [photos[k] for k in keys], threshold,
                             int(cfg.get("detector_batch_size", 8)))
    by_photo = dict(zip(keys, scores))
    df["entity_scores"] = [{lab: by_photo[(s, r)][lab] for lab in labels} for s, r, labels in zip(df["split"], df["row"], named)]
    df["entities"] = [[lab for lab, sc in es.items() if sc >= threshold and sc > 0] for es in df["entity_scores"]]
    df["verified_share"] = [len(v) / len(n) if n else 0.0 for v, n in zip(df["entities"], named)]
    return df[df["verified_share"] >= float(cfg.get("min_verified_share", 0.5))]


FILTERS: dict[str, Callable] = {
    "localizability": filter_localizability,
    "ground_truth": filter_ground_truth,
    "agreement": filter_agreement,
    "clues": filter_clues,
}


def apply_filters(df, cfg: Mapping, images: Callable | None = None, names: Sequence[str] | None = None):
    """Run the filters in order; returns (survivors, [(stage, survivors after it), ...] starting with 'judged')."""
    names = list(names if names is not None else cfg.get("filters") or FILTERS)
    unknown = [n for n in names if n not in FILTERS]
    if unknown:
        raise ValueError(f"unknown distill filters {unknown}; known: {list(FILTERS)}")
    stages = [("judged", df)]
    for name in names:
        df = FILTERS[name](df, cfg, images)
        stages.append((name, df))
    return df, stages


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


# ---------------------------------------------------------------------------------------------------------- output

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


def write_card(path: Path, dataset, funnel, cfg: Mapping, stats: Mapping) -> None:
    """The dataset card (README.md): provenance, the funnel, sizes, countries, continents, licences."""
    import pandas as pd

    teachers = [t.get("name", t.get("backend")) for t in cfg.get("teachers", [])]
    lines = ["# MP16-Reason-style distilled dataset (GLOBE reimplementation)", "",
             "Built by `globe.distill.run_distillation` (notebook 02_distill). Each row: a photo, the GLOBE reasoning "
             "prompt, a teacher's reasoning trace, the training target `<think>…</think><answer>…</answer>` (ground-"
             "truth country and city names), the teacher's localizability judgement and the detector-verified visual "
             "entities.", "", f"Teachers: {', '.join(teachers)}. Detector: `{cfg.get('detector')}`. "
             f"Filters: {', '.join(cfg.get('filters') or FILTERS)}.", ""]
    if any(t.get("backend") == "reference" for t in cfg.get("teachers", [])):
        lines += ["> **Stand-in teacher.** The `reference` teacher is NOT a model: it writes traces from each photo's "
                  "metadata and answers with the true location, so that the smoke pipeline has data. Rows it wrote say "
                  "nothing about what a VLM can infer. The paper profile uses real teachers (Qwen2.5-VL-72B, "
                  "InternVL3-78B).", ""]
    lines += ["## Sizes", "", "| split | rows |", "| --- | --- |"]
    lines += [f"| {s} | {len(ds)} |" for s, ds in dataset.items()]
    lines += ["", "## Funnel (survivors after each filter)", "", _markdown(funnel.pivot_table(
        index=["split", "stage"], columns="teacher", values="kept", aggfunc="sum", sort=False).reset_index()), ""]
    for col, title in (("country", "Countries (top 30)"), ("continent", "Continents"), ("licence", "Licences")):
        frames = [ds.select_columns([col]).to_pandas().assign(split=s) for s, ds in dataset.items() if col in ds.column_names]
        if not frames:
            continue
        counts = pd.concat(frames).groupby([col, "split"]).size().unstack(fill_value=0)
        counts = counts.loc[counts.sum(axis=1).sort_values(ascending=False).index].head(30)
        lines += [f"## {title}", "", _markdown(counts.reset_index()), ""]
    lines += ["## Run", "", "```json", json.dumps(stats, indent=1, default=str), "```", "",
              "Photos keep their original licences (column `licence`, author in `owner`); attribute them when you "
              "reuse them.", ""]
    path.write_text("\n".join(lines), encoding="utf-8")


def _markdown(df) -> str:
    cols = [str(c) for c in df.columns]
    out = ["| " + " | ".join(cols) + " |", "| " + " | ".join("---" for _ in cols) + " |"]
    for row in df.itertuples(index=False):
        out.append("| " + " | ".join("" if v != v else str(v) for v in row) + " |")
    return "\n".join(out)


# ------------------------------------------------------------------------------------------------------ the stage


@dataclass
class DistillResult:
    dataset: Any  # DatasetDict
    localizability: Any  # Dataset
    candidates: Any  # DataFrame: every judged (photo, teacher) with the columns the filters added
    survivors: Any  # DataFrame: candidates after all filters
    funnel: Any
    agreement: Any
    stats: dict = field(default_factory=dict)
    stages: dict = field(default_factory=dict)  # stage -> survivors after it (with the columns each filter adds)


def _save(ds, path: Path) -> None:
    """save_to_disk that also works for empty splits (datasets writes 0 shards for them, which it cannot reload)."""
    from datasets import DatasetDict

    if isinstance(ds, DatasetDict):
        ds.save_to_disk(str(path), num_shards={k: 1 if len(v) == 0 else None for k, v in ds.items()})
    else:
        ds.save_to_disk(str(path), num_shards=1 if len(ds) == 0 else None)


def _replace(partial: Path, final: Path) -> None:
    shutil.rmtree(final, ignore_errors=True)
    os.replace(partial, final)


def load_splits(path: str, names: Sequence[str] | None, max_images: int | None = None) -> dict:
    from globe.data import open_saved

    dd = open_saved(path)
    names = list(names or dd.keys())
    missing = [n for n in names if n not in dd]
    if missing:
        raise KeyError(f"{path} has no split(s) {missing}; it has {list(dd.keys())}")
    return {n: dd[n].select(range(min(len(dd[n]), max_images))) if max_images else dd[n] for n in names}


def ensure_detector(cfg: Mapping) -> str:
    """The detector path; builds the tiny random one there when missing and `build_detector` is set."""
    det = str(cfg["detector"])
    if not Path(det).exists() and cfg.get("build_detector"):
        from globe.tiny import build_tiny_detector

        log.info("building the tiny random detector at %s", det)
        build_tiny_detector(det, seed=int(cfg.get("seed", 0)))
    return det


def run_distillation(cfg: Mapping, teachers: Sequence | None = None, progress: bool = True) -> DistillResult:
    """The whole stage from the `distill` params (+ `common`): query, filter, write dataset, card and results."""
    from globe.teachers import make_teacher

    import time

    cfg = dict(cfg)
    clock = {"start": time.perf_counter()}
    splits = load_splits(cfg["dataset"], cfg.get("splits"), cfg.get("max_images"))
    if teachers is None:
        teachers = [make_teacher(t, seed=cfg.get("seed")) for t in cfg["teachers"]]
    names = [t.name for t in teachers]
    if len(set(names)) != len(names):
        raise ValueError(f"teacher names must be unique (they key the cache): {names}")
    cache = ResponseCache(cfg["cache"])
    stats = {"cache_on_load": cache.report()}
    stats["query"] = query_teachers(teachers, splits, cache, int(cfg.get("batch_size", 8)), progress=progress)
    for t in teachers:
        t.close()
    clock["query"] = time.perf_counter()
    judged = collect_candidates(teachers, splits, cache)
    stats["unparsed_localizability"] = {t: int(((judged["teacher"] == t) & judged["loc_label"].isna()).sum()) for t in names}
    stats["unparsed_answer"] = {t: int(((judged["teacher"] == t) & judged["pred_country"].isna()).sum()) for t in names}
    if "clues" in (cfg.get("filters") or FILTERS):
        cfg["_detector"] = load_detector(ensure_detector(cfg))
    survivors, stages = apply_filters(judged, cfg, images=lambda s, r: splits[s][int(r)]["image"])
    cfg.pop("_detector", None)
    clock["filters"] = time.perf_counter()
    funnel = funnel_table(stages, names, list(splits))
    agreement = agreement_matrix(judged, names, float(cfg.get("agreement_km", 100)))
    chosen = pick_per_photo(survivors, cfg.get("keep", "best"))
    dataset = build_reason_dataset(chosen, splits)
    loc_split = cfg.get("localizability_split", "train")
    loc = build_localizability_dataset(judged[judged["split"] == loc_split], splits[loc_split])

    out = Path(cfg["out"])
    stats["images"] = {s: len(d) for s, d in splits.items()}
    stats["sizes"] = {s: len(d) for s, d in dataset.items()}
    stats["localizability_rows"] = {"total": len(loc), "positive": int(sum(loc["label"]))}
    # Written beside the target and renamed when complete: a kill leaves the previous output or none, never half.
    partial = out.with_name(out.name + ".partial")
    shutil.rmtree(partial, ignore_errors=True)
    _save(dataset, partial)
    if cfg.get("localizability_out"):
        loc_out = Path(cfg["localizability_out"])
        loc_partial = loc_out.with_name(loc_out.name + ".partial")
        shutil.rmtree(loc_partial, ignore_errors=True)
        _save(loc, loc_partial)
        _replace(loc_partial, loc_out)
    else:
        _save(loc, partial / "localizability")
    clock["write"] = time.perf_counter()
    stats["seconds"] = {k: round(clock[k] - clock[p], 2) for p, k in zip(list(clock), list(clock)[1:])}
    write_card(partial / "README.md", dataset, funnel, cfg, stats)
    _replace(partial, out)
    results = Path(cfg.get("results", "results/distill"))
    results.mkdir(parents=True, exist_ok=True)
    funnel.to_csv(results / "funnel.csv", index=False)
    agreement.rename_axis("teacher").to_csv(results / "agreement.csv", float_format="%.4f")
    (results / "stats.json").write_text(json.dumps(stats, indent=1, default=str), encoding="utf-8")
    return DistillResult(dataset, loc, judged, survivors, funnel, agreement, stats, dict(stages))
