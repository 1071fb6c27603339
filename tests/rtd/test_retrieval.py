"""rtd_cli.retrieval: chunked top-k equals one full matrix product."""

import pytest
import torch
import torch.nn.functional as F

from rtd_cli.retrieval import chunked_topk, full_topk, gather_scores


def _feats(n, d, seed):
    return F.normalize(torch.randn(n, d, generator=torch.Generator().manual_seed(seed)), dim=-1)


@pytest.mark.parametrize(
    ("q_chunk", "g_chunk", "k"), [(7, 13, 5), (64, 100, 50), (1000, 5000, 50), (3, 40, 37)]
)
def test_chunked_topk_equals_full_product(q_chunk, g_chunk, k):
    queries, gallery = _feats(150, 32, 0), _feats(1234, 32, 1)
    ref_s, ref_i = full_topk(queries, gallery, k)
    s, i = chunked_topk(queries, gallery, k, query_chunk=q_chunk, gallery_chunk=g_chunk)
    assert torch.equal(i, ref_i)
    torch.testing.assert_close(s, ref_s, rtol=1e-5, atol=1e-6)


def test_exclusion_removes_exactly_the_reference():
    queries, gallery = _feats(60, 16, 2), _feats(500, 16, 3)
    # make every query's best match its "reference", which must then disappear
    reference = torch.randperm(500, generator=torch.Generator().manual_seed(4))[:60]
    reference[5] = -1  # a query without a reference in the gallery
    gallery[reference[reference >= 0]] = queries[reference >= 0]
    ref_s, ref_i = full_topk(queries, gallery, 10, exclude=reference)
    s, i = chunked_topk(queries, gallery, 10, exclude=reference, query_chunk=16, gallery_chunk=64)
    assert torch.equal(i, ref_i)
    torch.testing.assert_close(s, ref_s)
    has_ref = reference >= 0
    assert not (i[has_ref] == reference[has_ref, None]).any()
    # without exclusion the planted reference is the top hit
    _, plain = chunked_topk(queries, gallery, 1, gallery_chunk=64)
    assert torch.equal(plain[has_ref, 0], reference[has_ref])


def test_k_is_clipped_to_the_gallery():
    queries, gallery = _feats(4, 8, 5), _feats(6, 8, 6)
    s, i = chunked_topk(queries, gallery, 50, gallery_chunk=4)
    assert i.shape == (4, 6) and sorted(i[0].tolist()) == list(range(6))
    _, i = chunked_topk(
        queries, gallery, 50, exclude=torch.zeros(4, dtype=torch.long), gallery_chunk=4
    )
    assert i.shape == (4, 5) and not (i == 0).any()


def test_gather_scores_matches_direct_products_and_masks_padding():
    queries, gallery = _feats(3, 8, 7), _feats(10, 8, 8)
    cands = torch.tensor([[1, 2, 3], [4, -1, -1], [9, 0, -1]])
    scores = gather_scores(queries, gallery, cands)
    for q in range(3):
        for c in range(3):
            if cands[q, c] < 0:
                assert scores[q, c] == float("-inf")
            else:
                torch.testing.assert_close(scores[q, c], queries[q] @ gallery[cands[q, c]])
