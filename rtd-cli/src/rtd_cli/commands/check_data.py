"""`rtd check-data`: a downloaded benchmark checked against its official layout, without a
model (no config, no run folder); the work is `rtd_cli.datacheck`'s."""

from typing import Annotated

import typer

from labshared.cli import print_json
from labshared.config import split_commas
from labshared.console import log
from labshared.errors import ConfigError
from labshared.options import field_option
from rtd_cli.config import EvalConfig
from rtd_cli.datacheck import check_layout, first_missing_error, format_reports


def check_data_cmd(
    dataset: field_option(EvalConfig, "dataset") = None,
    data_root: field_option(EvalConfig, "data_root") = None,
    split: field_option(EvalConfig, "split") = None,
    parts: field_option(EvalConfig, "parts") = None,
    as_json: Annotated[
        bool, typer.Option("--json", help="Print the report as JSON instead of a table.")
    ] = False,
) -> None:
    """Check a downloaded benchmark without running a model: read its annotations as `rtd
    eval` does, count queries and images, and name the first missing image file."""
    if dataset is None:
        raise ConfigError("--dataset is required (fashioniq, cirr, circo, genecis or toy)")
    reports = check_layout(dataset, data_root, split, split_commas(parts))
    if as_json:
        print_json({"dataset": dataset, "data_root": data_root, "parts": reports})
    else:
        typer.echo(format_reports(dataset, data_root, reports))
    error = first_missing_error(dataset, reports)
    if error is not None:
        raise error
    log(f"{dataset}: annotations read and every image file found")
