"""Anything that is not a classifier checkpoint, given as --classifier, is one red line
naming the file and the expected format (CliRunner, no traceback)."""

import json
import pickle
from collections import OrderedDict

import pytest
import torch
from safetensors.torch import save_file
from typer.testing import CliRunner

from tldr_cli.classifier import build_classifier, save_classifier
from tldr_cli.cli import app

TOY = ["--preset", "toy", "--toy-n-train", "40", "--toy-n-val", "8", "--toy-n-test", "8",
       "--device", "cpu"]  # fmt: skip


class NotATensor:  # pickled below: weights_only=True must refuse it
    pass


# Each kind of bad --classifier: how to write it at `p` (returning the path the error
# must name) and what the error must say about it.
def _missing(p):
    return p


def _text(p):
    p.write_text("this is not a checkpoint\n")
    return p


def _random(p):
    p.write_bytes(bytes(range(256)) * 8)
    return p


def _truncated(p):
    torch.save({"fc.weight": torch.zeros(2, 2048), "fc.bias": torch.zeros(2)}, p)
    p.write_bytes(p.read_bytes()[:300])
    return p


def _pickle(p):
    p.write_bytes(pickle.dumps({"model": NotATensor()}))
    return p


def _list(p):
    torch.save([torch.zeros(3)], p)
    return p


def _optimizer(p):  # a dict, but of numbers: e.g. an optimizer's hyper-parameters
    torch.save({"lr": 0.1, "momentum": 0.9}, p)
    return p


def _nohead(p):
    save_file({"conv1.weight": torch.zeros(64, 3, 7, 7)}, str(p))
    return p


def _corrupt(p):
    p.write_bytes(b"\x10\x00\x00\x00\x00\x00\x00\x00{not json at all")
    return p


def _empty_folder(p):
    p.mkdir()
    return p


def _bad_meta(p):
    save_classifier(p, build_classifier("toy-cnn", 2), {})
    (p / "meta.json").write_text("{arch: toy-cnn")
    return p / "meta.json"


def _wrong_arch_meta(p):
    save_classifier(p, build_classifier("toy-cnn", 2), {})
    (p / "meta.json").write_text(json.dumps({"arch": "vit", "num_classes": 2}))
    return p / "meta.json"


def _weights_mismatch(p):  # meta says toy-cnn/2, weights are a 3-class head
    save_classifier(p, build_classifier("toy-cnn", 3), {})
    meta = json.loads((p / "meta.json").read_text())
    (p / "meta.json").write_text(json.dumps({**meta, "num_classes": 2}))
    return p / "model.safetensors"


def _corrupt_folder_weights(p):
    save_classifier(p, build_classifier("toy-cnn", 2), {})
    (p / "model.safetensors").write_bytes(b"garbage")
    return p / "model.safetensors"


GARBAGE = {
    "missing.pt": (_missing, "does not exist"),
    "text.pt": (_text, "not a readable torch checkpoint"),
    "random.pth": (_random, "not a readable torch checkpoint"),
    "truncated.pt": (_truncated, "not a readable torch checkpoint"),
    "pickle.pt": (_pickle, "not a readable torch checkpoint"),
    "list.pt": (_list, "holds a list, not a state dict"),
    "optimizer.pt": (_optimizer, "entry 'lr' is a float, not a tensor"),
    "nohead.safetensors": (_nohead, "no ResNet-50 head"),
    "corrupt.safetensors": (_corrupt, "not a readable safetensors file"),
    "empty-folder": (_empty_folder, "folder holds no model.safetensors"),
    "bad-meta": (_bad_meta, "not valid JSON"),
    "wrong-arch-meta": (_wrong_arch_meta, "fields 'arch' (resnet50 or toy-cnn)"),
    "weights-mismatch": (_weights_mismatch, "weights do not fit the toy-cnn with 2 classes"),
    "corrupt-folder-weights": (_corrupt_folder_weights, "not a readable safetensors file"),
}
KINDS = list(GARBAGE)


def _garbage(tmp_path, kind):
    """A file or folder of the given kind; returns (path to pass, name expected in error)."""
    write, problem = GARBAGE[kind]
    return write(tmp_path / kind), problem


@pytest.mark.parametrize("kind", KINDS)
def test_bad_classifier_is_one_red_line(tmp_path, kind):
    given, problem = _garbage(tmp_path, kind)
    folder_kinds = ("bad-meta", "wrong-arch-meta", "weights-mismatch", "corrupt-folder-weights")
    arg = tmp_path / kind if kind in folder_kinds else given
    result = CliRunner().invoke(
        app,
        ["retrain", "--method", "dfr", "--classifier", str(arg), *TOY, "-o", str(tmp_path / "r")],
    )
    assert result.exit_code == 1, result.output
    assert "Traceback" not in result.output
    errors = [line for line in result.output.splitlines() if line.startswith("error:")]
    assert len(errors) == 1, result.output
    line = errors[0]
    assert str(given) in line and problem in line, line
    if kind not in ("bad-meta", "wrong-arch-meta", "weights-mismatch"):
        assert "expected" in line and "state dict" in line  # the expected format is named


def test_state_dict_wrappers_and_dataparallel_prefixes_load(tmp_path):
    from tldr_cli.classifier import load_classifier

    torch.manual_seed(0)
    model = build_classifier("resnet50", 3, None).eval()
    plain = OrderedDict(
        [(f"fc.{k}", v) for k, v in model.fc.state_dict().items()]
        + list(model.backbone.state_dict().items())
    )
    torch.save(
        {"epoch": 7, "state_dict": {f"module.{k}": v for k, v in plain.items()}}, tmp_path / "a.pt"
    )
    save_file(dict(plain), str(tmp_path / "b.safetensors"))
    x = torch.randn(1, 3, 64, 64)
    for name in ("a.pt", "b.safetensors"):
        loaded, meta = load_classifier(tmp_path / name)
        assert meta["num_classes"] == 3
        with torch.no_grad():
            torch.testing.assert_close(loaded(x), model(x))
