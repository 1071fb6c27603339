"""Plain toy splits: `n` random images of a split with their attributes and captions."""

from __future__ import annotations

from dataclasses import dataclass

import torch

from labshared.errors import ConfigError
from labshared.toy.rendering import ToyConfig, composite, random_stream, sample_layout
from labshared.toy.sources import DIGIT_SOURCES, split_indices
from labshared.toy.vocabulary import BACKGROUNDS, COLOURS, captions_for, check_split


@dataclass
class ToySet:
    """A rendered toy split. `images` uint8 (N, 3, H, W); attribute tensors long (N,)."""

    images: torch.Tensor
    digit: torch.Tensor
    colour: torch.Tensor
    background: torch.Tensor
    captions: list[str]
    digit_index: torch.Tensor  # index into mnist5k() (or sklearn_digits())
    split: str
    config: ToyConfig

    def __len__(self) -> int:
        return len(self.images)

    @property
    def attributes(self) -> torch.Tensor:
        """(N, 3) long: digit, colour, background."""
        return torch.stack([self.digit, self.colour, self.background], 1)


def make_split(
    split: str, n: int, *, size: int = 32, seed: int = 0, config: ToyConfig | None = None
) -> ToySet:
    """`n` random toy images of `split`.

    Each image takes a uniform digit image from the split's pool, a uniform colour and a
    uniform background. Deterministic in its arguments: the same call returns identical
    images (but the first k of n images are not the images of a call for k: the colours
    are drawn after all n digit images). `config` (if given) overrides `size` and `seed`.

    Raises:
        ConfigError: an unknown split or a negative `n`.
    """
    check_split(split)
    if n < 0:
        raise ConfigError(f"n={n}; expected a non-negative number of images")
    cfg = config or ToyConfig(size=size, seed=seed)
    rng = random_stream(cfg.seed, split, "make_split")
    pool = split_indices(split, cfg.digit_source)
    _, labels = DIGIT_SOURCES[cfg.digit_source]()
    digit_index = pool[torch.from_numpy(rng.integers(0, len(pool), n))]
    colour = torch.from_numpy(rng.integers(0, len(COLOURS), n))
    background = torch.from_numpy(rng.integers(0, len(BACKGROUNDS), n))
    layout = sample_layout(rng, digit_index, background, cfg, split)
    digit = labels[digit_index]
    images = composite(layout, colour, background, cfg)
    return ToySet(
        images=images,
        digit=digit,
        colour=colour,
        background=background,
        captions=captions_for(digit, colour, background),
        digit_index=digit_index,
        split=split,
        config=cfg,
    )
