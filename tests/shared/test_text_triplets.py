"""Text-triplet loading: official JSON list, JSONL, columnar JSON, save_to_disk folders,
column maps, and the counting of unusable rows."""

import json

import pytest

from labshared.data.text_triplets import (
    TextTriplet,
    load_text_triplets,
    parse_columns,
    triplets_from_rows,
)
from labshared.errors import ConfigError, DataLayoutError

ROWS = [
    {"reference_caption": "a dog on grass", "conditioning_caption": "make it a cat",
     "target_caption": "a cat on grass"},
    {"reference_caption": "a red car", "conditioning_caption": None,
     "target_caption": "a blue car"},
    {"reference_caption": "  ", "conditioning_caption": "x", "target_caption": "y"},
    {"reference_caption": "a tree", "conditioning_caption": "add snow"},
    {"reference_caption": "a boat", "conditioning_caption": "at night", "target_caption": 3},
    {"reference_caption": "a house", "conditioning_caption": "in winter",
     "target_caption": "a snowy house"},
]  # fmt: skip


def test_official_json_list(tmp_path):
    path = tmp_path / "LLM_triplets.json"
    path.write_text(json.dumps(ROWS))
    got = load_text_triplets(path)
    assert got.triplets == [
        TextTriplet("a dog on grass", "make it a cat", "a cat on grass"),
        TextTriplet("a house", "in winter", "a snowy house"),
    ]
    assert got.total_rows == 6 and [s.index for s in got.skipped] == [1, 2, 3, 4]
    problems = {s.index: s.problems for s in got.skipped}
    assert problems[1] == ["'conditioning_caption' missing"]
    assert problems[2] == ["'reference_caption' empty"]
    assert problems[3] == ["'target_caption' missing"]
    assert problems[4] == ["'target_caption' is int, not a string"]
    summary = got.skipped_summary()
    assert "skipped 4 of 6 rows" in summary and "row 3: 'target_caption' missing" in summary
    assert got.report()["used"] == 2


def test_jsonl_and_columnar_json_agree(tmp_path):
    jl = tmp_path / "t.jsonl"
    jl.write_text("\n".join(json.dumps(r) for r in ROWS) + "\n\n")
    cols = tmp_path / "cols.json"
    keys = ["reference_caption", "conditioning_caption", "target_caption"]
    cols.write_text(json.dumps({k: [r.get(k) for r in ROWS] for k in keys}))
    a, b = load_text_triplets(jl), load_text_triplets(cols)
    assert a.triplets == b.triplets and len(a) == 2
    assert len(a.skipped) == len(b.skipped) == 4


def test_limit_applies_before_validation(tmp_path):
    path = tmp_path / "t.json"
    path.write_text(json.dumps(ROWS))
    got = load_text_triplets(path, limit=2)
    assert got.total_rows == 2 and len(got) == 1


def test_column_map_and_saved_dataset(tmp_path):
    datasets = pytest.importorskip("datasets")
    ds = datasets.Dataset.from_dict(
        {"source_caption": ["a dog", "a cup"], "edit": ["make it red", ""],
         "target_caption": ["a red dog", "a red cup"]}
    )  # fmt: skip
    folder = tmp_path / "synth"
    ds.save_to_disk(str(folder))
    with pytest.raises(DataLayoutError, match="lacks"):
        load_text_triplets(folder)
    got = load_text_triplets(folder, columns="ref=source_caption,cond=edit,target=target_caption")
    assert got.triplets == [TextTriplet("a dog", "make it red", "a red dog")]
    assert got.skipped[0].index == 1 and got.skipped[0].problems == ["'edit' empty"]
    dd = datasets.DatasetDict({"train": ds})
    dd.save_to_disk(str(tmp_path / "dd"))
    assert (
        len(
            load_text_triplets(
                tmp_path / "dd", columns={"ref": "source_caption", "cond": "edit"}, split="train"
            )
        )
        == 1
    )
    with pytest.raises(DataLayoutError, match="splits"):
        load_text_triplets(tmp_path / "dd", split="test")


def test_errors_name_the_file(tmp_path):
    bad = tmp_path / "bad.json"
    bad.write_text("{not json")
    with pytest.raises(DataLayoutError, match="bad.json: not valid JSON"):
        load_text_triplets(bad)
    jl = tmp_path / "bad.jsonl"
    jl.write_text('{"a": 1}\n{oops\n')
    with pytest.raises(DataLayoutError, match="line 2"):
        load_text_triplets(jl)
    with pytest.raises(DataLayoutError, match="file not found"):
        load_text_triplets(tmp_path / "missing.json")
    empty = tmp_path / "empty.json"
    empty.write_text(json.dumps([{"reference_caption": ""}]))
    with pytest.raises(ConfigError, match="no usable triplet"):
        load_text_triplets(empty)
    with pytest.raises(ConfigError, match="neither"):
        load_text_triplets("not-a-thing")


def test_parse_columns():
    assert parse_columns(None)["reference"] == "reference_caption"
    assert parse_columns("mod=instruction")["conditioning"] == "instruction"
    with pytest.raises(ConfigError, match="role=column"):
        parse_columns("foo=bar")


def test_rows_that_are_not_objects_are_counted():
    good = {"reference_caption": "a", "conditioning_caption": "b", "target_caption": "c"}
    got = triplets_from_rows([["a", "b", "c"], good], "mem")
    assert len(got) == 1 and "not an object" in got.skipped[0].problems[0]


def test_toy_source():
    got = load_text_triplets("toy:50")
    assert len(got) == 50 and got.source == "toy:50" and not got.skipped
    t = got.triplets[0]
    assert t.reference != t.target and t.conditioning
    with pytest.raises(ConfigError, match="toy:N"):
        load_text_triplets("toy:x")


def test_load_captions_forms(tmp_path):
    from labshared.data.text_triplets import load_captions

    txt = tmp_path / "c.txt"
    txt.write_text("a red car\n\n  a dog  \n")
    got = load_captions(txt)
    assert got.captions == ["a red car", "a dog"] and got.skipped == [1] and got.total_rows == 3
    js = tmp_path / "c.json"
    js.write_text(json.dumps([{"text": "one"}, {"text": None}, {"caption": "x"}, {"text": "two"}]))
    got = load_captions(js)
    assert got.captions == ["one", "two"] and got.skipped == [1, 2]
    assert "skipped 2 of 4" in got.skipped_summary()
    jl = tmp_path / "c.jsonl"
    jl.write_text('{"caption": "p"}\n{"caption": "q"}\n')
    assert load_captions(jl, column="caption").captions == ["p", "q"]
    toy_caps = load_captions("toy:5")
    assert len(toy_caps) == 10 and toy_caps.captions[0].startswith("a ")
    with pytest.raises(DataLayoutError, match="not found"):
        load_captions(tmp_path / "nope.txt")
