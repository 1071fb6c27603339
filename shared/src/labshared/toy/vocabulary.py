"""The toy world's vocabulary: attribute names, the stroke palette, splits and captions.

The order of each tuple is part of the world: an attribute index is a position in it,
captions, prompts and word lists are built from these words, and the tiny CLIP's cache key
hashes them (`labshared.tinyclip`). Nothing here renders pixels.
"""

from __future__ import annotations

from collections.abc import Sequence

import torch

from labshared.errors import ConfigError

DIGIT_NAMES: tuple[str, ...] = (
    "zero",
    "one",
    "two",
    "three",
    "four",
    "five",
    "six",
    "seven",
    "eight",
    "nine",
)

#: name -> RGB (0-255) of the stroke colour.
COLOURS: dict[str, tuple[int, int, int]] = {
    "red": (230, 25, 25),
    "green": (30, 220, 30),
    "blue": (40, 60, 255),
    "yellow": (250, 230, 20),
    "magenta": (235, 30, 235),
    "cyan": (20, 230, 235),
}
COLOUR_NAMES: tuple[str, ...] = tuple(COLOURS)

#: Background names, in index order; `labshared.toy.sources.BACKGROUND_PHOTOS` says which
#: scikit-image photo each one is cut from.
BACKGROUNDS: tuple[str, ...] = ("grass", "brick", "gravel", "stars", "tissue", "sand")

#: The three attributes of an image, in the column order of every (N, 3) attribute tensor.
ATTRIBUTES: tuple[str, ...] = ("digit", "colour", "background")

SPLITS: tuple[str, ...] = ("train", "val", "test")


def name_index(value: int | str, names: Sequence[str], what: str) -> int:
    """The index of `value` in `names`, given as a name or as an index.

    Args:
        value: a member of `names`, or an integer in 0..len(names)-1.
        names: DIGIT_NAMES, COLOUR_NAMES or BACKGROUNDS.
        what: the attribute's name, for the error message.

    Raises:
        ConfigError: an unknown name or an index out of range.
    """
    if isinstance(value, str):
        if value not in names:
            raise ConfigError(f"unknown {what} {value!r}; expected one of {', '.join(names)}")
        return names.index(value)
    value = int(value)
    if not 0 <= value < len(names):
        raise ConfigError(f"{what} index {value} out of range 0..{len(names) - 1}")
    return value


def check_split(split: str) -> None:
    """Raise `ConfigError` unless `split` is one of SPLITS."""
    if split not in SPLITS:
        raise ConfigError(f"split {split!r}; expected one of {', '.join(SPLITS)}")


def check_ranges(digit: torch.Tensor, colour: torch.Tensor, background: torch.Tensor) -> None:
    """Raise `ConfigError` unless every index lies within its attribute's names."""
    for t, names, what in (
        (digit, DIGIT_NAMES, "digit"),
        (colour, COLOUR_NAMES, "colour"),
        (background, BACKGROUNDS, "background"),
    ):
        if len(t) and (t.min() < 0 or t.max() >= len(names)):
            raise ConfigError(f"{what} indices must lie in 0..{len(names) - 1}")


def caption(digit: int | str, colour: int | str, background: int | str) -> str:
    """The full caption of one image: `caption(7, "red", "grass") == "a red seven on grass"`.

    Each argument is an index into (or a name from) DIGIT_NAMES / COLOUR_NAMES / BACKGROUNDS.
    """
    d = DIGIT_NAMES[name_index(digit, DIGIT_NAMES, "digit")]
    c = COLOUR_NAMES[name_index(colour, COLOUR_NAMES, "colour")]
    b = BACKGROUNDS[name_index(background, BACKGROUNDS, "background")]
    return f"a {c} {d} on {b}"


def captions_for(digit: torch.Tensor, colour: torch.Tensor, background: torch.Tensor) -> list[str]:
    """`caption` for aligned (N,) tensors of indices."""
    return [
        f"a {COLOUR_NAMES[c]} {DIGIT_NAMES[d]} on {BACKGROUNDS[b]}"
        for d, c, b in zip(digit.tolist(), colour.tolist(), background.tolist(), strict=True)
    ]
