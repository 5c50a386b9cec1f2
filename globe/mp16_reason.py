"""The released MP16-Reason (`globe-project/MP16-Reason` on the hub) in this project's columns.

GRPO can train on it instead of the set `02_distill` rebuilds from MP16-Pro: `grpo.dataset: globe-project/MP16-Reason`
(the one switch; 33,721 train / 12,000 test photos). The released files follow the official code's layout, which
this module reads as well as our own: the reasoning in `reasoning` or `response`; the place in `country` / `city`
columns or in `solution` (`<country>…</country><city>…</city>`, or `country<TAB>city`); the verified visual
entities in `entities` (strings, or `{"text": …}` records as plugin.py reads them); the photo in `image` or `images`
(the first). Its image archives are known to be incomplete: a row without its image is a counted, logged skip.
"""

from __future__ import annotations

import logging
import re
from typing import Any

log = logging.getLogger(__name__)

HUB_ID = "globe-project/MP16-Reason"
_TAG = re.compile(r"<(country|city)>(.*?)</\1>", re.S)


def place_of(row: dict[str, Any]) -> tuple[str | None, str | None]:
    """(country, city) of a released row: its own columns, else its `solution`."""
    country, city = row.get("country"), row.get("city")
    if country and city:
        return str(country), str(city)
    solution = str(row.get("solution") or row.get("__#solution") or "")
    tags = dict((k, v.strip()) for k, v in _TAG.findall(solution))
    if tags.get("country") and tags.get("city"):
        return tags["country"], tags["city"]
    if "\t" in solution:
        a, _, b = solution.partition("\t")
        return (a.strip() or None), (b.strip() or None)
    return None, None


def entities_of(value: Any) -> list[str]:
    """Entity names from a list of strings or of `{"text": ...}` records."""
    out = []
    for e in value or []:
        text = e.get("text") if isinstance(e, dict) else e
        if isinstance(text, str) and text.strip():
            out.append(text.strip())
    return out


def _image_of(row: dict[str, Any]):
    image = row.get("image")
    if image is None and row.get("images"):
        image = row["images"][0] if isinstance(row["images"], (list, tuple)) else row["images"]
    if isinstance(image, dict) and not (image.get("bytes") or image.get("path")):
        return None
    return image


def normalise(ds):
    """A released split as rows with id, image, reasoning, country, city, entities (+ the other columns, kept for the
    reward functions); rows without an image or a place are dropped, counted in the log."""
    from datasets import Image, Sequence, Value

    columns = ds.column_names
    if "image" not in columns and "images" not in columns:
        raise KeyError(f"MP16-Reason split has no image column; columns: {columns}")
    if "image" in columns and isinstance(ds.features["image"], Image):
        ds = ds.cast_column("image", Image(decode=False))

    def convert(row, idx):
        country, city = place_of(row)
        reasoning = row.get("reasoning") or row.get("response") or ""
        m = re.search(r"<think>(.*?)</think>", reasoning, re.S)
        return {"id": str(row.get("id") or row.get("IMG_ID") or idx), "image": _image_of(row),
                "reasoning": (m.group(1) if m else reasoning).strip(), "country": country, "city": city,
                "entities": entities_of(row.get("entities"))}

    drop = [c for c in ("images", "solution", "__#solution", "response") if c in columns]
    features = ds.features.copy()
    for c in drop:
        del features[c]
    features.update({"id": Value("string"), "image": Image(decode=False), "reasoning": Value("string"),
                     "country": Value("string"), "city": Value("string"), "entities": Sequence(Value("string"))})
    out = ds.map(convert, with_indices=True, remove_columns=drop, features=features, desc="MP16-Reason columns")
    ok = [i for i, (im, c, y) in enumerate(zip(out["image"], out["country"], out["city"])) if im and c and y]
    if len(ok) < len(out):
        log.warning("MP16-Reason: %d of %d rows skipped (no image, or no country/city)", len(out) - len(ok), len(out))
    return out.select(ok).cast_column("image", Image())


def load(path: str = HUB_ID, split: str = "train"):
    """One split of the released MP16-Reason (a hub id, or a local copy `datasets` can read), normalised."""
    import datasets

    ds = datasets.load_dataset(path, split=split)
    return normalise(ds)
