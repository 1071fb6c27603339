"""The tiny CLIP's figures on held-out toy renders: zero-shot retrieval and classification.

Recorded in the fit's cache sidecar at fit time (`fit.ensure_tiny_clip`) and printed by
`python -m labshared.tinyclip --report` (`report`).
"""

from __future__ import annotations

import torch

from labshared import toy
from labshared.tinyclip.model import MODEL_CONFIG, encode_images, encode_texts


@torch.no_grad()
def evaluate_retrieval(model: torch.nn.Module, n: int = 600, seed: int = 0) -> dict[str, float]:
    """Zero-shot retrieval on `n` toy TEST images (digits never seen in training).

    - `t2i_r1`: each image's caption queries the n images; a hit when the top image has
      the caption's attributes (captions can repeat, so any image with the same
      (digit, colour, background) counts). `t2i_chance`: expected R@1 of a random ranking,
      the mean fraction of images sharing the query's attributes.
    - `i2t_r1`: each image queries the n captions; a hit when the top caption is its own
      caption string. `i2t_chance` likewise.
    - `t2i_<attr>`: fraction of text->image top hits with the right digit / colour /
      background.
    - `zeroshot_<attr>`: zero-shot classification accuracy of each attribute with the
      prompts "a photo of a {digit}.", "a {colour} digit", "on {background}".
    """
    model.eval()
    data = toy.make_split("test", n, size=MODEL_CONFIG["vision_cfg"]["image_size"], seed=seed)
    img, txt = encode_images(model, data.images), encode_texts(model, data.captions)
    attrs = data.attributes
    same = (attrs[:, None, :] == attrs[None, :, :]).all(-1)  # (n, n) same attribute triple
    t2i = (txt @ img.T).argmax(1)
    i2t = (img @ txt.T).argmax(1)
    rows = torch.arange(n)
    out = {
        "n": n,
        "t2i_r1": same[rows, t2i].float().mean().item(),
        "t2i_chance": same.float().mean().item(),
        "i2t_r1": same[rows, i2t].float().mean().item(),
        "i2t_chance": same.float().mean().item(),
    }
    for k, name in enumerate(toy.ATTRIBUTES):
        out[f"t2i_{name}"] = (attrs[t2i, k] == attrs[:, k]).float().mean().item()
    prompts = {
        "digit": [f"a photo of a {d}." for d in toy.DIGIT_NAMES],
        "colour": [f"a {c} digit" for c in toy.COLOUR_NAMES],
        "background": [f"on {b}" for b in toy.BACKGROUNDS],
    }
    for k, name in enumerate(toy.ATTRIBUTES):
        cls = encode_texts(model, prompts[name])
        pred = (img @ cls.T).argmax(1)
        out[f"zeroshot_{name}"] = (pred == attrs[:, k]).float().mean().item()
    return out
