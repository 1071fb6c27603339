"""Time and peak extra memory of `rtd eval`'s ranking core at CIRCO scale.

1,000 queries against 123,403 synthetic L2-normalised 768-d gallery features (CIRCO's
gallery: the COCO 2017 unlabeled set; ViT-L/14 width), top-50. Three ways:

- `chunked`: `rtd_cli.retrieval.chunked_topk` (query chunks x gallery chunks, running top-k);
- `full-topk`: one (Q, N) matrix product, then top-k;
- `full-argsort`: one (Q, N) product, then a full argsort, as the official validators do
  (`SEARLE`/`RTD validate.py`; they then also index an array of names with it, not
  reproduced here).

Each way runs in its own subprocess, so peak memory is measured cleanly: CPU peak extra =
the process's peak resident set (ru_maxrss) minus its resident set just before the call
(features already built in place); CUDA: `max_memory_allocated` minus the memory held
before the call.

    python bench/rtd_retrieval_bench.py [--device cpu|cuda] [--repeats 3]

Prints a Markdown table on stdout and writes JSON with `--json PATH`.
"""

from __future__ import annotations

import argparse
import json
import os
import resource
import subprocess
import sys
import time

import torch

from labshared.console import render_table

QUERIES, GALLERY, DIM, TOP_K = 1000, 123_403, 768, 50
WAYS = ("chunked", "full-topk", "full-argsort")


def _rss_bytes() -> int:
    with open("/proc/self/statm") as f:
        return int(f.read().split()[1]) * resource.getpagesize()


def unit_rows(n: int, dim: int, device: torch.device | str, seed: int) -> torch.Tensor:
    """(n, dim) random unit vectors, generated in blocks into one buffer (no full-size
    temporaries); also the gallery of bench/gpu_check.py's retrieval section."""
    out = torch.empty(n, dim, device=device)
    g = torch.Generator(device=device).manual_seed(seed)
    for s in range(0, n, 8192):
        block = out[s : s + 8192]
        block.normal_(generator=g)
        block.div_(block.norm(dim=1, keepdim=True))
    return out


def run_one(way: str, device_name: str, repeats: int) -> dict:
    from rtd_cli.retrieval import chunked_topk

    device = torch.device(device_name)
    queries = unit_rows(QUERIES, DIM, device, 0)
    gallery = unit_rows(GALLERY, DIM, device, 1)

    def call():
        if way == "chunked":
            return chunked_topk(queries, gallery, TOP_K, device=device)[1]
        sims = queries @ gallery.T
        if way == "full-topk":
            return sims.topk(TOP_K, dim=1).indices
        return sims.argsort(dim=1, descending=True)[:, :TOP_K]

    sync = torch.cuda.synchronize if device.type == "cuda" else (lambda: None)
    if device.type == "cuda":
        call()  # CUDA kernels / cuBLAS handles: excluded from the timing
        sync()
        torch.cuda.reset_peak_memory_stats()
        before = torch.cuda.memory_allocated()
    else:
        before = _rss_bytes()
    times, cpu_times = [], []
    result = None
    for _ in range(repeats):
        sync()
        t0, c0 = time.perf_counter(), time.process_time()
        result = call()
        sync()
        times.append(time.perf_counter() - t0)
        cpu_times.append(time.process_time() - c0)
        del result
    if device.type == "cuda":
        peak_extra = torch.cuda.max_memory_allocated() - before
    else:
        peak_extra = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024 - before
    return {
        "way": way,
        "device": torch.cuda.get_device_name(device)
        if device.type == "cuda"
        else f"cpu ({torch.get_num_threads()} threads)",
        "seconds_best": min(times),
        "seconds_median": sorted(times)[len(times) // 2],
        # CPU seconds of this process (all threads): robust to other load on a shared machine
        "cpu_seconds_median": sorted(cpu_times)[len(cpu_times) // 2],
        "peak_extra_mib": max(peak_extra, 0) / 2**20,
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu")
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument(
        "--ways", default=",".join(WAYS), help="comma-separated subset of " + ", ".join(WAYS)
    )
    parser.add_argument("--json", default=None, help="also write the rows to this JSON file")
    parser.add_argument("--one", default=None, help=argparse.SUPPRESS)  # child process
    args = parser.parse_args()
    if args.one:
        print(json.dumps(run_one(args.one, args.device, args.repeats)))
        return
    rows = []
    for way in args.ways.split(","):
        cmd = [
            sys.executable,
            __file__,
            "--one",
            way,
            "--device",
            args.device,
            "--repeats",
            str(args.repeats),
        ]
        out = subprocess.run(cmd, check=True, capture_output=True, text=True).stdout
        rows.append(json.loads(out.strip().splitlines()[-1]))
        print(f"{way}: {rows[-1]}", file=sys.stderr)
    load = os.getloadavg()[0]
    print(
        f"ranking {QUERIES} x {GALLERY} x {DIM}-d, top-{TOP_K}; {args.repeats} repeats; "
        f"load average {load:.1f}\n"
    )
    columns = ["way", "device", "wall s (best)", "wall s (median)", "CPU s (median)",
               "peak extra MiB"]  # fmt: skip
    cells = [
        [r["way"], r["device"], f"{r['seconds_best']:.2f}", f"{r['seconds_median']:.2f}",
         f"{r['cpu_seconds_median']:.2f}", f"{r['peak_extra_mib']:.0f}"]
        for r in rows
    ]  # fmt: skip
    print(render_table(columns, cells, markdown=True, align="llr"))
    if args.json:
        with open(args.json, "w") as f:
            json.dump(rows, f, indent=2)


if __name__ == "__main__":
    main()
