"""Image-classification loaders on fixture files written here in the official layouts:
a tiny `cifar-10-batches-py` (pickled dicts with b'data' and b'labels'), Hugging Face
copies (save_to_disk and parquet), an ImageNet-100 ImageFolder, and MNIST-5k."""

import os
import pickle

import numpy as np
import pytest
import torch
from PIL import Image

from labshared.data.image_classification import DATASETS, build_dataset
from labshared.data.image_classification.cifar10 import load_cifar_batch
from labshared.data.image_classification.imagenet100 import imagenet100_wnids
from labshared.errors import ConfigError, DataLayoutError
from labshared.toy.sources import digit_files_fingerprint

CIFAR_MEAN = (0.4914, 0.4822, 0.4465)
CIFAR_STD = (0.2023, 0.1994, 0.2010)


def write_cifar(root, n=4, seed=0):
    """cifar-10-batches-py with n images per batch; returns {batch name: (data, labels)}."""
    folder = root / "cifar-10-batches-py"
    folder.mkdir(parents=True)
    rng = np.random.default_rng(seed)
    written = {}
    for name in [f"data_batch_{i}" for i in range(1, 6)] + ["test_batch"]:
        data = rng.integers(0, 256, (n, 3072), dtype=np.uint8)
        labels = [int(v) for v in rng.integers(0, 10, n)]
        entry = {b"batch_label": name.encode(), b"data": data, b"labels": labels}
        entry[b"filenames"] = [f"img{i}.png".encode() for i in range(n)]
        with (folder / name).open("wb") as f:
            pickle.dump(entry, f, protocol=2)
        written[name] = (data, labels)
    return written


def expected_tensor(row, mean=CIFAR_MEAN, std=CIFAR_STD):
    """A CIFAR row (3072 = 3 planes of 32x32) -> the normalised (3, 32, 32) tensor."""
    img = torch.from_numpy(row.reshape(3, 32, 32).astype(np.float32) / 255.0)
    return (img - torch.tensor(mean).view(3, 1, 1)) / torch.tensor(std).view(3, 1, 1)


def test_cifar_batches_load_in_order_with_official_normalisation(tmp_path):
    written = write_cifar(tmp_path)
    train = build_dataset("cifar10", tmp_path, "train", train_transform=False)
    assert len(train) == 20
    labels = [y for name in [f"data_batch_{i}" for i in range(1, 6)] for y in written[name][1]]
    assert train.labels.tolist() == labels
    data5 = written["data_batch_5"][0]
    x, y = train[17]  # the second image of data_batch_5
    torch.testing.assert_close(x, expected_tensor(data5[1]), atol=1e-6, rtol=0)
    assert y == written["data_batch_5"][1][1]
    # the batches folder itself is accepted as the root, and "val" means the test split
    test = build_dataset("cifar10", tmp_path / "cifar-10-batches-py", "val", False)
    torch.testing.assert_close(test[0][0], expected_tensor(written["test_batch"][0][0]))


def test_cifar_train_transform_crops_and_flips_without_changing_shape(tmp_path):
    write_cifar(tmp_path)
    aug = build_dataset("cifar10", tmp_path, "train", train_transform=True)
    torch.manual_seed(0)
    views = torch.stack([aug[0][0] for _ in range(6)])
    assert views.shape == (6, 3, 32, 32)
    assert not torch.equal(views[0], views[1]) or not torch.equal(views[1], views[2])


class _Evil:
    def __reduce__(self):
        return (os.system, ("touch pwned",))


