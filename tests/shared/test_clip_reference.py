"""Our CLIP path against an independent implementation: Hugging Face `transformers` CLIP.

No real weights can be had offline, so one set of random weights is copied into both our
open_clip model (built by `labshared.clip.create_clip` for the `openai` tag, i.e. with the
activation the factory picks) and a `CLIPModel` configured by hand as OpenAI's ViT-B/32 and
ViT-L/14 (`hidden_act="quick_gelu"`, the hub configs' values) through `open_clip_to_hf`,
written here. Then, to 1e-4:

- text features (`encode_text` vs `get_text_features`);
- pseudo-token text features: rtd's `TextTower` vs the official RTD/LinCIR recipe, a plain
  `inputs_embeds` substitution on the HF text model (`encode_with_pseudo_tokens_HF`);
- image features (`encode_image` vs `get_image_features`);
- preprocessing: our transform vs `CLIPImageProcessor` with OpenAI's settings on real photos
  from scikit-image.

`test_the_old_construction_fails_the_comparison` shows this is the check that catches the
GELU defect: open_clip's plain `create_model("ViT-B-32")` (no quick_gelu) is off by > 1e-2.

ViT-B/32 runs at full depth; ViT-L/14 at depth 2 in the default suite (full width,
activation and everything else) and at full depth under `slow`.
"""

from __future__ import annotations

import math
import re

import open_clip
import pytest
import torch
from PIL import Image
from skimage import data as skdata
from transformers import CLIPConfig, CLIPImageProcessor, CLIPModel
from transformers.models.clip.image_processing_pil_clip import CLIPImageProcessorPil

from labshared.clip import create_clip
from rtd_cli.model import pseudo_token_id, text_tower_from_clip

ATOL = 1e-4
OPENAI_MEAN = [0.48145466, 0.4578275, 0.40821073]
OPENAI_STD = [0.26862954, 0.26130258, 0.27577711]

# OpenAI's CLIP configurations, as on the hub (openai/clip-vit-base-patch32 and
# openai/clip-vit-large-patch14 config.json): QuickGELU, LayerNorm eps 1e-5, 77 positions,
# and the legacy eos_token_id 2 that makes HF pool at argmax(ids), as those checkpoints do.
HF_SPECS = {
    "ViT-B-32": {
        "text": {"hidden_size": 512, "intermediate_size": 2048, "num_hidden_layers": 12,
                 "num_attention_heads": 8},
        "vision": {"hidden_size": 768, "intermediate_size": 3072, "num_hidden_layers": 12,
                   "num_attention_heads": 12, "patch_size": 32},
        "projection_dim": 512,
    },
    "ViT-L-14": {
        "text": {"hidden_size": 768, "intermediate_size": 3072, "num_hidden_layers": 12,
                 "num_attention_heads": 12},
        "vision": {"hidden_size": 1024, "intermediate_size": 4096, "num_hidden_layers": 24,
                   "num_attention_heads": 16, "patch_size": 14},
        "projection_dim": 768,
    },
}  # fmt: skip

CAPTIONS = [
    "a photo of a cat",
    "two dogs playing in the snow, seen from above",
    "x",
    " ".join(["a very long caption that the tokenizer must truncate"] * 12),  # EOT at 76
]
PSEUDO_PROMPTS = [
    "a photo of $ that is red",
    "$",
    "a photo of $ , $ and $ on a table",  # every `$` gets the row's vector (torch.where)
    "a photo of $ that " + " ".join(["has a much longer modification text"] * 10),
]


