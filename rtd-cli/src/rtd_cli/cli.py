"""The `rtd` command line: wiring only; each command's work lives in its own module.

Every command resolves its config (`labshared.config.resolve`: defaults < preset < the
flags passed; each flag is the config field of the same name) and starts its run through
`labshared.launch.start_run` (checks and inputs first, then the run folder and its one
config header), then hands the run to its workflow. The commands are declared in
`cli_train.py` (train, train-phi), `cli_eval.py` (eval) and `compare.py` (compare);
`check-data` and `compare` start no run.
"""

from pathlib import Path
from typing import Annotated

import typer

from labshared.cli import make_app, run_app
from labshared.console import log
from rtd_cli import __version__
from rtd_cli.cli_common import print_json
from rtd_cli.cli_eval import eval_cmd
from rtd_cli.cli_train import train_cmd, train_phi_cmd
from rtd_cli.compare import compare_cmd
from rtd_cli.datacheck import check_layout, first_missing_error, format_reports

app = make_app(
    "rtd",
    "RTD: fine-tune a CLIP text encoder on text triplets for zero-shot composed image "
    "retrieval, and evaluate Pic2Word / SEARLE / LinCIR with or without it.",
    __version__,
)
app.command("train")(train_cmd)
app.command("train-phi")(train_phi_cmd)
app.command("eval")(eval_cmd)
app.command("compare")(compare_cmd)


@app.command("check-data")
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
    part_list = tuple(p.strip() for p in parts.split(",") if p.strip()) if parts else None
    reports = check_layout(dataset, data_root, split, part_list)
    if as_json:
        print_json({"dataset": dataset, "data_root": data_root, "parts": reports})
    else:
        typer.echo(format_reports(dataset, data_root, reports))
    error = first_missing_error(dataset, reports)
    if error is not None:
        raise error
    log(f"{dataset}: annotations read and every image file found")


def main() -> None:
    run_app(app)


if __name__ == "__main__":
    main()
