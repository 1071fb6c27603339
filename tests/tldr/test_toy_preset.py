"""The toy preset's embedding choices: clip_normalize (the official option), the toy's own
caption templates, the data seed, and the diagnostics printed under the results table."""

import dataclasses

import pytest
import torch

from labshared.config import resolve
from labshared.errors import ConfigError
from tldr_cli.config import PRESETS, TLDRConfig
from tldr_cli.features import load_splits
from tldr_cli.pipeline import embed_space
from tldr_cli.retrain import diagnostics
from tldr_cli.textdata import TOY_TEMPLATES, caption_templates, pair_embeddings


def test_pair_embedding_is_renormalised_mean_of_unit_words_under_clip_normalize():
    words = torch.tensor([[[3.0, 4.0]], [[0.0, 2.0]]])  # (W=2, T=1, D=2) raw
    cfg = dataclasses.replace(PRESETS["toy"], preprocess_embed="clip_normalize")
    unit = embed_space(words, cfg)
    assert torch.allclose(unit[:, 0], torch.tensor([[0.6, 0.8], [0.0, 1.0]]))
    t, s, k = torch.tensor([0]), torch.tensor([1]), torch.tensor([0])
    mean = torch.tensor([0.3, 0.9])  # (0.6 + 0) / 2, (0.8 + 1) / 2
    got = pair_embeddings(unit, t, s, k, normalize=True)
    assert torch.allclose(got, mean / mean.norm())
    # "none" (the paper's script): raw words, raw mean
    raw = dataclasses.replace(cfg, preprocess_embed="none")
    assert torch.equal(embed_space(words, raw), words)
    assert torch.allclose(pair_embeddings(words, t, s, k), torch.tensor([[1.5, 3.0]]))


def test_template_sets_and_config_validation():
    assert caption_templates("toy") == list(TOY_TEMPLATES) == ["a photo of a {}.", "a {}", "{}"]
    assert len(caption_templates("imagenet")) == 80
    assert PRESETS["toy"].templates == "toy" and PRESETS["waterbirds"].templates == "imagenet"
    assert PRESETS["waterbirds"].preprocess_embed == "none"  # script.sh
    # names are checked by the fields' `choices` whenever a config resolves (flags, --config)
    with pytest.raises(ConfigError, match="--preprocess-embed 'l2'"):
        resolve(PRESETS, "toy", {"preprocess_embed": "l2"})
    with pytest.raises(ConfigError, match="--templates 'coco'"):
        resolve(PRESETS, "toy", {"templates": "coco"})
    with pytest.raises(ConfigError, match="--ridge-lambda 0"):  # a range: checked on creation
        TLDRConfig(name="x", dataset="toy", ridge_lambda=0)


def test_toy_seed_redraws_the_spurious_split_and_keeps_its_statistics():
    cfg = dataclasses.replace(PRESETS["toy"], toy_n_train=200)
    a = load_splits(cfg, ("train",))["train"]
    b = load_splits(dataclasses.replace(cfg, toy_seed=1), ("train",))["train"]
    assert a.fingerprint["seed"] == 0 and b.fingerprint["seed"] == 1
    assert not torch.equal(a.images, b.images)
    # the same exact train correlation (round(200 * 0.95) aligned) under both seeds
    assert (a.label == a.spurious).sum() == (b.label == b.spurious).sum() == 190


def test_diagnostics_name_r2_and_the_head_loss():
    info = {
        "projector_r2_train": 0.8671,
        "gap_norm": 0.87,
        "tldr": {
            "pairs": 10,
            "words": 5,
            "templates": "toy",
            "epoch_losses": [1.25, 0.5, 0.02],
            "loss_figure": "f.png",
        },
    }
    text = diagnostics(info)
    assert "projector R^2 on the training images: 0.867" in text
    assert "loss 1.250 -> 0.020 over 3 epochs (f.png)" in text
    assert diagnostics({}) == ""
