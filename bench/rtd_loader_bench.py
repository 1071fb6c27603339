"""Images per second of `rtd eval`'s gallery loader, alone and in front of the image tower.

The loader is `rtd_cli.gallery_loader.ImageBatches`, the one `rtd eval` uses: DataLoader
workers decode COCO-sized JPEGs (640 x 480, synthetic but photo-like: crops of
scikit-image photos with sensor-like noise, quality 90, as COCO's files are) and resize /
centre-crop them to 224 px (`--decode cpu`, PIL), or read their bytes for the main
process to decode with torchvision (`--decode gpu`: nvJPEG on CUDA; on a CPU device the
same tensor code runs on the CPU).

    python bench/rtd_loader_bench.py [--device cpu] [--images 512] [--workers 0,1,2]

main() benches the loader alone for each worker count and decode path and prints a table
plus one JSON line. `gallery_throughput` (called by bench/gpu_check.py) puts the loader in
front of `encode_image` under autocast, with random weights built from the open_clip
config by name (nothing is downloaded).

Rates are steady state: timed from the arrival of the first round of batches (one per
worker; worker start-up and the model's first calls excluded) to the last batch's, so use
several rounds (images >= 3 x workers x batch size); `img_per_s_total` includes them.
"""

from __future__ import annotations

import argparse
import io
import json
import os
import resource
import sys
import tempfile
import time
from collections.abc import Iterable
from pathlib import Path

import numpy as np
import open_clip
import skimage.data
import torch
from PIL import Image

from labshared.console import render_table
from labshared.data.composed_retrieval import FileImages
from labshared.device import Runtime, resolve_precision, set_tf32
from rtd_cli.features import encode_batch
from rtd_cli.gallery_loader import ImageBatches, decode_jpegs, resolve_decode, split_clip_transform
from rtd_cli.model import build_clip_bundle

PHOTOS = ("astronaut", "coffee", "chelsea", "rocket", "hubble_deep_field", "immunohistochemistry")
UNIQUE_JPEGS = 64  # distinct files; the rest repeat their bytes (decoding cost is the same)


