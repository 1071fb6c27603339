"""Dataset presets for the word lists: classes, spurious values, anchors, LLM descriptions.

The anchor prompts are verbatim from the official lists (`TLDR:datasets/text_template.py`):
`waterbirds_template` (L692-694), `celeba_template` (L493-494) and `spuco_animal_template`
(L169-170; its spurious anchors have no trailing period and say "a indoor place", as
released). The descriptions are ours: the paper's generation prompt was not released, so
each description says in plain words what the official list for that key contains.

The toy preset names what the toy world (`labshared.toy.spurious_split`) shows: class
"small digit" (0-4) vs "large digit" (5-9), spurious background grass vs brick. Its
anchors use only words of the captions the tiny CLIP is fitted on (`labshared.tinyclip`:
"a photo of a seven.", "a small digit", "a photo of grass."), so the stage-1 filter
compares embeddings the model has learnt; the README reports what they do.
"""

from __future__ import annotations

from dataclasses import dataclass

from labshared.config import unknown_name
from tldr_cli.wordlists import DEFAULT_WORD_TEMPLATE


@dataclass(frozen=True)
class ListSpec:
    """One word list: its name, its stage-1 anchor and what the LLM is asked for.

    Attributes:
        name: list name, also the class / spurious value name in the word-list file.
        anchor: the anchor prompt (verbatim from the official code for real datasets).
        description: plural noun phrase put into the prompt ("species of landbirds ...").
        data_name: the dataset loader's name for the same class / value when it differs
            (`labshared.data.group_shift`: CelebA "non-blond" for "dark hair"); `tldr
            retrain` and `tldr filter` match lists to labels by these names.
    """

    name: str
    anchor: str
    description: str
    data_name: str | None = None


@dataclass(frozen=True)
class DatasetPreset:
    """Everything `tldr generate` needs to know about a dataset.

    Attributes:
        name: preset name (`--preset`).
        classes: one ListSpec per class, in label order.
        spurious: one ListSpec per spurious value, in attribute order.
        pairs: None (all class x spurious pairs) or class name -> allowed spurious values.
        word_template: the neutral prompt a word is put in by the filter.
    """

    name: str
    classes: tuple[ListSpec, ...]
    spurious: tuple[ListSpec, ...]
    pairs: tuple[tuple[str, tuple[str, ...]], ...] | None = None
    word_template: str = DEFAULT_WORD_TEMPLATE

    @property
    def lists(self) -> tuple[tuple[str, ListSpec], ...]:
        """(kind, spec) for every list, classes first; kind is "classes" or "spurious"."""
        return tuple(("classes", s) for s in self.classes) + tuple(
            ("spurious", s) for s in self.spurious
        )

    def pairs_dict(self) -> dict[str, list[str]] | None:
        return None if self.pairs is None else {c: list(v) for c, v in self.pairs}

    def spec(self, kind: str, name: str) -> ListSpec:
        for k, s in self.lists:
            if k == kind and s.name == name:
                return s
        raise KeyError(f"{kind}.{name}")


_BIRD_NOTE = "common English names of real species"

WATERBIRDS = DatasetPreset(
    name="waterbirds",
    classes=(
        ListSpec(
            "landbird",
            "a photo of a landbird.",
            f"landbird species (birds that live mainly on land: songbirds, woodpeckers, "
            f"raptors, ...), {_BIRD_NOTE}",
        ),
        ListSpec(
            "waterbird",
            "a photo of a waterbird.",
            f"waterbird species (birds that live on or near water: ducks, gulls, "
            f"herons, ...), {_BIRD_NOTE}",
        ),
    ),
    spurious=(
        ListSpec(
            "land",
            "a photo of a landplace.",
            "land places and landscapes without open water (forests, groves, fields, "
            "deserts, ...), short names",
        ),
        ListSpec(
            "water",
            "a photo of a waterplace.",
            "water places and landscapes dominated by water (oceans, lakes, marshes, "
            "rivers, ...), short names",
        ),
    ),
)

