"""The two filter stages on hand-made embeddings with known nearest anchors."""

import torch

from tldr_cli.filter import anchor_filter, classifier_filter, run_filters
from tldr_cli.wordlists import validate_wordlists

# 2-d "text space": anchors on the axes; a word's vector says which anchor is nearest.
VEC = {
    "a photo of a landbird.": [1.0, 0.0],
    "a photo of a waterbird.": [0.0, 1.0],
    "a photo of a land.": [1.0, 0.0],
    "a photo of a water.": [0.0, 1.0],
    "a photo of a robin.": [0.9, 0.1],
    "a photo of a crow.": [0.55, 0.45],
    "a photo of a gull.": [0.2, 0.9],
    "a photo of a avocet.": [0.7, 0.2],  # nearest landbird
    "a photo of a forest.": [3.0, 0.5],
    "a photo of a lake.": [0.1, 2.0],
    "a photo of a marsh.": [1.0, 0.2],  # listed as water, nearest land
}


def encode(texts):
    return torch.tensor([VEC[t] for t in texts])


def wordlists():
    return validate_wordlists(
        {
            "dataset": "waterbirds",
            "classes": {"landbird": ["Robin", "crow", "Avocet"], "waterbird": ["gull", "avocet"]},
            "spurious": {"land": ["forest"], "water": ["lake", "marsh"]},
            "anchors": {
                "classes": {
                    "landbird": "a photo of a landbird.",
                    "waterbird": "a photo of a waterbird.",
                },
                "spurious": {"land": "a photo of a land.", "water": "a photo of a water."},
            },
        }
    )


def test_anchor_filter_keeps_words_nearest_their_own_anchor():
    words = torch.tensor([[0.9, 0.1], [0.6, 0.5], [-1.0, 0.2]])
    anchors = torch.tensor([[1.0, 0.0], [0.0, 1.0]])
    keep, nearest, cos = anchor_filter(words, anchors, torch.tensor([0, 1, 1]))
    assert keep.tolist() == [True, False, True]  # [-1, 0.2] is closer to (0,1) by cosine
    assert nearest.tolist() == [0, 0, 1]
    torch.testing.assert_close(cos[1], torch.tensor([0.6, 0.5]) / (0.61**0.5))


def test_classifier_filter_uses_head_on_projected_embeddings():
    proj = lambda e: torch.relu(e @ torch.tensor([[1.0, -1.0], [-1.0, 1.0]]))  # noqa: E731
    head = torch.nn.Linear(2, 2)
    with torch.no_grad():
        head.weight.copy_(torch.eye(2))
        head.bias.zero_()
    keep, pred, prob = classifier_filter(
        torch.tensor([[2.0, 0.0], [0.0, 1.0], [3.0, 1.0]]), proj, head, torch.tensor([0, 0, 1])
    )
    assert pred.tolist() == [0, 1, 0] and keep.tolist() == [True, False, False]
    torch.testing.assert_close(prob.sum(1), torch.ones(3))


def test_run_filters_reports_every_removed_word():
    # stage 2 head: predicts landbird when the first coordinate dominates
    proj = lambda e: e  # noqa: E731
    head = lambda x: torch.stack([x[:, 0] - 0.2, x[:, 1]], 1)  # noqa: E731  crow: 0.35 < 0.45
    filtered, removed = run_filters(wordlists(), encode, proj, head)
    assert filtered.classes == {"landbird": ["Robin", "Avocet"], "waterbird": ["gull"]}
    assert filtered.spurious == {"land": ["forest"], "water": ["lake"]}
    got = {(r["list"], r["word"], r["stage"]) for r in removed}
    assert got == {("waterbird", "avocet", 1), ("water", "marsh", 1), ("landbird", "crow", 2)}
    assert all("reason" in r and r["reason"] for r in removed)
    assert filtered.provenance["filtered"]["removed"] == 3
    # without a projector/head only stage 1 runs
    only1, removed1 = run_filters(wordlists(), encode, None, None)
    assert only1.classes["landbird"] == ["Robin", "crow", "Avocet"] and len(removed1) == 2


def test_paired_lists_compete_only_within_their_block():
    # SpuCoAnimals: birds are judged against bird anchors only, dogs against dog anchors
    vec = {
        "a photo of a landbird.": [1.0, 0.0, 0.0, 0.0],
        "a photo of a waterbird.": [0.0, 1.0, 0.0, 0.0],
        "a photo of a small dog.": [0.0, 0.0, 1.0, 0.0],
        "a photo of a large dog.": [0.0, 0.0, 0.0, 1.0],
        "a photo of a landplace": [1.0, 0.0, 0.0, 0.0],
        "a photo of a waterplace": [0.0, 1.0, 0.0, 0.0],
        "a photo of a indoor place": [0.0, 0.0, 1.0, 0.0],
        "a photo of a outdoor place": [0.0, 0.0, 0.0, 1.0],
        # nearest overall is "small dog", but among the birds it is nearest "landbird": kept
        "a photo of a robin.": [0.3, 0.1, 0.9, 0.0],
        "a photo of a gull.": [0.0, 1.0, 0.0, 0.0],
        "a photo of a pug.": [0.0, 0.0, 1.0, 0.0],
        "a photo of a dane.": [0.0, 0.0, 0.9, 0.2],  # listed as large, nearest small: removed
        "a photo of a forest.": [1.0, 0.0, 0.0, 0.0],
        "a photo of a lake.": [0.0, 1.0, 0.0, 0.0],
        "a photo of a kitchen.": [0.0, 0.0, 1.0, 0.0],
        "a photo of a park.": [0.0, 0.0, 0.0, 1.0],
    }
    classes = {
        "landbird": ["robin"],
        "waterbird": ["gull"],
        "small dog": ["pug"],
        "large dog": ["dane"],
    }
    spurious = {"land": ["forest"], "water": ["lake"], "indoor": ["kitchen"], "outdoor": ["park"]}
    wl = validate_wordlists(
        {
            "dataset": "spuco-animals",
            "classes": classes,
            "spurious": spurious,
            "anchors": {
                "classes": {k: f"a photo of a {k}." for k in classes},
                "spurious": {
                    "land": "a photo of a landplace",
                    "water": "a photo of a waterplace",
                    "indoor": "a photo of a indoor place",
                    "outdoor": "a photo of a outdoor place",
                },
            },
            "pairs": {
                "landbird": ["land", "water"],
                "waterbird": ["land", "water"],
                "small dog": ["indoor", "outdoor"],
                "large dog": ["indoor", "outdoor"],
            },
        }
    )
    filtered, removed = run_filters(wl, lambda ts: torch.tensor([vec[t] for t in ts]), None, None)
    assert filtered.classes == {
        "landbird": ["robin"],
        "waterbird": ["gull"],
        "small dog": ["pug"],
        "large dog": [],
    }
    assert [(r["word"], r["reason"].split("'")[1]) for r in removed] == [("dane", "small dog")]
    assert filtered.spurious == spurious
