"""The tiny CLIP stand-in: registration, exact save/load round trip through open_clip's
factory, preprocessing agreement, the cache/lock logic, and the fitted model's retrieval."""

from __future__ import annotations

import json
import subprocess
import sys
import threading

import open_clip
import pytest
import torch

from labshared import toy
from labshared.errors import ConfigError
from labshared.tinyclip import fit as tiny_fit
from labshared.tinyclip.captions import (
    PARTIAL_TEMPLATES,
    CaptionBank,
    caption_matches,
    caption_variants,
    variant_fields,
)
from labshared.tinyclip.evaluate import evaluate_retrieval
from labshared.tinyclip.fit import (
    FIT_PROFILE_ENV,
    QUICK_FIT,
    FitConfig,
    _lr_at,
    default_fit,
    ensure_tiny_clip,
    fit_tiny_clip,
    load_tiny_clip,
    multi_positive_clip_loss,
    tiny_clip_path,
)
from labshared.tinyclip.model import (
    TINY_CLIP_NAME,
    create_random_tiny_clip,
    get_tokenizer,
    images_to_tensor,
    param_count,
    register_tiny_clip,
    save_tiny_clip,
)
from labshared.tinyclip.report import main


def test_registered_config_and_tokenizer():
    assert register_tiny_clip() == TINY_CLIP_NAME
    assert TINY_CLIP_NAME in open_clip.list_models()
    tok = open_clip.get_tokenizer(TINY_CLIP_NAME)
    ids = tok(["a red seven on grass", "a photo of $ that is blue"])
    assert ids.shape == (2, 16)
    # standard BPE ids: start/end of text are 49406/49407 in the 49408 vocabulary
    assert ids[0, 0].item() == 49406 and 49407 in ids[0].tolist()


def test_random_model_round_trips_through_the_cache_file(tmp_path):
    model = create_random_tiny_clip(seed=3)
    n_params = param_count(model)
    # 5.3M ModifiedResNet image tower + 6.3M token table + 0.6M text transformer
    assert 11_500_000 < n_params < 13_000_000
    assert type(model.visual).__name__ == "ModifiedResNet"
    path = save_tiny_clip(model, tmp_path / "w.safetensors", {"note": "test"})
    loaded, _, preprocess = open_clip.create_model_and_transforms(
        TINY_CLIP_NAME, pretrained=str(path)
    )
    a, b = model.state_dict(), loaded.state_dict()
    assert a.keys() == b.keys()
    for k in a:
        assert torch.equal(a[k], b[k]), k
    # and the two encode identically
    images = toy.make_split("val", 4).images
    model.eval()
    loaded.eval()
    with torch.no_grad():
        x = images_to_tensor(images)
        assert torch.equal(model.encode_image(x), loaded.encode_image(x))
    # a different seed gives different weights (the check above can fail)
    other = create_random_tiny_clip(seed=4)
    assert not torch.equal(other.state_dict()["text_projection"], a["text_projection"])


def test_preprocess_of_pil_matches_the_tensor_path():
    _, _, preprocess = open_clip.create_model_and_transforms(TINY_CLIP_NAME)
    images = toy.make_split("test", 3).images
    via_pil = torch.stack([preprocess(toy.to_pil(im)) for im in images])
    via_tensor = images_to_tensor(images)
    assert via_pil.shape == via_tensor.shape == (3, 3, 32, 32)
    assert torch.allclose(via_pil, via_tensor, atol=1e-5)


def test_caption_variants_cover_single_words():
    v = caption_variants(7, 0, 0)
    assert v[0] == "a red seven on grass"
    assert {"seven", "red", "grass", "a seven", "on grass", "a red digit"} <= set(v)
    # the label names of toy.CLASS_FNS are grounded too (TLDR embeds them)
    assert {"a large digit", "an odd digit"} <= set(v)
    assert {"a small digit", "an even digit"} <= set(caption_variants(4, 1, 2))