CELEBA = DatasetPreset(
    name="celeba",
    classes=(
        ListSpec(
            "dark hair",
            "a photo of a dark hair.",
            "phrases naming a dark (not blond) hair colour or shade, each of the form "
            "'<colour> hair' (e.g. 'Chestnut hair')",
            data_name="non-blond",
        ),
        ListSpec(
            "blond hair",
            "a photo of a blond hair.",
            "phrases naming a blond hair colour or shade, each of the form "
            "'<colour> hair' (e.g. 'Platinum hair')",
            data_name="blond",
        ),
    ),
    spurious=(
        ListSpec(
            "woman",
            "a photo of a woman.",
            "nouns that name a female person (roles, titles, relations, ...), one or two "
            "words each (e.g. 'Duchess')",
            data_name="female",
        ),
        ListSpec(
            "man",
            "a photo of a man.",
            "nouns that name a male person (roles, titles, relations, ...), one or two "
            "words each (e.g. 'Duke')",
            data_name="male",
        ),
    ),
)

SPUCO_ANIMALS = DatasetPreset(
    name="spuco-animals",
    classes=(
        WATERBIRDS.classes[0],
        WATERBIRDS.classes[1],
        ListSpec(
            "small dog",
            "a photo of a small dog.",
            "small dog breeds (e.g. 'Shih Tzu'), their common English names",
        ),
        ListSpec(
            "large dog",
            "a photo of a large dog.",
            "large dog breeds (e.g. 'Great Dane'), their common English names",
            data_name="big dog",
        ),
    ),
    spurious=(
        ListSpec("land", "a photo of a landplace", WATERBIRDS.spurious[0].description),
        ListSpec("water", "a photo of a waterplace", WATERBIRDS.spurious[1].description),
        ListSpec(
            "indoor",
            "a photo of a indoor place",
            "indoor places (rooms, shops, halls, ...), short names (e.g. 'Laundromat')",
        ),
        ListSpec(
            "outdoor",
            "a photo of a outdoor place",
            "outdoor places (parks, streets, yards, ...), short names",
        ),
    ),
    # Birds pair only with land/water places, dogs only with indoor/outdoor places
    # (TLDR:datasets/generate_text.py:L264-282).
    pairs=(
        ("landbird", ("land", "water")),
        ("waterbird", ("land", "water")),
        ("small dog", ("indoor", "outdoor")),
        ("large dog", ("indoor", "outdoor")),
    ),
)

TOY = DatasetPreset(
    name="toy",
    classes=(
        ListSpec(
            "small digit",
            "a photo of a small digit.",
            "ways to name a handwritten digit from zero to four (e.g. 'two', 'digit 3')",
        ),
        ListSpec(
            "large digit",
            "a photo of a large digit.",
            "ways to name a handwritten digit from five to nine (e.g. 'seven', 'digit 8')",
        ),
    ),
    spurious=(
        ListSpec(
            "grass",
            "a photo of grass.",
            "things and textures seen in grass and on lawns (e.g. 'lawn', 'green blades')",
        ),
        ListSpec(
            "brick",
            "a photo of brick.",
            "things and textures seen in brick walls (e.g. 'brick wall', 'red bricks')",
        ),
    ),
)

DATASET_PRESETS: dict[str, DatasetPreset] = {
    p.name: p for p in (WATERBIRDS, CELEBA, SPUCO_ANIMALS, TOY)
}


def get_preset(name: str) -> DatasetPreset:
    """The word-list preset called `name` (case, `_` for `-` and spaces forgiven).

    Raises:
        ConfigError: unknown preset name, listing the known ones and the closest.
    """
    key = name.strip().lower().replace("_", "-")
    if key not in DATASET_PRESETS:
        raise unknown_name("--preset", name, DATASET_PRESETS)
    return DATASET_PRESETS[key]
