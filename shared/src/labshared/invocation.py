"""The command line a tool was invoked with, as the app itself received it.

A run's header records it and a Ctrl-C prints the command that resumes the run from it.
`sys.argv` is not it when a command runs in process (the demos call the apps with their own
argument lists, tests use typer's CliRunner): the apps built by `labshared.cli.make_app`
record the arguments their entry point was given here instead.
"""

from __future__ import annotations

import contextlib
import sys
from collections.abc import Iterator

_args: list[str] | None = None


@contextlib.contextmanager
def recording(args: list[str] | None) -> Iterator[None]:
    """While an app's `main` runs: its arguments (None: `sys.argv[1:]`) are the command's."""
    global _args
    previous = _args
    _args = list(args) if args is not None else list(sys.argv[1:])
    try:
        yield
    finally:
        _args = previous


def command_args() -> list[str]:
    """The arguments of the command being run (its subcommand first), e.g.
    `["train", "--preset", "toy"]`."""
    return list(_args) if _args is not None else list(sys.argv[1:])
