"""The offline toy world: determinism, disjoint splits, pixels matching attributes,
captions, the spurious sampler and the modification sampler."""

from __future__ import annotations

import re

import pytest
import torch

from labshared import toy
from labshared.errors import ConfigError


@pytest.fixture(scope="module")
def train_set() -> toy.ToySet:
    return toy.make_split("train", 600, size=32, seed=0)


def test_mnist5k_shape_and_balance():
    images, labels = toy.mnist5k()
    assert images.shape == (5000, 28, 28) and images.dtype == torch.uint8
    assert torch.bincount(labels).tolist() == [500] * 10


def test_sklearn_digits_source_renders():
    images, labels = toy.sklearn_digits()
    assert images.shape == (1797, 28, 28) and images.dtype == torch.uint8
    assert int(labels.max()) == 9
    cfg = toy.ToyConfig(size=32, digit_source="sklearn")
    s = toy.make_split("test", 8, config=cfg)
    assert s.images.shape == (8, 3, 32, 32)
    assert set(s.digit_index.tolist()) <= set(toy.split_indices("test", "sklearn").tolist())


def test_deterministic_by_seed_and_seeds_differ(train_set):
    again = toy.make_split("train", 600, size=32, seed=0)
    assert torch.equal(train_set.images, again.images)
    assert train_set.captions == again.captions
    other = toy.make_split("train", 600, size=32, seed=1)
    assert not torch.equal(train_set.images, other.images)
    assert train_set.captions != other.captions


def test_shapes_dtypes_and_64px():
    s = toy.make_split("val", 5, size=64, seed=3)
    assert s.images.shape == (5, 3, 64, 64) and s.images.dtype == torch.uint8
    for t in (s.digit, s.colour, s.background, s.digit_index):
        assert t.dtype == torch.long and t.shape == (5,)
    assert len(s) == 5 and len(s.captions) == 5
    assert s.attributes.shape == (5, 3)


def test_splits_disjoint_in_mnist_index():
    idx = {split: set(toy.split_indices(split).tolist()) for split in toy.SPLITS}
    assert [len(idx[s]) for s in toy.SPLITS] == [3500, 500, 1000]
    assert not idx["train"] & idx["val"]
    assert not idx["train"] & idx["test"]
    assert not idx["val"] & idx["test"]
    # the split does not depend on the sampling seed
    for split in toy.SPLITS:
        for seed in (0, 5):
            s = toy.make_split(split, 200, seed=seed)
            assert set(s.digit_index.tolist()) <= idx[split]


def test_digit_attribute_is_the_mnist_label(train_set):
    _, labels = toy.mnist5k()
    assert torch.equal(train_set.digit, labels[train_set.digit_index])


def test_captions_follow_the_grammar(train_set):
    colours, digits = "|".join(toy.COLOUR_NAMES), "|".join(toy.DIGIT_NAMES)
    pattern = re.compile(rf"^a ({colours}) ({digits}) on ({'|'.join(toy.BACKGROUNDS)})$")
    for cap, d, c, b in zip(
        train_set.captions,
        train_set.digit.tolist(),
        train_set.colour.tolist(),
        train_set.background.tolist(),
        strict=True,
    ):
        m = pattern.match(cap)
        assert m, cap
        assert m.groups() == (toy.COLOUR_NAMES[c], toy.DIGIT_NAMES[d], toy.BACKGROUNDS[b])
    assert toy.caption(7, "red", "grass") == "a red seven on grass"
    assert toy.caption("seven", 0, 0) == "a red seven on grass"
    with pytest.raises(ConfigError, match="unknown colour 'mauve'"):
        toy.caption(1, "mauve", 0)
    with pytest.raises(ConfigError, match="digit index 10"):
        toy.caption(10, 0, 0)


