"""`tldr compare`: methods image by image on the same test images (reads run folders)."""

from __future__ import annotations

from typing import Annotated

import typer

from labshared.cli import BootstrapSeedOpt, IntersectOpt, JsonOpt, MarkdownOpt, ResamplesOpt


def compare_cmd(
    runs: Annotated[
        list[str],
        typer.Argument(
            help="`tldr retrain` / `tldr erm` run folders (all their methods), or "
            "RUN:METHOD (e.g. runs/x:TLDR); two or more methods in all."
        ),
    ],
    intersect: IntersectOpt = False,
    seed: BootstrapSeedOpt = 0,
    resamples: ResamplesOpt = 10_000,
    markdown: MarkdownOpt = False,
    as_json: JsonOpt = False,
) -> None:
    """Compare methods image by image on the same test images: worst-group, average
    (train-weighted), class-balanced and plain accuracy, each with its 95 % interval, and
    each method's paired difference to the first with its interval and p-value."""
    from labshared.compare import print_comparison
    from labshared.stats import BootstrapSpec
    from tldr_cli.outputs import compare_runs, headlines

    result = compare_runs(runs, BootstrapSpec(n_resamples=resamples, seed=seed), intersect)
    print_comparison(result, headlines(), markdown=markdown, as_json=as_json)
