"""`tldr check-data` on fixture files written in the official layouts (Waterbirds'
metadata.csv, CelebA's list_attr_celeba / list_eval_partition, SpuCo's folders, COCO-2014
captions), and DFR's CelebA transforms recorded with an ERM classifier."""

import dataclasses
import json

import torch
from PIL import Image
from typer.testing import CliRunner

from tldr_cli.cli import app


def _img(path, size=(8, 6), colour=(120, 30, 200)):
    path.parent.mkdir(parents=True, exist_ok=True)
    Image.new("RGB", size, colour).save(path)


# img_id, img_filename, y, split, place: group_DRO's generate_waterbirds.py columns
WB_ROWS = [
    (1, "001.Black_footed_Albatross/Black_Footed_Albatross_0009_34.jpg", 1, 0, 1),
    (2, "002.Laysan_Albatross/Laysan_Albatross_0002_1027.jpg", 1, 0, 0),
    (3, "026.Bronzed_Cowbird/Bronzed_Cowbird_0001_796215.jpg", 0, 0, 0),
    (4, "026.Bronzed_Cowbird/Bronzed_Cowbird_0003_24171.jpg", 0, 0, 0),
    (5, "026.Bronzed_Cowbird/Bronzed_Cowbird_0007_796221.jpg", 0, 1, 1),
    (6, "001.Black_footed_Albatross/Black_Footed_Albatross_0014_89.jpg", 1, 1, 1),
    (7, "026.Bronzed_Cowbird/Bronzed_Cowbird_0010_24063.jpg", 0, 2, 0),
    (8, "002.Laysan_Albatross/Laysan_Albatross_0020_1082.jpg", 1, 2, 0),
]


def write_waterbirds(root):
    lines = ["img_id,img_filename,y,split,place,place_filename"] + [
        f"{i},{f},{y},{s},{p},/o/ocean/00002178.jpg" for i, f, y, s, p in WB_ROWS
    ]
    root.mkdir(parents=True, exist_ok=True)
    (root / "metadata.csv").write_text("\n".join(lines) + "\n")
    for _, f, *_ in WB_ROWS:
        _img(root / f)


ATTRS = ["5_o_Clock_Shadow", "Arched_Eyebrows", "Blond_Hair", "Male"]
# file, attributes (-1/1), partition: the official release's Anno/ and Eval/ text files
CELEBA_ROWS = [
    ("000001.jpg", (-1, 1, -1, -1), 0),
    ("000002.jpg", (-1, -1, 1, -1), 0),
    ("000003.jpg", (1, -1, -1, 1), 0),
    ("000004.jpg", (-1, 1, 1, -1), 1),
    ("000005.jpg", (1, -1, -1, 1), 2),
]


def write_celeba(root):
    """The official site's text files: list_attr_celeba.txt (count, names, rows) and
    list_eval_partition.txt, images in img_align_celeba/ (178 x 218)."""
    root.mkdir(parents=True, exist_ok=True)
    (root / "list_attr_celeba.txt").write_text(
        f"{len(CELEBA_ROWS)}\n"
        + " ".join(ATTRS)
        + "\n"
        + "".join(
            f"{f} " + " ".join(f"{a:2d}" for a in attrs) + "\n" for f, attrs, _ in CELEBA_ROWS
        )
    )
    (root / "list_eval_partition.txt").write_text("".join(f"{f} {p}\n" for f, _, p in CELEBA_ROWS))
    for f, *_ in CELEBA_ROWS:
        _img(root / "img_align_celeba" / f, size=(178, 218))


def write_coco(root, n_images=3):
    """COCO-2014 val captions: annotations/captions_val2014.json + val2014/ images."""
    images = [
        {"id": 42 + i, "file_name": f"COCO_val2014_{42 + i:012d}.jpg"} for i in range(n_images)
    ]
    anns = [
        {"id": k, "image_id": im["id"], "caption": f"a photo number {k}"}
        for k, im in enumerate(images * 2)
    ]
    (root / "annotations").mkdir(parents=True, exist_ok=True)
    (root / "annotations" / "captions_val2014.json").write_text(
        json.dumps({"images": images, "annotations": anns})
    )
    for im in images:
        _img(root / "val2014" / im["file_name"])


def _run(args):
    return CliRunner().invoke(app, ["check-data", *args])


def _has_lines(out: str, *expected: str) -> bool:
    """`expected` appear as consecutive lines of `out` (compared without indentation)."""
    lines = [line.strip() for line in out.splitlines()]
    n = len(expected)
    return any(lines[i : i + n] == list(expected) for i in range(len(lines) - n + 1))


