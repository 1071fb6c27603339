"""The word-list file (schema, validation, atomic save), the presets and the shipped toy lists."""

import json

import pytest

from labshared.errors import ConfigError, DataLayoutError
from tldr_cli.presets import DATASET_PRESETS, get_preset
from tldr_cli.wordimport import builtin_path
from tldr_cli.wordlists import (
    FORMAT,
    WordLists,
    dedupe_words,
    load_wordlists,
    save_wordlists,
    validate_wordlists,
)


def _lists(**over) -> dict:
    obj = {
        "format": FORMAT,
        "dataset": "waterbirds",
        "classes": {"landbird": ["Robin", "Blue Jay"], "waterbird": ["Mallard", "Robin"]},
        "spurious": {"land": ["Bamboo forest"], "water": ["Lake"]},
        "anchors": {
            "classes": {
                "landbird": "a photo of a landbird.",
                "waterbird": "a photo of a waterbird.",
            },
            "spurious": {"land": "a photo of a landplace.", "water": "a photo of a waterplace."},
        },
        "word_template": "a photo of a {}.",
        "pairs": None,
        "provenance": {"model": "m", "counts": {"landbird": 2}},
    }
    obj.update(over)
    return obj


def test_dedupe_is_case_insensitive_keeps_first_spelling_and_order():
    words = ["Blue Jay", "blue  jay", " Robin ", "BLUE JAY", "", "robin", "Wren"]
    assert dedupe_words(words) == ["Blue Jay", "Robin", "Wren"]
    assert dedupe_words(["Wren", "Finch", "finch"], seen=["WREN"]) == ["Finch"]


def test_save_load_round_trip_keeps_order_and_all_fields(tmp_path):
    wl = validate_wordlists(_lists(pairs={"landbird": ["land"], "waterbird": ["land", "water"]}))
    path = save_wordlists(tmp_path / "w.json", wl)
    back = load_wordlists(path)
    assert back == wl
    assert back.class_names == ["landbird", "waterbird"]
    assert back.allowed_spurious("landbird") == ["land"]
    # Overlap across lists ("Robin" in both classes) is allowed: the filter removes it.
    assert back.classes["waterbird"] == ["Mallard", "Robin"]
    assert json.loads(path.read_text())["format"] == FORMAT
    assert back.counts() == {
        "classes": {"landbird": 2, "waterbird": 2},
        "spurious": {"land": 1, "water": 1},
    }


@pytest.mark.parametrize(
    ("change", "field"),
    [
        ({"classes": {}}, "'classes'"),
        ({"classes": {"landbird": "Robin"}}, "'classes.landbird'"),
        (
            {"classes": {"landbird": ["Robin", "ROBIN "], "waterbird": ["x"]}},
            "'classes.landbird[1]'",
        ),
        ({"classes": {"landbird": ["ok", 3], "waterbird": ["x"]}}, "'classes.landbird[1]'"),
        ({"spurious": {"land": ["  "], "water": ["Lake"]}}, "'spurious.land[0]'"),
        ({"anchors": {"classes": {"landbird": "a"}, "spurious": {}}}, "'anchors.classes'"),
        (
            {
                "anchors": {
                    "classes": {"landbird": "a", "waterbird": ""},
                    "spurious": {"land": "a", "water": "b"},
                }
            },
            "'anchors.classes.waterbird'",
        ),
        ({"word_template": "a photo of a word."}, "'word_template'"),
        ({"pairs": {"landbird": ["sea"], "waterbird": ["land"]}}, "'pairs.landbird'"),
        ({"pairs": {"landbird": ["land"]}}, "'pairs'"),
        ({"dataset": ""}, "'dataset'"),
        ({"format": "tldr-wordlists/9"}, "'format'"),
        ({"provenance": []}, "'provenance'"),
    ],
)
def test_validation_names_the_offending_field(tmp_path, change, field):
    path = tmp_path / "bad.json"
    path.write_text(json.dumps(_lists(**change)))
    with pytest.raises(DataLayoutError) as err:
        load_wordlists(path)
    assert field in str(err.value)
    assert str(path) in str(err.value)


