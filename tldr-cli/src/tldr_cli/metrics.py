"""Group-shift metrics, as `TLDR:evaluate/tldr_evaluator.py:L379-411` reports them.

- worst-group accuracy: the minimum test accuracy over the (y, a) groups present in test;
- average accuracy: test group accuracies weighted by the TRAINING group proportions (the
  group_DRO / DFR convention, DFR issue #1), which TLDR applies to every dataset;
- class-balanced accuracy: the mean of the per-class accuracies;
- plain accuracy (the unweighted mean over test samples), reported beside them.

Pure functions of integer arrays; the group id is y * n_spurious + a.
"""

from __future__ import annotations

from typing import Any

import numpy as np


def group_ids(y: np.ndarray, a: np.ndarray, n_spurious: int) -> np.ndarray:
    """Group index y * n_spurious + a."""
    return np.asarray(y, dtype=np.int64) * int(n_spurious) + np.asarray(a, dtype=np.int64)


def group_counts(y: np.ndarray, a: np.ndarray, n_classes: int, n_spurious: int) -> np.ndarray:
    """(n_classes * n_spurious,) number of samples in each group."""
    return np.bincount(group_ids(y, a, n_spurious), minlength=n_classes * n_spurious)


def evaluate_predictions(
    pred: np.ndarray,
    y: np.ndarray,
    a: np.ndarray,
    n_classes: int,
    n_spurious: int,
    train_group_counts: np.ndarray,
) -> dict[str, Any]:
    """Metrics of one model on one split.

    Args:
        pred, y, a: (N,) predicted class, true class and spurious value.
        train_group_counts: (n_classes * n_spurious,) training-set group sizes, the weights
            of the average accuracy.

    Returns:
        dict with worst_group_acc, average_acc, class_balanced_acc, accuracy (all in
        [0, 1]) and `groups`: one row per group present in this split (y, a, n, acc,
        train_n).
    """
    pred, y, a = (np.asarray(v, dtype=np.int64).reshape(-1) for v in (pred, y, a))
    if not (pred.shape == y.shape == a.shape):
        raise ValueError(f"pred, y, a differ in length: {pred.shape}, {y.shape}, {a.shape}")
    if pred.size == 0:
        raise ValueError("evaluate_predictions got no samples")
    n_groups = n_classes * n_spurious
    train_group_counts = np.asarray(train_group_counts, dtype=np.float64).reshape(-1)
    if train_group_counts.size != n_groups:
        raise ValueError(
            f"train_group_counts has {train_group_counts.size} entries, expected {n_groups}"
        )
    g = group_ids(y, a, n_spurious)
    correct = (pred == y).astype(np.float64)
    n = np.bincount(g, minlength=n_groups)
    hits = np.bincount(g, weights=correct, minlength=n_groups)
    present = n > 0
    acc = np.divide(hits, n, out=np.zeros(n_groups), where=present)

    weights = np.where(present, train_group_counts, 0.0)
    if weights.sum() > 0:
        average = float((weights * acc).sum() / weights.sum())
    else:  # no training group overlaps this split: fall back to the plain mean
        average = float(correct.mean())
    class_accs = [correct[y == c].mean() for c in range(n_classes) if (y == c).any()]
    rows = [
        {
            "y": int(i // n_spurious),
            "a": int(i % n_spurious),
            "n": int(n[i]),
            "acc": float(acc[i]),
            "train_n": int(train_group_counts[i]),
        }
        for i in range(n_groups)
        if present[i]
    ]
    return {
        "worst_group_acc": float(acc[present].min()),
        "average_acc": average,
        "class_balanced_acc": float(np.mean(class_accs)),
        "accuracy": float(correct.mean()),
        "groups": rows,
    }


def metric_intervals(
    pred: np.ndarray,
    y: np.ndarray,
    a: np.ndarray,
    n_spurious: int,
    train_group_counts: np.ndarray,
    spec,
) -> dict[str, list[float]]:
    """95 % percentile-bootstrap intervals of the four figures of `evaluate_predictions`,
    over the test images, each group resampled within itself (so the worst group of every
    resample exists and keeps its size): {metric: [low, high]}.

    One draw of group means serves the three group figures, which are aggregates of them
    (`labshared.stats.aggregate`): worst-group = min; average = weighted by the training
    group sizes; class-balanced = weighted by n_g / n_class(g). Plain accuracy resamples
    the images as one pool (no strata), as `tldr compare` does.

    Args:
        spec: `labshared.stats.BootstrapSpec` (resamples, confidence, seed).
    """
    from labshared.stats import aggregate, resampled_group_means

    pred, y, a = (np.asarray(v, dtype=np.int64).reshape(-1) for v in (pred, y, a))
    g = group_ids(y, a, n_spurious)
    correct = (pred == y).astype(np.float64)
    _, means, counts = resampled_group_means(correct, g, spec)  # (R, G, 1), groups sorted
    present = np.unique(g)
    train_w = np.asarray(train_group_counts, dtype=np.float64).reshape(-1)[present]
    cls = present // n_spurious
    class_n = np.array([counts[cls == c].sum() for c in cls], dtype=np.float64)
    samples = {
        "worst_group_acc": aggregate(means, counts, "worst_group"),
        "average_acc": aggregate(means, counts, "weighted", train_w)
        if train_w.sum() > 0
        else aggregate(means, counts, "mean"),
        "class_balanced_acc": aggregate(means, counts, "weighted", counts / class_n),
        # plain accuracy: images resampled as one pool (as `tldr compare` does), not by group
        "accuracy": resampled_group_means(correct, None, spec)[1][:, 0],
    }
    alpha = 1.0 - spec.confidence
    return {
        k: [float(np.percentile(v[:, 0], 100 * alpha / 2)),
            float(np.percentile(v[:, 0], 100 * (1 - alpha / 2)))]
        for k, v in samples.items()
    }  # fmt: skip
