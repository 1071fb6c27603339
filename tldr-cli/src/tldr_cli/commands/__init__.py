"""One module per `tldr` command, each thin: the options come from the command's config
(`labshared.options.config_command` over `tldr_cli.config`), then the workflow module's
`check` (before the run folder exists) and `run`. Each command imports its workflow in its
body, so `tldr --help` loads no torch model, open_clip or openai."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from labshared.options import RunFlags
from tldr_cli import __version__


def start(command: str, cfg: Any, run: RunFlags, check: Callable[[], None], **kwargs: Any):
    """Start the run of `command` (`RunFlags.start`): `--report-to` and the workflow's
    `check` run before the run folder is made, so a failed check leaves no folder behind.
    Returns (the started run, the trackers of `--report-to`)."""
    started = run.start("tldr", command, cfg, version=__version__, validate=check, **kwargs)
    return started, run.trackers()
