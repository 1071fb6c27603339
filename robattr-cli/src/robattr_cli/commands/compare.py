"""`robattr compare`: reads `robattr eval` runs, starts none (so no config of its own);
the work is in `robattr_cli.compare`."""

from pathlib import Path
from typing import Annotated

import typer

from labshared.cli import BootstrapSeedOpt, IntersectOpt, JsonOpt, MarkdownOpt, ResamplesOpt


def compare_cmd(
    runs: Annotated[list[Path], typer.Argument(help="`robattr eval` run folders (two or more).")],
    name: Annotated[
        list[str] | None, typer.Option(help="Label of each run, in order (repeat).")
    ] = None,
    intersect: IntersectOpt = False,
    seed: BootstrapSeedOpt = 0,
    resamples: ResamplesOpt = 10_000,
    markdown: MarkdownOpt = False,
    as_json: JsonOpt = False,
) -> None:
    """Compare `robattr eval` runs image by image: every shared measure with its 95 %
    interval, and each run's paired difference to the first with its interval and p-value."""
    from labshared.compare import print_comparison
    from labshared.stats import BootstrapSpec
    from robattr_cli.compare import compare_runs

    result, heads = compare_runs(runs, name, BootstrapSpec(n_resamples=resamples, seed=seed),
                                 intersect)  # fmt: skip
    print_comparison(result, heads, markdown=markdown, as_json=as_json)
