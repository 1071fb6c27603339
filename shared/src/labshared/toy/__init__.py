"""The offline toy world: coloured MNIST digits on real textures, with captions.

Every pixel comes from real images that ship inside PyPI wheels, so tests, CI and `make
demo` need no network. An image is an MNIST digit's stroke used as an alpha mask, filled
with one of six palette colours and composited over a crop of one of six scikit-image
photos, at `size` x `size` pixels (32 or 64). Its caption is `caption(digit, colour,
background)`, e.g. "a red seven on grass".

One job per module:

- `vocabulary`: attribute names, the palette, splits, the caption grammar;
- `sources`: the real pixels (MNIST-5k, scikit-learn digits, scikit-image photos) and the
  fixed digit split and background bands that keep the splits disjoint;
- `rendering`: `ToyConfig`, random streams, layouts and the compositor (`render`);
- `splits`: plain random splits (`make_split`);
- `spurious`: the group-shift world (`spurious_split`, TLDR's toy Waterbirds);
- `modifications`: composed-retrieval triplets (`modification_triplets`, `text_triplets`).

Public API (other packages code against these names, from `labshared.toy`):
    DIGIT_NAMES, COLOURS, COLOUR_NAMES, BACKGROUNDS, ATTRIBUTES, SPLITS, caption(),
    captions_for(), ToyConfig, ToySet, make_split(), render(), to_pil(),
    GroupSet, spurious_split(), CLASS_FNS,
    ModificationSet, modification_triplets(), text_triplets(), modification_text(),
    mnist5k(), sklearn_digits(), split_indices().
"""

from labshared.toy.modifications import (
    ModificationSet,
    modification_text,
    modification_triplets,
    text_triplets,
)
from labshared.toy.rendering import ToyConfig, render, to_pil
from labshared.toy.sources import mnist5k, sklearn_digits, split_indices
from labshared.toy.splits import ToySet, make_split
from labshared.toy.spurious import CLASS_FNS, GroupSet, spurious_split
from labshared.toy.vocabulary import (
    ATTRIBUTES,
    BACKGROUNDS,
    COLOUR_NAMES,
    COLOURS,
    DIGIT_NAMES,
    SPLITS,
    caption,
    captions_for,
)

__all__ = [
    "ATTRIBUTES",
    "BACKGROUNDS",
    "CLASS_FNS",
    "COLOURS",
    "COLOUR_NAMES",
    "DIGIT_NAMES",
    "SPLITS",
    "GroupSet",
    "ModificationSet",
    "ToyConfig",
    "ToySet",
    "caption",
    "captions_for",
    "make_split",
    "mnist5k",
    "modification_text",
    "modification_triplets",
    "render",
    "sklearn_digits",
    "split_indices",
    "spurious_split",
    "text_triplets",
    "to_pil",
]
