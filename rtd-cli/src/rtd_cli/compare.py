"""Before/after tables and chart of `rtd eval` runs (the rtd demo's last step).

    python -m rtd_cli.compare runs/demo-rtd/eval-base runs/demo-rtd/eval-rtd \
        --names "LinCIR (toy phi)" "+ RTD" --chart runs/demo-rtd/rtd_toy_r1.png

Reads each run folder's metrics.json (written by `rtd eval`) and prints, in Markdown:

- one row per run with the benchmark summary metrics, plus a row of differences
  (last - first);
- for the toy world, the same metrics for the queries that change each attribute (digit,
  colour, background), one block of rows per attribute, so a reader sees where a method
  helps;

and with `--chart`, writes a PNG of grouped bars: one metric (R@1 by default) for all
queries and per changed attribute, one bar per run.
"""

from __future__ import annotations

import argparse
import json
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import typer

from labshared.console import render_table
from labshared.errors import ConfigError

ALL_QUERIES = "all"


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


def compare_table(runs: Sequence[str | Path], names: Sequence[str] | None = None) -> str:
    """Markdown table: one row per run, columns the union of summary metrics."""
    names = _names(runs, names)
    rows = [read_summary(r) for r in runs]
    cols = list(dict.fromkeys(k for row in rows for k in row))
    return render_table(["model", *cols], _rows("", names, rows, cols), markdown=True)


def attribute_groups(data: Sequence[dict[str, Any]]) -> list[str]:
    """The changed-attribute groups every run reports, in the first run's order."""
    groups = [list(d.get("by_attribute", {})) for d in data]
    return [g for g in groups[0] if all(g in other for other in groups[1:])] if groups else []


def attribute_table(runs: Sequence[str | Path], names: Sequence[str] | None = None) -> str:
    """Markdown table of the toy world's metrics by changed attribute: for all queries and
    for those changing the digit / the colour / the background, one row per run and a
    difference row, with the number of queries. Empty when a run has no per-attribute
    metrics (not a toy evaluation)."""
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
    return render_table(["queries changing", "model", *cols], rows, markdown=True, align="llr")


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


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        prog="python -m rtd_cli.compare", description=__doc__.split("\n")[0]
    )
    parser.add_argument("runs", nargs="+", help="rtd eval run folders (or metrics.json files)")
    parser.add_argument("--names", nargs="+", help="row labels, one per run")
    parser.add_argument("--chart", type=Path, help="write a PNG of grouped bars here")
    parser.add_argument("--metric", default="R@1", help="metric of the chart (default R@1)")
    parser.add_argument("--title", help="title of the chart")
    args = parser.parse_args(argv)
    try:
        typer.echo(compare_table(args.runs, args.names))
        by_attribute = attribute_table(args.runs, args.names)
        if by_attribute:
            typer.echo(f"\nby changed attribute (number of queries):\n{by_attribute}")
        if args.chart:
            path = write_chart(args.runs, args.chart, args.names, args.metric, args.title)
            typer.echo(f"\nchart: {path}")
    except ConfigError as exc:
        parser.exit(1, f"error: {exc}\n")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