def _border(images: torch.Tensor) -> torch.Tensor:
    """Mean RGB of the 3-pixel border (the digit never reaches it at 32 px)."""
    x = images.float()
    mask = torch.ones(x.shape[-2:], dtype=torch.bool)
    mask[3:-3, 3:-3] = False
    return x[:, :, mask].mean(-1)


def test_background_recoverable_from_border_pixels(train_set):
    """Nearest class mean of border colour statistics, fitted on train, recovers the
    background of unseen test images (crops come from other bands of the photos)."""
    test = toy.make_split("test", 400, size=32, seed=0)
    feats_tr, feats_te = _border(train_set.images), _border(test.images)
    means = torch.stack(
        [feats_tr[train_set.background == b].mean(0) for b in range(len(toy.BACKGROUNDS))]
    )
    pred = torch.cdist(feats_te, means).argmin(1)
    acc = (pred == test.background).float().mean().item()
    assert acc > 0.9, acc


def test_border_is_background_not_stroke(train_set):
    """MNIST strokes sit inside the digit box's central 20 px, so even shifted by the
    maximal jitter they do not reach the outermost ring: its pixels are far from the
    stroke colour."""
    x = train_set.images.float()
    ring = torch.cat([x[:, :, 0, :], x[:, :, -1, :], x[:, :, :, 0], x[:, :, :, -1]], dim=-1)
    stroke = _palette()[train_set.colour][:, :, None]
    assert ((ring - stroke).norm(dim=1) > 40).float().mean() > 0.99


def _palette() -> torch.Tensor:
    return torch.tensor(list(toy.COLOURS.values()), dtype=torch.float32)


def _stroke_colour(images: torch.Tensor) -> torch.Tensor:
    """Palette index nearest to the median of each image's 10 most saturated pixels."""
    x = images.float()  # (N,3,H,W)
    saturation = (x.max(1).values - x.min(1).values).flatten(1)  # (N,HW)
    top = saturation.topk(10, dim=1).indices  # (N,10)
    pix = torch.gather(x.flatten(2), 2, top[:, None, :].expand(-1, 3, -1)).median(-1).values
    return torch.cdist(pix, _palette()).argmin(1)


def test_colour_recoverable_from_stroke_pixels(train_set):
    """The stroke core (alpha = 1) has exactly the palette colour of `colour`."""
    assert (_stroke_colour(train_set.images) == train_set.colour).float().mean().item() > 0.97


def test_render_given_attributes():
    digit = torch.tensor([3, 3, 8, 0, 5, 9])
    colour = torch.tensor([0, 1, 2, 3, 4, 5])
    background = torch.tensor([0, 1, 2, 3, 4, 5])
    imgs = toy.render("test", digit, colour, background, size=32, seed=4)
    assert imgs.shape == (6, 3, 32, 32) and imgs.dtype == torch.uint8
    assert torch.equal(imgs, toy.render("test", digit, colour, background, size=32, seed=4))
    assert torch.equal(_stroke_colour(imgs), colour)
    with pytest.raises(ConfigError, match="colour indices"):
        toy.render("test", [0], [99], [0])


def test_bad_arguments_name_the_field():
    with pytest.raises(ConfigError, match="split 'dev'"):
        toy.make_split("dev", 3)
    with pytest.raises(ConfigError, match="ToyConfig.size=8"):
        toy.ToyConfig(size=8)
    with pytest.raises(ConfigError, match="digit_source"):
        toy.ToyConfig(digit_source="emnist")


# --------------------------------------------------------------------------- spurious
def test_spurious_train_rate_and_balanced_test():
    tr = toy.spurious_split("train", 1000, corr=0.95, seed=0)
    assert (tr.spurious == tr.label).float().mean().item() == pytest.approx(0.95, abs=1e-6)
    assert torch.bincount(tr.label).tolist() == [500, 500]
    assert torch.equal(tr.group, 2 * tr.label + tr.spurious)
    te = toy.spurious_split("test", 1000, corr=0.95, seed=0)
    assert torch.bincount(te.group, minlength=4).tolist() == [250, 250, 250, 250]
    va = toy.spurious_split("val", 402, seed=0)
    counts = torch.bincount(va.group, minlength=4)
    assert counts.max() - counts.min() <= 1


