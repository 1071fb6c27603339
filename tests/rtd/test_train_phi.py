"""rtd train-phi: keyword masking (built-in rule and the spaCy rule on a stand-in pipeline),
the LinCIR objective, the official checkpoint format, resume and the CLI."""

import json
import random
from pathlib import Path
from types import SimpleNamespace

import open_clip
import pytest
import torch
import torch.nn.functional as F
from typer.testing import CliRunner

from labshared.device import Precision, Runtime
from labshared.errors import ConfigError
from rtd_cli import config as C
from rtd_cli import model as M
from rtd_cli.cli import app
from rtd_cli.keywords import KeywordMasker, clean_caption, load_masker, mask_runs
from rtd_cli.train_phi import masked_batch, train_phi

TINY = "rtd-phi-tiny"
CPU = Runtime(torch.device("cpu"), Precision("fp32", torch.float32, False), seed=0)


@pytest.fixture(scope="module", autouse=True)
def tiny_config(tmp_path_factory):
    root = tmp_path_factory.mktemp("cfg")
    cfg = {
        "embed_dim": 32,
        "vision_cfg": {"image_size": 32, "layers": 1, "width": 64, "patch_size": 16},
        "text_cfg": {
            "context_length": 16,
            "vocab_size": 49408,
            "width": 48,
            "heads": 4,
            "layers": 2,
        },
    }
    (root / f"{TINY}.json").write_text(json.dumps(cfg))
    open_clip.add_model_config(root)


# --------------------------------------------------------------------------- keywords
def test_clean_caption_like_lincir():
    assert clean_caption("A <PERSON> holding $5 ") == "a person holding 5"
    assert clean_caption(None) == ""


def test_builtin_masks_keyword_runs_with_one_symbol_each():
    m = KeywordMasker("builtin")
    rng = random.Random(0)
    assert m.mask("A photo of a red car on the street.", rng) == (
        "a photo of a red car on the street.", "$ of $ on $", True)  # fmt: skip
    assert m.mask("a red seven on grass", rng)[1] == "$ on $"
    # "a" inside words is untouched (LinCIR's str.replace would hit "grass" and "car").
    assert "$" not in m.mask("a cat", rng)[1].replace("$", "", 1)


def test_no_keyword_replaces_one_word_and_empty_falls_back():
    m = KeywordMasker("builtin", symbol="*")
    clean, masked, found = m.mask("it is on there", random.Random(1))
    assert not found and masked.count("*") == 1 and len(masked.split()) == 4
    assert m.mask("  $ ", random.Random(0)) == ("", "a photo of *", False)


def test_spacy_rule_on_a_stand_in_pipeline():
    """NOUN/PROPN/ADJ/DET runs, as `lincir:loader.py::extract_keywords_spacy`."""
    tags = {"a": "DET", "dog": "NOUN", "runs": "VERB", "on": "ADP", "green": "ADJ", "grass": "NOUN"}

    def nlp(text):
        words = text.split()
        return [SimpleNamespace(text=w, pos_=tags[w], whitespace_=" " if i < len(words) - 1 else "")
                for i, w in enumerate(words)]  # fmt: skip

    m = KeywordMasker("spacy", "$", nlp)
    assert m.mask("A dog runs on green grass", random.Random(0))[1] == "$ runs on $"


def test_mask_runs_keeps_whitespace_and_load_masker_errors():
    assert mask_runs([("a", " ", True), ("b", " ", True), ("c", "", False)], "$") == "$ c"
    assert load_masker("builtin").backend == "builtin"
    assert load_masker("auto").backend in ("builtin", "spacy")
    with pytest.raises(ConfigError, match="expected one of"):
        load_masker("nltk")
    try:
        import spacy  # noqa: F401
    except ImportError:
        with pytest.raises(ConfigError, match="--keywords builtin"):
            load_masker("spacy")


