"""`python -m labshared.tinyclip --report`: fit (once, cached) and print the tiny CLIP's
figures on 600 toy test images (digit instances never seen in fitting), with the fit's
wall and CPU time."""

from __future__ import annotations

import argparse
import sys
from collections.abc import Sequence
from typing import Any

from labshared.console import render_table
from labshared.errors import ConfigError
from labshared.tinyclip.evaluate import evaluate_retrieval
from labshared.tinyclip.fit import (
    FIT_PROFILE_ENV,
    FIT_PROFILES,
    FitConfig,
    default_fit,
    ensure_tiny_clip,
    fit_stats,
    load_tiny_clip,
    tiny_clip_path,
)
from labshared.tinyclip.model import TINY_CLIP_NAME, param_count


def report(force: bool = False, fit: FitConfig | None = None) -> dict[str, Any]:
    """Fit (or load) the tiny CLIP, evaluate it and return the figures."""
    fit = fit or default_fit()
    if force:
        ensure_tiny_clip(force=True, fit=fit)
    model, _, _ = load_tiny_clip(fit=fit)
    stats = fit_stats(fit) or {}
    figures: dict[str, Any] = {"weights": str(tiny_clip_path(fit)), "params": param_count(model)}
    for key in ("fit_seconds", "fit_cpu_seconds", "torch_threads"):
        figures[key] = stats.get(key)
    figures.update(evaluate_retrieval(model))
    return figures


def main(argv: Sequence[str] | None = None) -> int:
    """`python -m labshared.tinyclip`: fit (cached) and print the figures table on stdout.

    Returns the exit status: 0, or 1 with one line on stderr for a bad fit profile.
    """
    parser = argparse.ArgumentParser(
        prog="python -m labshared.tinyclip",
        description="Fit (once, cached) and evaluate the tiny CLIP stand-in on the toy world.",
    )
    parser.add_argument("--report", action="store_true", help="print the model's figures")
    parser.add_argument("--force", action="store_true", help="refit even if cached")
    parser.add_argument(
        "--fit",
        choices=sorted(FIT_PROFILES),
        default=None,
        help=f"fit profile (default: ${FIT_PROFILE_ENV}, else full)",
    )
    args = parser.parse_args(argv)
    if not args.report and not args.force:
        parser.print_help()
        return 0
    try:
        fit = FIT_PROFILES[args.fit] if args.fit else default_fit()
        figures = report(force=args.force, fit=fit)
    except ConfigError as err:
        sys.stderr.write(f"error: {err}\n")
        return 1
    rows = [
        (key, f"{value:.3f}" if isinstance(value, float) else str(value))
        for key, value in figures.items()
    ]
    title = f"{TINY_CLIP_NAME} on {figures['n']} toy test images"
    sys.stdout.write(render_table(("figure", "value"), rows, title=title) + "\n")
    return 0
