"""rtd_cli.model: pseudo-token text tower, projections and their checkpoint formats."""

import json

import open_clip
import pytest
import torch

from labshared.errors import ConfigError
from rtd_cli.model import (
    BASES,
    Im2Text,
    Phi,
    build_clip,
    build_projection,
    clip_dims,
    load_projection,
    prompt_for,
    pseudo_token_id,
    save_projection,
    text_tower_from_clip,
)
from rtd_cli.tower_file import load_text_tower, read_text_tower_config, save_text_tower

TINY_CFG = {
    "embed_dim": 32,
    "vision_cfg": {"image_size": 32, "layers": 1, "width": 64, "patch_size": 16},
    "text_cfg": {"context_length": 16, "vocab_size": 49408, "width": 48, "heads": 4, "layers": 2},
}


@pytest.fixture(scope="module")
def tiny(tmp_path_factory):
    """A random-weight open_clip model from a tiny registered config (no download)."""
    root = tmp_path_factory.mktemp("cfg")
    (root / "rtd-test-tiny.json").write_text(json.dumps(TINY_CFG))
    open_clip.add_model_config(root)
    torch.manual_seed(0)
    model, preprocess, tokenizer = build_clip("rtd-test-tiny", "random")
    return model, preprocess, tokenizer


def _manual_encode(model, ids, pseudo, token_id):
    """Independent formulation: index assignment row by row on the CLIP's own modules."""
    x = model.token_embedding(ids).clone()
    for b in range(ids.shape[0]):
        for pos in (ids[b] == token_id).nonzero().flatten().tolist():
            x[b, pos] = pseudo[b]
    x = x + model.positional_embedding
    x = model.transformer(x, attn_mask=model.attn_mask)
    x = model.ln_final(x)
    eot = [int(torch.argmax(ids[b])) for b in range(ids.shape[0])]
    pooled = torch.stack([x[b, eot[b]] for b in range(ids.shape[0])])
    return pooled @ model.text_projection


def test_pseudo_token_ids_come_from_the_tokenizer(tiny):
    _, _, tokenizer = tiny
    assert pseudo_token_id(tokenizer, "$") == 259
    assert pseudo_token_id(tokenizer, "*") == 265
    with pytest.raises(ConfigError, match="one token"):
        pseudo_token_id(tokenizer, "a photo")


@torch.no_grad()
def test_own_embedding_row_reproduces_encode_text_exactly(tiny):
    model, _, tokenizer = tiny
    tower = text_tower_from_clip(model)
    ids = tokenizer(["a photo of $ that is red", "a $ and a $", "no token here"])
    own_row = tower.token_embedding.weight[259].expand(3, -1)
    assert torch.equal(tower(ids, own_row, 259), model.encode_text(ids))
    assert torch.equal(tower(ids), model.encode_text(ids))


@torch.no_grad()
def test_replacement_matches_manual_computation_at_every_occurrence(tiny):
    model, _, tokenizer = tiny
    tower = text_tower_from_clip(model)
    ids = tokenizer(["a photo of $ that is red", "$ and $ again", "no token here"])
    pseudo = torch.randn(3, tower.width, generator=torch.Generator().manual_seed(1))
    out = tower(ids, pseudo, 259)
    torch.testing.assert_close(out, _manual_encode(model, ids, pseudo, 259), rtol=1e-5, atol=1e-5)
    plain = model.encode_text(ids)
    assert not torch.allclose(out[:2], plain[:2])  # the pseudo token changed rows 0 and 1
    torch.testing.assert_close(out[2], plain[2])  # row 2 has no `$`
    # Pic2Word's `*` works the same way through its own id.
    star = tokenizer(["a photo of * , red"])
    torch.testing.assert_close(
        tower(star, pseudo[:1], 265), _manual_encode(model, star, pseudo[:1], 265)
    )


def test_tower_is_a_deep_copy_and_trains_alone(tiny):
    model, _, tokenizer = tiny
    tower = text_tower_from_clip(model)
    before = model.token_embedding.weight.detach().clone()
    ids = tokenizer(["a photo of $ that is red"])
    pseudo = torch.randn(1, tower.width, requires_grad=True)
    tower(ids, pseudo).sum().backward()
    assert pseudo.grad is not None and pseudo.grad.abs().sum() > 0
    with torch.no_grad():
        tower.token_embedding.weight.add_(1.0)
    assert torch.equal(model.token_embedding.weight, before)
    assert set(tower.state_dict()) <= set(model.state_dict())  # open_clip parameter names


def test_pseudo_token_shape_is_checked(tiny):
    model, _, tokenizer = tiny
    tower = text_tower_from_clip(model)
    with pytest.raises(ValueError, match="expected"):
        tower(tokenizer(["a $"]), torch.zeros(1, tower.width + 1))


