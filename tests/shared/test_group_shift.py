"""Group-shift loaders on fixture files written in the official layouts."""

import os
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image

from labshared.data.group_shift import (
    ImageDataset,
    build_group_shift,
    load_celeba,
    load_hf_group_shift,
    load_spuco_animals,
    load_toy,
    load_waterbirds,
)
from labshared.data.group_shift.spuco import _SPUCO_FOLDERS
from labshared.errors import ConfigError, DataLayoutError


def _img(path, colour=(200, 10, 10)):
    path.parent.mkdir(parents=True, exist_ok=True)
    Image.new("RGB", (8, 6), colour).save(path)


# --------------------------------------------------------------------------- Waterbirds
WB_ROWS = [  # img_id, file, y, split, place
    (1, "001.Albatross/a1.jpg", 1, 0, 1),
    (2, "002.Sparrow/s1.jpg", 0, 0, 0),
    (3, "002.Sparrow/s2.jpg", 0, 0, 1),
    (4, "001.Albatross/a2.jpg", 1, 1, 0),
    (5, "002.Sparrow/s3.jpg", 0, 2, 1),
]


def write_waterbirds(root, rows=WB_ROWS, header="img_id,img_filename,y,split,place,place_filename"):
    lines = [header] + [f"{i},{f},{y},{s},{p},/b/bamboo/x.jpg" for i, f, y, s, p in rows]
    root.mkdir(parents=True, exist_ok=True)
    (root / "metadata.csv").write_text("\n".join(lines) + "\n")
    for _, f, *_ in rows:
        _img(root / f)


def test_waterbirds_splits_labels_groups(tmp_path):
    write_waterbirds(tmp_path)
    train = load_waterbirds(tmp_path, "train")
    assert len(train) == 3
    np.testing.assert_array_equal(train.label, [1, 0, 0])
    np.testing.assert_array_equal(train.spurious, [1, 0, 1])
    np.testing.assert_array_equal(train.group, [3, 0, 1])
    assert train.paths[0] == tmp_path / "001.Albatross/a1.jpg"
    assert train.image(0).size == (8, 6) and train.image(0).mode == "RGB"
    assert (
        len(load_waterbirds(tmp_path, "val")) == 1 and len(load_waterbirds(tmp_path, "test")) == 1
    )
    x, i = ImageDataset(train, lambda im: torch.tensor(im.size))[2]
    assert x.tolist() == [8, 6] and i == 2


def test_waterbirds_errors_name_file_and_field(tmp_path):
    with pytest.raises(DataLayoutError, match=r"metadata.csv: file not found[\s\S]*img_filename"):
        load_waterbirds(tmp_path, "train")
    write_waterbirds(tmp_path, header="img_id,img_filename,label,split,place,place_filename")
    with pytest.raises(DataLayoutError, match="field 'y' missing"):
        load_waterbirds(tmp_path, "train")
    write_waterbirds(tmp_path, rows=[*WB_ROWS, (6, "x/y.jpg", 1, 7, 0)])
    with pytest.raises(DataLayoutError, match=r"field 'split' row 6 is 7"):
        load_waterbirds(tmp_path, "train")
    write_waterbirds(tmp_path)
    (tmp_path / "001.Albatross/a1.jpg").unlink()
    with pytest.raises(DataLayoutError, match="a1.jpg: image listed in metadata.csv not found"):
        load_waterbirds(tmp_path, "train")
    with pytest.raises(ConfigError, match="split 'dev'"):
        load_waterbirds(tmp_path, "dev")


# --------------------------------------------------------------------------- CelebA
ATTRS = ["5_o_Clock_Shadow", "Blond_Hair", "Male"]
CELEBA_ROWS = [
    ("000001.jpg", -1, 1, -1, 0),
    ("000002.jpg", 1, -1, 1, 0),
    ("000003.jpg", -1, 1, 1, 1),
    ("000004.jpg", 1, -1, -1, 2),
]


