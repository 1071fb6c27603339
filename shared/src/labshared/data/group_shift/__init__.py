"""Group-shift classification loaders: Waterbirds, CelebA, SpuCoAnimals, Hugging Face
copies, and the offline toy world.

Every loader returns a `GroupShiftSplit` (`records`): the images (file paths, an in-memory
uint8 tensor or a Hugging Face image column), the class `label`, the `spurious` attribute
and `group = label * n_spurious + spurious`, plus a `fingerprint` of everything that
determines the contents (used in content-keyed feature caches).

One module per source, each reading its official on-disk layout (`DataLayoutError` shows
the layout when a file is missing or malformed, naming the file and the field):

- `waterbirds`: `metadata.csv` (group_DRO's `waterbird_complete95_forest2water2`, WILDS
  `waterbirds_v1.0`);
- `celeba`: `list_attr_celeba`, `list_eval_partition`, `img_align_celeba/` (the release,
  WILDS or Kaggle); label Blond_Hair, spurious Male;
- `spuco`: SpuCoAnimals in SpuCo's folder layout;
- `hf`: Hugging Face copies of Waterbirds and CelebA (hub id or `save_to_disk` folder);
- `toy`: `labshared.toy.spurious_split` (digits on grass / brick, 95 % train correlation,
  balanced val and test).

`build_group_shift(name, root, split, ...)` is the one way in; `GROUP_SHIFT_DATASETS` names
each source with its expected layout.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

from labshared.config import unknown_name
from labshared.data.group_shift.celeba import CELEBA_LAYOUT, load_celeba
from labshared.data.group_shift.hf import HF_COPIES, HF_LAYOUT, HFCopy, load_hf_group_shift
from labshared.data.group_shift.records import SPLITS, GroupShiftSplit, ImageDataset
from labshared.data.group_shift.spuco import SPUCO_ANIMALS_LAYOUT, load_spuco_animals
from labshared.data.group_shift.toy import load_toy
from labshared.data.group_shift.waterbirds import WATERBIRDS_LAYOUT, load_waterbirds
from labshared.errors import ConfigError

__all__ = [
    "CELEBA_LAYOUT",
    "GROUP_SHIFT_DATASETS",
    "HF_COPIES",
    "HF_LAYOUT",
    "SPLITS",
    "SPUCO_ANIMALS_LAYOUT",
    "WATERBIRDS_LAYOUT",
    "GroupShiftSplit",
    "HFCopy",
    "ImageDataset",
    "build_group_shift",
    "load_celeba",
    "load_hf_group_shift",
    "load_spuco_animals",
    "load_toy",
    "load_waterbirds",
]

#: name -> its expected layout (shown when `--data-root` is missing).
GROUP_SHIFT_DATASETS: dict[str, str] = {
    "waterbirds": WATERBIRDS_LAYOUT,
    "celeba": CELEBA_LAYOUT,
    "spuco-animals": SPUCO_ANIMALS_LAYOUT,
    "hf": HF_LAYOUT,
    "toy": "generated in memory by labshared.toy (no files)",
}


def build_group_shift(
    name: str, root: str | Path | None, split: str, **kwargs: Any
) -> GroupShiftSplit:
    """The one way in: `name` is a key of GROUP_SHIFT_DATASETS.

    For "hf", `root` is the hub id or `save_to_disk` folder; toy keyword arguments go to
    `load_toy`, the others to the source's loader.

    Raises:
        ConfigError: an unknown name (with the closest known one), or no `root` for a
            dataset that reads files.
    """
    if name == "toy":
        return load_toy(split, **kwargs)
    if name not in GROUP_SHIFT_DATASETS:
        raise unknown_name("dataset", name, GROUP_SHIFT_DATASETS)
    if root is None:
        raise ConfigError(
            f"dataset {name!r} needs --data-root; expected layout:\n{GROUP_SHIFT_DATASETS[name]}"
        )
    if name == "hf":
        return load_hf_group_shift(str(root), split, **kwargs)
    loader = {
        "waterbirds": load_waterbirds,
        "celeba": load_celeba,
        "spuco-animals": load_spuco_animals,
    }[name]
    return loader(root, split, **kwargs)
