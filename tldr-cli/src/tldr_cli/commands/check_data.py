"""`tldr check-data`: check a downloaded layout; writes no run folder, so it is no config
command (its options are TLDRConfig fields, with their declared help)."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated

import typer

from labshared import options
from labshared.cli import PresetOpt
from labshared.config import resolve
from tldr_cli.config import PRESETS, TLDRConfig


def field_option(name: str):
    """The option of TLDRConfig field `name`, as the config declares it."""
    return options.field_option(TLDRConfig, name)


def check_data_cmd(
    preset: PresetOpt = "toy",
    dataset: field_option("dataset") = None,
    data_root: field_option("data_root") = None,
    gap_pairs: field_option("gap_pairs") = None,
    words: Annotated[
        Path | None,
        typer.Option(help="Also check that this word-list JSON names the dataset's classes."),
    ] = None,
    classifier: field_option("classifier") = None,
    arch: field_option("arch") = None,
    backbone_weights: field_option("backbone_weights") = None,
    clip_model: field_option("clip_model") = None,
    clip_pretrained: field_option("clip_pretrained") = None,
) -> None:
    """Check a downloaded layout without training or embedding anything: metadata, every
    listed image file (names the first missing one), group counts, gap pairs, word lists.
    Writes no run folder."""
    given = {k: v for k, v in locals().items() if k != "preset"}  # the fields given
    from tldr_cli.checkdata import check_data, format_report

    cfg = resolve(PRESETS, preset, given)
    typer.echo(format_report(check_data(cfg)))
