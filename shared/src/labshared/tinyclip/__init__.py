"""A tiny CLIP stand-in fitted on the toy world's captions (the offline default model).

`tiny-clip-toy` is an ordinary open_clip architecture (its JSON config,
`resources/model_configs/tiny-clip-toy.json`, is registered by `labshared.clip`), trained
from scratch on freshly rendered toy train images and their captions, mixed with partial
captions ("a seven", "a red digit", "on grass", "a small digit") so single words embed
sensibly. One module per job:

- `model`: the architecture, its tokenizer, preprocessing (`images_to_tensor`) and the
  batched encoders;
- `captions`: what the fit trains on: every caption variant of an attribute triple and
  which images each caption is true of;
- `fit`: the fit settings and profiles (`FitConfig`, `default_fit`), the multi-positive
  CLIP loss, the fitter, and the cache of the fitted weights (`ensure_tiny_clip`,
  `load_tiny_clip`);
- `evaluate`: zero-shot retrieval and classification figures on held-out toy renders;
- `report`: `python -m labshared.tinyclip --report` (this package's `__main__`) fits (or
  loads) the model and prints those figures, with the fit's wall and CPU time.

Through the shared factory (or open_clip's own, with the path)::

    from labshared.clip import create_clip
    from labshared.tinyclip.fit import ensure_tiny_clip
    from labshared.tinyclip.model import TINY_CLIP_NAME
    model, preprocess, tokenizer, info = create_clip(TINY_CLIP_NAME, ensure_tiny_clip())
"""
