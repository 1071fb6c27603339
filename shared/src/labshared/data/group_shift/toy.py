"""The offline toy world as a group-shift dataset (`labshared.toy.spurious_split`).

Digits on grass / brick: label small vs large digit (or even vs odd), spurious the
background, 95 % train correlation by default, balanced val and test. Generated in
memory, no files.
"""

from __future__ import annotations

import numpy as np

from labshared import toy
from labshared.data.group_shift.records import GroupShiftSplit, check_split
from labshared.toy.sources import toy_fingerprint


def load_toy(
    split: str,
    n: int,
    *,
    corr: float = 0.95,
    size: int = 32,
    seed: int = 0,
    class_fn: str = "digit<5",
    spurious: tuple[str, str] = ("grass", "brick"),
) -> GroupShiftSplit:
    """The toy digits-on-textures world (`labshared.toy.spurious_split`).

    Label = small vs large digit (`class_fn="digit<5"`; or even vs odd, "parity"),
    spurious = grass vs brick background (`spurious`), `corr` the train correlation.

    Raises:
        ConfigError: an unknown split, class function or background, or a bad `corr`.
    """
    check_split(split)
    gs = toy.spurious_split(
        split, n, corr=corr, class_fn=class_fn, spurious=spurious, size=size, seed=seed
    )
    return GroupShiftSplit(
        dataset="toy",
        split=split,
        label=gs.label.numpy().astype(np.int64),
        spurious=gs.spurious.numpy().astype(np.int64),
        n_classes=2,
        n_spurious=2,
        class_names=tuple(gs.label_names),
        spurious_names=tuple(gs.spurious_names),
        images=gs.images,
        captions=gs.captions,
        fingerprint={
            "dataset": "toy",
            "split": split,
            "n": n,
            "corr": corr,
            "size": size,
            "seed": seed,
            "class_fn": class_fn,
            "spurious": list(spurious),
            # the toy code and the wheel files its pixels come from (a changed renderer
            # or photo is new data)
            "toy": toy_fingerprint(),
        },
    )
