"""The toy group-shift world (TLDR's toy Waterbirds): a digit class and a background that
predicts it in train only.

The label is a binary function of the digit (`CLASS_FNS`), the spurious attribute is which
of two backgrounds the image shows, and `group = 2 * label + spurious`. In train exactly
round(n * corr) images have spurious == label; val and test are balanced over the four
groups, so a classifier that learnt the background fails the minority groups there.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch

from labshared.errors import ConfigError
from labshared.toy.rendering import (
    ToyConfig,
    composite,
    random_stream,
    sample_digit_indices,
    sample_layout,
)
from labshared.toy.vocabulary import (
    BACKGROUNDS,
    COLOURS,
    DIGIT_NAMES,
    captions_for,
    check_split,
    name_index,
)

#: binary class functions of the digit for `spurious_split`: name -> (label of each digit
#: 0..9, label names).
CLASS_FNS: dict[str, tuple[tuple[int, ...], tuple[str, str]]] = {
    "digit<5": ((0, 0, 0, 0, 0, 1, 1, 1, 1, 1), ("small digit", "large digit")),
    "parity": ((0, 1, 0, 1, 0, 1, 0, 1, 0, 1), ("even digit", "odd digit")),
}


@dataclass
class GroupSet:
    """A group-shift split (Waterbirds-style) of the toy world.

    `label` (0/1) is a function of the digit (`class_fn`), `spurious` (0/1) says which of
    the two `spurious_names` backgrounds the image shows, `group = 2 * label + spurious`.
    `label_digits[k]` lists the digit names of class k (for word lists).
    """

    images: torch.Tensor
    label: torch.Tensor
    spurious: torch.Tensor
    group: torch.Tensor
    digit: torch.Tensor
    colour: torch.Tensor
    background: torch.Tensor
    captions: list[str]
    label_names: tuple[str, str]
    spurious_names: tuple[str, str]
    label_digits: tuple[tuple[str, ...], tuple[str, ...]]
    class_fn: str
    corr: float
    split: str
    config: ToyConfig

    def __len__(self) -> int:
        return len(self.images)


def _group_counts(n: int, corr: float) -> list[int]:
    """Images per group (y, s) in order 0..3 = (0,0), (0,1), (1,0), (1,1).

    Aligned groups (s == y) share round(n * corr) images, the others the rest; classes
    are balanced.
    """
    aligned = int(round(n * corr))
    minority = n - aligned
    a0, m0 = (aligned + 1) // 2, (minority + 1) // 2
    return [a0, m0, minority - m0, aligned - a0]


def _check_spurious_args(class_fn: str, corr: float, spurious: tuple[str, str]) -> None:
    if class_fn not in CLASS_FNS:
        raise ConfigError(f"class_fn={class_fn!r}; expected one of {', '.join(CLASS_FNS)}")
    if not 0.0 <= corr <= 1.0:
        raise ConfigError(f"corr={corr}; expected a probability in [0, 1]")
    if len(spurious) != 2 or spurious[0] == spurious[1]:
        raise ConfigError(f"spurious={spurious!r}; expected two different background names")


def spurious_split(
    split: str,
    n: int,
    *,
    corr: float = 0.95,
    class_fn: str = "digit<5",
    spurious: tuple[str, str] = ("grass", "brick"),
    size: int = 32,
    seed: int = 0,
    config: ToyConfig | None = None,
) -> GroupSet:
    """The toy group-shift world used by TLDR (the toy counterpart of Waterbirds).

    In "train" exactly round(n * corr) images have spurious == label (the background
    predicts the class); "val" and "test" are balanced (each of the four groups n/4,
    up to rounding). Labels are balanced in every split; colours are uniform nuisance.

    Args:
        class_fn: "digit<5" (small vs large digit) or "parity" (even vs odd).
        spurious: the two background names for spurious = 0 and 1.
        corr: P(spurious == label) in train, in [0, 1].

    Raises:
        ConfigError: an unknown split, class function or background, or a bad `corr`.
    """
    check_split(split)
    _check_spurious_args(class_fn, corr, spurious)
    spurious_bg = torch.tensor([name_index(s, BACKGROUNDS, "background") for s in spurious])
    cfg = config or ToyConfig(size=size, seed=seed)
    rng = random_stream(cfg.seed, split, f"spurious:{class_fn}:{corr}:{spurious}")
    counts = _group_counts(n, corr if split == "train" else 0.5)
    group = torch.repeat_interleave(torch.arange(4), torch.tensor(counts))
    group = group[torch.from_numpy(rng.permutation(n))]
    label, spur = group // 2, group % 2
    digit_label = torch.tensor(CLASS_FNS[class_fn][0])
    members = [torch.nonzero(digit_label == k).flatten() for k in (0, 1)]
    u = torch.from_numpy(rng.random(n))
    digit = torch.where(
        label == 0,
        members[0][(u * len(members[0])).long().clamp(max=len(members[0]) - 1)],
        members[1][(u * len(members[1])).long().clamp(max=len(members[1]) - 1)],
    )
    colour = torch.from_numpy(rng.integers(0, len(COLOURS), n))
    background = spurious_bg[spur]
    idx = sample_digit_indices(rng, digit, split, cfg)
    layout = sample_layout(rng, idx, background, cfg, split)
    return GroupSet(
        images=composite(layout, colour, background, cfg),
        label=label,
        spurious=spur,
        group=group,
        digit=digit,
        colour=colour,
        background=background,
        captions=captions_for(digit, colour, background),
        label_names=CLASS_FNS[class_fn][1],
        spurious_names=(BACKGROUNDS[spurious_bg[0]], BACKGROUNDS[spurious_bg[1]]),
        label_digits=tuple(tuple(DIGIT_NAMES[d] for d in m.tolist()) for m in members),  # type: ignore[arg-type]
        class_fn=class_fn,
        corr=corr,
        split=split,
        config=cfg,
    )