def write_celeba(root, fmt="csv", nested=False):
    root.mkdir(parents=True, exist_ok=True)
    if fmt == "csv":
        (root / "list_attr_celeba.csv").write_text(
            "image_id,"
            + ",".join(ATTRS)
            + "\n"
            + "".join(f"{f},{a},{b},{c}\n" for f, a, b, c, _ in CELEBA_ROWS)
        )
        (root / "list_eval_partition.csv").write_text(
            "image_id,partition\n" + "".join(f"{f},{p}\n" for f, *_, p in CELEBA_ROWS)
        )
    else:
        (root / "list_attr_celeba.txt").write_text(
            f"{len(CELEBA_ROWS)}\n"
            + " ".join(ATTRS)
            + "\n"
            + "".join(f"{f} {a:2d} {b:2d}  {c:2d}\n" for f, a, b, c, _ in CELEBA_ROWS)
        )
        (root / "list_eval_partition.txt").write_text(
            "".join(f"{f} {p}\n" for f, *_, p in CELEBA_ROWS)
        )
    img_dir = root / "img_align_celeba"
    if nested:
        img_dir = img_dir / "img_align_celeba"
    for f, *_ in CELEBA_ROWS:
        _img(img_dir / f)


@pytest.mark.parametrize("fmt,nested", [("csv", False), ("txt", True)])
def test_celeba_official_files(tmp_path, fmt, nested):
    write_celeba(tmp_path, fmt, nested)
    train = load_celeba(tmp_path, "train")
    np.testing.assert_array_equal(train.label, [1, 0])  # Blond_Hair -1/1 -> 0/1
    np.testing.assert_array_equal(train.spurious, [0, 1])  # Male
    assert [p.name for p in train.paths] == ["000001.jpg", "000002.jpg"]
    assert train.image(1).mode == "RGB"
    test = load_celeba(tmp_path, "test")
    np.testing.assert_array_equal(test.label, [0]) and np.testing.assert_array_equal(
        test.spurious, [0]
    )


def test_celeba_errors(tmp_path):
    with pytest.raises(DataLayoutError, match=r"list_attr_celeba.csv: attribute file not found"):
        load_celeba(tmp_path, "train")
    write_celeba(tmp_path)
    text = (tmp_path / "list_attr_celeba.csv").read_text().replace("Blond_Hair", "Blonde")
    (tmp_path / "list_attr_celeba.csv").write_text(text)
    with pytest.raises(DataLayoutError, match="list_attr_celeba.csv: field 'Blond_Hair' missing"):
        load_celeba(tmp_path, "train")
    write_celeba(tmp_path)
    (tmp_path / "list_eval_partition.csv").write_text("image_id,partition\n000001.jpg,5\n")
    with pytest.raises(
        DataLayoutError, match="list_eval_partition.csv: field 'partition' row 1 is 5"
    ):
        load_celeba(tmp_path, "train")
    (tmp_path / "list_eval_partition.csv").write_text("image_id,partition\n000009.jpg,0\n")
    with pytest.raises(DataLayoutError, match="no attribute row for 1 image"):
        load_celeba(tmp_path, "train")


def test_celeba_txt_row_length_checked(tmp_path):
    write_celeba(tmp_path, "txt")
    p = tmp_path / "list_attr_celeba.txt"
    p.write_text(p.read_text() + "000005.jpg 1 1\n")
    with pytest.raises(DataLayoutError, match="row 7 has 2 values for 3 attributes"):
        load_celeba(tmp_path, "train")


# --------------------------------------------------------------------------- SpuCoAnimals
def test_spuco_animals_folders(tmp_path):
    folders = [
        ("spuco_birds", "landbirds", "land"),
        ("spuco_birds", "landbirds", "water"),
        ("spuco_birds", "waterbirds", "land"),
        ("spuco_birds", "waterbirds", "water"),
        ("spuco_dogs", "small_dogs", "indoor"),
        ("spuco_dogs", "small_dogs", "outdoor"),
        ("spuco_dogs", "big_dogs", "indoor"),
        ("spuco_dogs", "big_dogs", "outdoor"),
    ]
    for k, (sub, cls, place) in enumerate(folders):
        for j in range(k % 2 + 1):
            _img(tmp_path / sub / "val" / cls / place / f"{j}.jpg")
    val = load_spuco_animals(tmp_path, "val")
    np.testing.assert_array_equal(val.label, [0, 0, 0, 1, 1, 1, 2, 2, 2, 3, 3, 3])
    np.testing.assert_array_equal(val.spurious, [0, 1, 1, 0, 1, 1, 2, 3, 3, 2, 3, 3])
    assert val.n_groups == 16 and len(np.unique(val.group)) == 8
    with pytest.raises(
        DataLayoutError, match=r"spuco_birds/train/landbirds/land: folder not found"
    ):
        load_spuco_animals(tmp_path, "train")


