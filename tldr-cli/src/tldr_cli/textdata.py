"""The synthetic text training set (`TLDR:datasets/generate_text.py:L187-199, L264-282`,
`TLDR:models/rect_model.py:L52-69`).

- Samples are all (class word, spurious word) pairs, restricted to the allowed spurious
  values of each class (SpuCoAnimals: birds with land/water, dogs with indoor/outdoor).
  Label = the class word's class, spurious = the spurious word's value, group = (y, a).
- A sample's CLIP-space vector is e = (E_T(tau_k(t)) + E_T(tau_k(s))) / 2: the mean of the
  two raw (unnormalised) text embeddings under ONE template tau_k shared by both words,
  drawn afresh every time the sample is used. Words are lower-cased as in
  `cache_clip_emb.py`.
- Every epoch each group is downsampled to the smallest group's size (`sampling.py`).

Deviation: k is uniform over all 80 `open_clip.OPENAI_IMAGENET_TEMPLATES`; the official
`np.random.randint(0, 79)` never draws the 80th template and is available as
`template_draw="official"`. The toy preset embeds words in `TOY_TEMPLATES`, the caption
forms its tiny CLIP was fitted on, instead of the ImageNet templates it never saw.
"""

from __future__ import annotations

from dataclasses import dataclass

import open_clip
import torch

from tldr_cli.sampling import balanced_indices
from tldr_cli.wordlists import WordLists

#: Caption forms of the toy world that the tiny CLIP is fitted on for every word form of
#: the toy lists ("seven", "red seven", "grass", "digit on grass", ...; see
#: `labshared.tinyclip.captions.PARTIAL_TEMPLATES`).
TOY_TEMPLATES: tuple[str, ...] = ("a photo of a {}.", "a {}", "{}")


def imagenet_templates() -> list[str]:
    """The 80 OpenAI ImageNet templates as format strings, in open_clip's order."""
    return [t("{}") for t in open_clip.OPENAI_IMAGENET_TEMPLATES]


def caption_templates(name: str) -> list[str]:
    """The template set `name` ("imagenet" or "toy") as format strings."""
    if name == "toy":
        return list(TOY_TEMPLATES)
    if name == "imagenet":
        return imagenet_templates()
    raise ValueError(f"unknown template set {name!r}; expected imagenet or toy")


@dataclass
class TextPairs:
    """Pair indices into `words` (the distinct lower-cased words, encoded once)."""

    words: list[str]
    t_idx: torch.Tensor  # (P,) class word of each pair
    s_idx: torch.Tensor  # (P,) spurious word of each pair
    label: torch.Tensor  # (P,)
    spurious: torch.Tensor  # (P,)
    n_spurious: int

    def __len__(self) -> int:
        return len(self.label)

    @property
    def group(self) -> torch.Tensor:
        return self.label * self.n_spurious + self.spurious


def build_pairs(wl: WordLists) -> TextPairs:
    """Every allowed (class word, spurious word) pair of the lists."""
    words: list[str] = []
    index: dict[str, int] = {}

    def idx(word: str) -> int:
        key = word.lower()
        if key not in index:
            index[key] = len(words)
            words.append(key)
        return index[key]

    spurious_names = wl.spurious_names
    spurious_entries = {a: [idx(w) for w in ws] for a, ws in wl.spurious.items()}
    t_idx, s_idx, label, spur = [], [], [], []
    for y, (cname, cwords) in enumerate(wl.classes.items()):
        cls_idx = [idx(w) for w in cwords]
        for aname in wl.allowed_spurious(cname):
            a = spurious_names.index(aname)
            for t in cls_idx:
                for s in spurious_entries[aname]:
                    t_idx.append(t)
                    s_idx.append(s)
                    label.append(y)
                    spur.append(a)
    if not t_idx:
        raise ValueError("the word lists give no (class word, spurious word) pair")
    return TextPairs(
        words=words,
        t_idx=torch.tensor(t_idx),
        s_idx=torch.tensor(s_idx),
        label=torch.tensor(label),
        spurious=torch.tensor(spur),
        n_spurious=len(spurious_names),
    )


def draw_templates(
    n: int, n_templates: int, generator: torch.Generator, draw: str = "all"
) -> torch.Tensor:
    """(n,) template indices: uniform over all templates, or `official`: randint(0, T-1)
    (the last template never drawn, as `np.random.randint(0, 79)` in the official code)."""
    high = n_templates if draw == "all" else n_templates - 1
    return torch.randint(0, high, (n,), generator=generator)


def pair_embeddings(
    word_emb: torch.Tensor,
    t_idx: torch.Tensor,
    s_idx: torch.Tensor,
    tmpl: torch.Tensor,
    normalize: bool = False,
) -> torch.Tensor:
    """(B, D) = (E[t, k] + E[s, k]) / 2 from word_emb (W, T, D) of every word x template.

    `normalize` ("clip_normalize", `TLDR:models/rect_model.py`): the mean of the two
    (already unit-norm) word embeddings is L2-normalised again."""
    emb = 0.5 * (word_emb[t_idx, tmpl] + word_emb[s_idx, tmpl])
    return torch.nn.functional.normalize(emb, dim=-1) if normalize else emb


def epoch_batches(
    pairs: TextPairs,
    batch_size: int,
    generator: torch.Generator,
    n_templates: int,
    draw: str = "all",
):
    """One epoch: a fresh group-balanced, shuffled sample, in batches of
    (pair indices, template indices)."""
    idx = balanced_indices(pairs.group, generator)
    tmpl = draw_templates(len(idx), n_templates, generator, draw)
    for i in range(0, len(idx), batch_size):
        yield idx[i : i + batch_size], tmpl[i : i + batch_size]


def encode_word_templates(encode_texts, words: list[str], templates: list[str]) -> torch.Tensor:
    """(W, T, D) raw text embeddings of every word under every template.

    Args:
        encode_texts: list[str] -> (N, D) raw CLIP text embeddings.
    """
    texts = [t.format(w) for w in words for t in templates]
    emb = encode_texts(texts)
    return emb.reshape(len(words), len(templates), -1)
