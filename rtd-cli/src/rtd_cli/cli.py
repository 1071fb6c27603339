"""The `rtd` command line: wiring only. Each command is a module of `rtd_cli.commands`
(options from its config, then its workflow's `check` and `run`); `check-data` and
`compare` read data or runs and start none."""

from labshared.cli import make_app, run_app
from rtd_cli import __version__
from rtd_cli.commands.check_data import check_data_cmd
from rtd_cli.commands.compare import compare_cmd
from rtd_cli.commands.eval import eval_cmd
from rtd_cli.commands.train import train_cmd
from rtd_cli.commands.train_phi import train_phi_cmd

app = make_app(
    "rtd",
    "RTD: fine-tune a CLIP text encoder on text triplets for zero-shot composed image "
    "retrieval, and evaluate Pic2Word / SEARLE / LinCIR with or without it.",
    __version__,
    commands={
        "train": train_cmd,
        "train-phi": train_phi_cmd,
        "eval": eval_cmd,
        "compare": compare_cmd,
        "check-data": check_data_cmd,
    },
)


def main() -> None:
    """The console script (`python -m rtd_cli` too)."""
    run_app(app)
