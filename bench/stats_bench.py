"""Cost of the bootstrap intervals every evaluation now prints (`labshared.stats`).

- `circo`: CIRCO val size, 1,000 queries x 8 headline columns (mAP@5/10/25/50, R@5/10/25/50),
  the plain mean, 10,000 resamples: what `rtd eval` adds to a CIRCO run;
- `celeba`: CelebA test size, 19,962 images in 4 (class, attribute) groups of the official
  sizes, 0/1 correctness, worst-group accuracy resampled within each group, 10,000
  resamples: what `tldr retrain` adds per method;
- `celeba-paired`: the same, two methods paired (`tldr compare`'s worst-group row).

Prints wall and CPU seconds and the peak resident memory of the process.
Usage: python bench/stats_bench.py [--resamples 10000]
"""

from __future__ import annotations

import argparse
import resource
import time

import numpy as np

from labshared.stats import BootstrapSpec, intervals, paired

CELEBA_TEST_GROUPS = (9767, 7535, 2480, 180)  # (non-blond, F/M), (blond, F/M): 19,962


def _timed(fn) -> tuple[float, float]:
    wall, cpu = time.perf_counter(), time.process_time()
    fn()
    return time.perf_counter() - wall, time.process_time() - cpu


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--resamples", type=int, default=10_000)
    args = parser.parse_args()
    spec = BootstrapSpec(n_resamples=args.resamples, seed=0)
    rng = np.random.default_rng(0)
    circo = rng.random((1000, 8)) * 100
    groups = np.repeat(np.arange(4), CELEBA_TEST_GROUPS)
    correct_a = (rng.random(groups.size) < 0.9).astype(np.float64)
    correct_b = (rng.random(groups.size) < 0.92).astype(np.float64)
    cases = {
        "circo: 1,000 queries x 8 metrics, mean": lambda: intervals(circo, spec=spec),
        "celeba: 19,962 images, worst group (4 strata)": lambda: intervals(
            correct_a, groups, "worst_group", spec=spec
        ),
        "celeba: two methods paired, worst group": lambda: paired(
            correct_a, correct_b, groups, "worst_group", spec=spec
        ),
    }
    print(f"| case ({args.resamples} resamples) | wall s | CPU s |")
    print("| :--- | ---: | ---: |")
    for name, fn in cases.items():
        wall, cpu = _timed(fn)
        print(f"| {name} | {wall:.2f} | {cpu:.2f} |")
    peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
    print(f"peak RSS {peak:.0f} MiB")


if __name__ == "__main__":
    main()
