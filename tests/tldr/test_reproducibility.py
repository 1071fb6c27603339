"""Reproducibility of `tldr retrain` (issue 10, item 7): DFR's figures do not depend on
whether TLDR ran first; word lists are matched to labels by name; frozen features are
extracted in fp32 unless asked otherwise, and the precision is part of the cache key."""

import dataclasses
import json

import pytest
import torch
from safetensors.torch import load_file
from typer.testing import CliRunner

from labshared.config import check_choices
from tldr_cli.cli import app

SMALL = ["--preset", "toy", "--toy-n-train", "200", "--toy-n-val", "40", "--toy-n-test", "40",
         "--backbone-weights", "none", "--n-gap-pairs", "64", "--head-epochs", "1",
         "--dfr-retrains", "2", "--device", "cpu"]  # fmt: skip


def _invoke(args):
    result = CliRunner().invoke(app, args, catch_exceptions=False)
    assert result.exit_code == 0, result.output
    return result


def _metrics(folder):
    return json.loads((folder / "metrics.json").read_text())


@pytest.fixture(scope="module")
def toy_words(tmp_path_factory):
    out = tmp_path_factory.mktemp("words")
    _invoke(["generate", "--offline-toy", "-o", str(out / "gen")])
    return out / "gen" / "wordlists.json"


def _reordered(words, tmp_path, rename=None):
    """The same lists with classes and spurious values in reverse order (and anchors)."""
    obj = json.loads(words.read_text())
    for kind in ("classes", "spurious"):
        obj[kind] = dict(reversed(list(obj[kind].items())))
        obj["anchors"][kind] = dict(reversed(list(obj["anchors"][kind].items())))
    if rename:
        old, new = rename
        obj["classes"] = {new if k == old else k: v for k, v in obj["classes"].items()}
        obj["anchors"]["classes"] = {
            new if k == old else k: v for k, v in obj["anchors"]["classes"].items()
        }
    path = tmp_path / ("misnamed.json" if rename else "reordered.json")
    path.write_text(json.dumps(obj))
    return path


def test_dfr_is_the_same_alone_and_after_tldr_and_lists_match_by_name(tmp_path, toy_words):
    both, dfr, tldr = tmp_path / "both", tmp_path / "dfr", tmp_path / "tldr"
    _invoke(["retrain", "--method", "both", "--words", str(toy_words), *SMALL, "-o", str(both)])
    _invoke(["retrain", "--method", "dfr", *SMALL, "-o", str(dfr)])
    m_both, m_dfr = _metrics(both), _metrics(dfr)
    # DFR draws from its own generator: identical figures, per group, and the same C
    assert m_both["test"]["DFR"] == m_dfr["test"]["DFR"]
    assert m_both["info"]["dfr"]["C"] == m_dfr["info"]["dfr"]["C"]
    assert (
        m_both["info"]["dfr"]["tuning_worst_group_acc"]
        == m_dfr["info"]["dfr"]["tuning_worst_group_acc"]
    )

    # The same lists in reverse order train the same labels: the same head, the same figures
    reordered = _reordered(toy_words, tmp_path)
    _invoke(["retrain", "--method", "tldr", "--words", str(reordered), *SMALL, "-o", str(tldr)])
    m_tldr = _metrics(tldr)
    assert m_tldr["test"]["TLDR"] == m_both["test"]["TLDR"]
    assert m_tldr["info"]["tldr"]["class_lists"] == ["small digit", "large digit"]
    assert m_tldr["info"]["tldr"]["spurious_lists"] == ["grass", "brick"]
    a = load_file(str(both / "checkpoints" / "tldr_head.safetensors"))
    b = load_file(str(tldr / "checkpoints" / "tldr_head.safetensors"))
    for key in ("weight", "bias"):
        torch.testing.assert_close(a[key], b[key], rtol=0, atol=0)


