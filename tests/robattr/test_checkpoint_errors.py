"""Anything that is not a checkpoint, given to `--checkpoint` or `--attacked`, gives one red
line naming the file and the expected format (CliRunner, real files on disk)."""

import json
import shutil

import pytest
from typer.testing import CliRunner

from robattr_cli.cli import app

runner = CliRunner()


@pytest.fixture(scope="module")
def run(tmp_path_factory):
    out = tmp_path_factory.mktemp("ckpt") / "train"
    result = runner.invoke(
        app,
        ["train", "--regularizer", "none", "--epochs", "1", "--limit-train", "32",
         "--limit-eval", "16", "--batch-size", "16", "--device", "cpu", "-o", str(out)],
    )  # fmt: skip
    assert result.exit_code == 0, result.output
    return out


def step_dir(run):
    return next((run / "checkpoints").glob("step-*"))


def one_error_line(result, *needles):
    """Exit 1, no traceback, exactly one `error:` line, holding every needle."""
    assert result.exit_code == 1, result.output
    assert "Traceback" not in result.output
    errors = [line for line in result.output.splitlines() if line.startswith("error:")]
    assert len(errors) == 1, result.output
    for needle in needles:
        assert str(needle) in errors[0], (needle, errors[0])
    return errors[0]


def copy_checkpoint(run, tmp_path):
    ckpt = tmp_path / "ckpt"
    shutil.copytree(step_dir(run), ckpt)
    return ckpt


def _garbage_file(run, tmp_path):
    path = tmp_path / "model.pt"
    path.write_bytes(b"\x80\x04not a checkpoint at all")
    return path, path, "run folder"


def _missing(run, tmp_path):
    return tmp_path / "nowhere", tmp_path / "nowhere", "does not exist"


def _empty_folder(run, tmp_path):
    (tmp_path / "empty").mkdir()
    return tmp_path / "empty", tmp_path / "empty", "no checkpoint there"


def _corrupt_weights(run, tmp_path):
    ckpt = copy_checkpoint(run, tmp_path)
    (ckpt / "model.safetensors").write_bytes(b"\x10\x00\x00\x00\x00\x00\x00\x00{broken")
    return ckpt, ckpt / "model.safetensors", "safetensors"


def _truncated_weights(run, tmp_path):
    ckpt = copy_checkpoint(run, tmp_path)
    data = (ckpt / "model.safetensors").read_bytes()
    (ckpt / "model.safetensors").write_bytes(data[: len(data) // 2])
    return ckpt, ckpt / "model.safetensors", "safetensors"


def _missing_weights(run, tmp_path):
    ckpt = copy_checkpoint(run, tmp_path)
    (ckpt / "model.safetensors").unlink()
    return ckpt, ckpt / "model.safetensors", "does not exist"


def _corrupt_meta(run, tmp_path):
    ckpt = copy_checkpoint(run, tmp_path)
    (ckpt / "meta.json").write_text("{not json")
    return ckpt, ckpt / "meta.json", "not valid JSON"


def _meta_lacking_fields(run, tmp_path):
    ckpt = copy_checkpoint(run, tmp_path)
    meta = json.loads((ckpt / "meta.json").read_text())
    del meta["mean"], meta["model"]
    (ckpt / "meta.json").write_text(json.dumps(meta))
    return ckpt, ckpt / "meta.json", "model, mean absent"


def _meta_unknown_model(run, tmp_path):
    ckpt = copy_checkpoint(run, tmp_path)
    meta = json.loads((ckpt / "meta.json").read_text())
    meta["model"] = "vgg99"
    (ckpt / "meta.json").write_text(json.dumps(meta))
    return ckpt, ckpt / "meta.json", "model 'vgg99' is unknown"


def _weights_of_another_model(run, tmp_path):
    ckpt = copy_checkpoint(run, tmp_path)
    meta = json.loads((ckpt / "meta.json").read_text())
    meta["num_classes"] = 7  # the saved head has 10 outputs
    (ckpt / "meta.json").write_text(json.dumps(meta))
    return ckpt, ckpt / "model.safetensors", "weights do not match"


CASES = [
    _garbage_file, _missing, _empty_folder, _corrupt_weights, _truncated_weights,
    _missing_weights, _corrupt_meta, _meta_lacking_fields, _meta_unknown_model,
    _weights_of_another_model,
]  # fmt: skip


@pytest.mark.parametrize("command", ["attack", "eval"])
@pytest.mark.parametrize("case", CASES, ids=lambda f: f.__name__.strip("_"))
def test_bad_checkpoint_is_one_red_line(run, tmp_path, case, command):
    given, named, problem = case(run, tmp_path)
    result = runner.invoke(
        app,
        [command, "--checkpoint", str(given), "--num-examples", "2", "--device", "cpu",
         "-o", str(tmp_path / "out")],
    )  # fmt: skip
    line = one_error_line(result, "--checkpoint", named, problem, "expected")
    assert "robattr train" in line  # the expected format names where checkpoints come from


def test_a_file_inside_a_checkpoint_folder_is_accepted(run, tmp_path):
    result = runner.invoke(
        app,
        ["eval", "--checkpoint", str(step_dir(run) / "model.safetensors"), "--num-examples",
         "2", "--n-ratios", "0", "--rps-eps", "0", "--device", "cpu", "-o", str(tmp_path / "e")],
    )  # fmt: skip
    assert result.exit_code == 0, result.output


def _attacked_garbage(tmp_path):
    path = tmp_path / "attacked.safetensors"
    path.write_bytes(b"garbage" * 10)
    return tmp_path, path, "not a readable safetensors file"


def _attacked_lacking_tensors(tmp_path):
    import torch
    from safetensors.torch import save_file

    path = tmp_path / "attacked.safetensors"
    save_file({"x": torch.zeros(2, 1, 28, 28), "y": torch.zeros(2)}, str(path))
    return path, path, "x_adv absent"


def _attacked_other_file(tmp_path):
    path = tmp_path / "notes.txt"
    path.write_text("hello")
    return path, path, "not a readable safetensors file"


@pytest.mark.parametrize(
    "case", [_attacked_garbage, _attacked_lacking_tensors, _attacked_other_file],
    ids=lambda f: f.__name__.strip("_"),
)  # fmt: skip
def test_bad_attacked_file_is_one_red_line(run, tmp_path, case):
    given, named, problem = case(tmp_path)
    result = runner.invoke(
        app,
        ["eval", "--checkpoint", str(run), "--attacked", str(given), "--device", "cpu",
         "-o", str(tmp_path / "out")],
    )  # fmt: skip
    one_error_line(result, "--attacked", named, problem, "robattr attack")
