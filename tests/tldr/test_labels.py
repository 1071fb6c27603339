"""Word lists are matched to the dataset's labels by name, never by position."""

import pytest

from labshared.errors import ConfigError
from tldr_cli.labels import align_wordlists, match_names
from tldr_cli.textdata import build_pairs
from tldr_cli.wordlists import validate_wordlists


def _lists(classes: dict, spurious: dict, pairs=None):
    return validate_wordlists(
        {
            "dataset": "x",
            "classes": classes,
            "spurious": spurious,
            "anchors": {
                "classes": {k: f"a photo of a {k}." for k in classes},
                "spurious": {k: f"a photo of {k}." for k in spurious},
            },
            "pairs": pairs,
        }
    )


def test_reordered_lists_give_the_same_pairs_and_labels():
    ordered = _lists(
        {"landbird": ["sparrow", "wren"], "waterbird": ["gull"]},
        {"land": ["forest"], "water": ["lake", "sea"]},
    )
    reordered = _lists(
        {"waterbird": ["gull"], "landbird": ["sparrow", "wren"]},
        {"water": ["lake", "sea"], "land": ["forest"]},
    )
    names = (("landbird", "waterbird"), ("land", "water"))
    a = build_pairs(align_wordlists(ordered, *names, "a.json", "waterbirds"))
    b = build_pairs(align_wordlists(reordered, *names, "b.json", "waterbirds"))
    assert a.words == b.words
    for field in ("t_idx", "s_idx", "label", "spurious"):
        assert getattr(a, field).tolist() == getattr(b, field).tolist()
    # "gull" is a waterbird (label 1) whatever its position in the file; "forest" is land (0)
    gull, forest = a.words.index("gull"), a.words.index("forest")
    assert set(a.label[a.t_idx == gull].tolist()) == {1}
    assert set(a.spurious[a.s_idx == forest].tolist()) == {0}
    # without the matching, position would decide: the reordered file read in file order
    # gives gull label 0, which is what the matching prevents
    raw = build_pairs(reordered)
    assert set(raw.label[raw.t_idx == raw.words.index("gull")].tolist()) == {0}


def test_preset_names_aliases_and_official_indices_match_the_loader_names():
    # CelebA: the preset's lists are named "dark hair"/"blond hair", "woman"/"man"; the
    # loader says "non-blond"/"blond", "female"/"male"
    celeba = _lists(
        {"Blond hair": ["platinum hair"], "dark_hair": ["black hair"]},
        {"man": ["duke"], "woman": ["duchess"]},
    )
    wl = align_wordlists(celeba, ("non-blond", "blond"), ("female", "male"), "c.json", "celeba")
    assert list(wl.classes) == ["dark_hair", "Blond hair"]
    assert list(wl.spurious) == ["woman", "man"]
    assert list(wl.class_anchors) == ["dark_hair", "Blond hair"]
    # SpuCoAnimals' "large dog" is the loader's "big dog"; pairs follow the classes
    assert match_names(
        "class",
        ["large dog", "small dog", "waterbird", "landbird"],
        ("landbird", "waterbird", "small dog", "big dog"),
        "s.json",
        "spuco-animals",
    ) == ["landbird", "waterbird", "small dog", "large dog"]
    # the official text_template.py keys are label indices
    assert match_names("class", ["1", "0"], ("landbird", "waterbird"), "o.json", "wb") == [
        "0",
        "1",
    ]


def test_mismatches_name_the_file_the_list_and_the_dataset_names():
    names = ("landbird", "waterbird")
    with pytest.raises(ConfigError) as err:
        match_names("class", ["landbird", "seabird"], names, "w.json", "waterbirds")
    msg = str(err.value)
    assert "w.json" in msg and "'seabird'" in msg and "0 'landbird', 1 'waterbird'" in msg
    assert "\n" not in msg
    with pytest.raises(ConfigError, match="3 class lists"):
        match_names("class", ["landbird", "waterbird", "duck"], names, "w.json", "waterbirds")
    with pytest.raises(ConfigError, match=r"\['landbird', '0'\] all name class 0"):
        match_names("class", ["landbird", "0"], names, "w.json", "waterbirds")
    with pytest.raises(ConfigError, match="spurious list 'beach'"):
        align_wordlists(
            _lists({"landbird": ["wren"], "waterbird": ["gull"]}, {"land": ["x"], "beach": ["y"]}),
            names,
            ("land", "water"),
            "w.json",
            "waterbirds",
        )
