"""A file that is not the expected checkpoint, given to `--phi` (rtd eval, rtd train) or
`--text-encoder` (rtd eval), is one red line naming the file and the expected format, before
any model loads: never an unpickler or safetensors traceback."""

import pytest
import torch
from safetensors.torch import save_file
from typer.testing import CliRunner

from rtd_cli.cli import app
from rtd_cli.model import build_projection, save_projection, text_tower_from_clip
from rtd_cli.tower_file import save_text_tower

runner = CliRunner()


class NotATensor:  # a pickled custom class: refused by torch.load(weights_only=True)
    pass


def _bad_files(root, good):
    """name -> path of every kind of wrong file; `good` is a valid file to cut in half."""
    files = {
        "random-bytes": root / "random.pt",
        "text": root / "notes.txt",
        "empty": root / "empty.pt",
        "truncated": root / f"truncated{good.suffix}",
        "pickle-with-a-class": root / "object.pt",
    }
    files["random-bytes"].write_bytes(bytes(range(256)) * 8)
    files["text"].write_text("this is not a checkpoint\n")
    files["empty"].write_bytes(b"")
    data = good.read_bytes()
    files["truncated"].write_bytes(data[: len(data) // 2])
    torch.save({"Phi": NotATensor()}, files["pickle-with-a-class"])
    return files


def _one_red_line(res, path, expected):
    assert res.exit_code == 1, res.output
    lines = [line for line in res.output.splitlines() if line.strip()]
    assert len(lines) == 1, res.output
    assert lines[0].startswith("error:") and str(path) in lines[0] and expected in lines[0]
    assert "Traceback" not in res.output


@pytest.fixture(scope="module")
def files(tmp_path_factory):
    root = tmp_path_factory.mktemp("ckpt")
    torch.manual_seed(0)
    phi = save_projection(root / "phi.pt", build_projection("lincir", 8, 12), "lincir")
    return root, phi


EVAL = ["eval", "--dataset", "toy", "--backbone", "tiny-clip-toy", "--pretrained", "random"]


@pytest.mark.parametrize(
    "kind", ["random-bytes", "text", "empty", "truncated", "pickle-with-a-class"]
)
def test_eval_phi(files, kind, tmp_path):
    root, phi = files
    bad = _bad_files(tmp_path, phi)[kind]
    res = runner.invoke(app, [*EVAL, "--phi", str(bad), "-o", str(tmp_path / "run")])
    _one_red_line(res, bad, "expected a lincir projection checkpoint")
    assert not (tmp_path / "run").exists()  # failed before the run folder was made


def test_eval_phi_of_the_wrong_format_or_absent(files, tmp_path):
    root, phi = files
    wrong = tmp_path / "list.pt"
    torch.save([torch.zeros(2)], wrong)
    res = runner.invoke(app, [*EVAL, "--phi", str(wrong)])
    _one_red_line(res, wrong, "top-level key 'Phi'")
    res = runner.invoke(app, [*EVAL, "--phi", str(phi), "--base", "pic2word"])
    _one_red_line(res, phi, "'state_dict_img2text'")
    res = runner.invoke(app, [*EVAL, "--phi", str(tmp_path / "absent.pt")])
    _one_red_line(res, tmp_path / "absent.pt", "does not exist")


@pytest.mark.parametrize(
    "kind", ["random-bytes", "text", "empty", "truncated", "pickle-with-a-class"]
)
def test_train_phi_option(files, kind, tmp_path):
    root, phi = files
    bad = _bad_files(tmp_path, phi)[kind]
    args = ["train", "--preset", "toy", "--phi", str(bad), "--triplets", "toy:8",
            "--device", "cpu", "-o", str(tmp_path / "run")]  # fmt: skip
    _one_red_line(runner.invoke(app, args), bad, "expected a lincir projection checkpoint")


@pytest.fixture(scope="module")
def tower_file(tmp_path_factory):
    from labshared.tinyclip.model import register_tiny_clip
    from rtd_cli.model import build_clip

    register_tiny_clip()
    model, _, _ = build_clip("tiny-clip-toy", "random")
    root = tmp_path_factory.mktemp("tower")
    return save_text_tower(
        root / "text_tower.safetensors",
        text_tower_from_clip(model),
        {"backbone": "tiny-clip-toy", "pretrained": "random"},
    )


@pytest.mark.parametrize("kind", ["random-bytes", "text", "empty", "truncated", "a-torch-file"])
def test_eval_text_encoder(files, tower_file, kind, tmp_path):
    _, phi = files
    bad = (
        phi if kind == "a-torch-file" else _bad_files(tmp_path, tower_file)[kind]
    )  # phi.pt given as the tower: a zip pickle, not safetensors
    res = runner.invoke(app, [*EVAL, "--phi", str(phi), "--text-encoder", str(bad),
                              "-o", str(tmp_path / "run")])  # fmt: skip
    _one_red_line(res, bad, "expected a text tower written by `rtd train`")
    assert not (tmp_path / "run").exists()


def test_eval_text_encoder_folder_and_bad_metadata(files, tmp_path):
    _, phi = files
    empty = tmp_path / "run-folder"
    empty.mkdir()
    res = runner.invoke(app, [*EVAL, "--phi", str(phi), "--text-encoder", str(empty)])
    _one_red_line(res, empty, "holds no text_tower.safetensors")
    odd = tmp_path / "odd.safetensors"
    save_file({"x": torch.zeros(1)}, str(odd), metadata={"rtd": "{not json"})
    res = runner.invoke(app, [*EVAL, "--phi", str(phi), "--text-encoder", str(odd)])
    _one_red_line(res, odd, "holds no readable config")
