"""Cost of the one fingerprint rule (`labshared.cache.fingerprint_files`) at CelebA size.

Every loader keys its caches by (relative path, size, mtime_ns) of every file it reads
(issue 16). This writes a CelebA-layout folder of 202,599 small files (`img_align_celeba/
000001.jpg` ..., 16 bytes each, plus the attribute and partition CSVs) in a temporary
folder and times, best of `--repeats`:

- `bare_stat`: a plain `os.stat` of each listed file, nothing else: the floor any
  stat-based fingerprint pays on this machine at this moment;
- `listed`: `fingerprint_files(root, names)` over the 202,599 listed names (how the
  file-list loaders call it);
- `walk`: `fingerprint_files(root)`, the `os.scandir` walk of the whole folder (how the
  Hugging Face folders are fingerprinted);
- `load_celeba`: the three splits of `load_celeba` (CSV parsing + fingerprint), the
  fingerprint's share of a load.

The inodes are warm (just written; dropping the page cache needs root): a first run on a
cold disk stats from the device and is slower.

    python bench/fingerprint_bench.py                 # 202,599 files
    python bench/fingerprint_bench.py --n 20000 --repeats 1
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import tempfile
import time
from pathlib import Path

from labshared.cache import fingerprint_files
from labshared.data.group_shift import load_celeba

CELEBA_FILES = 202_599


def write_celeba_layout(root: Path, n: int) -> list[str]:
    """CelebA's official layout with `n` 16-byte images; returns the image names."""
    images = root / "img_align_celeba"
    images.mkdir(parents=True)
    names = [f"{i:06d}.jpg" for i in range(1, n + 1)]
    for name in names:
        with open(images / name, "wb") as f:
            f.write(b"\xff\xd8 not a jpeg \xff\xd9")
    # the official partition: the first 162,770 train, the next 19,867 val, the rest test
    cut1, cut2 = round(n * 162_770 / CELEBA_FILES), round(n * 182_637 / CELEBA_FILES)
    parts = [0 if i < cut1 else 1 if i < cut2 else 2 for i in range(n)]
    (root / "list_eval_partition.csv").write_text(
        "image_id,partition\n" + "".join(f"{m},{p}\n" for m, p in zip(names, parts, strict=True))
    )
    (root / "list_attr_celeba.csv").write_text(
        "image_id,Blond_Hair,Male\n"
        + "".join(
            f"{m},{1 if i % 7 == 0 else -1},{1 if i % 2 else -1}\n" for i, m in enumerate(names)
        )
    )
    return [f"img_align_celeba/{m}" for m in names]


def best_of(fn, repeats: int) -> float:
    """Smallest wall time of `repeats` calls, in seconds."""
    times = []
    for _ in range(repeats):
        t0 = time.perf_counter()
        fn()
        times.append(time.perf_counter() - t0)
    return min(times)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--n", type=int, default=CELEBA_FILES, help="image files to write")
    parser.add_argument("--repeats", type=int, default=3)
    args = parser.parse_args()
    with tempfile.TemporaryDirectory(prefix="fp-bench-") as tmp:
        root = Path(tmp)
        t0 = time.perf_counter()
        names = write_celeba_layout(root, args.n)
        write_s = time.perf_counter() - t0
        paths = [os.path.join(tmp, n) for n in names]
        bare = best_of(lambda: [os.stat(p) for p in paths], args.repeats)
        listed = best_of(lambda: fingerprint_files(root, names), args.repeats)
        walk = best_of(lambda: fingerprint_files(root), args.repeats)
        load = best_of(
            lambda: [load_celeba(root, s) for s in ("train", "val", "test")], args.repeats
        )
    result = {
        "files": args.n,
        "cpus": os.cpu_count(),
        "machine": platform.processor() or platform.machine(),
        "load_avg_1min": round(os.getloadavg()[0], 1),
        "write_s": round(write_s, 2),
        "bare_stat_s": round(bare, 3),
        "listed_s": round(listed, 3),
        "walk_s": round(walk, 3),
        "load_celeba_3_splits_s": round(load, 3),
        "listed_us_per_file": round(listed / args.n * 1e6, 2),
    }
    print(
        f"{args.n:,} files: bare os.stat loop {bare:.2f} s, fingerprint of the listed names "
        f"{listed:.2f} s ({result['listed_us_per_file']} us/file), scandir walk {walk:.2f} s, "
        f"load_celeba train+val+test {load:.2f} s (fingerprint included)"
    )
    print(json.dumps(result))


if __name__ == "__main__":
    main()
