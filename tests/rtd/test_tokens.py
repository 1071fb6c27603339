"""Token ids computed once per triplet set (rtd_cli.tokens): equal to the tokenizer's, cached."""

import open_clip
import pytest
import torch

from labshared.config import resolve
from labshared.data.text_triplets import TextTriplet, load_text_triplets
from labshared.device import Precision, Runtime
from rtd_cli import config as C
from rtd_cli import tokens as T
from rtd_cli.rtd_step import StepSource, build_parts, tokenize_batch

CPU = Runtime(torch.device("cpu"), Precision("fp32", torch.float32, False), seed=0)
# Id 0 (the pad id) inside a text ('!")' encodes as 0, 13112), a `$` in every field, and one
# row over 77 tokens (truncated).
ODD = [
    TextTriplet('Wow !") a RED $ seven', 'make it $ blue !")', 'a blue seven !") on grass'),
    TextTriplet("a green one on wood", "put it on sky", " ".join(["very"] * 90) + " long"),
]


@pytest.fixture(scope="module")
def parts(tiny77):
    overrides = dict(backbone=tiny77.name, pretrained="random", phi=str(tiny77.phi),
                     triplets="toy:64")  # fmt: skip
    cfg = resolve(C.TRAIN_PRESETS, "toy", overrides, validate=C.validate_train)
    return build_parts(cfg, CPU)[0]


def test_ragged_rows_give_back_the_tokenizer_rows():
    tok = open_clip.get_tokenizer("ViT-B-32")
    texts = ['wow !") a red seven', "", " ".join(["very"] * 90), "a photo of $"]
    dense = tok(texts)
    ragged = T.RaggedIds.from_dense(dense)
    assert ragged.flat.dtype == torch.int32
    assert ragged.lengths.tolist() == [int((dense[i] != 0).nonzero().max()) + 1 for i in range(4)]
    assert ragged.lengths[2] == 77  # truncated: EOT in the last place, nothing dropped
    rows = torch.tensor([3, 0, 2, 0, 1])
    assert torch.equal(ragged.dense(rows, 77), dense[rows])
    assert 0 in dense[0, 1 : ragged.lengths[0] - 1].tolist()  # id 0 inside the row


def test_set_ids_equal_the_tokenizer_on_the_fly(parts, tmp_path, monkeypatch):
    monkeypatch.setenv("LABSHARED_CACHE", str(tmp_path))
    triplets = load_text_triplets("toy:40").triplets + ODD
    tokens = T.triplet_tokens(triplets, parts.tokenizer, parts.template, parts.symbol, parts.plain)
    source = StepSource(tokens)
    for rows in (torch.tensor([40, 41, 0, 7]), torch.arange(42)):
        fly = tokenize_batch(parts, [triplets[i] for i in rows.tolist()])
        got = source.batch(rows)
        assert torch.equal(got.anchor_ids, fly.anchor_ids)
        assert torch.equal(got.query_ids, fly.query_ids)
    assert got.query_ids.dtype == torch.long and got.query_ids.shape == (84, 77)


def test_a_second_run_reads_the_cache_and_a_new_template_does_not(parts, tmp_path, monkeypatch):
    monkeypatch.setenv("LABSHARED_CACHE", str(tmp_path))
    triplets = load_text_triplets("toy:20").triplets
    args = (triplets, parts.tokenizer, parts.template, parts.symbol, parts.plain)
    first = T.triplet_tokens(*args)
    assert len(list((tmp_path / "features").glob("rtd-token-ids-*.safetensors"))) == 1

    def refuse(*_a, **_k):
        raise AssertionError("tokenised again although the ids are cached")

    monkeypatch.setattr(T, "tokenize_ragged", refuse)
    second = T.triplet_tokens(*args)
    assert torch.equal(first.queries.flat, second.queries.flat)
    assert torch.equal(first.targets.lengths, second.targets.lengths)
    with pytest.raises(AssertionError, match="tokenised again"):  # the key holds the template
        T.triplet_tokens(triplets, parts.tokenizer, "a photo of $ , {mod}", "$", parts.plain)
    with pytest.raises(AssertionError, match="tokenised again"):  # ... and the content
        T.triplet_tokens(triplets[:-1], *args[1:])
    with pytest.raises(AssertionError, match="tokenised again"):  # --no-cache computes
        T.triplet_tokens(*args, use_cache=False)


def test_worker_pool_gives_the_serial_ids(monkeypatch):
    monkeypatch.setattr(T, "POOL_MIN_TEXTS", 0)
    tok = open_clip.get_tokenizer("ViT-B-32")
    texts = [t.target for t in load_text_triplets("toy:50").triplets] + ['wow !") it is $ red']
    serial = T.tokenize_ragged(tok, texts, workers=1)
    pooled = T.tokenize_ragged(tok, texts, workers=2)
    assert torch.equal(serial.flat, pooled.flat) and torch.equal(serial.lengths, pooled.lengths)
