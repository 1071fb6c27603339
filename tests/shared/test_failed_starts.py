"""Every command of every tool: a failed check leaves no run folder, and the corrected
command with the same `-o` runs (issue 18, item 2).

Each case runs the real CLI (typer's CliRunner, in process) with one failing check: a bad
data root, a corrupt checkpoint or attacked file, a missing required input, a device this
machine lacks. It must exit 1 with one line naming the problem, print no "run folder"
line (the check ran before the folder was made) and leave nothing at `-o`. Then the
corrected command runs with the same `-o`: the cheapest real toy run of that command
(untrained tiny CLIP, two steps, a few digits). tldr's filter, retrain and erm render and
embed the toy world for real, so their corrected runs are marked slow; their refusals are
not. `rtd check-data` starts no run (it only reads), so it has no folder to leave.
"""

import json
from pathlib import Path

import pytest
import torch
from typer.testing import CliRunner

from robattr_cli.cli import app as robattr
from rtd_cli.cli import app as rtd
from tldr_cli.cli import app as tldr

CPU = ["--device", "cpu"]
TINY = ["--backbone", "tiny-clip-toy", "--pretrained", "random"]


def invoke(app, args):
    return CliRunner().invoke(app, [str(a) for a in args])


def refused(app, args, out: Path, message: str) -> None:
    """One red line holding `message`, before any run folder: nothing at `out`."""
    result = invoke(app, [*args, "-o", out])
    assert result.exit_code == 1, result.output
    assert message in result.output, result.output
    # start_run logs "... run folder <out>" once the folder exists: never reached
    assert "Traceback" not in result.output and f"run folder {out}" not in result.output
    assert "weights_only=False" not in result.output.replace("\n", "")
    assert not out.exists()


def ran(app, args, out: Path, command: str) -> dict:
    """The corrected command ran in `out`; returns its header."""
    result = invoke(app, [*args, "-o", out])
    assert result.exit_code == 0, result.output
    header = json.loads((out / "config.json").read_text())
    assert header["command"] == command and "started_at" in header
    return header


@pytest.fixture(scope="module")
def files(tmp_path_factory):
    """Bad inputs of every kind, and a random phi that fits the untrained tiny CLIP."""
    from rtd_cli.model import build_clip, build_projection, clip_dims, save_projection

    root = tmp_path_factory.mktemp("inputs")
    (root / "garbage.pt").write_text("this is not a checkpoint\n")
    (root / "words.json").write_text("{not json")
    model, _, _ = build_clip("tiny-clip-toy", "random")
    torch.manual_seed(0)
    save_projection(root / "phi.pt", build_projection("lincir", *clip_dims(model)), "lincir")
    return root


@pytest.fixture(scope="module")
def robattr_run(tmp_path_factory):
    """A robattr model trained for one short epoch, and a corrupt copy of its checkpoint."""
    out = tmp_path_factory.mktemp("robattr") / "train"
    args = ["train", "--preset", "mnist-toy", "--regularizer", "none", "--epochs", "1",
            "--limit-train", "128", "--limit-eval", "32", *CPU]  # fmt: skip
    refused(robattr, ["train", "--preset", "cifar10-lenet", "--data-root",
                      out.parent / "nonexistent" / "cifar10", *CPU], out,
            "cifar-10-batches-py")  # fmt: skip
    ran(robattr, args, out, "train")  # the corrected rerun, same -o
    ckpt = next((out / "checkpoints").glob("step-*"))
    corrupt = out.parent / "corrupt-ckpt"
    corrupt.mkdir()
    (corrupt / "meta.json").write_text((ckpt / "meta.json").read_text())
    (corrupt / "model.safetensors").write_bytes(b"\x00" * 64)
    return out, corrupt


# --------------------------------------------------------------------------- robattr
def test_robattr_train_attack_eval(robattr_run, files, tmp_path):
    trained, corrupt = robattr_run
    attack = ["attack", "--checkpoint", trained, "--attack", "topk", "--n-iter", "2",
              "--num-examples", "4", "--batch-size", "4"]  # fmt: skip
    refused(robattr, [*attack[:1], "--checkpoint", corrupt, *attack[3:], *CPU],
            tmp_path / "atk", "not a readable safetensors file")  # fmt: skip
    refused(robattr, [*attack, "--device", "cuda:7"], tmp_path / "atk", "--device cuda:7")
    ran(robattr, [*attack, *CPU], tmp_path / "atk", "attack")

    evaluate = ["eval", "--checkpoint", trained, "--num-examples", "4", "--n-draws", "1",
                "--n-ratios", "2", *CPU]  # fmt: skip
    refused(robattr, [*evaluate, "--attacked", files / "garbage.pt"], tmp_path / "ev",
            "--attacked")  # fmt: skip
    refused(robattr, [*evaluate, "--attacked", tmp_path / "no-such-run"], tmp_path / "ev",
            "no attacked.safetensors")  # fmt: skip
    ran(robattr, [*evaluate, "--attacked", tmp_path / "atk"], tmp_path / "ev", "eval")


