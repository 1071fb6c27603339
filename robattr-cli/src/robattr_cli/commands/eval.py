"""`robattr eval`: the options are `EvalConfig`'s fields; the work is in
`robattr_cli.evaluate`."""

import typer

from labshared.options import RunFlags, config_command
from robattr_cli import __version__
from robattr_cli.checks import validate_eval
from robattr_cli.commands import EVALUATION_RUN
from robattr_cli.config import EvalConfig
from robattr_cli.tables import format_table


@config_command(EvalConfig, run=EVALUATION_RUN, validate=validate_eval)
def eval_cmd(cfg: EvalConfig, run: RunFlags) -> None:
    """Clean accuracy, RPS, attack similarity and insertion/AOPC; JSON, table and figure."""
    from robattr_cli import evaluate

    started = run.start("robattr", "eval", cfg, version=__version__, resumable=False,
                        validate=lambda: evaluate.check(cfg))  # fmt: skip
    metrics = evaluate.run(cfg, started.runtime, started.dir)
    run.report_final(started.dir, metrics, cfg)
    typer.echo(format_table({"run_dir": str(started.dir), **metrics}))
