"""Gate: TLDR debiases the toy classifier (issue 9, items 2 and 5).

Runs `make demo-tldr`'s pipeline (`tldr_cli.demo.run_demo`: generate, filter, retrain,
each through the CLI app) on the toy spurious split of data seed `TOY_SEED`, and fails
unless, on the balanced test split, TLDR's worst-group accuracy beats ERM's by >= 25
points and TLDR's average (train-weighted, as the paper) is >= 65 %. DFR, which uses group
labels, is printed as the reference.
"""

from pathlib import Path

import pytest

from tldr_cli.demo import DemoConfig, format_markdown, run_demo

MIN_WORST_GROUP_GAIN = 0.25  # TLDR - ERM worst-group accuracy on the balanced test split
MIN_AVERAGE = 0.65  # TLDR's average accuracy (train-weighted, as the paper)


def run_pipeline(out: Path, toy_seed: int) -> tuple[dict, str]:
    """`make demo-tldr`'s pipeline into `out` (on the CPU): (the test split's metrics per
    method, the demo's report). Also run by bench/demo_spread.py."""
    result = run_demo(DemoConfig(toy_seed=toy_seed, device="cpu"), out)
    return result["test"], format_markdown(result)


@pytest.mark.effects
def test_tldr_beats_erm_worst_group_on_the_toy_spurious_split(effects_dir, toy_seed):
    test, output = run_pipeline(effects_dir / "tldr", toy_seed)
    print(f"\ntldr, toy seed {toy_seed}:\n{output}")
    erm, tldr = test["ERM"], test["TLDR"]
    gain = tldr["worst_group_acc"] - erm["worst_group_acc"]
    assert gain >= MIN_WORST_GROUP_GAIN, (
        f"TLDR - ERM worst-group {gain:.3f} < {MIN_WORST_GROUP_GAIN}"
    )
    assert tldr["average_acc"] >= MIN_AVERAGE, (
        f"TLDR average {tldr['average_acc']:.3f} < {MIN_AVERAGE}"
    )
