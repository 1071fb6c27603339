"""`rtd eval`'s image loader (rtd_cli/gallery_loader.py) and feature encoding (features.py):
the uint8 PIL path equals open_clip's `preprocess` exactly, the tensor path (torchvision
`decode_jpeg` + tensor resize/crop; on CUDA the same code with device="cuda") stays within
1/255 of it on real photos, mixed JPEG/PNG batches keep their order, workers persist across
parts, and features are computed under the runtime's autocast."""

import io
import os
from pathlib import Path

import numpy as np
import open_clip
import pytest
import skimage.data
import torch
from PIL import Image
from torch import nn
from typer.testing import CliRunner

from labshared.data.composed_retrieval import FileImages
from labshared.device import Precision, Runtime
from labshared.errors import ConfigError
from rtd_cli import features, gallery_loader
from rtd_cli.cli import app
from rtd_cli.gallery_loader import (
    TENSOR_PATH_VERSION,
    ImageBatches,
    decode_jpegs,
    jpeg_components,
    resolve_decode,
    split_clip_transform,
)

PHOTOS = ("astronaut", "chelsea", "coffee", "rocket", "portrait")
# 512x512, 300x451, 400x600, 427x640 and chelsea turned upright (451x300)


@pytest.fixture(scope="module")
def preprocess():
    """open_clip's ViT-B-32 val transform (224 px, bicubic, OpenAI mean/std); no weights."""
    return open_clip.image_transform(224, is_train=False)


@pytest.fixture(scope="module")
def photos(tmp_path_factory) -> FileImages:
    """Real scikit-image photos as JPEG files (quality 90), plus one PNG."""
    root = tmp_path_factory.mktemp("photos")
    paths = {}
    for name in PHOTOS:
        paths[name] = root / f"{name}.jpg"
        pixels = skimage.data.chelsea().transpose(1, 0, 2) if name == "portrait" else None
        pixels = getattr(skimage.data, name)() if pixels is None else pixels
        Image.fromarray(pixels).save(paths[name], quality=90)
    paths["camera"] = root / "camera.png"  # grayscale PNG: converted to RGB by both paths
    Image.fromarray(skimage.data.camera()).save(paths["camera"])
    paths["grey"] = root / "grey.jpg"  # one-component JPEG: the tensor path
    Image.fromarray(skimage.data.camera()).save(paths["grey"], quality=90)
    paths["cmyk"] = root / "cmyk.jpg"  # four components: the PIL path
    Image.fromarray(skimage.data.coffee()).convert("CMYK").save(paths["cmyk"], quality=90)
    return FileImages(paths, root)


def _reference(preprocess, photos, names) -> torch.Tensor:
    return torch.stack([preprocess(photos.load(n)) for n in names])


def _batches(photos, names, preprocess, **kw) -> torch.Tensor:
    loader = ImageBatches([(photos, names)], preprocess, torch.device("cpu"), **kw)
    return torch.cat(list(loader.part(0)))


def test_the_pil_path_equals_preprocess_exactly(preprocess, photos):
    names = [*PHOTOS, "camera"]
    t = split_clip_transform(preprocess)
    assert t is not None and [type(op).__name__ for op in t.geometry] == ["Resize", "CenterCrop"]
    got = _batches(photos, names, preprocess, batch_size=2, workers=0)
    assert got.dtype == torch.float32 and got.shape == (6, 3, 224, 224)
    assert torch.equal(got, _reference(preprocess, photos, names))


def test_a_transform_without_a_tensor_form_runs_whole(photos, preprocess):
    odd = open_clip.image_transform(224, is_train=False, resize_mode="longest")
    assert split_clip_transform(odd) is None
    names = list(PHOTOS[:2])
    got = _batches(photos, names, odd, batch_size=4, workers=0)
    assert torch.equal(got, _reference(odd, photos, names))
    with pytest.raises(ConfigError, match="--decode gpu: the backbone's transform"):
        ImageBatches([(photos, names)], odd, torch.device("cpu"), batch_size=4, workers=0,
                     decode="tensor")  # fmt: skip


def test_tensor_decode_matches_pil_on_real_photos(preprocess, photos):
    """decode_jpeg on the CPU gives PIL's pixels exactly; the two-pass tensor bicubic resize
    is within one uint8 level of PIL's (README: 'Performance (gallery encoding)')."""
    t = split_clip_transform(preprocess)
    for name in PHOTOS:
        data = torch.frombuffer(bytearray(photos.paths[name].read_bytes()), dtype=torch.uint8)
        decoded = decode_jpegs([data], "cpu")[0]
        pil = torch.from_numpy(np.array(photos.load(name))).permute(2, 0, 1)
        assert torch.equal(decoded, pil), name
        tensor, pil = t.tensor_pixels(decoded), t.pil_pixels(photos.load(name))
        assert tensor.dtype == torch.uint8 and tensor.shape == pil.shape == (3, 224, 224)
        diff = (tensor.int() - pil.int()).abs()
        assert diff.max() <= 1 and diff.float().mean() < 0.002, name