def test_lr_schedule_warmup_then_cosine():
    fit = FitConfig(steps=110, warmup=10, lr=1.0)
    assert _lr_at(0, fit) == pytest.approx(0.1)
    assert _lr_at(9, fit) == pytest.approx(1.0)
    assert _lr_at(60, fit) == pytest.approx(0.5)  # half-way through the cosine
    assert _lr_at(110, fit) == pytest.approx(0.0, abs=1e-12)


def test_caption_bank_samples_the_right_caption():
    bank = CaptionBank(get_tokenizer())
    attrs = torch.tensor([[7, 0, 0], [3, 2, 5]])
    gen = torch.Generator().manual_seed(0)
    full, variant = bank.sample(attrs, gen, full_prob=1.0)
    expected = get_tokenizer()(["a red seven on grass", "a blue three on sand"])
    assert torch.equal(full, expected) and variant.tolist() == [0, 0]
    partial, variant = bank.sample(attrs.repeat(50, 1), gen, full_prob=0.0)
    assert not (partial == expected.repeat(50, 1)).all(1).any()
    assert (variant >= 1).all()
    texts = [caption_variants(7, 0, 0)[v] for v in variant[::2].tolist()]
    assert torch.equal(partial[::2], get_tokenizer()(texts))


def test_caption_matches_by_what_each_caption_states():
    v = {t: i + 1 for i, t in enumerate(PARTIAL_TEMPLATES)}
    # images: red 7 on grass, blue 7 on sand, red 2 on grass, red 7 on grass (a duplicate)
    attrs = torch.tensor([[7, 0, 0], [7, 2, 5], [2, 0, 0], [7, 0, 0]])
    variant = torch.tensor([0, v["a {d}"], v["a {s} digit"], v["{c}"]])
    m = caption_matches(attrs, variant)
    assert m.tolist() == [
        [True, False, False, True],  # full caption: image 0 and its duplicate 3
        [True, True, False, True],  # "a seven": every seven
        [False, False, True, False],  # "a small digit" (for the 2): only the 2
        [True, False, True, True],  # "red": every red image
    ]
    fields = variant_fields()
    assert fields[0].tolist() == [True, True, True, False, False]
    assert fields[v["an {p} digit"]].tolist() == [False, False, False, False, True]


def test_multi_positive_loss_is_clip_loss_on_the_diagonal_and_hand_checked_otherwise():
    from open_clip.loss import ClipLoss

    gen = torch.Generator().manual_seed(0)
    img = torch.nn.functional.normalize(torch.randn(5, 8, generator=gen), dim=-1)
    txt = torch.nn.functional.normalize(torch.randn(5, 8, generator=gen), dim=-1)
    scale = torch.tensor(7.0)
    eye = torch.eye(5, dtype=torch.bool)
    ours = multi_positive_clip_loss(img, txt, scale, eye)
    assert ours.item() == pytest.approx(ClipLoss()(img, txt, scale).item(), rel=1e-6)
    # two texts, two images; text 0 is true of both images, text 1 only of image 1
    img2, txt2 = img[:2], txt[:2]
    pos = torch.tensor([[True, True], [False, True]])
    logits = scale * txt2 @ img2.T
    lt, li = logits.log_softmax(1), logits.T.log_softmax(1)
    t2i = (-(lt[0, 0] + lt[0, 1]) / 2 - lt[1, 1]) / 2
    i2t = (-li[0, 0] - (li[1, 0] + li[1, 1]) / 2) / 2
    expected = (t2i + i2t) / 2
    got = multi_positive_clip_loss(img2, txt2, scale, pos)
    assert got.item() == pytest.approx(expected.item(), rel=1e-6)


