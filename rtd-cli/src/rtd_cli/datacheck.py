"""`rtd check-data`: check a downloaded benchmark against its official layout, without a model.

The annotations are read by the very loaders `rtd eval` uses (`labshared.data.
composed_retrieval`), so a missing or malformed annotation file fails here with the error eval
would give (file, item, field, expected tree). Then every image file the protocol reads
(gallery, references, CIRR subsets, GeneCIS galleries) is looked up on disk, one directory
listing per folder, and the first missing file is named. Nothing is decoded or encoded: a
CIRCO check (123k gallery files) takes seconds.
"""

from __future__ import annotations

import os
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import labshared.data.composed_retrieval as CR
from labshared.console import render_table
from labshared.errors import DataLayoutError
from rtd_cli.aspects import circo_semantic_aspects
from rtd_cli.config import EvalConfig

MISSING_SHOWN = 5  # missing files listed per part (all are counted)


@dataclass
class PartReport:
    """What one benchmark part holds and what of it is on disk.

    Attributes:
        name / split: the part (e.g. `fashioniq-dress`) and split.
        queries: annotated queries; gallery: images ranked against (0 for GeneCIS, whose
            galleries are per query).
        images: distinct image files the protocol reads; on_disk: how many exist (None when
            the images are not files: the toy world or a hub copy).
        missing: the first missing files (paths), `MISSING_SHOWN` at most; n_missing: all.
        annotation_files: the files the loader read.
        semantic_aspects: CIRCO val, queries carrying `semantic_aspects` (None otherwise).
    """

    name: str
    split: str
    queries: int
    gallery: int
    images: int
    on_disk: int | None
    n_missing: int = 0
    missing: list[str] = field(default_factory=list)
    annotation_files: list[str] = field(default_factory=list)
    semantic_aspects: int | None = None


def image_files(bench) -> dict[str, str] | None:
    """Image name -> file path for every image `bench` reads; None for in-memory or hub
    images. Paths are plain strings: a CIRCO gallery has 123k of them.

    A name the annotations use but the image index (CIRR split file, COCO info file) does
    not list maps to a path that cannot exist, so it is reported missing.
    """
    names = bench.image_names()
    src = bench.images
    if isinstance(src, CR.FileImages):
        unlisted = os.path.join(str(src.root), "<not listed in the image index>")
        paths = src.paths
        return {n: str(paths[n]) if n in paths else os.path.join(unlisted, n) for n in names}
    if isinstance(src, CR.CroppedImages):
        unlisted = os.path.join(str(src.root), "<not listed in the annotations>")
        boxes = src.boxes
        return {n: str(boxes[n][0]) if n in boxes else os.path.join(unlisted, n) for n in names}
    return None


def _present(paths: list[str]) -> list[bool]:
    """Whether each file exists, from one listing per folder (not one stat per file)."""
    split = [os.path.split(p) for p in paths]
    listing: dict[str, set[str]] = {}
    for folder in {d for d, _ in split}:
        try:
            listing[folder] = set(os.listdir(folder))
        except OSError:  # missing folder (or not a folder): every file in it is missing
            listing[folder] = set()
    return [name in listing[folder] for folder, name in split]


def check_part(bench) -> PartReport:
    files = image_files(bench)
    report = PartReport(
        name=bench.name,
        split=bench.split,
        queries=len(bench.queries),
        gallery=len(bench.gallery),
        images=len(bench.image_names()) if files is None else len(set(files.values())),
        on_disk=None,
        annotation_files=list(bench.annotation_files),
    )
    if bench.dataset == "circo" and bench.split == "val":
        aspects = circo_semantic_aspects(bench)
        report.semantic_aspects = 0 if aspects is None else sum(1 for a in aspects if a)
    if files is None:
        return report
    paths = list(dict.fromkeys(files.values()))  # GeneCIS crops share their source image
    present = _present(paths)
    absent = [p for p, ok in zip(paths, present, strict=True) if not ok]
    report.images = len(paths)
    report.on_disk = len(paths) - len(absent)
    report.n_missing = len(absent)
    report.missing = absent[:MISSING_SHOWN]
    return report


def load_benchmarks(cfg: EvalConfig) -> list[CR.CIRBenchmark]:
    """The parts of an `EvalConfig`'s benchmark, as `rtd eval` and `rtd train
    --val-dataset` read them: annotations, not yet images (so checking them needs no model)."""
    toy = cfg.dataset == "toy"
    toy_kwargs = {"n_queries": cfg.toy_queries, "n_distractors": cfg.toy_distractors,
                  "seed": cfg.toy_seed} if toy else {}  # fmt: skip
    return CR.build_benchmarks(cfg.dataset, cfg.data_root, cfg.split, cfg.parts, **toy_kwargs)


def check_layout(
    dataset: str, root: str | Path | None, split: str | None = None, parts=None
) -> list[PartReport]:
    """Load `dataset`'s annotations from `root` as `rtd eval` does and check its images.

    Raises:
        DataLayoutError / ConfigError: a missing or malformed annotation file, or a bad
            dataset, split or part (the loaders' own errors).
    """
    return [check_part(b) for b in CR.build_benchmarks(dataset, root, split, parts)]


LAYOUTS = {"fashioniq": "FASHIONIQ_LAYOUT", "cirr": "CIRR_LAYOUT", "circo": "CIRCO_LAYOUT",
           "genecis": "GENECIS_LAYOUT"}  # fmt: skip


def first_missing_error(dataset: str, reports: list[PartReport]) -> DataLayoutError | None:
    """The error naming the first missing image file, with how many are missing."""
    bad = [r for r in reports if r.n_missing]
    if not bad:
        return None
    total = sum(r.n_missing for r in bad)
    first = bad[0]
    layout = getattr(CR, LAYOUTS[dataset], "") if dataset in LAYOUTS else ""
    return DataLayoutError(
        first.missing[0],
        f"image file missing (the first of {total} missing: {first.n_missing} of "
        f"{first.images} in {first.name} {first.split})",
        layout,
    )


def format_reports(dataset: str, root: Any, reports: list[PartReport]) -> str:
    """A table for the terminal: one row per part, then the first missing files."""
    rows = [
        (r.name, r.split, r.queries, r.gallery, r.images,
         "-" if r.on_disk is None else r.on_disk, r.n_missing)
        for r in reports
    ]  # fmt: skip
    head = ("part", "split", "queries", "gallery", "images", "on disk", "missing")
    lines = [render_table(head, rows, title=f"{dataset} at {root}", align="ll")]
    for r in reports:
        if r.semantic_aspects is not None:
            lines.append(
                f"{r.name} {r.split}: {r.semantic_aspects} of {r.queries} queries carry "
                "semantic_aspects (per-aspect mAP@10)"
            )
        for path in r.missing:
            lines.append(f"missing: {path}")
        if r.n_missing > len(r.missing):
            lines.append(f"... and {r.n_missing - len(r.missing)} more in {r.name}")
    return "\n".join(lines)
