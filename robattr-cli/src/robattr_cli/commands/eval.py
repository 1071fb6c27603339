"""`robattr eval`: the options are `EvalConfig`'s fields; the work is in
`robattr_cli.evaluate`."""

from labshared.options import RunFlags, config_command
from robattr_cli.checks import validate_eval
from robattr_cli.commands import EVALUATION_RUN, run_evaluation
from robattr_cli.config import EvalConfig


@config_command(EvalConfig, run=EVALUATION_RUN, validate=validate_eval)
def eval_cmd(cfg: EvalConfig, run: RunFlags) -> None:
    """Clean accuracy, RPS, attack similarity and insertion/AOPC; JSON, table and figure."""
    from robattr_cli import evaluate

    run_evaluation("eval", evaluate, cfg, run)