# --------------------------------------------------------------------------- conversion
def open_clip_to_hf(state: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
    """An open_clip ViT CLIP state dict -> a transformers `CLIPModel` state dict.

    open_clip keeps q, k, v in one `in_proj_weight` (3W, W) and stores projections as
    (W, D) matrices applied as `x @ P`; HF has separate q/k/v Linear layers and bias-free
    projection Linears whose weight is P transposed. Every key must be consumed.
    """
    out: dict[str, torch.Tensor] = {}
    left = dict(state)

    def take(key: str) -> torch.Tensor:
        return left.pop(key)

    def blocks(src: str, dst: str) -> None:
        ids = sorted({int(m.group(1)) for k in state if (m := re.match(rf"{src}\.(\d+)\.", k))})
        for i in ids:
            s, d = f"{src}.{i}", f"{dst}.{i}"
            q, k, v = take(f"{s}.attn.in_proj_weight").chunk(3)
            qb, kb, vb = take(f"{s}.attn.in_proj_bias").chunk(3)
            for name, w, bias in (("q", q, qb), ("k", k, kb), ("v", v, vb)):
                out[f"{d}.self_attn.{name}_proj.weight"] = w
                out[f"{d}.self_attn.{name}_proj.bias"] = bias
            pairs = {
                "attn.out_proj": "self_attn.out_proj",
                "ln_1": "layer_norm1",
                "ln_2": "layer_norm2",
                "mlp.c_fc": "mlp.fc1",
                "mlp.c_proj": "mlp.fc2",
            }
            for a, b in pairs.items():
                for p in ("weight", "bias"):
                    out[f"{d}.{b}.{p}"] = take(f"{s}.{a}.{p}")

    t, v = "text_model", "vision_model"
    out[f"{t}.embeddings.token_embedding.weight"] = take("token_embedding.weight")
    out[f"{t}.embeddings.position_embedding.weight"] = take("positional_embedding")
    blocks("transformer.resblocks", f"{t}.encoder.layers")
    for p in ("weight", "bias"):
        out[f"{t}.final_layer_norm.{p}"] = take(f"ln_final.{p}")
        out[f"{v}.pre_layrnorm.{p}"] = take(f"visual.ln_pre.{p}")  # sic: HF's spelling
        out[f"{v}.post_layernorm.{p}"] = take(f"visual.ln_post.{p}")
    out["text_projection.weight"] = take("text_projection").T.contiguous()
    out[f"{v}.embeddings.class_embedding"] = take("visual.class_embedding")
    out[f"{v}.embeddings.patch_embedding.weight"] = take("visual.conv1.weight")
    out[f"{v}.embeddings.position_embedding.weight"] = take("visual.positional_embedding")
    blocks("visual.transformer.resblocks", f"{v}.encoder.layers")
    out["visual_projection.weight"] = take("visual.proj").T.contiguous()
    out["logit_scale"] = take("logit_scale")
    if left:
        raise KeyError(f"open_clip keys with no HF counterpart: {sorted(left)[:8]}")
    return out


def hf_clip(name: str, text_layers: int | None = None, vision_layers: int | None = None):
    """A transformers CLIPModel with OpenAI's configuration of `name` (depth optional)."""
    spec = HF_SPECS[name]
    common = {"hidden_act": "quick_gelu", "layer_norm_eps": 1e-5}
    text = {**spec["text"], **common, "vocab_size": 49408, "max_position_embeddings": 77,
            "bos_token_id": 0, "eos_token_id": 2, "pad_token_id": 1}  # fmt: skip
    vision = {**spec["vision"], **common, "image_size": 224, "num_channels": 3}
    if text_layers is not None:
        text["num_hidden_layers"] = text_layers
    if vision_layers is not None:
        vision["num_hidden_layers"] = vision_layers
    config = CLIPConfig(
        text_config=text, vision_config=vision, projection_dim=spec["projection_dim"]
    )
    config._attn_implementation = "eager"  # plain matmul-softmax: the simplest reference
    return CLIPModel(config).eval()


# --------------------------------------------------------------------------- our side
def _fill_random(model: torch.nn.Module, seed: int) -> None:
    """Random values on every parameter (the same values then go into both models):
    LayerNorm gains near 1, everything else N(0, 0.02), biases N(0, 0.1), so every MLP's
    pre-activations spread over [-2, 2] where GELU and QuickGELU differ."""
    gen = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for name, p in model.named_parameters():
            noise = torch.randn(p.shape, generator=gen)
            if name == "logit_scale":
                p.fill_(math.log(1 / 0.07))
            elif p.ndim == 1 and re.search(r"ln_\w+\.weight|ln_\d\.weight", name):
                p.copy_(1 + 0.1 * noise)
            elif p.ndim == 1:
                p.copy_(0.1 * noise)
            else:
                p.copy_(0.02 * noise)


def ours_shallow(name: str, text_layers: int, vision_layers: int, seed: int):
    """Our model as the factory builds it for `name`/openai, cut to a few blocks: built on
    `meta` (no cost), blocks dropped, then given real memory and random values."""
    bundle = create_clip(name, "openai", load_weights=False, device="meta")
    model = bundle.model
    model.transformer.resblocks = model.transformer.resblocks[:text_layers]
    model.visual.transformer.resblocks = model.visual.transformer.resblocks[:vision_layers]
    model.to_empty(device="cpu")
    # the causal mask is a non-persistent buffer: `to_empty` leaves it uninitialised, so it
    # is rebuilt as open_clip's TextTransformer.build_causal_mask builds it
    n = model.positional_embedding.shape[0]
    model.attn_mask = torch.full((n, n), float("-inf")).triu_(1)
    _fill_random(model, seed)
    return bundle._replace(model=model.eval())


def ours_full(name: str, seed: int):
    """Our model as the factory builds it for `name`/openai on the CPU (open_clip's own
    construction and initialisation), then the same random values as `ours_shallow`."""
    torch.manual_seed(seed)
    bundle = create_clip(name, "openai", load_weights=False)
    _fill_random(bundle.model, seed)
    return bundle


def twin(bundle, hf_model):
    hf_model.load_state_dict(open_clip_to_hf(bundle.model.state_dict()), strict=True)
    return bundle, hf_model


@pytest.fixture(scope="module")
def b32():
    return twin(ours_full("ViT-B-32", seed=0), hf_clip("ViT-B-32"))


@pytest.fixture(scope="module")
def l14_shallow():
    return twin(ours_shallow("ViT-L-14", 2, 2, seed=1), hf_clip("ViT-L-14", 2, 2))


# --------------------------------------------------------------------------- comparisons
def _max_diff(a: torch.Tensor, b: torch.Tensor) -> float:
    return float((a - b).abs().max())


def check_text(bundle, hf_model) -> None:
    ids = bundle.tokenizer(CAPTIONS)
    assert int(ids[3].argmax()) == 76  # the long caption really is truncated
    with torch.no_grad():
        ours = bundle.model.encode_text(ids)
        ref = hf_model.get_text_features(input_ids=ids).pooler_output
        # a padding mask changes nothing at the pooled EOT position (it is causal anyway)
        masked = hf_model.get_text_features(input_ids=ids, attention_mask=(ids != 0).long())
    assert ours.shape == ref.shape and ref.abs().mean() > 0.1
    assert _max_diff(ours, ref) < ATOL, _max_diff(ours, ref)
    assert _max_diff(masked.pooler_output, ref) < ATOL


def hf_pseudo_token_features(hf_model, ids, pseudo, token_id):
    """The official recipe (RTD/LinCIR `encode_with_pseudo_tokens_HF`) on an HF text model:
    token embeddings with `torch.where` at every `$`, positions added, the encoder with a
    causal mask, the final LayerNorm, the row at argmax(ids) (EOT), the projection."""
    text = hf_model.text_model
    x = text.embeddings.token_embedding(ids)
    x = torch.where((ids == token_id).unsqueeze(-1), pseudo.unsqueeze(1), x)
    x = text.embeddings(inputs_embeds=x)
    n = ids.shape[1]
    causal = torch.full((n, n), float("-inf")).triu(1)[None, None]  # (1, 1, L, L) additive
    x = text.encoder(inputs_embeds=x, attention_mask=causal).last_hidden_state
    x = text.final_layer_norm(x)
    pooled = x[torch.arange(x.shape[0]), ids.argmax(dim=-1)]
    return hf_model.text_projection(pooled)


def check_pseudo_tokens(bundle, hf_model) -> None:
    tok = bundle.tokenizer
    token_id = pseudo_token_id(tok, "$")
    ids = tok(PSEUDO_PROMPTS)
    assert token_id == 259 and (ids == token_id).sum(1).tolist()[:3] == [1, 1, 3]
    tower = text_tower_from_clip(bundle.model)
    width = tower.width
    pseudo = torch.randn(len(PSEUDO_PROMPTS), width, generator=torch.Generator().manual_seed(7))
    with torch.no_grad():
        ours = tower(ids, pseudo, token_id)
        ref = hf_pseudo_token_features(hf_model, ids, pseudo, token_id)
        plain = hf_model.get_text_features(input_ids=ids).pooler_output
    assert _max_diff(ours, ref) < ATOL, _max_diff(ours, ref)
    assert _max_diff(ref, plain) > 1e-2  # the substitution really changed the features


def check_images(bundle, hf_model) -> None:
    pixels = torch.randn(3, 3, 224, 224, generator=torch.Generator().manual_seed(3))
    with torch.no_grad():
        ours = bundle.model.encode_image(pixels)
        ref = hf_model.get_image_features(pixel_values=pixels).pooler_output
    assert ours.shape == ref.shape and ref.abs().mean() > 0.1
    assert _max_diff(ours, ref) < ATOL, _max_diff(ours, ref)


@pytest.mark.parametrize("check", [check_text, check_pseudo_tokens, check_images])
def test_vit_b32_full_depth_matches_transformers(b32, check):
    check(*b32)


@pytest.mark.parametrize("check", [check_text, check_pseudo_tokens, check_images])
def test_vit_l14_shallow_matches_transformers(l14_shallow, check):
    check(*l14_shallow)


@pytest.mark.slow
def test_vit_l14_full_depth_matches_transformers():
    pair = twin(ours_full("ViT-L-14", seed=2), hf_clip("ViT-L-14"))
    for check in (check_text, check_pseudo_tokens, check_images):
        check(*pair)


def test_the_old_construction_fails_the_comparison(b32):
    """What the code did before the factory: `create_model_and_transforms("ViT-B-32",
    pretrained="openai")` without force_quick_gelu builds nn.GELU. With the same weights
    it misses the reference by far more than the tolerance."""
    bundle, hf_model = b32
    old = open_clip.create_model("ViT-B-32").eval()
    old.load_state_dict(bundle.model.state_dict())
    ids = bundle.tokenizer(CAPTIONS)
    with torch.no_grad():
        ref = hf_model.get_text_features(input_ids=ids).pooler_output
        assert _max_diff(old.encode_text(ids), ref) > 1e-2
        pixels = torch.randn(2, 3, 224, 224, generator=torch.Generator().manual_seed(3))
        ref_img = hf_model.get_image_features(pixel_values=pixels).pooler_output
        assert _max_diff(old.encode_image(pixels), ref_img) > 1e-2


def test_converted_weights_round_trip_exactly(l14_shallow):
    """Every HF tensor is the open_clip tensor it came from (no silent default init)."""
    bundle, hf_model = l14_shallow
    converted = open_clip_to_hf(bundle.model.state_dict())
    hf_state = hf_model.state_dict()
    assert set(converted) == set(hf_state) - {k for k in hf_state if k.endswith("position_ids")}
    for k, v in converted.items():
        assert torch.equal(hf_state[k], v), k


# --------------------------------------------------------------------------- preprocessing
PHOTOS = {"astronaut": skdata.astronaut, "chelsea": skdata.chelsea, "coffee": skdata.coffee}
OPENAI_PROCESSOR = {
    "do_resize": True,
    "size": {"shortest_edge": 224},
    "resample": Image.BICUBIC,
    "do_center_crop": True,
    "crop_size": {"height": 224, "width": 224},
    "do_rescale": True,
    "rescale_factor": 1 / 255,
    "do_normalize": True,
    "image_mean": OPENAI_MEAN,
    "image_std": OPENAI_STD,
    "do_convert_rgb": True,
}


@pytest.fixture(scope="module")
def our_preprocess():
    return create_clip("ViT-B-32", "openai", load_weights=False, device="meta").preprocess


@pytest.mark.parametrize("photo", sorted(PHOTOS))
def test_preprocess_matches_the_pil_clip_image_processor(our_preprocess, photo):
    """transformers' PIL-backend processor is what the official RTD/LinCIR code ran
    (transformers 4.x `CLIPImageProcessor`: PIL bicubic resize, floor centre crop)."""
    image = Image.fromarray(PHOTOS[photo]())
    ours = our_preprocess(image)
    ref = CLIPImageProcessorPil(**OPENAI_PROCESSOR)(image, return_tensors="pt")["pixel_values"][0]
    assert ours.shape == ref.shape == (3, 224, 224)
    assert _max_diff(ours, ref) < ATOL, _max_diff(ours, ref)


@pytest.mark.parametrize("photo", sorted(PHOTOS))
def test_preprocess_against_the_default_clip_image_processor(our_preprocess, photo):
    """transformers 5's default `CLIPImageProcessor` (torchvision backend) resizes with
    torchvision instead of PIL: measured, a few pixels one 8-bit level apart (max 0.015 =
    1/255/std, mean < 1e-4) on these photos. Bounded so a change in either pipeline shows."""
    image = Image.fromarray(PHOTOS[photo]())
    ours = our_preprocess(image)
    ref = CLIPImageProcessor(**OPENAI_PROCESSOR)(image, return_tensors="pt")["pixel_values"][0]
    assert ours.shape == ref.shape == (3, 224, 224)
    diff = (ours - ref).abs()
    one_level = 1 / 255 / min(OPENAI_STD)
    assert float(diff.max()) <= one_level + 1e-5 and float(diff.mean()) < 1e-3, diff.max()


def test_odd_crop_margin_rounds_like_torchvision_not_like_hf(our_preprocess):
    """A difference the comparison found, pinned (Deviation, rtd README): when the resize
    leaves an odd margin (rocket, 640x427 -> 335x224: 111 columns), torchvision's CenterCrop
    rounds the offset (round(55.5) = 56) and HF floors it (55), so the crops are one column
    apart. Ours is open_clip's, i.e. OpenAI CLIP's own pipeline."""
    image = Image.fromarray(skdata.rocket())
    assert image.size == (640, 427)
    ours = our_preprocess(image)
    ref = CLIPImageProcessorPil(**OPENAI_PROCESSOR)(image, return_tensors="pt")["pixel_values"][0]
    assert _max_diff(ours, ref) > 1e-2
    assert _max_diff(ours[:, :, :-1], ref[:, :, 1:]) < ATOL  # ours starts one column later