def test_a_list_naming_no_class_is_one_red_line(tmp_path, toy_words):
    bad = _reordered(toy_words, tmp_path, rename=("large digit", "big digit"))
    result = CliRunner().invoke(
        app, ["retrain", "--words", str(bad), *SMALL, "-o", str(tmp_path / "r")]
    )
    assert result.exit_code == 1 and "Traceback" not in result.output
    errors = [line for line in result.output.splitlines() if line.startswith("error:")]
    assert errors == [
        f"error: --words {bad}: class list 'big digit' names none of the toy dataset's "
        "classes (0 'small digit', 1 'large digit'); rename the list to one of them"
    ]
    # nothing was built: the check runs before the classifier and CLIP
    assert not (tmp_path / "r" / "checkpoints").exists()
    # `tldr filter` refuses it the same way
    result = CliRunner().invoke(
        app,
        [
            "filter",
            "--words",
            str(bad),
            "--preset",
            "toy",
            "--device",
            "cpu",
            "-o",
            str(tmp_path / "f"),
        ],
    )
    assert result.exit_code == 1 and "class list 'big digit' names none" in result.output


def test_features_are_fp32_by_default_and_the_precision_keys_the_cache(tmp_path, monkeypatch):
    """A runtime whose --precision is bf16 (CPU autocast, so it runs here) still extracts
    fp32 features by default; `--feature-precision runtime` follows it, under another key."""
    from labshared.device import Precision, Runtime
    from labshared.errors import ConfigError
    from tldr_cli.classifier import build_classifier
    from tldr_cli.config import PRESETS
    from tldr_cli.features import ClassifierHandle, classifier_features, load_splits

    monkeypatch.setenv("LABSHARED_CACHE", str(tmp_path))
    cfg = dataclasses.replace(PRESETS["toy"], toy_n_test=16)
    bf16 = Runtime(torch.device("cpu"), Precision("bf16", torch.bfloat16, False), seed=0)
    data = load_splits(cfg, ("test",))["test"]
    torch.manual_seed(0)
    handle = ClassifierHandle(build_classifier("toy-cnn", 2).eval(), {}, "digest")
    x = torch.stack(
        [
            (data.images[i].float() / 255 - 0.5) / 0.25  # the toy transform, by hand
            for i in range(len(data))
        ]
    )
    with torch.no_grad():
        reference = handle.model.forward_features(x)
    fp32 = classifier_features(handle, data, cfg, bf16, use_cache=True)
    torch.testing.assert_close(fp32, reference)  # no autocast: full fp32 agreement
    follow = dataclasses.replace(cfg, feature_precision="runtime")
    low = classifier_features(handle, data, follow, bf16, use_cache=True)
    assert not torch.allclose(low, reference, rtol=0, atol=1e-6)  # bf16 really ran
    torch.testing.assert_close(low, reference, rtol=0.05, atol=0.05)
    sidecars = sorted((tmp_path / "features").glob("tldr-phi-test-*.json"))
    assert sorted(json.loads(p.read_text())["spec"]["precision"] for p in sidecars) == [
        "bf16",
        "fp32",
    ]
    with pytest.raises(ConfigError, match="--feature-precision bf16 needs a CUDA device"):
        classifier_features(
            handle, data, dataclasses.replace(cfg, feature_precision="bf16"), bf16, True
        )
    with pytest.raises(ConfigError, match="--feature-precision 'fp64'"):
        check_choices(dataclasses.replace(cfg, feature_precision="fp64"))  # as resolve() does


def test_tf32_keys_the_feature_cache(tmp_path, monkeypatch):
    """TF32 is a process-wide matmul mode: features computed with it on are cached under
    another key than strict fp32 ones (`--precision tf32` vs `fp32`), and the sidecar says so."""
    from labshared.device import Precision, Runtime
    from tldr_cli.classifier import build_classifier
    from tldr_cli.config import PRESETS
    from tldr_cli.features import ClassifierHandle, classifier_features, load_splits

    monkeypatch.setenv("LABSHARED_CACHE", str(tmp_path))
    cfg = dataclasses.replace(PRESETS["toy"], toy_n_test=8)
    data = load_splits(cfg, ("test",))["test"]
    handle = ClassifierHandle(build_classifier("toy-cnn", 2).eval(), {}, "digest")
    for tf32 in (False, True):  # on the CPU TF32 changes nothing but the key
        name = "tf32" if tf32 else "fp32"
        rt = Runtime(torch.device("cpu"), Precision(name, torch.float32, False), 0, tf32=tf32)
        classifier_features(handle, data, cfg, rt, use_cache=True)
    sidecars = sorted((tmp_path / "features").glob("tldr-phi-test-*.json"))
    specs = [json.loads(p.read_text())["spec"] for p in sidecars]
    assert sorted((s["precision"], s["tf32"]) for s in specs) == [("fp32", False), ("fp32", True)]
