"""`rtd eval`'s image loader: benchmark images -> normalised (B, 3, H, W) batches on the device.

Two decode paths, one transform (open_clip's val transform: resize the shortest side,
bicubic with antialiasing, centre crop, `ToTensor`, normalise):

- `pil` (`--decode cpu`): DataLoader workers open each image with PIL through the
  benchmark's image source and apply the geometric part of the transform (resize, crop);
  they hand back uint8 pixels, and the device normalises the batch. Bit-for-bit the pixels
  `preprocess(image)` gives (tested), with a quarter of float32's bytes through the
  workers' queues, pinned memory and PCIe.
- `tensor` (`--decode gpu`): workers read the JPEG files' bytes only; the main process
  decodes the batch in one `torchvision.io.decode_jpeg(list, device=...)` call (nvJPEG on
  CUDA), then resizes (same size, same filter, in two passes rounded to uint8 as PIL's
  are) and centre-crops the uint8 tensors. Images that are not grey or YCbCr JPEG files
  (PNG, CMYK JPEGs, GeneCIS crops, hub columns, toy tensors) and JPEGs the decoder refuses
  take the PIL path within the same batch. Measured against PIL on scikit-image photos
  (tests/rtd/test_gallery_loader.py, README): decoding on the CPU is identical, and the
  resized pixels are within 1/255 of PIL's.

Several benchmark parts (FashionIQ categories, GeneCIS tasks) go through one DataLoader
whose batch sampler is pointed at one part at a time, so its workers persist from part to
part instead of being started again for each.
"""

from __future__ import annotations

import functools
import io
import os
import warnings
from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch
import torch.nn.functional as F
import torchvision.transforms.functional as TF
from open_clip.transform import MaybeConvertMode
from PIL import Image
from torchvision import io as tvio
from torchvision import transforms as T

from labshared.console import log
from labshared.data.composed_retrieval import FileImages
from labshared.errors import ConfigError
from rtd_cli.config import DECODES

# Bump when the tensor path's pixels change (it keys the feature cache under --decode gpu).
TENSOR_PATH_VERSION = 1
JPEG_MAGIC = b"\xff\xd8\xff"  # SOI marker + the first segment's marker byte
# start-of-frame markers (SOF0-SOF15 but DHT C4, JPG C8, DAC CC): they hold the component count
_SOF_MARKERS = frozenset(range(0xC0, 0xD0)) - {0xC4, 0xC8, 0xCC}


_TENSOR_MODES = {T.InterpolationMode.BICUBIC: "bicubic", T.InterpolationMode.BILINEAR: "bilinear"}


@dataclass(frozen=True)
class ClipTransform:
    """open_clip's val transform taken apart: geometry on uint8 pixels, then normalisation.

    Attributes:
        geometry: the transform's torchvision `Resize` (and `CenterCrop`) objects.
        mean, std: the `Normalize` statistics (pixels in [0, 1]).
    """

    geometry: tuple[Any, ...]
    mean: tuple[float, ...]
    std: tuple[float, ...]

    @property
    def has_tensor_form(self) -> bool:
        """Whether `tensor_pixels` reproduces the geometry (bicubic/bilinear resizes)."""
        return all(
            op.interpolation in _TENSOR_MODES and op.max_size is None
            for op in self.geometry
            if isinstance(op, T.Resize)
        )

    def pil_pixels(self, image: Image.Image) -> torch.Tensor:
        """uint8 (3, h, w): the geometry applied by PIL, as `preprocess` does."""
        for op in self.geometry:
            image = op(image)
        return TF.pil_to_tensor(image.convert("RGB"))

    def tensor_pixels(self, image: torch.Tensor) -> torch.Tensor:
        """uint8 (3, h, w) from uint8 (3, H, W), on the image's device: PIL's geometry with
        tensor kernels (measured within one level of 255; mean difference ~1e-4 levels)."""
        for op in self.geometry:
            if isinstance(op, T.Resize):
                image = _resize_like_pil(image, op)
            else:
                image = TF.center_crop(image, op.size)
        return image

    def normalize(self, pixels: torch.Tensor) -> torch.Tensor:
        """float32 (B, 3, h, w) from uint8 (B, 3, h, w): `ToTensor`'s /255, then `Normalize`,
        the same float32 operations in the same order (so equal to `preprocess`)."""
        return TF.normalize(pixels.float().div(255), self.mean, self.std)


