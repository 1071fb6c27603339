"""What `rtd train` and `rtd train-phi` share: start the run (checks first), run the
workflow, leave the process group, print the result."""

from __future__ import annotations

from collections.abc import Mapping
from types import ModuleType
from typing import Annotated, Any

import typer

from labshared import distributed
from labshared.cli import print_json
from labshared.options import RunFlags
from rtd_cli import __version__
from rtd_cli.config import TRAIN_PANEL

StopAfterOpt = Annotated[
    int | None,
    typer.Option(
        help="Leave after N steps of this invocation with a checkpoint; continue with --resume.",
        rich_help_panel=TRAIN_PANEL,
    ),
]


def run_training(
    command: str, workflow: ModuleType, cfg: Any, run: RunFlags, stop_after: int | None,
    keys: tuple[str, ...], allowed: frozenset[str], processes: Mapping[str, int],
    **run_kwargs: Any,
) -> None:  # fmt: skip
    """Start the run (`--report-to` and the workflow's `check` first, so a failed check
    leaves no folder), run `workflow.run` with what the check read, leave the process group
    on every rank, and print the `keys` of its metrics on rank 0. `allowed`: the fields a
    resume may change; `processes`: preset -> the process count it was designed for (the
    header records the global batch; another count warns). Ctrl-C / SIGTERM saves the step
    and raises `Interrupted` (one line with the resume command, exit 130 / 143); `--resume`
    of a finished run raises `RunFinished` (exit 0)."""
    inputs = []  # what the check read: the triplets or captions, ...

    try:
        started = run.start(
            "rtd", command, cfg, version=__version__, allowed_on_resume=allowed,
            validate=lambda: inputs.append(workflow.check(cfg)), batch_size=cfg.batch_size,
            preset_processes=processes.get(run.preset),
        )  # fmt: skip
        metrics = workflow.run(cfg, started, inputs[0], stop_after=stop_after,
                               report_to=run.trackers(), **run_kwargs)  # fmt: skip
    finally:
        distributed.cleanup()
    if started.runtime.is_main:
        print_json({"run_dir": str(started.dir), **{k: metrics[k] for k in keys if k in metrics}})
