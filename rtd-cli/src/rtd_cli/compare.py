"""The maths and tables of `rtd compare` (the command: `rtd_cli.commands.compare`): two or
more `rtd eval` runs, paired query by query, plus the toy's per-attribute table and a bar
chart (the rtd demo's last step).

    rtd compare runs/rtd/demo/seed-0/eval-base runs/rtd/demo/seed-0/eval-rtd \
        --name "LinCIR (toy phi)" --name "+ RTD" --chart runs/rtd/demo/seed-0/rtd_toy_r1.png

Reads each run folder's metrics.json and items/queries.parquet (written by `rtd eval`)
and prints:

- the paired table (`labshared.compare`): for each summary metric, each run's value with
  its 95 % bootstrap interval over queries, and each later run's difference to the first
  with its interval and p-value (exact McNemar for a recall of a one-part benchmark, else
  the paired bootstrap, parts resampled within themselves); the runs must have scored the
  same queries (`--intersect` restricts them to the common ones);
- for the toy world, the metrics of the queries that change each attribute (digit,
  colour, background), one block of rows per attribute, so a reader sees where a method
  helps;

and with `--chart`, writes a PNG of grouped bars: one metric (R@1 by default) for all
queries and per changed attribute, one bar per run.
"""

from __future__ import annotations

import json
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np

from labshared.compare import Entry, Headline, compare, format_comparison
from labshared.console import render_table
from labshared.errors import ConfigError
from labshared.items import column, items_meta, read_items
from labshared.stats import BootstrapSpec

ALL_QUERIES = "all"
#: the per-query table `rtd eval` writes into every run folder: items/queries.parquet
ITEMS = "queries"


def read_metrics(run_dir: str | Path) -> dict[str, Any]:
    """The metrics.json of an `rtd eval` run folder (or the file itself), checked."""
    path = Path(run_dir)
    path = path / "metrics.json" if path.is_dir() else path
    if not path.is_file():
        raise ConfigError(f"{path}: no metrics.json; is it an `rtd eval` run folder?")
    try:
        data = json.loads(path.read_text())
    except ValueError as exc:
        raise ConfigError(
            f"{path}: not JSON ({exc}); expected an `rtd eval` metrics.json"
        ) from None
    if not isinstance(data, dict) or "summary" not in data:
        raise ConfigError(f"{path}: no 'summary' field; not written by `rtd eval`")
    return data


def read_summary(run_dir: str | Path) -> dict[str, float]:
    """The `summary` of an `rtd eval` run folder (or its metrics.json)."""
    return dict(read_metrics(run_dir)["summary"])


def _names(runs: Sequence[str | Path], names: Sequence[str] | None) -> list[str]:
    if not runs:
        raise ConfigError("compare needs at least one run folder")
    out = list(names) if names else [Path(r).name for r in runs]
    if len(out) != len(runs):
        raise ConfigError(f"{len(out)} names for {len(runs)} runs")
    return out


def _rows(label: str, names: Sequence[str], rows: Sequence[dict], cols: Sequence[str]) -> list:
    """Table rows `[label,] name, values` per run, plus a difference row (last - first)."""
    lead = [label] if label else []
    out = [
        [*lead, name, *(f"{row[c]:.2f}" if c in row else "-" for c in cols)]
        for name, row in zip(names, rows, strict=True)
    ]
    if len(rows) > 1:
        diff = [
            f"{rows[-1][c] - rows[0][c]:+.2f}" if c in rows[0] and c in rows[-1] else "-"
            for c in cols
        ]
        out.append([*lead, "difference", *diff])
    return out


def run_entry(run_dir: str | Path, label: str) -> Entry:
    """One `rtd eval` run as a comparison entry: its queries keyed by (part, query id),
    stratified by part, with each metric's per-query column."""
    table = read_items(Path(run_dir), ITEMS)
    parts, ids = column(table, "part"), column(table, "query_id")
    values = {}
    for name in items_meta(table)["metrics"]:
        v = table.column(name).to_numpy(zero_copy_only=False).astype(np.float64)
        if not np.isnan(v).any():
            values[name] = v
    if not values:
        raise ConfigError(f"{run_dir}: no per-query metrics (a test split has no ground truth)")
    keys = [(str(p), str(q)) for p, q in zip(parts, ids, strict=True)]
    return Entry(label, keys, values, groups=np.asarray(parts, dtype=str))


def headlines(runs: Sequence[str | Path]) -> list[Headline]:
    """The first run's summary metrics, as `rtd eval` aggregates them: the mean over
    queries for one part, the mean over parts (each resampled within itself) for several."""
    data = read_metrics(runs[0])
    how = "group_mean" if len(data.get("parts", {})) > 1 else "mean"
    return [Headline(m, m, how, scale=100.0) for m in data["summary"]]