@torch.no_grad()
def test_text_tower_save_load_round_trip(tiny, tmp_path):
    model, _, tokenizer = tiny
    tower = text_tower_from_clip(model)
    for p in tower.parameters():
        p.add_(0.01 * torch.randn_like(p))
    path = save_text_tower(
        tmp_path / "tower.safetensors",
        tower,
        {"backbone": "rtd-test-tiny", "pretrained": "random", "step": 7},
    )
    assert json.loads(path.with_suffix(".json").read_text())["config"]["step"] == 7
    assert read_text_tower_config(path)["backbone"] == "rtd-test-tiny"
    loaded = load_text_tower(path, model, backbone="rtd-test-tiny")
    ids = tokenizer(["a photo of $ that is red"])
    pseudo = torch.randn(1, tower.width)
    assert torch.equal(loaded(ids, pseudo), tower(ids, pseudo))
    with pytest.raises(ConfigError, match="trained from backbone"):
        load_text_tower(path, model, backbone="ViT-B-32")


@torch.no_grad()
def test_partial_text_tower_keeps_base_values(tiny, tmp_path):
    model, _, _ = tiny
    tower = text_tower_from_clip(model)
    tower.ln_final.weight.fill_(2.0)
    tower.token_embedding.weight.fill_(3.0)  # not saved: must come back from the base
    path = save_text_tower(
        tmp_path / "t.safetensors",
        tower,
        {"backbone": "x", "pretrained": None},
        params=["ln_final.weight"],
    )
    loaded = load_text_tower(path, model)
    assert torch.equal(loaded.ln_final.weight, torch.full_like(loaded.ln_final.weight, 2.0))
    assert torch.equal(loaded.token_embedding.weight, model.token_embedding.weight)


def test_text_tower_shape_mismatch_is_reported(tiny, tmp_path):
    from safetensors.torch import save_file

    model, _, _ = tiny
    save_file({"ln_final.weight": torch.zeros(7)}, str(tmp_path / "bad.safetensors"))
    with pytest.raises(ConfigError, match=r"ln_final.weight.*\(7,\).*\(48,\)"):
        load_text_tower(tmp_path / "bad.safetensors", model)


def test_projection_layer_names_match_official_checkpoints():
    phi = build_projection("searle", 32, 48)
    assert isinstance(phi, Phi)
    assert sorted(phi.state_dict()) == sorted(
        f"layers.{i}.{p}" for i in (0, 3, 6) for p in ("weight", "bias")
    )
    assert phi.layers[0].weight.shape == (128, 32) and phi.layers[6].weight.shape == (48, 128)
    im2 = build_projection("pic2word", 32, 48)
    assert isinstance(im2, Im2Text)
    assert sorted(im2.state_dict()) == sorted(
        [
            "fc_out.weight",
            "fc_out.bias",
            "layers.0.0.weight",
            "layers.0.0.bias",
            "layers.1.0.weight",
            "layers.1.0.bias",
        ]
    )
    assert im2.layers[0][0].weight.shape == (512, 32) and im2.fc_out.weight.shape == (48, 512)


@pytest.mark.parametrize("base", sorted(BASES))
def test_projection_round_trip_in_official_format(base, tmp_path):
    module = build_projection(base, 32, 48).eval()
    path = save_projection(tmp_path / f"{base}.pt", module, base)
    raw = torch.load(path, weights_only=True)
    assert list(raw) == [BASES[base].checkpoint_key]
    if base == "pic2word":
        assert all(k.startswith("module.") for k in raw["state_dict_img2text"])
    loaded = load_projection(path, base, in_dim=32, token_dim=48)
    x = torch.randn(4, 32)
    assert not loaded.training
    assert torch.equal(loaded(x), module(x))


def test_projection_errors_name_expected_and_found(tmp_path):
    torch.save({"something": {}}, tmp_path / "wrong_key.pt")
    with pytest.raises(ConfigError, match=r"'Phi'.*found keys \['something'\]"):
        load_projection(tmp_path / "wrong_key.pt", "lincir")
    save_projection(tmp_path / "phi.pt", build_projection("lincir", 32, 48), "lincir")
    with pytest.raises(ConfigError, match="state_dict_img2text"):
        load_projection(tmp_path / "phi.pt", "pic2word")
    with pytest.raises(ConfigError, match="64-d embeddings"):
        load_projection(tmp_path / "phi.pt", "lincir", in_dim=64, token_dim=48)
    torch.save({"Phi": {"layers.0.weight": torch.zeros(4, 2)}}, tmp_path / "partial.pt")
    with pytest.raises(ConfigError, match="missing"):
        load_projection(tmp_path / "partial.pt", "searle")
    with pytest.raises(ConfigError, match="absent.pt: does not exist; expected a searle"):
        load_projection(tmp_path / "absent.pt", "searle")


def test_prompts_per_base_and_style():
    assert prompt_for("pic2word", "cirr", "base") == ("a photo of * , {mod}", "*")
    assert prompt_for("searle", "fashioniq", "base") == ("a photo of $ that {mod}", "$")
    for base in BASES:
        assert prompt_for(base, "circo", "rtd") == ("a photo of $ that {mod}", "$")
    with pytest.raises(ConfigError, match="did you mean 'lincir'"):
        prompt_for("lincr", "cirr")


def test_unknown_backbone_suggests_close_names(tiny):
    with pytest.raises(ConfigError, match="ViT-B-32"):
        build_clip("ViT-B-23", None)
    assert clip_dims(tiny[0]) == (32, 48)
