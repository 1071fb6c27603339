"""One stderr console for logs and progress bars; stdout is kept for results.

Only rank 0 prints (set by `labshared.distributed`), and bars switch off when stderr is
not a terminal so CI logs stay readable. Log lines are never wrapped: off a terminal rich
would break them at 80 columns (a cache path on a line of its own), which breaks grep and
copy-paste; a terminal folds long lines itself.
"""

from __future__ import annotations

import io
import os
from collections.abc import Iterable, Iterator, Sequence
from typing import Any, TypeVar

from rich import box
from rich.console import Console
from rich.progress import (
    BarColumn,
    MofNCompleteColumn,
    Progress,
    TextColumn,
    TimeElapsedColumn,
    TimeRemainingColumn,
)
from rich.table import Table

from labshared.distributed import is_main

T = TypeVar("T")

console = Console(stderr=True, soft_wrap=True)


def log(*objects, **kwargs) -> None:
    """Print to stderr on rank 0 only."""
    if is_main():
        console.print(*objects, **kwargs)


def progress_enabled() -> bool:
    """Whether bars are drawn: rank 0, stderr a terminal, LABSHARED_NO_PROGRESS unset."""
    return is_main() and console.is_terminal and not os.environ.get("LABSHARED_NO_PROGRESS")


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


def format_cell(value: Any) -> str:
    """A table cell as text: a float (Python's or a 0-d tensor's / numpy's) rounded by one
    rule, so no table shows `92.0999984741211`: 2 decimals from 1 up, 4 below, one decimal
    with thousands separators from 1,000; nan as "nan"; anything else `str()`."""
    if hasattr(value, "item") and getattr(value, "ndim", 1) == 0:
        value = value.item()
    if not isinstance(value, float):
        return str(value)
    if value != value:
        return "nan"
    size = abs(value)
    if size >= 1000:
        return f"{value:,.1f}"
    return f"{value:.2f}" if size >= 1 or size == 0 else f"{value:.4f}"


def render_table(
    columns: Sequence[str],
    rows: Iterable[Sequence[Any]],
    *,
    title: str | None = None,
    markdown: bool = False,
    align: str = "lr",
) -> str:
    """The one table formatter of the three tools: `rows` under `columns`, as text.

    Args:
        columns: header cells.
        rows: cells, already formatted (`f"{x:.2f}"`) or anything `format_cell` renders
            (a float is rounded by one rule in every tool).
        title: printed above the table (rich) or as a bold line (markdown).
        markdown: a GitHub Markdown table (for README files and `demo_table.md`) instead
            of rich's box drawing (for the terminal and stdout).
        align: "l" or "r" per column, the last letter repeated for the remaining ones
            ("lr": the first column left, all others right; "llr": two left, then right).

    Returns:
        The table as a string without trailing newline, ready for stdout or a file.
    """
    rows = [[format_cell(c) for c in row] for row in rows]
    letters = align[: len(columns)] + align[-1] * (len(columns) - len(align))
    justify = ["left" if a == "l" else "right" for a in letters]
    if markdown:
        rule = [":---" if j == "left" else "---:" for j in justify]
        lines = [f"**{title}**", ""] if title else []
        lines += ["| " + " | ".join(r) + " |" for r in (list(columns), rule, *rows)]
        return "\n".join(lines)
    table = Table(title=title, box=box.SIMPLE_HEAD, title_justify="left")
    for name, j in zip(columns, justify, strict=True):
        table.add_column(name, justify=j, overflow="fold")
    for row in rows:
        table.add_row(*row)
    out = Console(file=io.StringIO(), width=200, color_system=None, highlight=False)
    out.print(table)
    return "\n".join(line.rstrip() for line in out.file.getvalue().splitlines()).strip("\n")
