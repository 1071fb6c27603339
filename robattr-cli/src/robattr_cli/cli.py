"""The `robattr` command line: wiring only; each command lives in `robattr_cli.commands`.

`train`, `attack` and `eval` are built from their configs (`robattr_cli.config`, through
`labshared.options.config_command`: defaults < preset < --config file < flags; --dry-run
prints the resolved config), then start their run through `labshared.launch.start_run`
(the workflow's `check` first, then the run folder and its one config header) and hand it
to the workflow's `run`. The workflow modules load only when their command runs.
"""

from labshared.cli import make_app, run_app
from robattr_cli import __version__
from robattr_cli.commands.attack import attack_cmd
from robattr_cli.commands.compare import compare_cmd
from robattr_cli.commands.eval import eval_cmd
from robattr_cli.commands.train import train_cmd

app = make_app(
    "robattr",
    "Robust feature attribution by local gradient alignment: train, attack attribution maps, "
    "and measure their robustness.",
    __version__,
    commands={"train": train_cmd, "attack": attack_cmd, "eval": eval_cmd, "compare": compare_cmd},
)


def main() -> None:
    """The console script (`python -m robattr_cli` too)."""
    run_app(app)
