"""`rtd check-data`: a downloaded benchmark checked against its official layout, without a
model (no config, no run folder); the work is `rtd_cli.datacheck`'s."""

from pathlib import Path
from typing import Annotated

import typer

from labshared.cli import print_json
from labshared.config import split_commas
from labshared.console import log
from rtd_cli.datacheck import check_layout, first_missing_error, format_reports


def check_data_cmd(
    dataset: Annotated[
        str, typer.Option(help="Benchmark: fashioniq, cirr, circo, genecis (or toy).")
    ],
    data_root: Annotated[
        Path | None,
        typer.Option(help="The benchmark folder in its official layout (see README)."),
    ] = None,
    split: Annotated[str | None, typer.Option(help="val or test (default: as `rtd eval`).")] = None,
    parts: Annotated[
        str | None,
        typer.Option(help="Comma-separated FashionIQ categories or GeneCIS tasks (default all)."),
    ] = None,
    as_json: Annotated[
        bool, typer.Option("--json", help="Print the report as JSON instead of a table.")
    ] = False,
) -> None:
    """Check a downloaded benchmark without running a model: read its annotations as `rtd
    eval` does, count queries and images, and name the first missing image file."""
    reports = check_layout(dataset, data_root, split, split_commas(parts))
    if as_json:
        print_json({"dataset": dataset, "data_root": data_root, "parts": reports})
    else:
        typer.echo(format_reports(dataset, data_root, reports))
    error = first_missing_error(dataset, reports)
    if error is not None:
        raise error
    log(f"{dataset}: annotations read and every image file found")
