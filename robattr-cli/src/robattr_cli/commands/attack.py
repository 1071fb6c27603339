"""`robattr attack`: the options are `AttackConfig`'s fields; the work is in
`robattr_cli.attack`."""

from labshared.options import RunFlags, config_command
from robattr_cli.checks import validate_attack
from robattr_cli.commands import EVALUATION_RUN, run_evaluation
from robattr_cli.config import AttackConfig


@config_command(AttackConfig, run=EVALUATION_RUN, validate=validate_attack)
def attack_cmd(cfg: AttackConfig, run: RunFlags) -> None:
    """Attack the attribution maps of a trained model; save attacked inputs, maps, metrics."""
    from robattr_cli import attack

    run_evaluation("attack", attack, cfg, run)
