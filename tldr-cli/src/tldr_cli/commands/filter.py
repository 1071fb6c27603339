"""`tldr filter`: the two-stage word filter (`tldr_cli.filter`) -> wordlists.json."""

from __future__ import annotations

import typer

from labshared.options import RunFlags, config_command
from tldr_cli.commands import start
from tldr_cli.config import FILTER_NOT_FLAGS, PRESETS, TLDRConfig

FILTER_RUN = ("device", "precision", "seed", "deterministic", "output_dir", "overwrite",
              "no_cache")  # fmt: skip


@config_command(TLDRConfig, presets=PRESETS, default_preset="toy", run=FILTER_RUN,
                not_flags=FILTER_NOT_FLAGS)  # fmt: skip
def filter_cmd(cfg: TLDRConfig, run: RunFlags) -> None:
    """Stage 1 (CLIP anchor) and stage 2 (ERM head on projected words) word filter ->
    wordlists.json. Presets: toy (offline), waterbirds, celeba, spuco-animals."""
    from tldr_cli import filter as workflow

    started, _ = start("filter", cfg, run, lambda: workflow.check(cfg), resumable=False)
    out, summary, _ = workflow.run(cfg, started.runtime, started.dir, use_cache=not run.no_cache)
    typer.echo(workflow.summary_table(summary))
    typer.echo(
        f"removed: {summary['removed_stage1']} by the CLIP anchor filter, "
        f"{summary['removed_stage2']} by the classifier filter (filter_report.json)"
    )
    typer.echo(str(out))
