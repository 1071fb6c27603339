"""`rtd compare`: `rtd eval` runs compared query by query (no config, no run folder: it
reads runs); the maths and tables are `rtd_cli.compare`'s."""

import json
from pathlib import Path
from typing import Annotated

import typer

from labshared.cli import BootstrapSeedOpt, IntersectOpt, JsonOpt, ResamplesOpt
from labshared.compare import format_comparison
from rtd_cli.compare import attribute_table, paired_comparison, write_chart


def compare_cmd(
    runs: Annotated[list[Path], typer.Argument(help="`rtd eval` run folders (two or more).")],
    name: Annotated[
        list[str] | None, typer.Option(help="Row label of each run, in order (repeat).")
    ] = None,
    chart: Annotated[Path | None, typer.Option(help="Write a PNG of grouped bars here.")] = None,
    metric: Annotated[str, typer.Option(help="Metric of the chart.")] = "R@1",
    title: Annotated[str | None, typer.Option(help="Title of the chart.")] = None,
    intersect: IntersectOpt = False,
    seed: BootstrapSeedOpt = 0,
    resamples: ResamplesOpt = 10_000,
    as_json: JsonOpt = False,
) -> None:
    """Compare `rtd eval` runs query by query: each metric with its 95 % interval, the
    paired difference to the first run with its interval and p-value, the toy's
    per-attribute table, and optionally a bar chart."""
    result, heads = paired_comparison(runs, name, seed=seed, n_resamples=resamples,
                                      intersect=intersect)  # fmt: skip
    if as_json:
        typer.echo(json.dumps(result, indent=2))
    else:
        typer.echo(format_comparison(result, heads))
        by_attribute = attribute_table(runs, name, markdown=False)
        if by_attribute:
            typer.echo(f"\nby changed attribute (number of queries):\n{by_attribute}")
    if chart:
        typer.echo(f"\nchart: {write_chart(runs, chart, name, metric, title)}")
