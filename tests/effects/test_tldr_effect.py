"""Gate: TLDR debiases the toy classifier (issue 9, items 2 and 5).

Runs the `make demo-tldr` pipeline (the same three commands, through the CLI app) on the
toy spurious split of data seed `TOY_SEED`, and fails unless, on the balanced test split,
TLDR's worst-group accuracy beats ERM's by >= 25 points and TLDR's average (train-weighted,
as the paper) is >= 65 %. DFR, which uses group labels, is printed as the reference.
"""

import json
from pathlib import Path

import pytest
from typer.testing import CliRunner

from tldr_cli.cli import app

MIN_WORST_GROUP_GAIN = 0.25  # TLDR - ERM worst-group accuracy on the balanced test split
MIN_AVERAGE = 0.65  # TLDR's average accuracy (train-weighted, as the paper)


def _run(args: list[str]) -> str:
    result = CliRunner().invoke(app, args, catch_exceptions=False)
    assert result.exit_code == 0, result.output
    return result.output


def run_pipeline(out: Path, toy_seed: int) -> tuple[dict, str]:
    """`make demo-tldr`'s three commands into `out`: (the test split's metrics per method,
    the filter and retrain output). Also run by bench/demo_spread.py."""
    seed = ["--toy-seed", str(toy_seed)]
    _run(["generate", "--offline-toy", "-o", str(out / "generate"), "--overwrite"])
    filt = _run(
        ["filter", "--preset", "toy", *seed, "--words", str(out / "generate/wordlists.json")]
        + ["-o", str(out / "filter"), "--overwrite", "--device", "cpu"]
    )
    table = _run(
        ["retrain", "--preset", "toy", *seed, "--method", "both"]
        + ["--words", str(out / "filter/wordlists.json")]
        + ["-o", str(out / "retrain"), "--overwrite", "--device", "cpu"]
    )
    test = json.loads((out / "retrain/metrics.json").read_text())["test"]
    return test, f"{filt}\n{table}"


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