def paired_comparison(
    runs: Sequence[str | Path], names: Sequence[str] | None = None, *, seed: int = 0,
    n_resamples: int = 10_000, intersect: bool = False,
) -> tuple[dict[str, Any], list[Headline]]:  # fmt: skip
    """`labshared.compare.compare` of the runs' per-query metrics: each summary metric's
    value and interval per run, and the paired difference to the first run."""
    names = _names(runs, names)
    heads = headlines(runs)
    entries = [run_entry(r, n) for r, n in zip(runs, names, strict=True)]
    spec = BootstrapSpec(n_resamples=n_resamples, seed=seed)
    return compare(entries, heads, spec, intersect=intersect), heads


def paired_table(
    runs: Sequence[str | Path], names: Sequence[str] | None = None, markdown: bool = True,
    **kwargs: Any,
) -> str:  # fmt: skip
    """The paired table of `paired_comparison` as text (Markdown by default)."""
    result, heads = paired_comparison(runs, names, **kwargs)
    return format_comparison(result, heads, markdown=markdown)


def attribute_groups(data: Sequence[dict[str, Any]]) -> list[str]:
    """The changed-attribute groups every run reports, in the first run's order."""
    groups = [list(d.get("by_attribute", {})) for d in data]
    return [g for g in groups[0] if all(g in other for other in groups[1:])] if groups else []


def attribute_table(
    runs: Sequence[str | Path], names: Sequence[str] | None = None, markdown: bool = True
) -> str:
    """Table of the toy world's metrics by changed attribute: for all queries and for those
    changing the digit / the colour / the background, one row per run and a difference row,
    with the number of queries. Markdown (the demo's report) or, `markdown=False`, the
    terminal's box table, as the paired table beside it. Empty when a run has no
    per-attribute metrics (not a toy evaluation)."""
    names = _names(runs, names)
    data = [read_metrics(r) for r in runs]
    groups = attribute_groups(data)
    if not groups:
        return ""
    cols = list(dict.fromkeys(k for d in data for k in d["summary"]))
    total = sum(data[0]["n_queries"].values()) if data[0].get("n_queries") else "?"
    rows = _rows(f"{ALL_QUERIES} ({total})", names, [d["summary"] for d in data], cols)
    for group in groups:
        n = data[0].get("attribute_queries", {}).get(group, "?")
        rows += _rows(f"{group} ({n})", names, [d["by_attribute"][group] for d in data], cols)
    return render_table(["queries changing", "model", *cols], rows, markdown=markdown, align="llr")


def write_chart(
    runs: Sequence[str | Path],
    path: str | Path,
    names: Sequence[str] | None = None,
    metric: str = "R@1",
    title: str | None = None,
) -> Path:
    """PNG of grouped bars: `metric` for all queries and per changed attribute (x axis),
    one bar per run, each bar labelled with its value. Runs without per-attribute metrics
    give the `all` group only."""
    # matplotlib only when a chart is drawn (a heavy import the tables do not need)
    import matplotlib

    matplotlib.use("Agg")  # files only: no display on CI or servers
    import matplotlib.pyplot as plt

    names = _names(runs, names)
    data = [read_metrics(r) for r in runs]
    for run, d in zip(runs, data, strict=True):
        if metric not in d["summary"]:
            raise ConfigError(
                f"{run}: metric {metric!r} not in its summary ({', '.join(d['summary'])})"
            )
    groups = [ALL_QUERIES, *attribute_groups(data)]

    def value(d: dict[str, Any], group: str) -> float:
        return d["summary"][metric] if group == ALL_QUERIES else d["by_attribute"][group][metric]

    counts = data[0].get("attribute_queries", {})
    total = sum(data[0].get("n_queries", {}).values())
    labels = [f"all queries\n(n = {total})"] + [
        f"{g} changed\n(n = {counts.get(g, '?')})" for g in groups[1:]
    ]
    width = 0.8 / len(data)
    fig, ax = plt.subplots(figsize=(1.9 * len(groups) + 1.5, 3.8), dpi=120)
    colours = plt.get_cmap("tab10").colors
    for k, (name, d) in enumerate(zip(names, data, strict=True)):
        xs = [i + (k - (len(data) - 1) / 2) * width for i in range(len(groups))]
        ys = [value(d, g) for g in groups]
        bars = ax.bar(xs, ys, width, label=name, color=colours[k % len(colours)])
        ax.bar_label(bars, fmt="%.1f", fontsize=8, padding=2)
    ax.set_xticks(range(len(groups)), labels, fontsize=9)
    ax.set_ylabel(f"{metric} (%)")
    # headroom above 100 % keeps the legend clear of the bars and their labels
    ax.set_ylim(0, 122)
    ax.set_yticks(range(0, 101, 20))
    ax.legend(loc="upper left", ncols=len(data), fontsize=8, frameon=False)
    if title:
        ax.set_title(title, fontsize=10)
    fig.tight_layout()
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path)
    plt.close(fig)
    return path
