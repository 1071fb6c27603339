"""One stderr console for logs and progress bars; stdout is kept for results.

Only rank 0 prints (set by `labshared.distributed`), and bars switch off when stderr is
not a terminal so CI logs stay readable.
"""

from __future__ import annotations

import os
from collections.abc import Iterable, Iterator
from typing import TypeVar

from rich.console import Console
from rich.progress import (
    BarColumn,
    MofNCompleteColumn,
    Progress,
    TextColumn,
    TimeElapsedColumn,
    TimeRemainingColumn,
)

T = TypeVar("T")

console = Console(stderr=True)


def _is_main() -> bool:
    return os.environ.get("RANK", "0") == "0"


def log(*objects, **kwargs) -> None:
    """Print to stderr on rank 0 only."""
    if _is_main():
        console.print(*objects, **kwargs)


def progress_enabled() -> bool:
    return _is_main() and console.is_terminal and not os.environ.get("LABSHARED_NO_PROGRESS")


def make_progress() -> Progress:
    """A rich Progress with the columns every tool uses (description, bar, n/N, times)."""
    return Progress(
        TextColumn("[bold]{task.description}"),
        BarColumn(),
        MofNCompleteColumn(),
        TimeElapsedColumn(),
        TimeRemainingColumn(),
        TextColumn("{task.fields[status]}"),
        console=console,
        disable=not progress_enabled(),
        transient=False,
    )


def track(items: Iterable[T], description: str, total: int | None = None) -> Iterator[T]:
    """Iterate with a progress bar on stderr (rank 0, terminals only)."""
    if total is None and hasattr(items, "__len__"):
        total = len(items)  # type: ignore[arg-type]
    with make_progress() as progress:
        task = progress.add_task(description, total=total, status="")
        for item in items:
            yield item
            progress.advance(task)