def test_cifar_pickles_cannot_run_code(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    path = tmp_path / "data_batch_1"
    path.write_bytes(pickle.dumps({b"data": _Evil(), b"labels": []}))
    with pytest.raises(DataLayoutError, match="global posix.system is not allowed|not allowed"):
        load_cifar_batch(path)
    assert not (tmp_path / "pwned").exists()


@pytest.mark.parametrize(
    ("entry", "message"),
    [
        ({b"data": np.zeros((2, 3072), np.uint8)}, "field b'labels' absent"),
        ({b"data": np.zeros((2, 100), np.uint8), b"labels": [0, 1]}, r"field b'data'.*\(2, 100\)"),
        ({b"data": np.zeros((2, 3072), np.uint8), b"labels": [0]}, "field b'labels': expected 2"),
        ({b"data": np.zeros((1, 3072), np.uint8), b"labels": [12]}, "values outside 0-9"),
        ([1, 2], "expected a dict, found list"),
    ],
)
def test_malformed_cifar_batches_name_file_and_field(tmp_path, entry, message):
    path = tmp_path / "test_batch"
    path.write_bytes(pickle.dumps(entry, protocol=2))
    with pytest.raises(DataLayoutError, match=message) as info:
        load_cifar_batch(path)
    assert str(path) in str(info.value) and "cifar-10-batches-py/" in str(info.value)


def test_missing_cifar_files_show_the_layout(tmp_path):
    with pytest.raises(DataLayoutError, match="cifar-10-batches-py: missing") as info:
        build_dataset("cifar10", tmp_path, "train", False)
    assert "data_batch_1 ... data_batch_5" in str(info.value)
    write_cifar(tmp_path)
    (tmp_path / "cifar-10-batches-py" / "data_batch_3").unlink()
    with pytest.raises(DataLayoutError, match="data_batch_3: missing"):
        build_dataset("cifar10", tmp_path, "train", False)
    with pytest.raises(ConfigError, match="needs --data-root"):
        build_dataset("cifar10", None, "train", False)


def _hf_cifar(n=3, seed=0, image_col="img"):
    import datasets

    rng = np.random.default_rng(seed)
    arrays = rng.integers(0, 256, (n, 32, 32, 3), dtype=np.uint8)
    features = datasets.Features(
        {image_col: datasets.Image(), "label": datasets.ClassLabel(num_classes=10)}
    )
    rows = {image_col: [Image.fromarray(a) for a in arrays], "label": [1, 5, 9][:n]}
    return datasets.Dataset.from_dict(rows, features=features), arrays


def test_hf_save_to_disk_folder(tmp_path):
    import datasets

    train, arrays = _hf_cifar()
    test, _ = _hf_cifar(seed=1)
    datasets.DatasetDict({"train": train, "test": test}).save_to_disk(str(tmp_path / "hf"))
    ds = build_dataset("cifar10", tmp_path / "hf", "train", False)
    assert len(ds) == 3 and ds[1][1] == 5
    row = arrays[0].transpose(2, 0, 1).reshape(-1)
    torch.testing.assert_close(ds[0][0], expected_tensor(row), atol=1e-6, rtol=0)


def test_hf_parquet_folder_through_load_dataset(tmp_path):
    folder = tmp_path / "cifar10-parquet" / "plain_text"
    folder.mkdir(parents=True)
    for split, seed in (("train", 0), ("test", 1)):
        ds, _ = _hf_cifar(seed=seed, image_col="image")
        ds.to_parquet(str(folder / f"{split}-00000-of-00001.parquet"))
    test = build_dataset("cifar10", f"hf:{tmp_path / 'cifar10-parquet'}", "test", False)
    assert len(test) == 3 and test.labels.tolist() == [1, 5, 9]
    assert test[2][0].shape == (3, 32, 32)


def test_hf_dataset_without_label_column_is_a_layout_error(tmp_path):
    import datasets

    bad = datasets.Dataset.from_dict({"img": [Image.new("RGB", (32, 32))], "y": [1]})
    datasets.DatasetDict({"train": bad}).save_to_disk(str(tmp_path / "bad"))
    with pytest.raises(DataLayoutError, match=r"expected columns img \(or image\) and label"):
        build_dataset("cifar10", tmp_path / "bad", "train", False)
    with pytest.raises(DataLayoutError, match=r"found \['train'\]"):
        build_dataset("cifar10", tmp_path / "bad", "test", False)
    bad.save_to_disk(str(tmp_path / "single"))  # one split: train and test would coincide
    with pytest.raises(DataLayoutError, match="DatasetDict with train and test"):
        build_dataset("cifar10", tmp_path / "single", "train", False)


# --------------------------------------------------------------------------- ImageNet-100
def write_imagenet(root, split_dir, wnids, per_class=2, size=(40, 30)):
    for wnid in wnids:
        folder = root / split_dir / wnid
        folder.mkdir(parents=True)
        for i in range(per_class):
            Image.new("RGB", size, (i * 60, 10, 200)).save(folder / f"{wnid}_{i}.JPEG")


def test_imagenet100_list_is_the_official_one():
    wnids = imagenet100_wnids()
    assert len(wnids) == len(set(wnids)) == 100
    assert wnids[:3] == ("n01968897", "n01770081", "n01818515") and wnids[-1] == "n01514668"
    assert min(wnids) == "n01440764" and max(wnids) == "n02077923"


@pytest.mark.parametrize("eval_dir", ["val", "test"])
def test_imagenet100_folder_uses_sorted_wnid_labels(tmp_path, eval_dir):
    two = ["n01440764", "n02077923"]  # first and last of the sorted list
    write_imagenet(tmp_path, "train", [*two, "n09999999"])  # a non-list class is ignored
    write_imagenet(tmp_path, eval_dir, two)
    with pytest.raises(DataLayoutError, match="98 of the 100 ImageNet-100 class folders"):
        build_dataset("imagenet100", tmp_path, "train", True)
    train = build_dataset("imagenet100", tmp_path, "train", True, allow_missing_classes=True)
    assert train.labels.tolist() == [0, 0, 99, 99]
    assert train[0][0].shape == (3, 224, 224)
    test = build_dataset("imagenet100", tmp_path, "test", False, allow_missing_classes=True)
    x, y = test[3]
    assert x.shape == (3, 224, 224) and y == 99
    mean, std = (0.485, 0.456, 0.406), (0.229, 0.224, 0.225)
    expect = (torch.tensor([60, 10, 200]) / 255.0 - torch.tensor(mean)) / torch.tensor(std)
    torch.testing.assert_close(x[:, 112, 112], expect, atol=0.05, rtol=0)  # JPEG tolerance


def test_imagenet100_missing_split_and_empty_class(tmp_path):
    write_imagenet(tmp_path, "train", ["n01440764"])
    with pytest.raises(DataLayoutError, match="looked for val or test") as info:
        build_dataset("imagenet100", tmp_path, "test", False, allow_missing_classes=True)
    assert "val/   (or test/" in str(info.value)
    (tmp_path / "train" / "n01443537").mkdir()
    with pytest.raises(DataLayoutError, match="n01443537: class folder holds no images"):
        build_dataset("imagenet100", tmp_path, "train", False, allow_missing_classes=True)


# --------------------------------------------------------------------------- MNIST-5k
def test_mnist5k_split_is_fixed_and_disjoint():
    train = build_dataset("mnist", None, "train", True)
    test = build_dataset("mnist", None, "test", False)
    assert (len(train), len(test)) == (4000, 1000)
    assert np.bincount(test.labels, minlength=10).min() > 70
    x, _ = test[0]
    assert x.shape == (1, 28, 28)
    pixels = torch.stack([test[i][0] for i in range(200)]) * 0.3086 + 0.1313
    assert pixels.min() >= -1e-5 and pixels.max() <= 1 + 1e-5
    # together the two splits are exactly the 5,000 digits (500 per class), so disjoint
    counts = np.bincount(train.labels, minlength=10) + np.bincount(test.labels, minlength=10)
    assert counts.tolist() == [500] * 10
    again = build_dataset("mnist", None, "test", False)
    assert np.array_equal(again.images, test.images)


@pytest.mark.parametrize("name", sorted(DATASETS))
def test_registry_entries_are_consistent(name):
    info = DATASETS[name]
    assert len(info.mean) == len(info.std) == info.channels


def test_unknown_dataset_and_split():
    with pytest.raises(ConfigError, match="did you mean 'cifar10'"):
        build_dataset("cifar-10", None, "train", False)
    with pytest.raises(ConfigError, match="split 'dev'"):
        build_dataset("mnist", None, "dev", False)


def _write_parquet_cifar(root):
    folder = root / "plain_text"
    folder.mkdir(parents=True)
    for split, seed in (("train", 0), ("test", 1)):
        ds, _ = _hf_cifar(seed=seed, image_col="image")
        ds.to_parquet(str(folder / f"{split}-00000-of-00001.parquet"))


def test_hf_local_folder_copy_lives_under_labshared_cache(tmp_path):
    """`hf:<local folder>`: the Arrow copy `datasets` builds goes under LABSHARED_CACHE;
    nothing is written to the Hugging Face cache (HF_HOME, read when `datasets` is
    imported, hence a fresh process)."""
    import subprocess
    import sys

    _write_parquet_cifar(tmp_path / "pq")
    env = {**os.environ, "HF_HOME": str(tmp_path / "hf"), "LABSHARED_CACHE": str(tmp_path / "c")}
    env.pop("HF_DATASETS_CACHE", None)
    code = (
        "from labshared.data.image_classification import build_dataset; "
        f"ds = build_dataset('cifar10', 'hf:{tmp_path / 'pq'}', 'test', False); "
        "print(len(ds), ds.labels.tolist())"
    )
    out = subprocess.run(
        [sys.executable, "-c", code], env=env, capture_output=True, text=True, check=True
    )
    assert out.stdout.split("\n")[0] == "3 [1, 5, 9]"
    assert not (tmp_path / "hf").exists() or not any((tmp_path / "hf").rglob("*"))
    assert any(p.suffix == ".arrow" for p in (tmp_path / "c" / "hf-datasets").rglob("*"))


# --------------------------------------------------------------------------- cache keys
def _later(path):
    """Move a file's mtime on by one second (a rewrite the fingerprint must see even when
    it falls within the file system's timestamp granularity)."""
    mtime = path.stat().st_mtime_ns + 10**9
    os.utime(path, ns=(mtime, mtime))


def test_rewritten_files_change_every_fingerprint(tmp_path):
    import datasets

    # CIFAR-10 batches: the test batch rewritten with other pixels, same labels
    written = write_cifar(tmp_path / "cifar")
    before = build_dataset("cifar10", tmp_path / "cifar", "test", False).fingerprint
    assert before["dataset"] == "cifar10" and before["split"] == "test"
    data, labels = written["test_batch"]
    entry = {b"data": 255 - data, b"labels": labels}
    with (tmp_path / "cifar" / "cifar-10-batches-py" / "test_batch").open("wb") as f:
        pickle.dump(entry, f, protocol=2)
    _later(tmp_path / "cifar" / "cifar-10-batches-py" / "test_batch")
    assert build_dataset("cifar10", tmp_path / "cifar", "test", False).fingerprint != before
    # ImageNet-100 folders: every image inverted, names untouched
    write_imagenet(tmp_path / "in", "val", ["n01440764"])
    load = lambda: build_dataset(  # noqa: E731
        "imagenet100", tmp_path / "in", "test", False, allow_missing_classes=True
    )
    before = load().fingerprint
    for path in (tmp_path / "in" / "val" / "n01440764").iterdir():
        with Image.open(path) as img:
            Image.eval(img, lambda v: 255 - v).save(path, format="JPEG")
        _later(path)
    assert load().fingerprint != before
    # a save_to_disk folder: an Arrow file rewritten
    train, _ = _hf_cifar()
    datasets.DatasetDict({"train": train, "test": train}).save_to_disk(str(tmp_path / "hf"))
    before = build_dataset("cifar10", tmp_path / "hf", "test", False).fingerprint
    (arrow,) = (tmp_path / "hf" / "test").glob("*.arrow")
    _later(arrow)
    assert build_dataset("cifar10", tmp_path / "hf", "test", False).fingerprint != before
    # MNIST-5k: the wheel file it is parsed from, and the split seed
    mnist = build_dataset("mnist", None, "test", False).fingerprint
    assert mnist["files"] == digit_files_fingerprint("mnist") and mnist["data_seed"] == 0
    assert build_dataset("mnist", None, "test", False, data_seed=1).fingerprint != mnist