def make_jpegs(
    folder: Path, n: int, size: tuple[int, int] = (640, 480), seed: int = 0
) -> list[str]:
    """Write `n` photo-like JPEGs of `size` (w, h) into `folder`; returns their file names.

    Each distinct image is a random crop of a scikit-image photo, resized to `size`,
    randomly mirrored, with Gaussian noise (sigma 4 levels) for a realistic entropy, saved
    at quality 90 (~70-110 KB at 640 x 480, near COCO's average).
    """
    folder = Path(folder)
    folder.mkdir(parents=True, exist_ok=True)
    rng = np.random.default_rng(seed)
    photos = [
        np.asarray(Image.fromarray(getattr(skimage.data, p)()).convert("RGB")) for p in PHOTOS
    ]
    pool = []
    for k in range(min(n, UNIQUE_JPEGS)):
        photo = photos[k % len(photos)]
        h, w = photo.shape[:2]
        ch, cw = rng.integers(h // 2, h + 1), rng.integers(w // 2, w + 1)
        top, left = rng.integers(0, h - ch + 1), rng.integers(0, w - cw + 1)
        crop = Image.fromarray(photo[top : top + ch, left : left + cw]).resize(size, Image.BICUBIC)
        pixels = np.asarray(crop, dtype=np.float32)
        if rng.random() < 0.5:
            pixels = pixels[:, ::-1]
        pixels = np.clip(pixels + rng.normal(0, 4, pixels.shape), 0, 255).astype(np.uint8)
        buf = io.BytesIO()
        Image.fromarray(pixels).save(buf, "JPEG", quality=90)
        pool.append(buf.getvalue())
    names = [f"{i:07d}.jpg" for i in range(n)]
    for i, name in enumerate(names):
        (folder / name).write_bytes(pool[i % len(pool)])
    return names


def _decode_path(decode: str, device: torch.device) -> str:
    """`cpu` -> PIL; `gpu` -> the tensor path on `device` (on a CPU device too, so a CPU
    smoke run covers its code); `auto` as `rtd eval --decode auto`."""
    if decode == "cpu":
        return "pil"
    if decode == "gpu":
        return "tensor"
    return resolve_decode(decode, device)


def _timed(batches: Iterable, step, device: torch.device, workers: int) -> tuple[float, float, int]:
    """(steady-state img/s, total img/s, images) of `step(batch)` over `batches`.

    Steady state starts when the first round of batches is in (one batch per worker: the
    workers start together, so their first batches arrive together and would inflate a
    rate counted from the first one); with no more batches than that, the total rate."""
    sync = torch.cuda.synchronize if device.type == "cuda" else (lambda: None)
    warmup = max(1, workers)
    start = time.perf_counter()
    warm_at, warm_n, total = None, 0, 0
    for k, batch in enumerate(batches, 1):
        step(batch)
        sync()
        total += len(batch)
        if k == warmup:
            warm_at, warm_n = time.perf_counter(), total
    end = time.perf_counter()
    whole = total / (end - start)
    steady = (total - warm_n) / (end - warm_at) if warm_at and total > warm_n else whole
    return steady, whole, total


def _cpu_seconds() -> float:
    """CPU seconds of this process (all threads) and of its reaped children (the workers)."""
    own, kids = (
        resource.getrusage(resource.RUSAGE_SELF),
        resource.getrusage(resource.RUSAGE_CHILDREN),
    )
    return own.ru_utime + own.ru_stime + kids.ru_utime + kids.ru_stime


def loader_throughput(
    *,
    folder: str | Path,
    names: list[str],
    preprocess,
    workers: int,
    batch_size: int,
    decode: str = "cpu",
    device: str = "cpu",
) -> dict:
    """img/s of the loader alone: files in `folder` -> normalised batches on `device`.

    Args:
        decode: `cpu` (PIL in the workers), `gpu` (torchvision decode_jpeg on `device`, on
            a CPU device too) or `auto`.

    Returns:
        {"img_per_s", "img_per_s_total", "workers", "decode", "path", "batch_size", "images",
        "cpu_ms_per_img" (CPU time of this process and its workers per image: the work,
        whatever else the machine runs)}.
    """
    dev = torch.device(device)
    path = _decode_path(decode, dev)
    source = FileImages({n: Path(folder) / n for n in names}, Path(folder))
    batches = ImageBatches(
        [(source, names)], preprocess, dev, batch_size=batch_size, workers=workers, decode=path
    )
    cpu_before = _cpu_seconds()
    steady, total, n = _timed(batches.part(0), lambda b: None, dev, workers)
    del batches  # its workers exit and are reaped, so their CPU time is counted
    cpu_ms = (_cpu_seconds() - cpu_before) * 1000 / n
    return {"img_per_s": steady, "img_per_s_total": total, "workers": workers, "decode": decode,
            "path": path, "batch_size": batch_size, "images": n,
            "cpu_ms_per_img": cpu_ms}  # fmt: skip


def _peak_mem_gib(device: torch.device) -> float:
    """CUDA: peak allocated by torch; CPU: this process's peak resident set."""
    if device.type == "cuda":
        return torch.cuda.max_memory_allocated(device) / 2**30
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 2**20


def gallery_throughput(
    *,
    device: str,
    backbone: str,
    n_images: int,
    workers: int,
    batch_size: int,
    decode: str = "cpu",
) -> dict:
    """img/s of `rtd eval`'s gallery encoding: the loader + `encode_image` under autocast
    (bf16 on GPUs), random weights of `backbone`, on `n_images` synthetic JPEGs.

    Returns:
        {"img_per_s", "img_per_s_total", "decode", "path", "workers", "batch_size",
        "images", "precision", "peak_mem_gib"}.
    """
    dev = torch.device(device)
    prec = resolve_precision("auto", dev)
    runtime = Runtime(dev, prec, seed=0, tf32=set_tf32(prec))
    model, preprocess, _, _ = build_clip_bundle(backbone, "random", dev)
    path = _decode_path(decode, dev)
    with tempfile.TemporaryDirectory(prefix="rtd-loader-bench-") as tmp:
        names = make_jpegs(Path(tmp), n_images)
        source = FileImages({n: Path(tmp) / n for n in names}, Path(tmp))
        batches = ImageBatches(
            [(source, names)], preprocess, dev, batch_size=batch_size, workers=workers,
            decode=path,
        )  # fmt: skip
        if dev.type == "cuda":
            torch.cuda.reset_peak_memory_stats(dev)
        steady, total, n = _timed(
            batches.part(0), lambda b: encode_batch(model, b, runtime), dev, workers
        )
    return {"img_per_s": steady, "img_per_s_total": total, "decode": decode, "path": path,
            "workers": workers, "batch_size": batch_size, "images": n,
            "precision": runtime.precision.name, "peak_mem_gib": _peak_mem_gib(dev)}  # fmt: skip


AGREEMENT_PHOTOS = (*PHOTOS, "camera", "coins", "retina")


def decode_agreement(*, device: str, backbone: str = "ViT-B-32") -> dict:
    """How far the tensor path (torchvision decode_jpeg on `device` + the two-pass tensor
    resize) is from the PIL path on real scikit-image photos saved as JPEG (quality 90).

    Returns:
        {"photos", "max_abs_levels", "mean_abs_levels" (uint8 pixels after resize and crop),
        "min_cosine", "mean_cosine" (fp32 `encode_image` features of `backbone`, random
        weights, of the two inputs)}.
    """
    dev = torch.device(device)
    model, preprocess, _, _ = build_clip_bundle(backbone, "random", dev)
    transform = split_clip_transform(preprocess)
    pil, tensor = [], []
    for name in AGREEMENT_PHOTOS:
        buf = io.BytesIO()
        Image.fromarray(getattr(skimage.data, name)()).convert("RGB").save(buf, "JPEG", quality=90)
        pil.append(transform.pil_pixels(Image.open(io.BytesIO(buf.getvalue())).convert("RGB")))
        data = torch.frombuffer(bytearray(buf.getvalue()), dtype=torch.uint8)
        tensor.append(transform.tensor_pixels(decode_jpegs([data], dev)[0]).cpu())
    pil_px, tensor_px = torch.stack(pil), torch.stack(tensor)
    diff = (pil_px.int() - tensor_px.int()).abs()
    with torch.no_grad():
        feats = [
            model.encode_image(transform.normalize(px.to(dev))).float()
            for px in (pil_px, tensor_px)
        ]
    cos = torch.nn.functional.cosine_similarity(*feats, dim=-1).cpu()
    return {"photos": len(AGREEMENT_PHOTOS), "max_abs_levels": int(diff.max()),
            "mean_abs_levels": float(diff.float().mean()), "min_cosine": float(cos.min()),
            "mean_cosine": float(cos.mean()), "device": device, "backbone": backbone}  # fmt: skip


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--device", default="cpu", help="where batches go (cpu or cuda)")
    parser.add_argument("--images", type=int, default=512, help="synthetic 640x480 JPEGs")
    parser.add_argument("--batch-size", type=int, default=64)
    parser.add_argument("--workers", default="0,1,2", help="comma-separated worker counts")
    parser.add_argument("--decodes", default="cpu,gpu", help="cpu (PIL) and/or gpu (tensor)")
    parser.add_argument(
        "--agreement-backbone", default="ViT-B-32", help="features compared by decode path "
        "(random weights); '' skips the comparison"
    )  # fmt: skip
    args = parser.parse_args()
    if args.device == "cpu":
        # one thread, as each DataLoader worker has: per-core costs, and no OpenMP
        # oversubscription when the tensor path resizes in this process on a busy machine
        torch.set_num_threads(1)
    preprocess = open_clip.image_transform(224, is_train=False)  # ViT-B/L-14's val transform
    rows = []
    with tempfile.TemporaryDirectory(prefix="rtd-loader-bench-") as tmp:
        names = make_jpegs(Path(tmp), args.images)
        mean_kb = sum(os.path.getsize(Path(tmp) / n) for n in names) / len(names) / 1024
        for decode in args.decodes.split(","):
            for workers in (int(w) for w in args.workers.split(",")):
                rows.append(loader_throughput(
                    folder=tmp, names=names, preprocess=preprocess, workers=workers,
                    batch_size=args.batch_size, decode=decode, device=args.device,
                ))  # fmt: skip
                print(f"{decode} x {workers} workers: {rows[-1]['img_per_s']:.0f} img/s",
                      file=sys.stderr)  # fmt: skip
    print(
        f"rtd eval loader, {args.images} JPEGs 640x480 (mean {mean_kb:.0f} KB) -> 224 px, "
        f"batch {args.batch_size}, device {args.device}, torch threads "
        f"{torch.get_num_threads()}, {os.cpu_count()} cores, load average "
        f"{os.getloadavg()[0]:.1f}\n"
    )
    cells = [
        [r["decode"], r["path"], r["workers"], f"{r['img_per_s']:.0f}",
         f"{r['img_per_s'] / max(1, r['workers']):.0f}", f"{r['img_per_s_total']:.0f}",
         f"{r['cpu_ms_per_img']:.2f}"]
        for r in rows
    ]  # fmt: skip
    columns = ["decode", "path", "workers", "img/s", "img/s per worker", "img/s incl. start",
               "CPU ms/img"]  # fmt: skip
    print(render_table(columns, cells, markdown=True, align="llr"))
    agreement = None
    if args.agreement_backbone:
        agreement = decode_agreement(device=args.device, backbone=args.agreement_backbone)
        print(
            f"\ntensor vs PIL path on {agreement['photos']} scikit-image photos (JPEG q90): "
            f"pixels max {agreement['max_abs_levels']} / mean "
            f"{agreement['mean_abs_levels']:.5f} levels of 255; {args.agreement_backbone} "
            f"(random weights) feature cosine min {agreement['min_cosine']:.6f}"
        )
    summary = {"bench": "rtd_loader", "device": args.device, "images": args.images,
               "mean_kb": round(mean_kb, 1), "rows": rows, "agreement": agreement}  # fmt: skip
    print(json.dumps(summary))


if __name__ == "__main__":
    main()
