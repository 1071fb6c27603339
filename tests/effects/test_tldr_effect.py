"""Gate: TLDR debiases the toy classifier (issue 9, items 2 and 5).

Runs the `make demo-tldr` pipeline (the same three commands, through the CLI app) on the
toy spurious split of data seed `TOY_SEED`, and fails unless, on the balanced test split,
TLDR's worst-group accuracy beats ERM's by >= 25 points and TLDR's average (train-weighted,
as the paper) is >= 65 %. DFR, which uses group labels, is printed as the reference.
"""

import json

import pytest
from typer.testing import CliRunner

from tldr_cli.cli import app


def _run(args: list[str]) -> str:
    result = CliRunner().invoke(app, args, catch_exceptions=False)
    assert result.exit_code == 0, result.output
    return result.output


@pytest.mark.effects
def test_tldr_beats_erm_worst_group_on_the_toy_spurious_split(effects_dir, toy_seed):
    out = effects_dir / "tldr"
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
    print(f"\ntldr, toy seed {toy_seed}:\n{filt}\n{table}")
    test = json.loads((out / "retrain/metrics.json").read_text())["test"]
    erm, tldr = test["ERM"], test["TLDR"]
    gain = tldr["worst_group_acc"] - erm["worst_group_acc"]
    assert gain >= 0.25, f"TLDR - ERM worst-group {gain:.3f} < 0.25"
    assert tldr["average_acc"] >= 0.65, f"TLDR average {tldr['average_acc']:.3f} < 0.65"