def test_ensure_uses_cache_and_lock(tmp_path, monkeypatch):
    """A cached file is returned without fitting; a missing one is fitted exactly once even
    when two threads ask at the same time (file lock), and the sidecar records stats."""
    monkeypatch.setenv("LABSHARED_CACHE", str(tmp_path))
    calls = []

    def fake_fit(fit, device="cpu"):
        calls.append(fit)
        return create_random_tiny_clip(0), {"fit_seconds": 0.0}

    monkeypatch.setattr(tiny_fit, "fit_tiny_clip", fake_fit)
    monkeypatch.setattr(
        tiny_fit, "evaluate_retrieval", lambda model, n=300, seed=0: {"t2i_r1": 0.0}
    )
    fit = FitConfig(steps=1)
    results = []
    threads = [
        threading.Thread(target=lambda: results.append(ensure_tiny_clip(fit=fit))) for _ in range(2)
    ]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert len(calls) == 1
    assert results[0] == results[1] == tiny_clip_path(fit)
    assert results[0].parent == tmp_path / "tinyclip"
    sidecar = json.loads(results[0].with_suffix(".json").read_text())
    assert sidecar["spec"]["fit"]["steps"] == 1 and sidecar["stats"]["retrieval"]["t2i_r1"] == 0.0
    ensure_tiny_clip(fit=fit)
    assert len(calls) == 1  # cache hit
    ensure_tiny_clip(force=True, fit=fit)
    assert len(calls) == 2
    # a different setting is a different file
    assert tiny_clip_path(FitConfig(steps=2)) != results[0]


def test_quick_fit_learns_colour_and_background_and_loads_through_open_clip(capsys):
    """The suite's quick profile (tests/conftest.py): fitted once per clone in seconds,
    then loaded through the factory. Its quality is not the point (the full fit's is gated
    in tests/effects); a fit that learns nothing would still fail here."""
    assert default_fit() == QUICK_FIT
    model, preprocess, tokenizer = load_tiny_clip()
    figures = evaluate_retrieval(model, n=300)
    chance = 1 / len(toy.COLOUR_NAMES)  # also 1 / len(toy.BACKGROUNDS)
    assert figures["zeroshot_colour"] > 2 * chance, figures
    assert figures["zeroshot_background"] > 2 * chance, figures
    assert figures["t2i_r1"] > 5 * figures["t2i_chance"], figures
    assert tokenizer(["seven"]).shape == (1, 16)
    # the report entry point (`make demo`) prints the same figures from the cached fit
    assert main(["--report", "--fit", "quick"]) == 0
    out = capsys.readouterr().out
    assert "fit_cpu_seconds" in out and "zeroshot_digit" in out


def test_fit_profile_comes_from_the_environment(monkeypatch):
    monkeypatch.setenv(FIT_PROFILE_ENV, "full")
    assert default_fit() == FitConfig()
    assert tiny_clip_path() == tiny_clip_path(FitConfig())
    monkeypatch.setenv(FIT_PROFILE_ENV, "fast")
    with pytest.raises(ConfigError, match="LABSHARED_TINY_CLIP_FIT='fast'; expected one of"):
        default_fit()


def test_digit_head_enters_the_loss_and_is_not_saved(monkeypatch):
    """Two 2-step fits that differ only in the digit head's weight end with different
    towers, and neither state dict holds a head (the saved model is plain open_clip)."""
    a, _ = fit_tiny_clip(FitConfig(steps=2, batch_size=16, warmup=1))
    b, _ = fit_tiny_clip(FitConfig(steps=2, batch_size=16, warmup=1, digit_weight=0.0))
    keys = set(a.state_dict())
    assert keys == set(create_random_tiny_clip(0).state_dict())
    assert not torch.equal(a.visual.attnpool.c_proj.weight, b.visual.attnpool.c_proj.weight)


def test_a_fit_leaves_the_callers_global_generator_as_it_was():
    """A command that fits the tiny CLIP on first use must draw afterwards exactly what it
    draws when the fit is cached (its own init, e.g. rtd train-phi's phi)."""
    torch.manual_seed(123)
    expected = torch.rand(4)
    torch.manual_seed(123)
    fit_tiny_clip(FitConfig(steps=1, batch_size=8, warmup=1))
    assert torch.equal(torch.rand(4), expected)


def test_the_package_runs_as_a_module():
    """`python -m labshared.tinyclip` (the Makefile's and README's spelling) reaches the
    report command: without --report or --force it prints its help and exits 0."""
    out = subprocess.run(
        [sys.executable, "-m", "labshared.tinyclip"], capture_output=True, text=True, check=True
    )
    assert out.stdout.startswith("usage: python -m labshared.tinyclip")
    assert "--report" in out.stdout and "--fit {full,quick}" in out.stdout
