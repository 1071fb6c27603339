"""`robattr attack`: the options are `AttackConfig`'s fields; the work is in
`robattr_cli.attack`."""

import typer

from labshared.options import RunFlags, config_command
from labshared.runs import to_jsonable
from robattr_cli import __version__
from robattr_cli.checks import validate_attack
from robattr_cli.commands import EVALUATION_RUN
from robattr_cli.config import AttackConfig
from robattr_cli.tables import format_table


@config_command(AttackConfig, run=EVALUATION_RUN, validate=validate_attack)
def attack_cmd(cfg: AttackConfig, run: RunFlags) -> None:
    """Attack the attribution maps of a trained model; save attacked inputs, maps, metrics."""
    from labshared.training import parse_report_to, report_final
    from robattr_cli import attack

    trackers = []  # the --report-to trackers, checked before the run folder exists

    def check() -> None:
        trackers.extend(parse_report_to(run.report_to))
        attack.check(cfg)

    started = run.start("robattr", "attack", cfg, version=__version__, resumable=False,
                        validate=check)  # fmt: skip
    metrics = attack.run(cfg, started.runtime, started.dir)
    report_final(started.dir, metrics, tuple(trackers), config=to_jsonable(cfg))
    typer.echo(format_table({"run_dir": str(started.dir), **metrics}))