def test_spurious_attributes_consistent():
    g = toy.spurious_split("train", 300, corr=0.8, class_fn="parity", spurious=("stars", "sand"))
    assert g.label_names == ("even digit", "odd digit")
    assert g.spurious_names == ("stars", "sand")
    assert torch.equal(g.label, g.digit % 2)
    names = [g.spurious_names[s] for s in g.spurious.tolist()]
    assert names == [toy.BACKGROUNDS[b] for b in g.background.tolist()]
    assert g.label_digits[1] == ("one", "three", "five", "seven", "nine")
    assert g.images.shape == (300, 3, 32, 32)
    small = toy.spurious_split("test", 40)
    assert torch.equal(small.label, (small.digit >= 5).long())
    with pytest.raises(ConfigError, match="corr=1.5"):
        toy.spurious_split("train", 4, corr=1.5)
    with pytest.raises(ConfigError, match="class_fn"):
        toy.spurious_split("train", 4, class_fn="digit>3")


# --------------------------------------------------------------------------- modifications
def test_modification_triplets_change_exactly_one_attribute():
    m = toy.modification_triplets("val", 120, seed=2)
    diff = m.reference_attrs != m.target_attrs
    assert (diff.sum(1) == 1).all()
    changed_col = diff.float().argmax(1)
    assert [toy.ATTRIBUTES[k] for k in changed_col.tolist()] == m.changed
    assert set(m.changed) == set(toy.ATTRIBUTES)
    for text, attr, tgt in zip(m.texts, m.changed, m.target_attrs.tolist(), strict=True):
        k = toy.ATTRIBUTES.index(attr)
        word = (toy.DIGIT_NAMES, toy.COLOUR_NAMES, toy.BACKGROUNDS)[k][tgt[k]]
        assert text.endswith(word), (text, word)
    assert m.reference_captions[0] == toy.caption(*m.reference_attrs[0].tolist())
    assert m.target_captions[0] == toy.caption(*m.target_attrs[0].tolist())
    assert m.gallery_images.shape == (240, 3, 32, 32)
    assert torch.equal(m.gallery_images[m.target_index], m.target_images)
    assert torch.equal(m.gallery_attrs[: len(m)], m.target_attrs)


def test_modification_target_keeps_the_layout():
    """A colour change repaints the same stroke on the same crop: pixels off the stroke
    are identical, and stroke pixels differ."""
    m = toy.modification_triplets("test", 60, seed=1)
    rows = [i for i, c in enumerate(m.changed) if c == "colour"]
    assert rows
    ref, tgt = m.reference_images[rows].float(), m.target_images[rows].float()
    same = (ref == tgt).all(1)  # (k,H,W)
    assert same.float().mean() > 0.5  # background identical
    assert (~same).any(dim=(1, 2)).all()  # and every stroke was repainted


def test_modification_text_templates():
    assert toy.modification_text("colour", "blue") == "make it blue"
    assert toy.modification_text("background", "grass") == "put it on grass"
    assert toy.modification_text("digit", 3) == "change the digit to three"
    with pytest.raises(ConfigError, match="attribute 'size'"):
        toy.modification_text("size", 1)


def test_text_triplets():
    trips = toy.text_triplets(200, seed=0)
    assert trips == toy.text_triplets(200, seed=0)
    assert trips != toy.text_triplets(200, seed=1)
    for t in trips:
        assert set(t) == {"reference_caption", "conditioning_caption", "target_caption"}
        ref, tgt = t["reference_caption"].split(), t["target_caption"].split()
        assert sum(a != b for a, b in zip(ref, tgt, strict=True)) == 1
        assert t["conditioning_caption"].split()[-1] in tgt
