"""`robattr eval`: the options are `EvalConfig`'s fields; the work is in
`robattr_cli.evaluate`."""

import typer

from labshared.options import RunFlags, config_command
from labshared.runs import to_jsonable
from robattr_cli import __version__
from robattr_cli.checks import validate_eval
from robattr_cli.commands import EVALUATION_RUN
from robattr_cli.config import EvalConfig
from robattr_cli.tables import format_table


@config_command(EvalConfig, run=EVALUATION_RUN, validate=validate_eval)
def eval_cmd(cfg: EvalConfig, run: RunFlags) -> None:
    """Clean accuracy, RPS, attack similarity and insertion/AOPC; JSON, table and figure."""
    from labshared.training import parse_report_to, report_final
    from robattr_cli import evaluate

    trackers = []  # the --report-to trackers, checked before the run folder exists

    def check() -> None:
        trackers.extend(parse_report_to(run.report_to))
        evaluate.check(cfg)

    started = run.start("robattr", "eval", cfg, version=__version__, resumable=False,
                        validate=check)  # fmt: skip
    metrics = evaluate.run(cfg, started.runtime, started.dir)
    report_final(started.dir, metrics, tuple(trackers), config=to_jsonable(cfg))
    typer.echo(format_table({"run_dir": str(started.dir), **metrics}))
