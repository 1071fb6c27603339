"""`robattr compare`: two or more `robattr eval` runs, paired image by image.

Each eval run folder holds items/images.parquet (one row per image and measure, written
by `robattr eval`); the runs must have scored the same images (the same attack run's
images, or the same test images), else the command names the difference (`--intersect`
restricts them to the common ones). For every measure all runs report (PCC, SSIM, top-k
intersection, ... under RPS or an attack, AOPC, the sample's accuracy), the table gives
each run's mean with its 95 % bootstrap interval over images, and each later run's paired
difference to the first with its interval and p-value (`labshared.compare`).
"""

from __future__ import annotations

from pathlib import Path

import numpy as np

from labshared.compare import Entry, Headline, compare
from labshared.errors import ConfigError
from labshared.items import column, read_items
from labshared.stats import BootstrapSpec

ITEMS = "images"  # = robattr_cli.evaluate.ITEMS (kept import-light for the CLI)


def run_entry(run_dir: str | Path, label: str) -> Entry:
    """One eval run as a comparison entry: images keyed by their test index, one column
    per measure (the metrics.json path)."""
    table = read_items(Path(run_dir), ITEMS)
    image, metric = column(table, "image"), column(table, "metric")
    value = column(table, "value").astype(np.float64)
    names = list(dict.fromkeys(metric.tolist()))
    keys = list(dict.fromkeys(image.tolist()))
    pos = {k: i for i, k in enumerate(keys)}
    values = {}
    for name in names:
        rows = np.flatnonzero(metric == name)
        col = np.full(len(keys), np.nan)
        col[[pos[k] for k in image[rows].tolist()]] = value[rows]
        values[name] = col
    return Entry(label, keys, values)


def compare_runs(
    runs: list[Path], names: list[str] | None, spec: BootstrapSpec, intersect: bool = False
) -> tuple[dict, list[Headline]]:
    """The comparison of `runs` on every measure all of them report, defined (finite) on
    every image."""
    labels = names or [Path(r).name for r in runs]
    if len(labels) != len(runs):
        raise ConfigError(f"{len(labels)} names for {len(runs)} runs")
    entries = [run_entry(r, n) for r, n in zip(runs, labels, strict=True)]
    common = [
        m for m in entries[0].values
        if all(m in e.values and np.isfinite(e.values[m]).all() for e in entries)
    ]  # fmt: skip
    if not common:
        raise ConfigError("the runs share no measure defined on every image")
    for e in entries:  # keep only the shared measures
        e.values = {m: e.values[m] for m in common}
    heads = [Headline(m, m, digits=4) for m in common]
    return compare(entries, heads, spec, intersect=intersect), heads
