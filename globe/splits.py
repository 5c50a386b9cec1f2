"""Train/test splits: deterministic by seed, stratified by country, with whole regions held out of training.

`split` makes the {train, test} DatasetDict of the data stage; `stratum_labels` says how countries too rare to be
stratified on their own are pooled; `split_counts` tabulates photos per country or continent and split.
"""

from __future__ import annotations

import logging
import math
from collections import Counter
from collections.abc import Iterable
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:  # pragma: no cover
    import pandas as pd
    from datasets import Dataset, DatasetDict

log = logging.getLogger(__name__)

OTHER = "__other__"


def stratum_labels(codes: list[str], test_fraction: float) -> tuple[list[str], dict[str, Any]]:
    """Stratification labels from country codes, pooling countries too rare to be stratified.

    Countries with one photo are pooled into one `__other__` stratum (a stratified split needs >= 2 per stratum);
    if that pool holds a single photo it joins the largest country. Then, while there are more strata than photos
    on the smaller side of the split, the smallest strata join the pool too. Returns (labels, notes).
    """
    counts = Counter(codes)
    singletons = sorted(c for c, n in counts.items() if n < 2)
    label = {c: (OTHER if c in singletons else c) for c in counts}
    n = len(codes)
    n_test = math.ceil(test_fraction * n)
    side = min(n_test, n - n_test)
    merged: list[str] = []
    while True:
        sizes = Counter(label[c] for c in codes)
        if sizes.get(OTHER, 0) == 1:  # a pool of one cannot be split either
            largest = max((s for s in sizes if s != OTHER), key=lambda s: (sizes[s], s), default=None)
            if largest is None:
                break
            for c, lab in label.items():
                if lab == OTHER:
                    label[c] = largest
            continue
        if len(sizes) <= max(side, 1):
            break
        smallest = min((s for s in sizes if s != OTHER), key=lambda s: (sizes[s], s), default=None)
        if smallest is None:
            break
        merged.append(smallest)
        for c, lab in label.items():
            if lab == smallest:
                label[c] = OTHER
    notes = {"singleton_countries": singletons, "pooled_for_size": merged,
             "strata": len({label[c] for c in codes})}
    return [label[c] for c in codes], notes


def holdout_mask(ds: Dataset, countries: Iterable[str] = (), continents: Iterable[str] = ()) -> list[bool]:
    """True for rows in a held-out country (ISO code or name) or continent (name or code), case-insensitive."""
    countries = {c.strip().lower() for c in countries}
    continents = {c.strip().lower() for c in continents}
    cols = ds.select_columns(["country_code", "country", "continent"]).to_dict()
    return [
        cc.lower() in countries or cn.lower() in countries or ct.lower() in continents
        for cc, cn, ct in zip(cols["country_code"], cols["country"], cols["continent"])
    ]


def split(ds: Dataset, test_fraction: float = 0.3, seed: int = 0, stratify: bool = True,
          holdout_countries: Iterable[str] = (), holdout_continents: Iterable[str] = ()) -> DatasetDict:
    """{train, test}: held-out regions go wholly to test; the rest is split by seed, stratified by country.

    The same data, fraction and seed always give the same split. `test_fraction` applies to the rows outside the
    held-out regions. See `stratum_labels` for how rare countries are stratified.
    """
    from datasets import ClassLabel, DatasetDict, concatenate_datasets

    held = holdout_mask(ds, holdout_countries, holdout_continents)
    rest = ds.select([i for i, h in enumerate(held) if not h])
    held_out = ds.select([i for i, h in enumerate(held) if h])
    if test_fraction == 0 or len(rest) < 2:
        train, test = rest, rest.select([])
    elif stratify:
        labels, notes = stratum_labels(rest["country_code"], test_fraction)
        log.info("stratified split: %s", notes)
        names = sorted(set(labels))
        rest = rest.add_column("_stratum", labels).cast_column("_stratum", ClassLabel(names=names))
        parts = rest.train_test_split(test_size=test_fraction, seed=seed, stratify_by_column="_stratum")
        train, test = (parts[k].remove_columns("_stratum") for k in ("train", "test"))
    else:
        parts = rest.train_test_split(test_size=test_fraction, seed=seed)
        train, test = parts["train"], parts["test"]
    if len(held_out):
        test = concatenate_datasets([test, held_out])
    return DatasetDict({"train": train, "test": test})


def split_counts(dd: DatasetDict, by: str = "country") -> pd.DataFrame:
    """Photos per `by` value (country, continent, ...) and split, with a total column, largest first."""
    import pandas as pd

    table = pd.DataFrame({name: pd.Series(d[by]).value_counts() for name, d in dd.items()}).fillna(0).astype(int)
    table["total"] = table.sum(axis=1)
    table.index.name = by
    return table.sort_values(["total", by], ascending=[False, True]).reset_index()