# --------------------------------------------------------------------------- Hugging Face
def test_hf_copy_from_a_local_saved_dataset(tmp_path):
    import datasets

    imgs = [Image.new("RGB", (4, 4), (i * 40, 0, 0)) for i in range(4)]
    feats = datasets.Features(
        {
            "image": datasets.Image(),
            "label": datasets.Value("int64"),
            "place": datasets.Value("int64"),
        }
    )
    dd = datasets.DatasetDict(
        {
            "train": datasets.Dataset.from_dict(
                {"image": imgs, "label": [0, 1, 1, 0], "place": [0, 1, 0, 0]}, features=feats
            ),
            "validation": datasets.Dataset.from_dict(
                {"image": imgs[:2], "label": [1, 0], "place": [1, 1]}, features=feats
            ),
        }
    )
    dd.save_to_disk(tmp_path / "wb")
    train = load_hf_group_shift(str(tmp_path / "wb"), "train")
    np.testing.assert_array_equal(train.group, [0, 3, 2, 0])
    assert train.class_names == ("landbird", "waterbird")
    assert train.image(1).getpixel((0, 0)) == (40, 0, 0)
    val = build_group_shift("hf", tmp_path / "wb", "val")
    np.testing.assert_array_equal(val.label, [1, 0])
    with pytest.raises(DataLayoutError, match="no split for 'test'"):
        load_hf_group_shift(str(tmp_path / "wb"), "test")
    with pytest.raises(DataLayoutError, match="no spurious column"):
        load_hf_group_shift(str(tmp_path / "wb"), "train", spurious_column="Male")


def test_hf_celeba_attributes_bool_and_signed(tmp_path):
    import datasets

    ds = datasets.Dataset.from_dict(
        {
            "image": [Image.new("RGB", (4, 4))] * 3,
            "Blond_Hair": [True, False, True],
            "Male": [-1, 1, 1],
        },
        features=datasets.Features(
            {
                "image": datasets.Image(),
                "Blond_Hair": datasets.Value("bool"),
                "Male": datasets.Value("int64"),
            }
        ),
    )
    datasets.DatasetDict({"test": ds}).save_to_disk(tmp_path / "celeba")
    test = load_hf_group_shift(str(tmp_path / "celeba"), "test")
    np.testing.assert_array_equal(test.label, [1, 0, 1])
    np.testing.assert_array_equal(test.spurious, [0, 1, 1])
    assert test.class_names == ("non-blond", "blond")


def test_hf_hub_id_offline_fails_with_a_clear_message(monkeypatch):
    monkeypatch.setenv("HF_DATASETS_OFFLINE", "1")
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    with pytest.raises(DataLayoutError, match="offline mode"):
        load_hf_group_shift("nobody-xyz/not-a-dataset-123", "train")


# --------------------------------------------------------------------------- toy + registry
def test_toy_world_has_95_percent_train_correlation():
    train = load_toy("train", 400)
    assert (train.label == train.spurious).mean() == pytest.approx(0.95)
    test = load_toy("test", 200)
    assert np.bincount(test.group).tolist() == [50, 50, 50, 50]
    assert train.images.shape == (400, 3, 32, 32) and train.image(0).size == (32, 32)
    assert len(train.captions) == 400 and train.fingerprint["corr"] == 0.95


def test_registry_errors():
    with pytest.raises(ConfigError, match="did you mean 'celeba'"):
        build_group_shift("celebaa", "/x", "train")
    with pytest.raises(ConfigError, match="needs --data-root"):
        build_group_shift("waterbirds", None, "train")