def _resized_size(height: int, width: int, size: int | Sequence[int]) -> tuple[int, int]:
    """torchvision `Resize`'s output size: an int (or [int]) sets the shorter side, the
    longer one scaled and truncated; a pair is (h, w)."""
    if isinstance(size, Sequence) and len(size) == 2:
        return int(size[0]), int(size[1])
    short = int(size if isinstance(size, int) else size[0])
    if width <= height:
        return int(short * height / width), short
    return short, int(short * width / height)


def _resize_like_pil(image: torch.Tensor, op: T.Resize) -> torch.Tensor:
    """uint8 (3, h, w): PIL's resampling in two passes, width then height, each rounded and
    clipped to uint8 as PIL's are. One float pass (torchvision's tensor resize on GPUs)
    skips the clipping between them, and bicubic overshoot at sharp edges then differs
    from PIL by up to 5 levels on real photos; two passes stay within 1."""
    height, width = image.shape[-2:]
    new_h, new_w = _resized_size(height, width, op.size)
    mode, x = _TENSOR_MODES[op.interpolation], image[None].float()  # (1, 3, H, W)
    for size, changed in (((height, new_w), new_w != width), ((new_h, new_w), new_h != height)):
        if changed:
            x = F.interpolate(x, size=size, mode=mode, antialias=True, align_corners=False)
            x = x.round_().clamp_(0, 255)
    return x[0].to(torch.uint8)


def split_clip_transform(preprocess: Any) -> ClipTransform | None:
    """`preprocess` as a `ClipTransform` when it is open_clip's val transform for
    `shortest`/`squash` resizing (`Resize` [`CenterCrop`] [`MaybeConvertMode`]
    `ToTensor` `Normalize`); None for any other (it then runs whole, in the workers)."""
    ops = list(getattr(preprocess, "transforms", ()))
    geometry: list[Any] = []
    while ops and type(ops[0]) in (T.Resize, T.CenterCrop):
        geometry.append(ops.pop(0))
    if ops and isinstance(ops[0], MaybeConvertMode) and ops[0].mode == "RGB":
        ops.pop(0)
    if not geometry or type(geometry[0]) is not T.Resize or len(ops) != 2:
        return None
    to_tensor, normalize = ops
    if not isinstance(to_tensor, T.ToTensor) or type(normalize) is not T.Normalize:
        return None
    return ClipTransform(
        tuple(geometry), tuple(map(float, normalize.mean)), tuple(map(float, normalize.std))
    )


# --------------------------------------------------------------------------- decode choice
def _tiny_jpeg() -> bytes:
    buf = io.BytesIO()
    Image.new("RGB", (16, 16), (200, 30, 60)).save(buf, "JPEG")
    return buf.getvalue()


@functools.cache
def gpu_decode_available(device: str) -> bool:
    """Whether torchvision decodes JPEGs on `device` here (tried once on a 16 px JPEG:
    a torchvision built without nvJPEG raises)."""
    if not device.startswith("cuda") or not torch.cuda.is_available():
        return False
    try:
        decode_jpegs([torch.frombuffer(bytearray(_tiny_jpeg()), dtype=torch.uint8)], device)
    except RuntimeError as exc:
        log(f"[dim]torchvision cannot decode JPEGs on {device} ({exc}); decoding on the CPU[/dim]")
        return False
    return True


def resolve_decode(decode: str, device: torch.device, preprocess: Any = None) -> str:
    """`--decode cpu|gpu|auto` on `device` -> the path: `pil` or `tensor`.

    `auto` is `tensor` on a CUDA device where torchvision decodes JPEGs and (when
    `preprocess` is given) the transform has a tensor form; else `pil`.

    Raises:
        ConfigError: an unknown value, or `gpu` without a CUDA device that decodes JPEGs
            or with a transform that has no tensor form.
    """
    if decode not in DECODES:
        raise ConfigError(f"--decode {decode!r}: expected one of {', '.join(DECODES)}")
    if decode == "cpu":
        return "pil"
    available = device.type == "cuda" and gpu_decode_available(str(device))
    if decode == "gpu" and not available:
        raise ConfigError(
            f"--decode gpu needs a CUDA device on which torchvision decodes JPEGs "
            f"(the device is {device}); use --decode cpu or auto"
        )
    if available and preprocess is not None:
        transform = split_clip_transform(preprocess)
        if not (transform and transform.has_tensor_form):
            if decode == "gpu":
                raise _no_tensor_form(preprocess)
            return "pil"
    return "tensor" if available else "pil"


def _no_tensor_form(preprocess: Any) -> ConfigError:
    return ConfigError(
        f"--decode gpu: the backbone's transform has no tensor form ({preprocess!r}); "
        "use --decode cpu"
    )


