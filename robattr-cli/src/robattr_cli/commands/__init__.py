"""One module per `robattr` command, each thin: its options are its config's fields
(`robattr_cli.config`, through `labshared.options.config_command`), and its body runs the
workflow's `check` (before the run folder exists) and `run`."""

from types import ModuleType
from typing import Any

import typer

from labshared.options import RunFlags
from robattr_cli import __version__

#: The run-level options of `attack` and `eval`: `labshared.options.EVAL_RUN` less
#: --no-cache, which they do not use (robattr caches nothing; a flag is never ignored).
EVALUATION_RUN = ("device", "precision", "seed", "deterministic", "output_dir", "overwrite",
                  "report_to")  # fmt: skip


def run_evaluation(command: str, workflow: ModuleType, cfg: Any, run: RunFlags) -> None:
    """`attack` and `eval`: the workflow's `check` (before the run folder exists), its
    `run`, the final metrics to metrics.jsonl and `--report-to`, and the rounded table."""
    from robattr_cli.tables import format_table

    started = run.start("robattr", command, cfg, version=__version__, resumable=False,
                        validate=lambda: workflow.check(cfg))  # fmt: skip
    metrics = workflow.run(cfg, started.runtime, started.dir)
    run.report_final(started.dir, metrics, cfg)
    typer.echo(format_table({"run_dir": str(started.dir), **metrics}))