def test_load_reports_missing_and_non_json_files(tmp_path):
    with pytest.raises(DataLayoutError, match="not found"):
        load_wordlists(tmp_path / "nope.json")
    (tmp_path / "x.json").write_text("{not json")
    with pytest.raises(DataLayoutError, match="not valid JSON"):
        load_wordlists(tmp_path / "x.json")


def test_save_refuses_credentials_and_leaves_previous_file_intact(tmp_path):
    path = tmp_path / "w.json"
    save_wordlists(path, _lists())
    before = path.read_text()
    with pytest.raises(DataLayoutError, match=r"provenance\.client\.api_key"):
        save_wordlists(path, _lists(provenance={"client": {"api_key": "sk-1"}}))
    with pytest.raises(DataLayoutError):
        save_wordlists(path, _lists(classes={"landbird": []}))  # wrong anchors now
    assert path.read_text() == before
    assert [p.name for p in tmp_path.iterdir()] == ["w.json"]  # no temporary left behind


@pytest.mark.parametrize("name", sorted(DATASET_PRESETS))
def test_every_preset_builds_a_valid_file(tmp_path, name):
    preset = DATASET_PRESETS[name]
    wl = WordLists(
        dataset=preset.name,
        classes={s.name: [f"{s.name} word"] for s in preset.classes},
        spurious={s.name: [f"{s.name} place"] for s in preset.spurious},
        class_anchors={s.name: s.anchor for s in preset.classes},
        spurious_anchors={s.name: s.anchor for s in preset.spurious},
        word_template=preset.word_template,
        pairs=preset.pairs_dict(),
    )
    assert load_wordlists(save_wordlists(tmp_path / "w.json", wl)) == wl
    assert all(s.description for _, s in preset.lists)


def test_presets_carry_the_official_anchors_verbatim():
    wb, ca, sp = get_preset("waterbirds"), get_preset("celeba"), get_preset("spuco_animals")
    assert [s.anchor for s in wb.classes] == ["a photo of a landbird.", "a photo of a waterbird."]
    assert [s.anchor for s in wb.spurious] == [
        "a photo of a landplace.",
        "a photo of a waterplace.",
    ]
    assert [s.anchor for s in ca.classes] == ["a photo of a dark hair.", "a photo of a blond hair."]
    assert [s.anchor for s in ca.spurious] == ["a photo of a woman.", "a photo of a man."]
    assert [s.anchor for s in sp.classes][2:] == [
        "a photo of a small dog.",
        "a photo of a large dog.",
    ]
    # No trailing period and "a indoor", as released (TLDR:datasets/text_template.py:L170).
    assert [s.anchor for s in sp.spurious] == [
        "a photo of a landplace",
        "a photo of a waterplace",
        "a photo of a indoor place",
        "a photo of a outdoor place",
    ]
    assert sp.pairs_dict()["small dog"] == ["indoor", "outdoor"]
    assert wb.word_template == "a photo of a {}."


def test_unknown_preset_suggests_the_closest():
    with pytest.raises(ConfigError, match="did you mean 'waterbirds'"):
        get_preset("waterbird")


def test_shipped_toy_lists_match_the_toy_world_and_carry_noise():
    import inspect

    from labshared import toy

    wl = load_wordlists(builtin_path("toy"))
    preset = get_preset("toy")
    # The toy world's defaults, read without rendering images.
    params = inspect.signature(toy.spurious_split).parameters
    digit_label, label_names = toy.CLASS_FNS[params["class_fn"].default]
    label_digits = [[toy.DIGIT_NAMES[d] for d in range(10) if digit_label[d] == k] for k in (0, 1)]
    assert wl.class_names == list(label_names) == [s.name for s in preset.classes]
    spurious_names = list(params["spurious"].default)
    assert wl.spurious_names == spurious_names == [s.name for s in preset.spurious]
    assert wl.class_anchors == {s.name: s.anchor for s in preset.classes}
    assert wl.spurious_anchors == {s.name: s.anchor for s in preset.spurious}
    small, large = (set(map(str.lower, v)) for v in wl.classes.values())
    # every digit name of its class is present ...
    assert set(label_digits[0]) <= small and set(label_digits[1]) <= large
    # ... and some deliberately wrong words, for the filter to remove
    assert small & set(label_digits[1]) and large & set(label_digits[0])
    assert "brick" in {w.lower() for w in wl.spurious["grass"]}