def test_waterbirds_and_coco_layout_is_counted(tmp_path):
    write_waterbirds(tmp_path / "wb")
    write_coco(tmp_path / "coco")
    result = _run(
        [
            "--preset",
            "waterbirds",
            "--data-root",
            str(tmp_path / "wb"),
            "--gap-pairs",
            str(tmp_path / "coco"),
            "--backbone-weights",
            str(tmp_path / "resnet50.pth"),
        ]
    )
    # the backbone file named does not exist: one line naming it, after the data passed
    assert result.exit_code == 1 and f"--backbone-weights {tmp_path / 'resnet50.pth'}" in (
        result.output
    )
    torch.save({}, tmp_path / "resnet50.pth")
    result = _run(
        [
            "--preset",
            "waterbirds",
            "--data-root",
            str(tmp_path / "wb"),
            "--gap-pairs",
            str(tmp_path / "coco"),
            "--backbone-weights",
            str(tmp_path / "resnet50.pth"),
        ]
    )
    assert result.exit_code == 0, result.output
    out = result.stdout
    assert _has_lines(
        out,
        "train       4 images  (official: 4795)",
        "2  landbird / land",
        "0  landbird / water",
        "1  waterbird / land",
        "1  waterbird / water",
        "val         2 images  (official: 1199)",
    )
    assert "test        2 images  (official: 5794)" in out
    # train groups (y, place): landbird/land 2, landbird/water 0, waterbird/land 1,
    # waterbird/water 1
    assert "6 captions of 3 images" in out
    assert "--clip-pretrained openai: open_clip tag of ViT-B-32, downloaded on first use" in out
    assert out.rstrip().endswith("OK: every file listed is present")

    # a missing image: the first missing file is named, with the count
    (tmp_path / "wb" / WB_ROWS[3][1]).unlink()
    (tmp_path / "wb" / WB_ROWS[2][1]).unlink()
    result = _run(["--preset", "waterbirds", "--data-root", str(tmp_path / "wb")])
    assert result.exit_code == 1
    assert (
        f"error: {tmp_path / 'wb' / WB_ROWS[2][1]}: image of the train split is missing "
        "(2 of 4 listed files are missing; this is the first)"
    ) in result.output
    # a COCO image missing
    write_waterbirds(tmp_path / "wb")
    (tmp_path / "coco" / "val2014" / "COCO_val2014_000000000043.jpg").unlink()
    result = _run(
        [
            "--preset",
            "waterbirds",
            "--data-root",
            str(tmp_path / "wb"),
            "--gap-pairs",
            str(tmp_path / "coco"),
        ]
    )
    assert result.exit_code == 1
    assert "COCO_val2014_000000000043.jpg: image of a gap pair is missing (1 of 3" in result.output


def test_celeba_official_text_files_and_word_lists(tmp_path):
    write_celeba(tmp_path / "celeba")
    words = {
        "dataset": "celeba",
        # reordered against the loader's (non-blond, blond) / (female, male)
        "classes": {"blond hair": ["platinum hair"], "dark hair": ["black hair", "brown hair"]},
        "spurious": {"man": ["duke"], "woman": ["duchess"]},
        "anchors": {
            "classes": {
                "blond hair": "a photo of a blond hair.",
                "dark hair": "a photo of a dark hair.",
            },
            "spurious": {"man": "a photo of a man.", "woman": "a photo of a woman."},
        },
    }
    (tmp_path / "w.json").write_text(json.dumps(words))
    args = [
        "--preset",
        "celeba",
        "--data-root",
        str(tmp_path / "celeba"),
        "--words",
        str(tmp_path / "w.json"),
    ]
    result = _run(args)
    assert result.exit_code == 0, result.output
    out = result.stdout
    assert "train       3 images  (official: 162770)" in out
    # train: 000001 non-blond female, 000002 blond female, 000003 non-blond male
    assert _has_lines(
        out,
        "1  non-blond / female",
        "1  non-blond / male",
        "1  blond / female",
        "0  blond / male",
    )
    assert _has_lines(
        out,
        "label 0: dark hair (2 words)",
        "label 1: blond hair (1 words)",
        "spurious 0: woman (1 words)",
        "spurious 1: man (1 words)",
    )
    words["classes"]["red hair"] = words["classes"].pop("blond hair")
    words["anchors"]["classes"]["red hair"] = words["anchors"]["classes"].pop("blond hair")
    (tmp_path / "w.json").write_text(json.dumps(words))
    result = _run(args)
    assert result.exit_code == 1 and "class list 'red hair' names none" in result.output
    (tmp_path / "celeba" / "list_eval_partition.txt").unlink()
    result = _run(args[:4])
    assert (
        result.exit_code == 1
        and "list_eval_partition.csv: partition file not found" in result.output
    )


def test_spuco_folders_and_a_bad_classifier(tmp_path):
    root = tmp_path / "spuco"
    for split in ("train", "val", "test"):
        for subset, cls, places in (
            ("spuco_birds", "landbirds", ("land", "water")),
            ("spuco_birds", "waterbirds", ("land", "water")),
            ("spuco_dogs", "small_dogs", ("indoor", "outdoor")),
            ("spuco_dogs", "big_dogs", ("indoor", "outdoor")),
        ):
            for place in places:
                _img(root / subset / split / cls / place / "0.jpg")
    result = _run(["--preset", "spuco-animals", "--data-root", str(root)])
    assert result.exit_code == 0, result.output
    assert "train       8 images\n" in result.stdout  # no official size printed for SpuCo
    assert _has_lines(result.stdout, "0  big dog / land", "0  big dog / water")
    assert _has_lines(result.stdout, "1  big dog / indoor", "1  big dog / outdoor")
    (tmp_path / "erm.pt").write_text("not a checkpoint")
    result = _run(
        [
            "--preset",
            "spuco-animals",
            "--data-root",
            str(root),
            "--classifier",
            str(tmp_path / "erm.pt"),
        ]
    )
    assert result.exit_code == 1
    assert f"--classifier {tmp_path / 'erm.pt'}: not a readable torch checkpoint" in result.output