def decode_jpegs(data: list[torch.Tensor], device: str | torch.device) -> list[torch.Tensor]:
    """RGB uint8 (3, H, W) images from JPEG bytes (1-D uint8 CPU tensors), on `device`."""
    with warnings.catch_warnings():
        # torchvision 0.29 deprecates its decoders in favour of TorchCodec, which is not a
        # dependency here; decode_jpeg is unchanged and still the batched nvJPEG entry point.
        warnings.simplefilter("ignore", DeprecationWarning)
        return tvio.decode_jpeg(data, mode=tvio.ImageReadMode.RGB, device=device)


def default_workers(device: torch.device) -> int:
    """DataLoader workers when `--workers` is not given: next to a GPU, every core this
    process's share of the machine has but one (the one feeding the GPU); on a CPU, none
    (the encoder needs the cores more than decoding does)."""
    if device.type != "cuda":
        return 0
    cores = len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else os.cpu_count()
    share = (cores or 1) // max(1, int(os.environ.get("LOCAL_WORLD_SIZE", "1")))
    return max(1, share - 1)


# --------------------------------------------------------------------------- datasets
class _Pixels(torch.utils.data.Dataset):
    """Item i: uint8 (3, h, w) pixels of image i, or `preprocess(image)` whole (float32)
    when the transform does not split."""

    def __init__(self, items: Sequence[tuple[Any, str]], transform, preprocess) -> None:
        self.items, self.transform, self.preprocess = items, transform, preprocess

    def __len__(self) -> int:
        return len(self.items)

    def __getitem__(self, i: int) -> torch.Tensor:
        source, name = self.items[i]
        if self.transform is None:
            return self.preprocess(source.load(name))
        return self.transform.pil_pixels(source.load(name))


class _JpegBytes(torch.utils.data.Dataset):
    """Item i: `(i, 1-D uint8 file bytes)` for a grey or colour (YCbCr) JPEG file, else
    `(i, uint8 pixels)` by the PIL path."""

    def __init__(self, items: Sequence[tuple[Any, str]], transform: ClipTransform) -> None:
        self.items, self.transform = items, transform

    def __len__(self) -> int:
        return len(self.items)

    def __getitem__(self, i: int) -> tuple[int, torch.Tensor]:
        source, name = self.items[i]  # batched by `_pack`
        path = source.paths[name] if isinstance(source, FileImages) else None
        if path is not None and path.is_file():
            data = Path(path).read_bytes()
            # grey and YCbCr JPEGs only: PIL's CMYK conversion is the reference for the rest
            if data[:3] == JPEG_MAGIC and jpeg_components(data) in (1, 3):
                return i, torch.frombuffer(bytearray(data), dtype=torch.uint8)
        # not a JPEG file (or missing: the source's load raises its layout error)
        return i, self.transform.pil_pixels(source.load(name))


def jpeg_components(data: bytes) -> int | None:
    """The number of colour components a JPEG's frame header declares (1 grey, 3 YCbCr,
    4 CMYK/YCCK), or None when the header cannot be read."""
    pos = 2  # after SOI
    while pos + 9 < len(data) and data[pos] == 0xFF:
        marker = data[pos + 1]
        if marker == 0xFF:  # fill byte
            pos += 1
            continue
        if marker in _SOF_MARKERS:
            return data[pos + 9]  # FF Cn, length (2), precision (1), height (2), width (2), Nf
        pos += 2 + int.from_bytes(data[pos + 2 : pos + 4], "big")
    return None


def _pack(batch: list[tuple[int, torch.Tensor]]) -> tuple[torch.Tensor, ...]:
    """A `_JpegBytes` batch as five tensors, whatever its size: every tensor a worker sends
    travels through its own shared-memory file, and one per image (256 x 4 prefetched x 16
    workers) would run into the open-file limit.

    Returns:
        (item indices (B,), is-JPEG mask (B,), the JPEGs' bytes end to end (1-D uint8),
        their sizes (J,), the other images' pixels (B - J, 3, h, w) uint8)."""
    is_jpeg = torch.tensor([t.dim() == 1 for _, t in batch])
    jpegs = [t for _, t in batch if t.dim() == 1]
    others = [t for _, t in batch if t.dim() != 1]
    return (
        torch.tensor([i for i, _ in batch]),
        is_jpeg,
        torch.cat(jpegs) if jpegs else torch.empty(0, dtype=torch.uint8),
        torch.tensor([len(t) for t in jpegs], dtype=torch.long),
        torch.stack(others) if others else torch.empty(0, 3, 1, 1, dtype=torch.uint8),
    )