# --------------------------------------------------------------------------- cache keys
def invert_images(paths):
    """Rewrite every image with inverted colours, each file's mtime moved on by one
    second (a rewrite within the file system's timestamp granularity, with the same size,
    is the one a stat fingerprint cannot see)."""
    for path in paths:
        mtime = path.stat().st_mtime_ns
        with Image.open(path) as img:
            inverted = Image.eval(img.convert("RGB"), lambda v: 255 - v)
        inverted.save(path)
        os.utime(path, ns=(mtime + 10**9, mtime + 10**9))


def _spuco(root):
    for sub, cls, place, *_ in _SPUCO_FOLDERS:
        _img(root / sub / "test" / cls / place / "0.jpg")


@pytest.mark.parametrize(
    "name,write,annotations",
    [
        ("waterbirds", write_waterbirds, ["metadata.csv"]),
        ("celeba", write_celeba, ["list_attr_celeba.csv", "list_eval_partition.csv"]),
        ("spuco-animals", _spuco, []),
    ],
)
def test_rewritten_images_change_the_key_with_annotations_untouched(
    tmp_path, name, write, annotations
):
    write(tmp_path)
    before = build_group_shift(name, tmp_path, "test")
    stamps = {a: (tmp_path / a).stat().st_mtime_ns for a in annotations}
    pixel = before.image(0).getpixel((0, 0))
    invert_images(before.paths)
    after = build_group_shift(name, tmp_path, "test")
    assert {a: (tmp_path / a).stat().st_mtime_ns for a in annotations} == stamps
    assert after.paths == before.paths
    inverted = after.image(0).getpixel((0, 0))  # JPEG: within 3 of 255 - v
    assert all(abs(a - (255 - b)) <= 3 for a, b in zip(inverted, pixel, strict=True))
    assert after.fingerprint != before.fingerprint
    assert build_group_shift(name, tmp_path, "test").fingerprint == after.fingerprint  # stable
    for a in annotations:  # an annotation rewritten alone changes it too
        os.utime(tmp_path / a, ns=(stamps[a] + 10**9, stamps[a] + 10**9))
        assert build_group_shift(name, tmp_path, "test").fingerprint != after.fingerprint
        os.utime(tmp_path / a, ns=(stamps[a], stamps[a]))


def test_a_rewritten_saved_dataset_file_changes_the_hf_key(tmp_path):
    """A save_to_disk folder keeps its stored `datasets` fingerprint when its Arrow file
    is rewritten: the key also holds every file's fingerprint."""
    import datasets

    ds = datasets.Dataset.from_dict(
        {"image": [Image.new("RGB", (4, 4), (9, 9, 9))] * 2, "label": [0, 1], "place": [1, 0]},
        features=datasets.Features(
            {"image": datasets.Image(), "label": datasets.Value("int64"),
             "place": datasets.Value("int64")}
        ),
    )  # fmt: skip
    datasets.DatasetDict({"test": ds}).save_to_disk(tmp_path / "wb")
    before = load_hf_group_shift(str(tmp_path / "wb"), "test")
    (arrow,) = (tmp_path / "wb" / "test").glob("*.arrow")
    mtime = arrow.stat().st_mtime_ns
    os.utime(arrow, ns=(mtime + 10**9, mtime + 10**9))
    after = load_hf_group_shift(str(tmp_path / "wb"), "test")
    assert after.fingerprint["hf_fingerprint"] == before.fingerprint["hf_fingerprint"]
    assert after.fingerprint != before.fingerprint


def test_toy_key_holds_the_wheel_files_and_the_toy_code(tmp_path, monkeypatch):
    from labshared.toy import sources

    fp = load_toy("test", 8).fingerprint
    assert fp["toy"] == sources.toy_fingerprint() and set(fp["toy"]) == {
        "code",
        "digits",
        "backgrounds",
    }
    assert fp["seed"] == 0 and load_toy("test", 8, seed=1).fingerprint["seed"] == 1
    # a rewritten digits file (a reinstalled wheel) is a new key: a copy stands in for it
    copy = tmp_path / "mnist_5k.csv.gz"
    copy.write_bytes(Path(sources.MNIST5K_CSV).read_bytes())
    monkeypatch.setattr(sources, "MNIST5K_CSV", str(copy))
    same = sources.toy_fingerprint()["digits"]
    os.utime(copy, ns=(copy.stat().st_mtime_ns + 10**9,) * 2)
    assert sources.toy_fingerprint()["digits"] != same
