"""Word lists matched to the dataset's labels BY NAME.

A word-list file keys its lists by name ("landbird", "dark hair", ...). Which label a
list trains is decided here from those names, never from the order of the JSON object:
a hand-edited or re-generated file whose lists come in another order trains the same
labels, and a list whose name is no class of the dataset is refused before any model is
built (one line naming the file, the list and the dataset's names).

A list name matches the dataset's class (or spurious value) of index i when, compared
case-insensitively with '_' and '-' read as spaces, it

- equals the loader's name (`GroupShiftSplit.class_names` / `spurious_names`), or
- is a preset list whose `data_name` is that name (`presets.ListSpec`: CelebA's
  "dark hair" / "blond hair" / "woman" / "man" are the loader's "non-blond" / "blond" /
  "female" / "male"; SpuCoAnimals' "large dog" is "big dog"), or
- is the index itself, "0", "1", ... (the official `text_template.py` keys).

Deviation: the official code indexes its lists by position ('0', '1', ...) and
trusts the order.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Sequence
from pathlib import Path

from labshared.errors import ConfigError
from tldr_cli.config import TLDRConfig, needs_projector
from tldr_cli.features import load_splits
from tldr_cli.presets import DATASET_PRESETS
from tldr_cli.wordlists import WordLists, load_wordlists


def _norm(name: str) -> str:
    return " ".join(name.replace("_", " ").replace("-", " ").casefold().split())


def _aliases() -> dict[str, str]:
    """Normalised preset list name -> normalised loader name, where they differ."""
    return {
        _norm(spec.name): _norm(spec.data_name)
        for preset in DATASET_PRESETS.values()
        for _, spec in preset.lists
        if spec.data_name
    }


def _names_one(list_name: str, data_name: str, index: int, aliases: dict[str, str]) -> bool:
    key = _norm(list_name)
    return key == _norm(data_name) or aliases.get(key) == _norm(data_name) or key == str(index)


def match_names(
    kind: str,
    list_names: Sequence[str],
    data_names: Sequence[str],
    source: str | Path,
    dataset: str,
) -> list[str]:
    """The list names in the dataset's label order.

    Args:
        kind: "class" or "spurious" (for messages).
        list_names: the word-list file's names, in file order.
        data_names: the dataset's names, index i = label / attribute value i.

    Raises:
        ConfigError: a count mismatch, a list naming no label, or two lists naming one.
    """
    what = "classes" if kind == "class" else "spurious values"
    known = ", ".join(f"{i} {n!r}" for i, n in enumerate(data_names))
    aliases = _aliases()
    if len(list_names) != len(data_names):
        raise ConfigError(
            f"--words {source}: {len(list_names)} {kind} lists {list(list_names)}; the "
            f"{dataset} dataset has {len(data_names)} {what} ({known})"
        )
    order: list[str] = []
    for name in list_names:
        hits = [i for i, d in enumerate(data_names) if _names_one(name, d, i, aliases)]
        if not hits:
            raise ConfigError(
                f"--words {source}: {kind} list {name!r} names none of the {dataset} "
                f"dataset's {what} ({known}); rename the list to one of them"
            )
    for i, d in enumerate(data_names):
        hits = [n for n in list_names if _names_one(n, d, i, aliases)]
        if len(hits) > 1:
            raise ConfigError(
                f"--words {source}: {kind} lists {hits} all name {kind} {i} {d!r} of the "
                f"{dataset} dataset; keep one list per {kind}"
            )
        if not hits:  # possible when one list name matches two labels (a name and an index)
            raise ConfigError(
                f"--words {source}: no {kind} list names {kind} {i} {d!r} of the {dataset} "
                f"dataset (lists: {list(list_names)})"
            )
        order.append(hits[0])
    return order


def align_wordlists(
    wl: WordLists,
    class_names: Sequence[str],
    spurious_names: Sequence[str],
    source: str | Path,
    dataset: str,
) -> WordLists:
    """`wl` with its classes and spurious values in the dataset's label order (matched by
    name, module docstring), so position i of `wl.classes` is label i from here on.

    Raises:
        ConfigError: see `match_names`.
    """
    classes = match_names("class", list(wl.classes), class_names, source, dataset)
    spurious = match_names("spurious", list(wl.spurious), spurious_names, source, dataset)
    return dataclasses.replace(
        wl,
        classes={n: wl.classes[n] for n in classes},
        spurious={n: wl.spurious[n] for n in spurious},
        class_anchors={n: wl.class_anchors[n] for n in classes},
        spurious_anchors={n: wl.spurious_anchors[n] for n in spurious},
        pairs=None if wl.pairs is None else {n: list(wl.pairs[n]) for n in classes},
    )


def check_words_match_dataset(cfg: TLDRConfig, command: str) -> None:
    """Before a run folder is made: the `--words` lists name the dataset's classes and
    spurious values (`align_wordlists`). Reads the training split's labels (metadata for
    the real datasets; the toy split is rendered, a second or so).

    Raises:
        ConfigError: a list that matches no class or spurious value, named with the file.
    """
    if not needs_projector(cfg, command) or cfg.words is None:
        return
    train = load_splits(cfg, ("train",))["train"]
    align_wordlists(
        load_wordlists(cfg.words), train.class_names, train.spurious_names, cfg.words, cfg.dataset
    )
