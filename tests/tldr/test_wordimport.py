"""`tldr generate --from-file`: every accepted layout, merging, and the errors."""

import json

import pytest

from labshared.errors import ConfigError, DataLayoutError
from tldr_cli.config import GenerateConfig
from tldr_cli.generate import run
from tldr_cli.presets import get_preset
from tldr_cli.wordimport import import_lists
from tldr_cli.wordlists import load_wordlists

WB = get_preset("waterbirds")


def test_official_layout_with_index_keys_is_deduplicated(tmp_path):
    # The official dicts are keyed '0', '1' (TLDR:datasets/text_template.py); its land list
    # holds both "Pecan orchard" and "Pecan Orchard".
    path = tmp_path / "official.json"
    path.write_text(
        json.dumps(
            {
                "target": {"0": ["Robin", "Wren"], "1": ["Mallard"]},
                "spurious": {
                    "0": ["Pecan orchard", "Bamboo forest", "Pecan Orchard"],
                    "1": ["Lake"],
                },
            }
        )
    )
    got = import_lists([str(path)], WB)
    assert got.words[("spurious", "land")] == ["Pecan orchard", "Bamboo forest"]
    assert got.words[("classes", "landbird")] == ["Robin", "Wren"]
    assert got.sources[0]["lists"][2] == {"list": "spurious.land", "words": 2}
    assert len(got.sources[0]["sha256"]) == 64


def test_flat_mapping_text_files_and_merging(tmp_path):
    (tmp_path / "flat.json").write_text(
        json.dumps({"landbird": ["Robin"], "spurious.water": ["Lake"]})
    )
    (tmp_path / "more_birds.txt").write_text("# comment\nrobin\n  Blue   Jay \n")
    (tmp_path / "waterbird.txt").write_text("Mallard\n")
    got = import_lists(
        [
            str(tmp_path / "flat.json"),
            f"landbird={tmp_path / 'more_birds.txt'}",
            str(tmp_path / "waterbird.txt"),
        ],
        WB,
    )
    assert got.words[("classes", "landbird")] == ["Robin", "Blue Jay"]  # merged, de-duplicated
    assert got.words[("classes", "waterbird")] == ["Mallard"]
    assert got.words[("spurious", "water")] == ["Lake"]


def test_full_file_needs_no_preset_and_round_trips(tmp_path):
    first = GenerateConfig(preset="toy", from_file=("builtin:toy",))
    wl, _ = run(first, tmp_path / "a")
    again, _ = run(
        GenerateConfig(from_file=(str(tmp_path / "a" / "wordlists.json"),)), tmp_path / "b"
    )
    assert again.classes == wl.classes and again.spurious == wl.spurious
    assert again.class_anchors == wl.class_anchors and again.dataset == "toy"
    assert load_wordlists(tmp_path / "b" / "wordlists.json").provenance["source"] == "file"


@pytest.mark.parametrize(
    ("content", "spec", "error", "match"),
    [
        ('["a"]', "x.json", ConfigError, "needs LIST=PATH"),
        ('{"target": {"7": ["a"]}}', "x.json", DataLayoutError, "index beyond"),
        ('{"landbird": "Robin"}', "x.json", DataLayoutError, "'landbird' must be a list"),
        ('{"landbird": [1, 2]}', "x.json", DataLayoutError, "non-strings"),
        ("{oops", "x.json", DataLayoutError, "not valid JSON"),
        ("Robin\n", "sparrow.txt", ConfigError, "no list 'sparrow'"),
    ],
)
def test_bad_sources_fail_with_a_clear_message(tmp_path, content, spec, error, match):
    (tmp_path / spec).write_text(content)
    with pytest.raises(error, match=match):
        import_lists([str(tmp_path / spec)], WB)


def test_missing_file_and_unknown_builtin(tmp_path):
    with pytest.raises(ConfigError, match="not found"):
        import_lists([str(tmp_path / "none.txt")], WB)
    with pytest.raises(ConfigError, match="builtin:nope is unknown"):
        import_lists(["builtin:nope"], WB)
