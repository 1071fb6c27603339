"""What `tldr erm` and `tldr retrain` leave for a reader: each method's test figures with
95 % bootstrap intervals, the per-image table (`items/predictions.parquet`), and the
comparison entries `tldr compare` reads back from it.

Per-image table, one row per (method, test image): method, split, index (the image's
position in the split), file (its path; null for the toy world's in-memory images),
label, spurious, group (label * n_spurious + spurious), prediction, score (the head's
probability of its prediction) and correct (0 / 1).
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np

from labshared.compare import Entry, Headline
from labshared.errors import ConfigError
from labshared.items import column, read_items, write_items
from labshared.stats import BootstrapSpec
from tldr_cli.metrics import evaluate_predictions, group_counts, group_ids, metric_intervals

ITEMS = "predictions"
#: tldr's headline figures: (metrics.json key, printed name, aggregate, weights key)
HEADLINES = (
    ("worst_group_acc", "worst-group", "worst_group", ""),
    ("average_acc", "average (train-weighted)", "weighted", "train"),
    ("class_balanced_acc", "class-balanced", "weighted", "class"),
    ("accuracy", "plain accuracy", "mean", ""),
)


def evaluate_methods(
    outputs: dict[str, tuple[np.ndarray, np.ndarray]], test, train, spec: BootstrapSpec
) -> dict[str, dict[str, Any]]:
    """Each method's test figures (`metrics.evaluate_predictions`, weighted by the training
    groups), plus `n` (images scored) and `intervals` ({figure: [low, high]}).

    Args:
        outputs: method -> (predictions (N,), scores (N,)) on `test`.
    """
    counts = group_counts(train.label, train.spurious, train.n_classes, train.n_spurious)
    out = {}
    for name, (pred, _) in outputs.items():
        m = evaluate_predictions(
            pred, test.label, test.spurious, test.n_classes, test.n_spurious, counts
        )
        m["n"] = int(len(pred))
        m["intervals"] = metric_intervals(
            pred, test.label, test.spurious, test.n_spurious, counts, spec
        )
        out[name] = m
    return out


def write_predictions(
    run_dir: str | Path, test, outputs: dict[str, tuple[np.ndarray, np.ndarray]], train
) -> Path:
    """`items/predictions.parquet`: one row per (method, test image)."""
    n = len(test)
    files = [str(p) for p in test.paths] if test.paths is not None else [None] * n
    cols: dict[str, list] = {k: [] for k in ("method", "split", "index", "file", "label",
                                             "spurious", "group", "prediction", "score",
                                             "correct")}  # fmt: skip
    group = group_ids(test.label, test.spurious, test.n_spurious)
    for name, (pred, score) in outputs.items():
        cols["method"] += [name] * n
        cols["split"] += [test.split] * n
        cols["index"] += list(range(n))
        cols["file"] += files
        cols["label"] += test.label.tolist()
        cols["spurious"] += test.spurious.tolist()
        cols["group"] += group.tolist()
        cols["prediction"] += np.asarray(pred).tolist()
        cols["score"] += np.asarray(score, dtype=np.float64).tolist()
        cols["correct"] += (np.asarray(pred) == test.label).astype(np.float64).tolist()
    counts = group_counts(train.label, train.spurious, train.n_classes, train.n_spurious)
    meta = {"unit": "image", "dataset": test.dataset, "n_spurious": test.n_spurious,
            "class_names": list(test.class_names), "spurious_names": list(test.spurious_names),
            "train_group_counts": counts.tolist()}  # fmt: skip
    return write_items(run_dir, ITEMS, cols, keys=["method", "split", "index"],
                       metrics=["correct"], meta=meta)  # fmt: skip


def headlines() -> list[Headline]:
    """The four figures as `labshared.compare` headlines of the `correct` column (in
    percent: 0 or 100 per image)."""
    return [Headline(f"{name} (%)", "correct", how, weights=w, digits=1, scale=100.0)
            for _, name, how, w in HEADLINES]  # fmt: skip


def run_entries(target: str, prefix: bool = False) -> list[Entry]:
    """`RUN` (every method it scored) or `RUN:METHOD` as comparison entries, keyed by
    (split, index, file), stratified by group, with the training-group and class weights
    of the average and class-balanced figures. Labelled by method, or `<run name>:method`
    with `prefix` (several run folders).

    Raises:
        ConfigError: no per-image table, or no such method in it.
    """
    from labshared.items import items_meta

    run, _, method = target.partition(":") if not Path(target).exists() else (target, "", "")
    table = read_items(run, ITEMS)
    meta = items_meta(table)
    methods = column(table, "method")
    chosen = [method] if method else list(dict.fromkeys(methods.tolist()))
    if method and method not in set(methods.tolist()):
        raise ConfigError(f"{target}: no method {method!r} (the run scored "
                          f"{', '.join(dict.fromkeys(methods.tolist()))})")  # fmt: skip
    label_of = {m: (f"{Path(run).name}:{m}" if prefix else m) for m in chosen}
    train_w = np.asarray(meta["train_group_counts"], dtype=np.float64)
    entries = []
    for m in chosen:
        rows = np.flatnonzero(methods == m)
        sub = table.take(rows)
        group = column(sub, "group").astype(np.int64)
        keys = list(zip(column(sub, "split").tolist(), column(sub, "index").tolist(),
                        column(sub, "file").tolist(), strict=True))  # fmt: skip
        present, counts = np.unique(group, return_counts=True)
        cls = present // meta["n_spurious"]
        class_n = {c: counts[cls == c].sum() for c in set(cls.tolist())}
        weights = {
            "train": {int(g): float(train_w[g]) for g in present},
            "class": {int(g): float(n / class_n[g // meta["n_spurious"]])
                      for g, n in zip(present, counts, strict=True)},
        }  # fmt: skip
        correct = 100 * column(sub, "correct").astype(np.float64)  # percent, as printed
        entries.append(Entry(label_of[m], keys, {"correct": correct}, group, weights))
    return entries


def compare_runs(
    targets: list[str], spec: BootstrapSpec, intersect: bool = False
) -> dict[str, Any]:
    """`tldr compare`: the entries of every target (one folder: its methods; several:
    `<run>:<method>`), compared on the four figures (`labshared.compare.compare`)."""
    from labshared.compare import compare

    entries = [e for t in targets for e in run_entries(t, prefix=len(targets) > 1)]
    return compare(entries, headlines(), spec, intersect=intersect)
