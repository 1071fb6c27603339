"""Pair construction, template draws and group balancing of the text training set."""

import torch

from tldr_cli.sampling import balanced_indices
from tldr_cli.textdata import (
    build_pairs,
    draw_templates,
    encode_word_templates,
    epoch_batches,
    imagenet_templates,
    pair_embeddings,
)
from tldr_cli.wordlists import validate_wordlists


def lists(pairs=None, classes=None, spurious=None):
    classes = classes or {"small": ["One", "two"], "large": ["seven", "Eight", "nine"]}
    spurious = spurious or {"grass": ["lawn"], "brick": ["wall", "red bricks"]}
    return validate_wordlists(
        {
            "dataset": "toy",
            "classes": classes,
            "spurious": spurious,
            "anchors": {
                "classes": {k: f"a {k}" for k in classes},
                "spurious": {k: f"on {k}" for k in spurious},
            },
            "pairs": pairs,
        }
    )


def test_every_pair_once_with_its_label_and_spurious_value():
    p = build_pairs(lists())
    assert p.words == ["lawn", "wall", "red bricks", "one", "two", "seven", "eight", "nine"]
    got = {
        (p.words[t], p.words[s], y, a)
        for t, s, y, a in zip(
            p.t_idx.tolist(), p.s_idx.tolist(), p.label.tolist(), p.spurious.tolist(), strict=True
        )
    }
    want = {
        (t.lower(), s, y, a)
        for y, ts in enumerate([["One", "two"], ["seven", "Eight", "nine"]])
        for a, ss in enumerate([["lawn"], ["wall", "red bricks"]])
        for t in ts
        for s in ss
    }
    assert got == want and len(p) == 5 * 3
    assert torch.bincount(p.group).tolist() == [2 * 1, 2 * 2, 3 * 1, 3 * 2]


def test_pairs_restricted_by_the_pairs_field():
    wl = lists(
        classes={
            "landbird": ["robin"],
            "waterbird": ["gull"],
            "small dog": ["pug"],
            "large dog": ["dane"],
        },
        spurious={
            "land": ["forest"],
            "water": ["lake"],
            "indoor": ["kitchen"],
            "outdoor": ["park"],
        },
        pairs={
            "landbird": ["land", "water"],
            "waterbird": ["land", "water"],
            "small dog": ["indoor", "outdoor"],
            "large dog": ["indoor", "outdoor"],
        },
    )
    p = build_pairs(wl)
    assert len(p) == 8
    assert set(zip(p.label.tolist(), p.spurious.tolist(), strict=True)) == {
        (0, 0),
        (0, 1),
        (1, 0),
        (1, 1),
        (2, 2),
        (2, 3),
        (3, 2),
        (3, 3),
    }


def test_balanced_indices_cut_every_group_to_the_smallest_and_redraw_each_call():
    groups = torch.tensor([0] * 10 + [1] * 3 + [3] * 7)
    gen = torch.Generator().manual_seed(0)
    first = balanced_indices(groups, gen)
    second = balanced_indices(groups, gen)
    for idx in (first, second):
        assert torch.bincount(groups[idx], minlength=4).tolist() == [3, 3, 0, 3]
        assert len(set(idx.tolist())) == len(idx)  # without replacement
    assert not torch.equal(first, second)
    again = balanced_indices(groups, torch.Generator().manual_seed(0))
    assert torch.equal(first, again)


def test_epochs_are_balanced_and_fresh():
    p = build_pairs(lists())
    gen = torch.Generator().manual_seed(1)
    epochs = [torch.cat([i for i, _ in epoch_batches(p, 3, gen, 80)]) for _ in range(2)]
    for idx in epochs:
        assert torch.bincount(p.group[idx]).tolist() == [2, 2, 2, 2]
    assert not torch.equal(epochs[0], epochs[1])


def test_template_draws_all_80_or_the_official_79():
    gen = torch.Generator().manual_seed(0)
    assert set(draw_templates(20000, 80, gen, "all").tolist()) == set(range(80))
    assert set(draw_templates(20000, 80, gen, "official").tolist()) == set(range(79))
    templates = imagenet_templates()
    assert len(templates) == 80 and templates[0] == "a bad photo of a {}."


def test_pair_embedding_is_the_mean_under_one_shared_template():
    words, templates = ["a", "b", "c"], ["x {}", "y {}"]
    table = {
        f"{t[0]} {w}": torch.tensor([float(i), 10.0 * j])
        for i, w in enumerate(words)
        for j, t in enumerate(templates)
    }
    emb = encode_word_templates(
        lambda texts: torch.stack([table[t] for t in texts]), words, templates
    )
    assert emb.shape == (3, 2, 2)
    out = pair_embeddings(emb, torch.tensor([0, 2]), torch.tensor([1, 1]), torch.tensor([1, 0]))
    torch.testing.assert_close(out, torch.tensor([[0.5, 10.0], [1.5, 0.0]]))