def test_toy_world_needs_no_files():
    result = _run(["--preset", "toy", "--gap-pairs", "toy"])
    assert result.exit_code == 0, result.output
    assert "train    2000 images" in result.stdout and "950  small digit / grass" in result.stdout


def test_dfr_celeba_trains_and_evaluates_on_the_same_full_image_view(tmp_path, monkeypatch):
    """DFR's recipe (`wb_data.get_transform_cub`, for CelebA too): RandomResizedCrop of the
    full image in training, Resize 256x256 -> CenterCrop 224 of the full image at
    evaluation. The recipe's view is recorded with the classifier and used for features."""
    from labshared.device import setup_runtime
    from tldr_cli.classifier import build_classifier, classifier_transform, load_classifier
    from tldr_cli.config import ERM_RECIPES, PRESETS
    from tldr_cli.erm import train_erm
    from tldr_cli.features import (
        ClassifierHandle,
        classifier_features,
        classifier_preprocess,
        load_splits,
    )

    monkeypatch.setenv("LABSHARED_CACHE", str(tmp_path / "cache"))
    # the evaluation view: an image whose top and bottom 20 rows are red and middle blue
    img = Image.new("RGB", (178, 218), (0, 0, 255))
    for y in list(range(20)) + list(range(198, 218)):
        for x in range(178):
            img.putpixel((x, y), (255, 0, 0))
    dfr_eval = classifier_transform("celeba", "resnet50", preprocess="dfr")(img)
    tldr_eval = classifier_transform("celeba", "resnet50")(img)

    # DFR squeezes the full image to 256x256 and crops rows 16-239: red rows 0-19 of 218
    # become rows 0-23.5 of 256 and 198-217 become 232.5-256, so crop rows 0-6 and
    # 217-223 are red and 8-215 blue (rows 7 and 216 straddle an edge); TLDR's centre
    # crop 178 keeps rows 20-197 of the image: no red at all
    def reds(t):  # per crop row, is the middle column red (red channel above blue)?
        return (t[0, :, 112] > t[2, :, 112]).tolist()

    assert reds(dfr_eval)[:7] == [True] * 7 and reds(dfr_eval)[217:] == [True] * 7
    assert not any(reds(dfr_eval)[8:216])
    assert not any(reds(tldr_eval))
    train_view = classifier_transform(
        "celeba", "resnet50", train=True, augment=True, preprocess="dfr"
    )
    assert "CenterCrop" not in repr(train_view) and "RandomResizedCrop" in repr(train_view)

    # an ERM run with the dfr-celeba recipe records its view in meta.json (a toy CNN on a
    # few toy images keeps this fast: the recording does not depend on the network) ...
    runtime = setup_runtime("cpu", "fp32", 0)
    toy = dataclasses.replace(PRESETS["toy"], toy_n_train=8, num_workers=0)
    recipe = ERM_RECIPES["dfr-celeba"]
    tiny = type(recipe)(**{**recipe.__dict__, "epochs": 1, "batch_size": 4})
    torch.manual_seed(0)
    model = build_classifier("toy-cnn", 2, None)
    train_erm(model, load_splits(toy, ("train",))["train"], tiny, runtime, tmp_path / "erm",
              dataset_kind="toy")  # fmt: skip
    _, meta = load_classifier(tmp_path / "erm")
    assert meta["preprocess"] == "dfr" and meta["recipe"] == "dfr-celeba"
    # ... from which the view is read back; a bare state dict takes --erm-recipe's
    write_celeba(tmp_path / "celeba")
    cfg = dataclasses.replace(PRESETS["celeba"], data_root=str(tmp_path / "celeba"), num_workers=0)
    assert classifier_preprocess(meta, cfg) == "dfr"
    assert classifier_preprocess({"recipe": "dfr-celeba"}, cfg) == "dfr"  # older meta.json
    assert classifier_preprocess({}, dataclasses.replace(cfg, erm_recipe="dfr-celeba")) == "dfr"
    assert classifier_preprocess({}, cfg) == "dataset"  # paper-repo: TLDR's crop 178
    # ... and features of CelebA images are extracted with that full-image view
    train = load_splits(cfg, ("train",))["train"]
    handle = ClassifierHandle(build_classifier("resnet50", 2, None).eval(), meta, "d", "dfr")
    classifier_features(handle, train, cfg, runtime, use_cache=True)
    (sidecar,) = (tmp_path / "cache" / "features").glob("tldr-phi-train-*.json")
    transform = json.loads(sidecar.read_text())["spec"]["transform"]
    assert "Resize(size=(256, 256)" in transform and "CenterCrop(size=(178, 178))" not in transform