# --------------------------------------------------------------------------- rtd
def test_rtd_train_phi(tmp_path):
    args = ["train-phi", "--preset", "toy", *TINY, "--steps", "2", "--batch-size", "4", *CPU]
    out = tmp_path / "phi"
    refused(rtd, [*args, "--captions", tmp_path / "missing.txt"], out, "missing.txt")
    refused(rtd, [*args, "--captions", "toy:20", "--pretrained", "openai", "--backbone",
                  "ViT-B-32"], out, "cannot be downloaded now")  # fmt: skip
    ran(rtd, [*args, "--captions", "toy:20"], out, "train-phi")


def test_rtd_train(files, tmp_path):
    args = ["train", "--preset", "toy", *TINY, "--triplets", "toy:40", "--steps", "2",
            "--batch-size", "4", *CPU]  # fmt: skip
    out = tmp_path / "train"
    refused(rtd, [*args, "--phi", files / "garbage.pt"], out, "not a readable torch checkpoint")
    refused(rtd, [*args, "--phi", files / "phi.pt", "--device", "cuda:7"], out, "cuda:7")
    ran(rtd, [*args, "--phi", files / "phi.pt"], out, "train")


def test_rtd_eval(files, tmp_path):
    args = ["eval", "--dataset", "toy", "--toy-queries", "20", "--toy-distractors", "5",
            "--split", "test"]  # fmt: skip
    out = tmp_path / "eval"
    refused(rtd, [*args, *TINY, "--phi", files / "phi.pt", "--device", "cuda:7"], out, "cuda:7")
    refused(rtd, [*args, *TINY, "--phi", files / "garbage.pt", *CPU], out, "--phi")
    # a phi made for another CLIP: refused on its widths before the folder exists
    refused(rtd, [*args, "--backbone", "ViT-B-32", "--pretrained", "random", "--phi",
                  files / "phi.pt", *CPU], out, "--phi")  # fmt: skip
    # the case, no --backbone: the toy benchmark takes the tiny CLIP (fitted)
    header = ran(rtd, [*args, "--phi", files / "phi.pt", *CPU], out, "eval")
    assert header["config"]["backbone"] == "tiny-clip-toy"


# --------------------------------------------------------------------------- tldr
TOY = ["--preset", "toy", "--toy-n-train", "40", *CPU]  # filter; retrain and erm add:
VAL, TEST = ["--toy-n-val", "8"], ["--toy-n-test", "8"]


def test_tldr_generate(tmp_path, monkeypatch):
    monkeypatch.delenv("OPENAI_API_KEY", raising=False)
    out = tmp_path / "gen"
    refused(tldr, ["generate", "--preset", "toy", "--model", "gpt-4o-mini"], out,
            "OPENAI_API_KEY")  # fmt: skip
    ran(tldr, ["generate", "--offline-toy"], out, "generate")


def test_tldr_refusals(files, tmp_path):
    from tldr_cli.wordimport import builtin_path

    words = builtin_path("toy")
    out = tmp_path / "out"
    refused(tldr, ["filter", "--words", files / "words.json", *TOY], out, "words.json")
    refused(tldr, ["retrain", "--words", words, "--method", "dfr", "--classifier",
                   files / "garbage.pt", *TOY, *VAL, *TEST], out,
                   "not a readable torch checkpoint")  # fmt: skip
    refused(tldr, ["retrain", "--method", "tldr", *TOY, *VAL, *TEST], out, "needs --words")
    refused(tldr, ["erm", "--preset", "waterbirds", "--data-root", tmp_path / "nowhere", *CPU],
            out, "folder not found")  # fmt: skip
    refused(tldr, ["erm", *TOY[:-2], *TEST, "--device", "cuda:7"], out, "cuda:7")
    # a CLIP tag that is not cached, offline (the suite sets HF_HUB_OFFLINE): seconds
    refused(tldr, ["filter", "--words", words, "--clip-model", "ViT-B-32", "--clip-pretrained",
                   "openai", *TOY], out, "cannot be downloaded now")  # fmt: skip


@pytest.mark.slow
def test_tldr_corrected_runs(tmp_path):
    """The corrected filter, retrain and erm runs in the folders the refusals left empty."""
    from tldr_cli.wordimport import builtin_path

    words = builtin_path("toy")
    ran(tldr, ["filter", "--words", words, *TOY], tmp_path / "filter", "filter")
    ran(tldr, ["retrain", "--words", tmp_path / "filter" / "wordlists.json", "--method",
               "tldr", *TOY, *VAL, *TEST], tmp_path / "retrain", "retrain")  # fmt: skip
    ran(tldr, ["erm", *TOY, *TEST], tmp_path / "erm", "erm")
