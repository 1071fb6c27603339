"""`robattr attack`: the options are `AttackConfig`'s fields; the work is in
`robattr_cli.attack`."""

import typer

from labshared.options import RunFlags, config_command
from robattr_cli import __version__
from robattr_cli.checks import validate_attack
from robattr_cli.commands import EVALUATION_RUN
from robattr_cli.config import AttackConfig
from robattr_cli.tables import format_table


@config_command(AttackConfig, run=EVALUATION_RUN, validate=validate_attack)
def attack_cmd(cfg: AttackConfig, run: RunFlags) -> None:
    """Attack the attribution maps of a trained model; save attacked inputs, maps, metrics."""
    from robattr_cli import attack

    started = run.start("robattr", "attack", cfg, version=__version__, resumable=False,
                        validate=lambda: attack.check(cfg))  # fmt: skip
    metrics = attack.run(cfg, started.runtime, started.dir)
    run.report_final(started.dir, metrics, cfg)
    typer.echo(format_table({"run_dir": str(started.dir), **metrics}))