def test_mixed_jpeg_and_png_batches_keep_order(preprocess, photos):
    names = ["camera", "astronaut", "chelsea", "camera", "coffee"]
    ref = _reference(preprocess, photos, names)
    got = _batches(photos, names, preprocess, batch_size=3, workers=0, decode="tensor")
    assert got.shape == ref.shape
    # the PNG takes the PIL path: identical; the JPEGs: within one level of 255, normalised
    assert torch.equal(got[0], ref[0]) and torch.equal(got[3], ref[3])
    assert (got - ref).abs().max() <= 1 / 255 / min(open_clip.OPENAI_DATASET_STD) + 1e-6
    # batches of PNGs only and of JPEGs only (each packed as a few tensors per batch)
    pngs = _batches(photos, ["camera"] * 2, preprocess, batch_size=2, workers=0, decode="tensor")
    assert torch.equal(pngs, ref[[0, 3]])
    jpegs = _batches(photos, names[1:3], preprocess, batch_size=2, workers=0, decode="tensor")
    assert torch.equal(jpegs, got[1:3])
    # a JPEG the decoder refuses takes the PIL path (a truncated file is refused by both)
    bad = photos.paths["rocket"].read_bytes()
    odd = Path(photos.root) / "cut.jpg"
    odd.write_bytes(bad[: len(bad) // 2])
    cut = FileImages({"cut": odd}, photos.root)
    with pytest.raises(OSError, match="truncated"):
        _batches(cut, ["cut"], preprocess, batch_size=1, workers=0, decode="tensor")


def test_grey_jpegs_take_the_tensor_path_and_cmyk_ones_pil(preprocess, photos):
    components = [jpeg_components(photos.paths[n].read_bytes()) for n in ("grey", "cmyk", "coffee")]
    assert components == [1, 4, 3]
    progressive = io.BytesIO()
    Image.fromarray(skimage.data.coffee()).save(progressive, "JPEG", progressive=True)
    assert jpeg_components(progressive.getvalue()) == 3  # SOF2 found past its tables
    assert jpeg_components(b"\xff\xd8\xff\xe0\x00") is None  # a cut header
    two = _batches(photos, ["grey", "cmyk"], preprocess, batch_size=2, workers=0, decode="tensor")
    ref = _reference(preprocess, photos, ["grey", "cmyk"])
    assert torch.equal(two[1], ref[1])  # CMYK: PIL, bit-equal
    assert not torch.equal(two[0], ref[0])  # grey: torchvision, within one level of 255
    assert (two[0] - ref[0]).abs().max() <= 1 / 255 / min(open_clip.OPENAI_DATASET_STD) + 1e-6


class _PidSource:
    """An image source whose images show the id of the process that loaded them."""

    def load(self, name: str) -> Image.Image:
        pid = os.getpid()  # in base 251, one digit per channel
        return Image.new("RGB", (8, 8), (pid % 251, pid // 251 % 251, pid // 251**2 % 251))


class _Raw:
    """A transform with no tensor form (not open_clip's): the image as a float tensor."""

    def __call__(self, image: Image.Image) -> torch.Tensor:
        return torch.from_numpy(np.asarray(image).copy()).permute(2, 0, 1).float()


def test_workers_persist_across_parts_and_return_each_part_in_order(preprocess, photos):
    pid = _PidSource()
    parts = [(pid, ["a", "b", "c"]), (pid, ["d", "e"])]
    loader = ImageBatches(parts, _Raw(), torch.device("cpu"), batch_size=2, workers=1)
    assert loader.loader.persistent_workers and loader.loader.prefetch_factor == 2
    first, second = torch.cat(list(loader.part(0))), torch.cat(list(loader.part(1)))
    assert first.shape[0] == 3 and second.shape[0] == 2
    pixels = torch.cat([first, second])[:, :, 0, 0].long()  # (5, 3)
    pids = {int(p) for p in pixels[:, 0] + 251 * pixels[:, 1] + 251**2 * pixels[:, 2]}
    assert len(pids) == 1 and os.getpid() not in pids  # one worker process served both parts
    # real files through a worker process: the same batches as in this process
    names = [*PHOTOS, "camera"]
    got = _batches(photos, names, preprocess, batch_size=2, workers=1, decode="tensor")
    assert torch.equal(got, _batches(photos, names, preprocess, batch_size=5, workers=0,
                                     decode="tensor"))  # fmt: skip


def test_resolve_decode(monkeypatch, preprocess):
    cpu = torch.device("cpu")
    assert resolve_decode("cpu", cpu) == "pil" and resolve_decode("auto", cpu) == "pil"
    with pytest.raises(ConfigError, match="--decode gpu needs a CUDA device"):
        resolve_decode("gpu", cpu)
    with pytest.raises(ConfigError, match="expected one of cpu, gpu, auto"):
        resolve_decode("nvjpeg", cpu)
    # a CUDA device whose torchvision decodes JPEGs (pretended: no GPU here)
    monkeypatch.setattr(gallery_loader, "gpu_decode_available", lambda device: True)
    cuda, odd = torch.device("cuda"), open_clip.image_transform(224, False, resize_mode="longest")
    assert resolve_decode("auto", cuda, preprocess) == "tensor" == resolve_decode("gpu", cuda)
    assert resolve_decode("cpu", cuda, preprocess) == "pil"
    assert resolve_decode("auto", cuda, odd) == "pil"  # no tensor form: auto keeps PIL
    with pytest.raises(ConfigError, match="has no tensor form"):
        resolve_decode("gpu", cuda, odd)


class _Tower(nn.Module):
    """A stand-in image tower that records the autocast state it ran under."""

    def __init__(self) -> None:
        super().__init__()
        self.visual = nn.Linear(3 * 224 * 224, 4)
        self.visual.output_dim = 4
        self.token_embedding = nn.Embedding(2, 3)
        self.seen = []

    def encode_image(self, x: torch.Tensor) -> torch.Tensor:
        self.seen.append((torch.is_autocast_enabled("cpu"), torch.get_autocast_dtype("cpu")))
        return self.visual(x.flatten(1))


def test_features_are_encoded_under_the_runtimes_autocast(preprocess, photos):
    bf16 = Runtime(torch.device("cpu"), Precision("bf16", torch.bfloat16, False), seed=0)
    tower, names = _Tower(), list(PHOTOS)
    batches = ImageBatches([(photos, names)], preprocess, torch.device("cpu"), batch_size=3,
                           workers=0)  # fmt: skip
    feats = features.encode_images(tower, batches.part(0), len(names), bf16, "photos")
    assert tower.seen == [(True, torch.bfloat16)] * 2  # batches of 3 and 2
    assert feats.dtype == torch.float32 and feats.shape == (5, 4)
    # the bf16 matmul's rounding shows against fp32, within bf16's precision
    exact = tower.visual(_reference(preprocess, photos, names).flatten(1))
    assert not torch.equal(feats, exact)
    torch.testing.assert_close(feats, exact.detach(), rtol=0.05, atol=0.05)


def test_the_decode_path_keys_the_feature_cache(monkeypatch, preprocess, photos):
    """The tensor path's pixels differ (within 1/255), so its features get their own key; the
    PIL path's key is unchanged (its pixels are the same as before the split transform)."""
    from labshared.data.composed_retrieval import CIRBenchmark, CIRQuery
    from rtd_cli.config import EvalConfig

    specs = []

    def record(name, spec, compute, enabled):
        specs.append(spec)
        return compute()

    monkeypatch.setattr(features, "cached_tensors", record)
    monkeypatch.setattr(features, "weights_id", lambda info: {"weights": "w"})
    bench = CIRBenchmark("cirr", "val", [CIRQuery("0", "chelsea", ("x",))], ["coffee"], photos)
    fp32 = Runtime(torch.device("cpu"), Precision("fp32", torch.float32, False), seed=0)
    tower = _Tower()
    for path in ("pil", "tensor"):
        monkeypatch.setattr(features, "resolve_decode", lambda *args, p=path: p)
        (feats, index), = features.benchmarks_features(
            [bench], tower, preprocess, EvalConfig(workers=0), fp32, None
        )  # fmt: skip
        assert feats.shape == (2, 4) and index == {"coffee": 0, "chelsea": 1}
    assert "decode" not in specs[0] and specs[1]["decode"]["version"] == TENSOR_PATH_VERSION
    assert {k: v for k, v in specs[1].items() if k != "decode"} == specs[0]


def test_eval_cli_decode_flag(tmp_path):
    runner = CliRunner()
    common = ["eval", "--dataset", "toy", "--phi", str(tmp_path / "phi.pt")]
    out = runner.invoke(app, [*common, "--decode", "auto", "--workers", "3", "--dry-run"])
    assert out.exit_code == 0, out.output
    assert '"decode": "auto"' in out.output and '"workers": 3' in out.output
    bad = runner.invoke(app, [*common, "--decode", "nvjpeg", "--dry-run"])
    assert bad.exit_code == 1 and "--decode 'nvjpeg' is unknown" in bad.output
    run_dir = tmp_path / "run"
    gpu = runner.invoke(app, [*common, "--decode", "gpu", "--device", "cpu", "-o", str(run_dir)])
    assert gpu.exit_code == 1 and "--decode gpu needs a CUDA device" in gpu.output
    assert not run_dir.exists()
