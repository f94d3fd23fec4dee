"""How well points are predicted: F1, precision, recall and accuracy against labels, the two trivial baselines,
and the decision threshold chosen on validation data (numpy, no torch).

The majority class is "not a point" (points are a few tokens in a hundred), and predicting it everywhere has F1 0
while its accuracy is high; "always a point" has recall 1 and F1 2p / (1 + p) for a positive rate p. A classifier
is worth something when its F1 beats both.
"""

from __future__ import annotations

import numpy as np


def confusion(labels: np.ndarray, predicted: np.ndarray) -> dict:
    labels, predicted = np.asarray(labels).astype(bool), np.asarray(predicted).astype(bool)
    tp = int(np.sum(labels & predicted))
    fp = int(np.sum(~labels & predicted))
    fn = int(np.sum(labels & ~predicted))
    tn = int(np.sum(~labels & ~predicted))
    precision = tp / (tp + fp) if tp + fp else 0.0
    recall = tp / (tp + fn) if tp + fn else 0.0
    f1 = 2 * precision * recall / (precision + recall) if precision + recall else 0.0
    return {"f1": f1, "precision": precision, "recall": recall, "accuracy": (tp + tn) / max(len(labels), 1),
            "tp": tp, "fp": fp, "fn": fn, "tn": tn}


def report(labels: np.ndarray, probabilities: np.ndarray, threshold: float) -> dict:
    """The classifier at ``threshold`` (a point where probability ≥ threshold) and both baselines, on one split."""
    labels = np.asarray(labels).astype(bool)
    return {"tokens": len(labels), "points": int(labels.sum()),
            "classifier": confusion(labels, np.asarray(probabilities) >= threshold),
            "never_a_point": confusion(labels, np.zeros(len(labels), bool)),
            "always_a_point": confusion(labels, np.ones(len(labels), bool))}


def best_threshold(labels: np.ndarray, probabilities: np.ndarray) -> float:
    """The threshold maximising F1 on these (validation) labels: midway between the probability where F1 peaks and
    the next lower one, so that tokens scored alike on other texts fall the same way. 0.5 when there is no point."""
    labels = np.asarray(labels).astype(bool)
    p = np.asarray(probabilities, dtype=np.float64)
    if not labels.any():
        return 0.5
    order = np.argsort(-p, kind="stable")
    p_sorted, l_sorted = p[order], labels[order]
    tp = np.cumsum(l_sorted)
    k = np.arange(1, len(p) + 1)
    # only cut between distinct probabilities: all tokens with one probability fall the same way
    last_of_value = np.r_[p_sorted[1:] != p_sorted[:-1], True]
    f1 = np.where(last_of_value, 2 * tp / (k + labels.sum()), -1.0)
    i = int(np.argmax(f1))
    lower = p_sorted[i + 1] if i + 1 < len(p_sorted) else 0.0
    return float((p_sorted[i] + lower) / 2)
