"""`robattr train --check-data` on fixtures written in the official layouts: counts on a
good tree, and one red line naming the first missing or unreadable file otherwise."""

import json
import pickle

import numpy as np
import pytest
from PIL import Image
from typer.testing import CliRunner

from labshared.data.image_classification.imagenet100 import imagenet100_wnids
from robattr_cli.cli import app

runner = CliRunner()


def check(*args):
    return runner.invoke(app, ["train", *map(str, args), "--check-data"])


def write_cifar(root, n=3):
    """The official cifar-10-batches-py: pickled dicts with b'data' (N, 3072) uint8 and
    b'labels' (N ints), n images per batch, labels 0, 1, 2, ..."""
    folder = root / "cifar-10-batches-py"
    folder.mkdir(parents=True)
    rng = np.random.default_rng(0)
    for name in [f"data_batch_{i}" for i in range(1, 6)] + ["test_batch"]:
        entry = {
            b"batch_label": name.encode(),
            b"data": rng.integers(0, 256, (n, 3072), dtype=np.uint8),
            b"labels": list(range(n)),
        }
        with (folder / name).open("wb") as f:
            pickle.dump(entry, f, protocol=2)
    return folder


def write_imagenet100(root, eval_dir="val", per_class=(2, 1)):
    for split, n in (("train", per_class[0]), (eval_dir, per_class[1])):
        for wnid in imagenet100_wnids():
            folder = root / split / wnid
            folder.mkdir(parents=True)
            for i in range(n):
                Image.new("RGB", (8, 6), (i * 90, 20, 200)).save(folder / f"{wnid}_{i}.JPEG")


def error_line(result):
    assert result.exit_code == 1, result.output
    assert "Traceback" not in result.output
    return next(line for line in result.output.splitlines() if line.startswith("error:"))


def test_cifar10_official_layout_is_counted(tmp_path):
    write_cifar(tmp_path)
    result = check("--preset", "cifar10-lenet", "--data-root", tmp_path)
    assert result.exit_code == 0, result.output
    report = json.loads(result.stdout)
    assert report["dataset"] == "cifar10" and report["data_root"] == str(tmp_path)
    assert report["splits"]["train"] == {
        "images": 15, "classes": 3, "images_per_class_min": 5, "images_per_class_max": 5,
        "decoded": 3,
    }  # fmt: skip
    assert report["splits"]["test"]["images"] == 3
    assert not (tmp_path / "runs").exists()  # nothing trained, no run folder


def test_cifar10_missing_batch_is_named(tmp_path):
    folder = write_cifar(tmp_path)
    (folder / "data_batch_3").unlink()
    line = error_line(check("--preset", "cifar10-lenet", "--data-root", tmp_path))
    assert str(folder / "data_batch_3") in line and "missing" in line


def test_cifar10_needs_a_root():
    line = error_line(check("--preset", "cifar10-lenet"))
    assert "needs --data-root" in line


@pytest.mark.parametrize("eval_dir", ["val", "test"])
def test_imagenet100_official_layout_is_counted(tmp_path, eval_dir):
    write_imagenet100(tmp_path, eval_dir)
    result = check("--preset", "imagenet100-resnet18", "--data-root", tmp_path)
    assert result.exit_code == 0, result.output
    splits = json.loads(result.stdout)["splits"]
    assert splits["train"]["images"] == 200 and splits["train"]["classes"] == 100
    assert splits["test"]["images"] == 100 and splits["test"]["decoded"] == 100


def test_imagenet100_missing_class_folder_is_named(tmp_path):
    write_imagenet100(tmp_path)
    first = sorted(imagenet100_wnids())[0]
    for f in (tmp_path / "val" / first).iterdir():
        f.unlink()
    (tmp_path / "val" / first).rmdir()
    line = error_line(check("--preset", "imagenet100-resnet18", "--data-root", tmp_path))
    assert str(tmp_path / "val") in line and f"first: {first}" in line


def test_imagenet100_unreadable_image_is_named(tmp_path):
    write_imagenet100(tmp_path)
    wnid = sorted(imagenet100_wnids())[5]
    bad = tmp_path / "train" / wnid / f"{wnid}_0.JPEG"
    bad.write_bytes(b"not a jpeg")
    line = error_line(check("--preset", "imagenet100-resnet18", "--data-root", tmp_path))
    assert str(bad) in line and "not a readable image" in line


def test_mnist_toy_seed_split_is_counted():
    result = check("--toy-seed", "3")
    assert result.exit_code == 0, result.output
    splits = json.loads(result.stdout)["splits"]
    assert splits["train"]["images"] == 4000 and splits["test"]["images"] == 1000
    assert splits["train"]["classes"] == 10


def test_toy_seed_is_refused_for_real_datasets(tmp_path):
    line = error_line(
        check("--preset", "cifar10-lenet", "--data-root", tmp_path, "--toy-seed", "2")
    )
    assert "--toy-seed 2 with --dataset cifar10" in line