class _PartBatches(torch.utils.data.Sampler):
    """Index batches of one part (`span`, set before each pass), in order; iterated in the
    main process, so re-pointing it does not restart persistent workers."""

    def __init__(self, batch_size: int) -> None:
        self.batch_size, self.span = batch_size, (0, 0)

    def __iter__(self) -> Iterator[list[int]]:
        start, stop = self.span
        for s in range(start, stop, self.batch_size):
            yield list(range(s, min(s + self.batch_size, stop)))

    def __len__(self) -> int:
        start, stop = self.span
        return -(-(stop - start) // self.batch_size)


# --------------------------------------------------------------------------- the loader
class ImageBatches:
    """Normalised image batches of several benchmark parts on `device`, through one
    DataLoader (workers persist across parts when there are several).

    Args:
        parts: per part, its image source (`load(name)`) and the names to encode.
        preprocess: open_clip's val transform of the model.
        device: where batches go (and where the `tensor` path decodes).
        batch_size: images per batch.
        workers: DataLoader worker processes (0: decode in this process).
        decode: `pil` or `tensor` (see the module docstring; `resolve_decode`).

    Raises:
        ConfigError: `tensor` with a transform that has no tensor form.
    """

    def __init__(
        self,
        parts: Sequence[tuple[Any, Sequence[str]]],
        preprocess: Any,
        device: torch.device,
        *,
        batch_size: int,
        workers: int,
        decode: str = "pil",
    ) -> None:
        self.transform = split_clip_transform(preprocess)
        if decode == "tensor" and not (self.transform and self.transform.has_tensor_form):
            raise _no_tensor_form(preprocess)
        self.device, self.decode = device, decode
        self.items = [(source, name) for source, names in parts for name in names]
        self.starts = [0]
        for _, names in parts:
            self.starts.append(self.starts[-1] + len(names))
        self.sampler = _PartBatches(batch_size)
        dataset = (
            _JpegBytes(self.items, self.transform)
            if decode == "tensor"
            else _Pixels(self.items, self.transform, preprocess)
        )
        extra = {}
        if workers > 0:
            # a worker builds whole batches; two each keep the queue full for uint8 pixels
            # (B x 150 KB at 224 px), four for the few-dozen-KB JPEG bytes
            extra = {
                "persistent_workers": len(parts) > 1,
                "prefetch_factor": 4 if decode == "tensor" else 2,
            }
        self.loader = torch.utils.data.DataLoader(
            dataset,
            batch_sampler=self.sampler,
            num_workers=workers,
            pin_memory=device.type == "cuda",
            collate_fn=_pack if decode == "tensor" else None,
            **extra,
        )

    def part(self, index: int) -> Iterator[torch.Tensor]:
        """float32 (B, 3, h, w) normalised batches of part `index`, in name order."""
        self.sampler.span = (self.starts[index], self.starts[index + 1])
        for batch in self.loader:
            if self.decode == "tensor":
                yield self._tensor_batch(batch)
            elif self.transform is None:
                yield batch.to(self.device, non_blocking=True)
            else:
                yield self.transform.normalize(batch.to(self.device, non_blocking=True))

    def _tensor_batch(self, packed: tuple[torch.Tensor, ...]) -> torch.Tensor:
        """Decode a `_pack`ed batch's JPEGs in one call, transform them on the device and put
        the PIL-path images in place; normalised float32 (B, 3, h, w)."""
        index, is_jpeg, data, sizes, others = packed
        chunks = torch.split(data, sizes.tolist()) if len(sizes) else ()
        jpegs = list(zip(index[is_jpeg].tolist(), chunks, strict=True))
        decoded = iter(self._jpeg_pixels(jpegs))
        rest = iter(others.to(self.device, non_blocking=True))
        pixels = [next(decoded) if j else next(rest) for j in is_jpeg.tolist()]
        return self.transform.normalize(torch.stack(pixels))

    def _jpeg_pixels(self, jpegs: list[tuple[int, torch.Tensor]]) -> list[torch.Tensor]:
        """uint8 (3, h, w) transformed pixels on the device, decoded in one call; a JPEG the
        decoder refuses takes the PIL path instead, as `--decode cpu` would."""
        if not jpegs:
            return []
        try:
            images = decode_jpegs([t for _, t in jpegs], self.device)
            return [self.transform.tensor_pixels(image) for image in images]
        except RuntimeError:
            pass  # one bad file fails the whole call: find it by decoding one at a time
        out = []
        for i, data in jpegs:
            try:
                out.append(self.transform.tensor_pixels(decode_jpegs([data], self.device)[0]))
            except RuntimeError:
                source, name = self.items[i]
                out.append(self.transform.pil_pixels(source.load(name)).to(self.device))
        return out
