"""The `tldr` command line: wiring only. Each command is a module of `tldr_cli.commands`
(its options built from its config in `tldr_cli.config`), and each workflow module
(`generate`, `filter`, `retrain`, `erm`) has a `check` (everything validated before a run
folder exists) and a `run`."""

from labshared.cli import make_app, run_app
from tldr_cli import __version__
from tldr_cli.commands.check_data import check_data_cmd
from tldr_cli.commands.compare import compare_cmd
from tldr_cli.commands.erm import erm_cmd
from tldr_cli.commands.filter import filter_cmd
from tldr_cli.commands.generate import generate_cmd
from tldr_cli.commands.retrain import retrain_cmd

app = make_app(
    "tldr",
    "TLDR: debias an image classifier by retraining its last layer on LLM-generated words "
    "projected from CLIP's text space.",
    __version__,
    commands={
        "generate": generate_cmd,
        "filter": filter_cmd,
        "retrain": retrain_cmd,
        "erm": erm_cmd,
        "compare": compare_cmd,
        "check-data": check_data_cmd,
    },
)


def main() -> None:
    """The console script (`python -m tldr_cli` too)."""
    run_app(app)
