"""Held-out figures of a yes/no scorer: accuracy against the majority class, ROC AUC, expected calibration error,
Brier score."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any


def roc_auc(labels: Sequence[int], scores: Sequence[float]) -> float | None:
    """ROC AUC by the rank (Mann-Whitney U) formula, ties averaged; None with only one class."""
    import numpy as np
    from scipy.stats import rankdata

    y = np.asarray(labels, dtype=int)
    s = np.asarray(scores, dtype=float)
    n_pos, n_neg = int(y.sum()), int((1 - y).sum())
    if n_pos == 0 or n_neg == 0:
        return None
    ranks = rankdata(s)
    return float((ranks[y == 1].sum() - n_pos * (n_pos + 1) / 2) / (n_pos * n_neg))


def expected_calibration_error(labels: Sequence[int], scores: Sequence[float], n_bins: int = 10) -> float:
    """ECE over `n_bins` equal-width bins of the score: sum over bins of |bin| / n * |mean label - mean score|."""
    import numpy as np

    y = np.asarray(labels, dtype=float)
    s = np.asarray(scores, dtype=float)
    if len(y) == 0:
        raise ValueError("no scores")
    bins = np.minimum((s * n_bins).astype(int), n_bins - 1)
    ece = 0.0
    for b in range(n_bins):
        m = bins == b
        if m.any():
            ece += m.sum() / len(y) * abs(y[m].mean() - s[m].mean())
    return float(ece)


def classification_metrics(labels: Sequence[int], scores: Sequence[float], threshold: float = 0.5) -> dict:
    """Held-out figures for a yes/no scorer; NaN scores (failed items) are counted and left out."""
    import numpy as np

    y = np.asarray(labels, dtype=int)
    s = np.asarray(scores, dtype=float)
    ok = np.isfinite(s)
    y, s = y[ok], s[ok]
    out: dict[str, Any] = {"n": int(len(ok)), "n_scored": int(ok.sum()), "n_failed": int((~ok).sum())}
    if len(y) == 0:
        return out
    majority = max(y.mean(), 1 - y.mean())
    out.update(
        accuracy=float(((s >= threshold).astype(int) == y).mean()),
        majority_accuracy=float(majority),
        roc_auc=roc_auc(y, s),
        ece=expected_calibration_error(y, s),
        brier=float(((s - y) ** 2).mean()),
        mean_score_yes=float(s[y == 1].mean()) if (y == 1).any() else None,
        mean_score_no=float(s[y == 0].mean()) if (y == 0).any() else None,
    )
    return out
