"""What the `rtd` commands share on the command line: the rtd-only options declared once,
the help panels, how flags become config fields, and the JSON output function.

The cross-tool options (`--device`, `--precision`, `--seed`, `--preset`, `-o`, `--resume`,
`--overwrite`, `--no-cache`, `--quick-gelu`) come from `labshared.cli`.
"""

import dataclasses
import json
from collections.abc import Mapping
from typing import Annotated, Any

import typer

from labshared.runs import to_jsonable

TRAIN_PANEL = "Training"
DATA_PANEL = "Data"
VAL_PANEL = "Validation"

# One meaning in every rtd command: the toy world's data seed (make demo-rtd TOY_SEED=N).
ToySeedOpt = Annotated[
    int | None,
    typer.Option(
        "--toy-seed",
        help="Data seed of the toy world: draws the toy captions / triplets and the toy "
        "benchmark's queries, gallery and distractors (0 by default; --seed is the "
        "training seed).",
        rich_help_panel=DATA_PANEL,
    ),
]
DryRunOpt = Annotated[bool, typer.Option("--dry-run", help="Print the resolved config and exit.")]
LogEveryOpt = Annotated[int | None, typer.Option(help="Steps between log lines.")]


def field_overrides(config_type: type, args: Mapping[str, Any]) -> dict[str, Any]:
    """The command's arguments that name a field of `config_type` (each flag maps onto the
    field of the same name; None = not given, the preset's value stays)."""
    names = {f.name for f in dataclasses.fields(config_type)}
    return {k: v for k, v in args.items() if k in names}


def print_json(obj: Any) -> None:
    """A command's machine-readable result on stdout (logs go to stderr)."""
    typer.echo(json.dumps(to_jsonable(obj), indent=2))
