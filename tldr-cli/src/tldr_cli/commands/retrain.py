"""`tldr retrain`: the TLDR head on projected words and/or DFR (`tldr_cli.retrain`)."""

from __future__ import annotations

import typer

from labshared.options import EVAL_RUN, RunFlags, config_command
from tldr_cli.commands import start
from tldr_cli.config import PRESETS, RETRAIN_NOT_FLAGS, TLDRConfig


@config_command(TLDRConfig, presets=PRESETS, default_preset="toy", run=EVAL_RUN,
                not_flags=RETRAIN_NOT_FLAGS)  # fmt: skip
def retrain_cmd(cfg: TLDRConfig, run: RunFlags) -> None:
    """Retrain the last layer on projected text pairs (TLDR) and/or DFR; table of ERM vs
    TLDR vs DFR. Presets: toy (offline), waterbirds, celeba, spuco-animals."""
    from tldr_cli import retrain as workflow

    started, trackers = start("retrain", cfg, run, lambda: workflow.check(cfg),
                              resumable=False)  # fmt: skip
    _, table = workflow.run(cfg, started.runtime, started.dir, use_cache=not run.no_cache,
                            report_to=trackers)  # fmt: skip
    typer.echo(table)
    typer.echo(str(started.dir / "metrics.json"))