def test_masked_batch_is_a_function_of_seed_step_rank():
    m = KeywordMasker("builtin")
    caps = ["it is on there", "it was here", "a red car"]
    a = masked_batch(caps, m, seed=1, step=5, rank=0)
    assert a == masked_batch(caps, m, seed=1, step=5, rank=0)
    assert a[2] == pytest.approx(1 / 3)


# --------------------------------------------------------------------------- training
def phi_cfg(**kw) -> C.PhiConfig:
    base = dict(backbone=TINY, pretrained="random", captions="toy:40", steps=4, batch_size=8,
                checkpoint_every=2, log_every=1)  # fmt: skip
    base.update(kw)
    return C.resolve(C.PHI_PRESETS, "toy", **base)


def test_train_phi_lowers_the_lincir_mse_and_writes_official_format(tmp_path):
    torch.manual_seed(0)
    cfg = phi_cfg(steps=12, lr=3e-3)
    out = train_phi(cfg, tmp_path / "run", CPU)
    losses = [h["loss"] for h in out["history"]]
    assert out["step"] == 12 and losses[-1] < losses[0]
    ckpt = torch.load(out["phi"], weights_only=True)
    assert set(ckpt) == {"Phi"} and "layers.6.weight" in ckpt["Phi"]
    phi = M.load_projection(out["phi"], "lincir", in_dim=32, token_dim=48)
    # The objective recomputed independently (eval mode, no noise) on toy captions: the
    # trained phi beats a fresh one.
    from labshared.data.text_triplets import load_captions

    torch.manual_seed(0)  # the same random CLIP as the run
    clip_model, _, tok = M.build_clip(TINY, "random")
    tower = M.text_tower_from_clip(clip_model).eval()
    masker = KeywordMasker("builtin")
    caps = load_captions("toy:8").captions
    masked = [masker.mask(c, random.Random(0))[1] for c in caps]
    fresh = M.build_projection("lincir", 32, 48).eval()
    with torch.no_grad():
        e = tower(tok(caps))

        def mse(p):
            return F.mse_loss(tower(tok(masked), pseudo_tokens=p(e), pseudo_token_id=259), e).item()

        assert mse(phi) < mse(fresh)


def test_train_phi_resume_and_pic2word(tmp_path):
    torch.manual_seed(0)
    cfg = phi_cfg(base="pic2word")
    full = train_phi(cfg, tmp_path / "full", CPU)
    torch.manual_seed(0)
    assert train_phi(cfg, tmp_path / "cut", CPU, stop_after=2)["stopped"]
    torch.manual_seed(0)  # the same random CLIP
    resumed = train_phi(cfg, tmp_path / "cut", CPU, resume=True)
    assert resumed["loss"] == pytest.approx(full["loss"], rel=1e-5)
    a = torch.load(full["phi"], weights_only=True)["state_dict_img2text"]
    b = torch.load(resumed["phi"], weights_only=True)["state_dict_img2text"]
    assert all(k.startswith("module.") for k in a)
    for k in a:
        torch.testing.assert_close(a[k], b[k])
    assert isinstance(M.load_projection(full["phi"], "pic2word"), M.Im2Text)


def test_cli_train_phi(tmp_path):
    runner = CliRunner()
    res = runner.invoke(app, ["train-phi", "--dry-run", "--captions", "c.txt"])
    assert res.exit_code == 0
    cfg = json.loads(res.stdout)["config"]
    assert (cfg["lr"], cfg["batch_size"], cfg["noise_scale"]) == (1e-4, 256, 1.0)
    res = runner.invoke(app, ["train-phi", "--preset", "toy", "--dropout", "1.5"])
    assert res.exit_code == 1 and "--dropout" in res.output
    out = tmp_path / "run"
    res = runner.invoke(app, ["train-phi", "--preset", "toy", "--backbone", TINY, "--pretrained",
                              "random", "--captions", "toy:20", "--steps", "2", "--batch-size",
                              "4", "-o", str(out), "--device", "cpu"])  # fmt: skip
    assert res.exit_code == 0, res.output
    summary = json.loads(res.stdout[res.stdout.index("{") :])
    assert Path(summary["phi"]).is_file() and summary["keywords"] == "builtin"
