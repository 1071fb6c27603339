"""`tldr generate`: the word lists from an LLM (or imported) -> wordlists.json."""

from __future__ import annotations

import dataclasses
from typing import Any

import typer

from labshared.options import RunFlags, config_command
from labshared.runs import write_metrics
from tldr_cli.commands import start
from tldr_cli.config import GENERATE_KNOBS, GenerateConfig, finish_generate, validate_generate


def preview(cfg: GenerateConfig) -> dict[str, Any]:
    """`--dry-run` also shows the first request of every list (nothing is sent)."""
    from tldr_cli import generate as workflow

    return {"preset": cfg.preset, "config": workflow.public_config(cfg),
            "requests": workflow.preview_prompts(cfg)}  # fmt: skip


@config_command(GenerateConfig, run=("output_dir", "resume", "overwrite", "no_cache"),
                validate=validate_generate, finish=finish_generate, preview=preview)  # fmt: skip
def generate_cmd(cfg: GenerateConfig, run: RunFlags) -> None:
    """Build the class and spurious word lists with an LLM (or import them) -> wordlists.json.

    --no-cache: neither read nor write the shared LLM reply cache (the run folder's
    replies.jsonl is always kept for --resume). --dry-run prints the resolved config and the
    first prompt of every list, and sends nothing.
    """
    from tldr_cli import generate as workflow

    # no tensor is computed: the run only talks HTTP and writes JSON
    run = dataclasses.replace(run, preset=cfg.preset, device="cpu")
    started, _ = start("generate", workflow.public_config(cfg), run,
                       lambda: workflow.check(cfg), allowed_on_resume=GENERATE_KNOBS)  # fmt: skip
    wordlists, metrics = workflow.run(cfg, started.dir, use_cache=not run.no_cache)
    write_metrics(started.dir, metrics)
    typer.echo(workflow.lists_table(wordlists, metrics))
    typer.echo(str(started.dir / workflow.WORDLISTS_FILE))
