"""Composed image retrieval benchmarks: FashionIQ, CIRR, CIRCO, GeneCIS and the toy world.

Every loader reads the benchmark's official on-disk layout (the one SEARLE, LinCIR and RTD
read; trees in the `*_LAYOUT` strings below) into one neutral form, `CIRBenchmark`: a list
of `CIRQuery` (reference image, modification text(s), ground truths, CIRR's subset, a
per-query gallery for GeneCIS), a global gallery of image names, and an `ImageSource` that
opens an image by name. Protocols (prompts, reference removal, metrics) live in the tool;
this module only reads data. Malformed annotations raise `DataLayoutError` naming the
file, the item and the field.

Sources: `XiaoxiaoGuo/fashion-iq` (+ `SEARLE:src/datasets.py::FashionIQDataset`),
`Cuberick-Orion/CIRR` (`CIRRDataset`), `miccunifi/CIRCO` (`CIRCODataset`),
`facebookresearch/genecis` (`datasets/coco_dataset.py`, `datasets/vaw_dataset.py`: VG crops
dilated by 0.7 and padded to square). Hugging Face copies: `royokong/cirr_val`,
`royokong/cirr_imgs`, `royokong/fashioniq_val`, `royokong/fashioniq_val_imgs`
(unofficial mirrors, `--data-root hf`).
"""

from __future__ import annotations

from collections.abc import Callable, Iterable
from pathlib import Path
from typing import Any

from labshared.config import unknown_name
from labshared.data.composed_retrieval.mirrors import (
    cirr_from_hf,
    fashioniq_from_hf,
    load_hf,
    load_toy,
)
from labshared.data.composed_retrieval.official import (
    CIRCO_LAYOUT,
    CIRR_LAYOUT,
    FASHIONIQ_CATEGORIES,
    FASHIONIQ_LAYOUT,
    GENECIS_LAYOUT,
    GENECIS_TASKS,
    load_circo,
    load_cirr,
    load_fashioniq,
    load_genecis,
)
from labshared.data.composed_retrieval.records import (
    GENECIS_DILATION,
    CIRBenchmark,
    CIRQuery,
    ColumnImages,
    CroppedImages,
    FileImages,
    ImageSource,
    TensorImages,
)
from labshared.errors import ConfigError

__all__ = [
    "CIRBenchmark", "CIRQuery", "ImageSource", "FileImages", "CroppedImages", "TensorImages",
    "ColumnImages", "FASHIONIQ_CATEGORIES", "GENECIS_TASKS", "GENECIS_DILATION",
    "FASHIONIQ_LAYOUT", "CIRR_LAYOUT", "CIRCO_LAYOUT", "GENECIS_LAYOUT", "load_fashioniq",
    "load_cirr", "load_circo", "load_genecis", "load_toy", "load_hf", "cirr_from_hf",
    "fashioniq_from_hf", "DATASETS", "DEFAULT_SPLIT", "build_benchmarks",
]  # fmt: skip


# --------------------------------------------------------------------------- registry
DATASETS: dict[str, Callable[..., list[CIRBenchmark]]] = {
    "fashioniq": load_fashioniq,
    "cirr": load_cirr,
    "circo": load_circo,
    "genecis": load_genecis,
    "toy": load_toy,
}
DEFAULT_SPLIT = {"fashioniq": "val", "cirr": "val", "circo": "val", "genecis": "test", "toy": "val"}


def build_benchmarks(
    dataset: str,
    root: str | Path | None,
    split: str | None = None,
    parts: Iterable[str] | None = None,
    **toy_kwargs: Any,
) -> list[CIRBenchmark]:
    """One way in: `dataset` from `DATASETS`, `root` its folder (`hf` for the hub copies,
    unused for `toy`), `parts` FashionIQ categories or GeneCIS tasks.

    Raises:
        ConfigError: an unknown dataset (with the closest known name), a missing or
            non-folder `root`, or `parts` for a benchmark without parts.
    """
    if dataset not in DATASETS:
        raise unknown_name("dataset", dataset, DATASETS)
    split = split or DEFAULT_SPLIT[dataset]
    if dataset == "toy":
        return load_toy(split, **toy_kwargs)
    if root is None:
        raise ConfigError(
            f"--data-root is required for {dataset} (its folder in the official layout, or 'hf')"
        )
    if str(root) == "hf":
        return load_hf(dataset, split, parts)
    if not Path(root).is_dir():
        raise ConfigError(f"--data-root {root} is not a folder")
    if dataset in ("fashioniq", "genecis"):
        return DATASETS[dataset](root, split, parts)
    if parts:
        raise ConfigError(f"--parts applies to fashioniq and genecis only, not {dataset}")
    return DATASETS[dataset](root, split)
