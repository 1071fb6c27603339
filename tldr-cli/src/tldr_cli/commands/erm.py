"""`tldr erm`: train the ERM classifier and report its group accuracies (`tldr_cli.erm`)."""

from __future__ import annotations

import typer

from labshared.options import TRAINING_RUN, RunFlags, config_command
from tldr_cli.commands import start
from tldr_cli.config import ERM_NOT_FLAGS, PRESETS, TLDRConfig


@config_command(TLDRConfig, presets=PRESETS, default_preset="toy", run=TRAINING_RUN,
                not_flags=ERM_NOT_FLAGS)  # fmt: skip
def erm_cmd(cfg: TLDRConfig, run: RunFlags) -> None:
    """Train the ERM classifier (paper-repo or DFR recipe) and report its group accuracies.
    Presets: toy (offline), waterbirds, celeba, spuco-animals."""
    from tldr_cli import erm as workflow

    started, trackers = start("erm", cfg, run, lambda: workflow.check(cfg, run.init_from),
                              resumable=True)  # fmt: skip
    _, table = workflow.run(cfg, started.runtime, started.dir, resume=started.resumed,
                            use_cache=not run.no_cache, init_from=started.init_from,
                            report_to=trackers)  # fmt: skip
    typer.echo(table)
    typer.echo(str(started.dir / "checkpoints" / "final"))
