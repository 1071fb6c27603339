"""The tiny CLIP's architecture, tokenizer, preprocessing and batched encoders.

`tiny-clip-toy` is an open_clip ModifiedResNet image tower (`"layers": [1, 1, 1, 1],
"width": 32`, 32 px input, attention pooling) and a text transformer of width 128, 3
layers, context 16, with open_clip's standard BPE vocabulary (49408), so
`open_clip.get_tokenizer("tiny-clip-toy")` works. Its JSON config is the one
`labshared.clip` registers with open_clip; every model is built through that factory.

Why a ModifiedResNet, not a ViT: a patch-8 ViT on 32 px sees the digit as 16 tokens and
does not learn its shape in this budget; the convolutional tower does (shared/README.md).

Preprocessing: open_clip's default image transform for a local weights file (resize and
centre-crop to 32, `ToTensor`, normalise with the OpenAI CLIP mean/std `MEAN`, `STD`). The
model is trained with exactly that normalisation, so PIL images through `preprocess` and
uint8 toy tensors through `images_to_tensor` give identical inputs.
"""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path
from typing import Any

import open_clip
import torch
import torch.nn.functional as F

from labshared.clip import create_clip, read_model_config, register_model_configs
from labshared.runs import atomic_save_safetensors

TINY_CLIP_NAME = "tiny-clip-toy"

#: The architecture, in open_clip's model-config format: the JSON file that
#: `labshared.clip` registers with open_clip (resources/model_configs/tiny-clip-toy.json).
MODEL_CONFIG: dict[str, Any] = read_model_config(TINY_CLIP_NAME)

#: open_clip's defaults (OpenAI CLIP statistics), used both in fitting and in `preprocess`.
MEAN = (0.48145466, 0.4578275, 0.40821073)
STD = (0.26862954, 0.26130258, 0.27577711)


def register_tiny_clip() -> str:
    """Register `tiny-clip-toy` with open_clip (idempotent; importing `labshared.clip`
    already did); returns the name."""
    register_model_configs()
    return TINY_CLIP_NAME


def get_tokenizer():
    """open_clip's BPE tokenizer with the tiny model's context length (16)."""
    register_tiny_clip()
    return open_clip.get_tokenizer(TINY_CLIP_NAME)


def create_random_tiny_clip(seed: int = 0) -> torch.nn.Module:
    """An untrained `tiny-clip-toy` (deterministic in `seed`), built by the shared factory
    with the activation its config names (what the fitted weights are then trained with)."""
    torch.manual_seed(seed)
    return create_clip(TINY_CLIP_NAME, "random").model


def param_count(model: torch.nn.Module) -> int:
    """Number of parameters of `model` (tied tensors counted once)."""
    return sum(p.numel() for p in model.parameters())


def save_tiny_clip(model: torch.nn.Module, path: str | Path, metadata: dict | None = None) -> Path:
    """Write the state dict as safetensors, atomically (open_clip loads it via `pretrained`)."""
    return atomic_save_safetensors(path, model.state_dict(), metadata=metadata)


def images_to_tensor(images: torch.Tensor, device: str | torch.device = "cpu") -> torch.Tensor:
    """uint8 (N, 3, 32, 32) toy images -> normalised float input, same as `preprocess`."""
    x = images.to(device=device, dtype=torch.float32) / 255.0
    mean = torch.tensor(MEAN, device=x.device).view(1, 3, 1, 1)
    std = torch.tensor(STD, device=x.device).view(1, 3, 1, 1)
    return (x - mean) / std


@torch.no_grad()
def encode_images(
    model: torch.nn.Module, images: torch.Tensor, batch_size: int = 512
) -> torch.Tensor:
    """L2-normalised features of uint8 (N, 3, 32, 32) toy images, batched."""
    device = next(model.parameters()).device
    feats = [
        model.encode_image(images_to_tensor(images[i : i + batch_size], device)).float()
        for i in range(0, len(images), batch_size)
    ]
    return F.normalize(torch.cat(feats), dim=-1) if feats else torch.empty(0, 0)


@torch.no_grad()
def encode_texts(
    model: torch.nn.Module, texts: Sequence[str], batch_size: int = 512
) -> torch.Tensor:
    """L2-normalised features of strings (tiny-clip-toy tokenizer, context 16), batched."""
    device = next(model.parameters()).device
    tokenizer = get_tokenizer()
    feats = [
        model.encode_text(tokenizer(list(texts[i : i + batch_size])).to(device)).float()
        for i in range(0, len(texts), batch_size)
    ]
    return F.normalize(torch.cat(feats), dim=-1) if feats else torch.empty(0, 0)
