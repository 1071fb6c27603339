"""rtd_cli.metrics and the per-benchmark protocols of rtd_cli.scoring on hand-made rankings."""

import pytest
import torch
import torch.nn.functional as F

from labshared.data.composed_retrieval import CIRBenchmark, CIRQuery, TensorImages
from labshared.device import setup_runtime
from rtd_cli import metrics as M
from rtd_cli.evaluate import modification_texts
from rtd_cli.scoring import evaluate_part


def test_recall_on_a_hand_ranking():
    ranked = torch.tensor([[3, 1, 2], [0, 2, 1], [5, 4, 0]])
    hits = M.hits_matrix(ranked, M.pad_targets([[1], [7], [5, 0]]))
    assert hits.tolist() == [[False, True, False], [False, False, False], [True, False, True]]
    assert M.recall_at_k(hits, (1, 2, 3)) == pytest.approx({1: 100 / 3, 2: 200 / 3, 3: 200 / 3})


def test_circo_ap_uses_min_gt_k_denominator():
    # query 0: |GT| = 3, hits at ranks 1 and 3; query 1: |GT| = 1, hit at rank 2
    hits = torch.tensor([[1, 0, 1, 0, 0], [0, 1, 0, 0, 0]], dtype=torch.bool)
    n_gt = torch.tensor([3, 1])
    # AP@5: q0 = (1/1 + 2/3) / min(3, 5) = 5/9; q1 = (1/2) / 1
    # AP@2: q0 = (1/1) / min(3, 2) = 1/2;    q1 = (1/2) / 1
    out = M.map_at_k(hits, n_gt, (2, 5))
    assert out[5] == pytest.approx((5 / 9 + 1 / 2) / 2 * 100)
    assert out[2] == pytest.approx((1 / 2 + 1 / 2) / 2 * 100)


def test_map_matches_a_loop_formulation():
    g = torch.Generator().manual_seed(0)
    hits = torch.rand(40, 50, generator=g) < 0.1
    n_gt = hits.sum(1).clamp(min=1) + torch.randint(0, 3, (40,), generator=g)
    for k in (5, 10, 25, 50):
        aps = []
        for q in range(40):
            found, total = 0, 0.0
            for j in range(k):
                if hits[q, j]:
                    found += 1
                    total += found / (j + 1)
            aps.append(total / min(int(n_gt[q]), k))
        assert M.map_at_k(hits, n_gt, (k,))[k] == pytest.approx(sum(aps) / 40 * 100, rel=1e-5)


def test_circo_semantic_aspect_map_at_10_by_hand():
    """`CIRCO:src/evaluation.py`: AP@10 of each query, averaged over the queries carrying
    each aspect (a query with several aspects counts in each)."""
    hits = torch.zeros(3, 50, dtype=torch.bool)
    hits[0, [0, 2]] = True  # q0: |GT| 3, hits at ranks 1 and 3 -> AP@10 = (1 + 2/3) / 3 = 5/9
    hits[1, 1] = True  # q1: |GT| 1, hit at rank 2 -> AP@10 = 1/2
    hits[2, 11] = True  # q2: |GT| 2, hit at rank 12 only -> AP@10 = 0
    n_gt = torch.tensor([3, 1, 2])
    aspects = [
        ("viewpoint", "cardinality"),
        ("viewpoint",),
        ("zzz_unlisted", "negation", "viewpoint"),
    ]
    values, counts = M.semantic_map_at_10(hits, n_gt, aspects)
    # the official order (cardinality, ..., negation, ..., viewpoint), then others sorted
    assert list(values) == ["cardinality", "negation", "viewpoint", "zzz_unlisted"]
    assert values["cardinality"] == pytest.approx(5 / 9 * 100)
    assert values["viewpoint"] == pytest.approx((5 / 9 + 1 / 2 + 0) / 3 * 100)
    assert values["negation"] == 0.0 and values["zzz_unlisted"] == 0.0
    assert counts == {"cardinality": 1, "negation": 1, "viewpoint": 3, "zzz_unlisted": 1}
    # an aspect on every query is the plain mAP@10
    assert values["viewpoint"] == pytest.approx(M.map_at_k(hits, n_gt, (10,))[10])


def test_rank_in_candidates_masks_and_breaks_ties_stably():
    scores = torch.tensor([[0.1, 0.5, 0.3], [0.5, 0.5, 0.5], [0.9, 0.2, 0.4]])
    valid = torch.tensor([[True, True, True], [True, True, True], [False, True, True]])
    ranks = M.rank_in_candidates(scores, torch.tensor([2, 1, 2]), valid)
    assert ranks.tolist() == [1, 1, 0]  # row 2: the 0.9 candidate is masked out
    assert M.genecis_metrics(ranks) == pytest.approx({"R@1": 100 / 3, "R@2": 100.0, "R@3": 100.0})


def test_summaries_average_over_parts():
    parts = {
        "dress": {"R@10": 10.0, "R@50": 30.0},
        "shirt": {"R@10": 20.0, "R@50": 40.0},
        "toptee": {"R@10": 30.0, "R@50": 50.0},
    }
    assert M.summarize("fashioniq", parts) == pytest.approx({"R@10": 20.0, "R@50": 40.0})
    assert M.summarize("cirr", {"cirr": {"R@1": 5.0}}) == {"R@1": 5.0}


# --------------------------------------------------------------------------- protocols
@pytest.fixture(scope="module")
def runtime():
    return setup_runtime("cpu", "fp32", 0)


def _bench(dataset, queries, gallery):
    return CIRBenchmark(dataset, "val", queries, gallery, TensorImages({}, "none"))


def _query_with_sims(sims):
    """A unit query vector whose dot products with the one-hot gallery are `sims` (scaled)."""
    return F.normalize(torch.tensor([sims], dtype=torch.float32), dim=-1)


def test_cirr_removes_the_reference_and_ranks_the_subset(runtime):
    names = ["a", "b", "c", "d", "e"]
    feats = torch.eye(5)  # gallery item i is e_i
    index = {n: i for i, n in enumerate(names)}
    # similarities: a (reference) 0.9, c 0.7, b (target) 0.5, e 0.3, d 0.1
    queries = _query_with_sims([0.9, 0.5, 0.7, 0.1, 0.3])
    q = CIRQuery("7", "a", ("cap",), ("b",), subset=("a", "b", "c", "d"))
    result = evaluate_part(_bench("cirr", [q], names), feats, index, queries, runtime, top_k=4)
    # full ranking without the reference: c, b, e, d -> target at rank 2
    assert result.metrics["R@1"] == 0.0 and result.metrics["R@5"] == 100.0
    # subset without the reference: c (0.7), b (0.5), d (0.1) -> target at rank 2
    assert result.metrics["Rs@1"] == 0.0 and result.metrics["Rs@2"] == 100.0
    assert result.metrics["Avg"] == pytest.approx(50.0)
    q2 = CIRQuery("8", "c", ("cap",), ("b",), subset=("a", "b", "c", "d"))
    result = evaluate_part(_bench("cirr", [q2], names), feats, index, queries, runtime, top_k=4)
    assert result.metrics["R@1"] == 0.0  # a (0.9) still first: only the reference is removed
    assert result.metrics["Rs@1"] == 0.0 and result.metrics["Rs@2"] == 100.0


def test_cirr_test_split_returns_rankings_without_reference(runtime):
    names = [f"n{i}" for i in range(5)]
    queries = _query_with_sims([0.9, 0.5, 0.7, 0.1, 0.3])
    q = CIRQuery("7", "n0", ("cap",), (), subset=("n0", "n1", "n3", "n4"))
    result = evaluate_part(
        _bench("cirr", [q], names),
        torch.eye(5),
        {n: i for i, n in enumerate(names)},
        queries,
        runtime,
    )
    assert result.metrics == {}
    assert result.ranked["7"] == ["n2", "n1", "n4", "n3"]
    assert result.subset_ranked["7"] == ["n1", "n4", "n3"]


def test_circo_keeps_the_reference_and_counts_every_ground_truth(runtime):
    names = [str(i) for i in range(60)]
    sims = [0.0] * 60
    sims[0], sims[1], sims[2], sims[3] = 0.9, 0.8, 0.7, 0.6  # 0 is the reference
    queries = _query_with_sims(sims)
    q = CIRQuery("1", "0", ("cap",), ("2", "0", "59"))  # target_img_id "2", gts incl. the reference
    result = evaluate_part(
        _bench("circo", [q], names),
        torch.eye(60),
        {n: i for i, n in enumerate(names)},
        queries,
        runtime,
    )
    # ranking 0, 1, 2, 3, ...: hits at ranks 1 ("0") and 3 ("2"); "59" at a tie-broken rank > 5
    assert result.metrics["mAP@5"] == pytest.approx((1 + 2 / 3) / 3 * 100)
    assert result.metrics["R@5"] == 100.0


def test_circo_val_reports_semantic_aspects(runtime):
    names = [str(i) for i in range(60)]
    feats = torch.eye(60)
    index = {n: i for i, n in enumerate(names)}
    sims_a = [0.0] * 60
    sims_a[5], sims_a[6], sims_a[7] = 0.9, 0.8, 0.7  # ranking 5, 6, 7, ...
    sims_b = [0.0] * 60
    sims_b[8], sims_b[9] = 0.9, 0.8  # ranking 8, 9, ...
    queries = torch.cat([_query_with_sims(sims_a), _query_with_sims(sims_b)])
    qs = [
        CIRQuery("0", "1", ("c",), ("7", "5")),  # hits at ranks 1, 3; |GT| 2 -> (1 + 2/3) / 2
        CIRQuery("1", "2", ("c",), ("9",)),  # hit at rank 2; |GT| 1 -> 1/2
    ]
    bench = _bench("circo", qs, names)
    aspects = [("addition", "viewpoint"), ("viewpoint",)]
    result = evaluate_part(bench, feats, index, queries, runtime, aspects=aspects)
    assert result.aspects == pytest.approx(
        {"addition": (1 + 2 / 3) / 2 * 100, "viewpoint": ((1 + 2 / 3) / 2 + 1 / 2) / 2 * 100}
    )
    assert result.aspect_queries == {"addition": 1, "viewpoint": 2}
    assert result.metrics["mAP@10"] == pytest.approx(result.aspects["viewpoint"])
    assert evaluate_part(bench, feats, index, queries, runtime).aspects == {}  # no annotations


def test_genecis_ranks_within_each_query_gallery(runtime):
    names = ["r0", "t0", "g0", "g1", "r1", "t1", "g2"]
    feats = torch.eye(7)
    queries = torch.stack(
        [
            _query_with_sims([0, 0.5, 0.9, 0.1, 0, 0, 0])[0],
            _query_with_sims([0, 0, 0, 0, 0, 0.8, 0.2])[0],
        ]
    )
    qs = [
        CIRQuery("0", "r0", ("c",), ("t0",), gallery=("t0", "g0", "g1")),
        CIRQuery("1", "r1", ("c",), ("t1",), gallery=("t1", "g2")),
    ]
    result = evaluate_part(
        _bench("genecis", qs, []), feats, {n: i for i, n in enumerate(names)}, queries, runtime
    )
    assert result.metrics == pytest.approx({"R@1": 50.0, "R@2": 100.0, "R@3": 100.0})


def test_fashioniq_caption_orders():
    q = CIRQuery("0", "r", ("is red.", " has a collar?"), ("t",))
    bench = _bench("fashioniq", [q], ["t"])
    assert modification_texts(bench, "both") == [
        ["is red and has a collar", "has a collar and is red"]
    ]
    assert modification_texts(bench, "single") == [[" has a collar? and is red."]]  # Pic2Word: raw


# --------------------------------------------------------------------------- per attribute
def test_metrics_by_group_on_a_hand_ranking():
    # Five queries over a 6-image gallery; query q's ground truths in `gts`.
    ranked = torch.tensor(
        [
            [0, 1, 2, 3, 4, 5],  # q0 digit:      GT {0}    -> hit at rank 1
            [5, 4, 1, 0, 2, 3],  # q1 digit:      GT {1}    -> hit at rank 3
            [2, 3, 4, 5, 0, 1],  # q2 colour:     GT {2, 3} -> hits at ranks 1, 2
            [0, 1, 2, 3, 4, 5],  # q3 background: GT {5}    -> hit at rank 6
            [3, 2, 1, 0, 5, 4],  # q4 background: GT {1, 4} -> hits at ranks 3, 6
        ]
    )
    gts = M.pad_targets([[0], [1], [2, 3], [5], [1, 4]])
    groups = [("digit",), ("digit",), ("colour",), ("background",), ("background",)]
    values, counts = M.metrics_by_group(
        ranked, gts, groups, M.toy_metrics, order=("digit", "colour", "background")
    )
    assert list(values) == ["digit", "colour", "background"]
    assert counts == {"digit": 2, "colour": 1, "background": 2}
    # digit: R@1 = 1/2, R@5 = 2/2; AP@5: q0 = 1/1, q1 = (1/3)/1 -> mAP@5 = (1 + 1/3) / 2
    assert values["digit"] == pytest.approx(
        {"R@1": 50.0, "R@5": 100.0, "R@10": 100.0, "mAP@5": (1 + 1 / 3) / 2 * 100,
         "mAP@10": (1 + 1 / 3) / 2 * 100}
    )  # fmt: skip
    # colour: both GTs first: AP = (1/1 + 2/2) / 2 = 1
    assert values["colour"] == pytest.approx(
        {"R@1": 100.0, "R@5": 100.0, "R@10": 100.0, "mAP@5": 100.0, "mAP@10": 100.0}
    )
    # background: q3 hit at rank 6 (outside 5), q4 hits at 3 and 6: R@1 0, R@5 1/2, R@10 1;
    # AP@5: q3 0, q4 (1/3)/2; AP@10: q3 (1/6)/1, q4 (1/3 + 2/6)/2
    assert values["background"] == pytest.approx(
        {"R@1": 0.0, "R@5": 50.0, "R@10": 100.0, "mAP@5": (1 / 6) / 2 * 100,
         "mAP@10": (1 / 6 + (1 / 3 + 2 / 6) / 2) / 2 * 100}
    )  # fmt: skip
    # groups partition the queries here, so each overall figure is the count-weighted mean
    overall = M.toy_metrics(ranked, gts)
    for key, value in overall.items():
        assert value == pytest.approx(sum(values[g][key] * counts[g] for g in values) / 5)
    # a query in two groups counts in both; groups not in `order` follow, sorted
    two, n_two = M.metrics_by_group(ranked[:2], gts[:2], [("digit", "z"), ("a",)])
    assert list(two) == ["a", "digit", "z"] and n_two == {"a": 1, "digit": 1, "z": 1}
    assert two["digit"]["R@1"] == 100.0 and two["a"]["R@1"] == 0.0
    with pytest.raises(ValueError, match="2 group lists for 5 ranked queries"):
        M.metrics_by_group(ranked, gts, groups[:2])
    # per query: the rank of the first ground truth (q3's only one is at rank 6)
    assert M.first_hit_rank(M.hits_matrix(ranked, gts)).tolist() == [1, 3, 1, 6, 3]
    assert M.first_hit_rank(M.hits_matrix(ranked[:, :5], gts)).tolist() == [1, 3, 1, 0, 3]


def test_toy_protocol_reports_metrics_per_changed_attribute(runtime):
    names = [str(i) for i in range(6)]
    feats = torch.eye(6)
    index = {n: i for i, n in enumerate(names)}
    sims = [
        [0.9, 0.8, 0.0, 0.0, 0.0, 0.0],  # ranking 0, 1, ...: target "0" at rank 1
        [0.9, 0.8, 0.0, 0.0, 0.0, 0.0],  # target "1" at rank 2
        [0.0, 0.0, 0.0, 0.9, 0.0, 0.0],  # target "3" at rank 1
    ]
    queries = torch.cat([_query_with_sims(s) for s in sims])
    qs = [
        CIRQuery("0", "5", ("make it red",), ("0",), groups=("colour",)),
        CIRQuery("1", "5", ("put it on grass",), ("1",), groups=("background",)),
        CIRQuery("2", "5", ("make it a two",), ("3",), groups=("digit",)),
    ]
    result = evaluate_part(_bench("toy", qs, names), feats, index, queries, runtime)
    assert list(result.groups) == ["digit", "colour", "background"]  # the toy's order
    assert {g: m["R@1"] for g, m in result.groups.items()} == {
        "digit": 100.0, "colour": 100.0, "background": 0.0}  # fmt: skip
    assert result.group_queries == {"digit": 1, "colour": 1, "background": 1}
    assert result.metrics["R@1"] == pytest.approx(200 / 3)
    assert result.first_rank == [1, 2, 1]
    assert result.per_query["R@1"].tolist() == [100.0, 0.0, 100.0]
    assert result.top_names[1][:2] == ["0", "1"]
    plain = [CIRQuery(q.query_id, q.reference, q.captions, q.targets) for q in qs]
    assert evaluate_part(_bench("toy", plain, names), feats, index, queries, runtime).groups == {}


@pytest.mark.parametrize("dataset", ["fashioniq", "cirr", "circo", "toy"])
def test_per_query_metrics_average_to_each_protocol(dataset):
    g = torch.Generator().manual_seed(0)
    ranked = torch.stack([torch.randperm(80, generator=g)[:50] for _ in range(30)])
    gts = M.pad_targets([torch.randint(0, 80, (1 + i % 3,), generator=g).unique().tolist()
                         for i in range(30)])  # fmt: skip
    subset = torch.randint(0, 5, (30,), generator=g)
    protocol = {
        "fashioniq": lambda: M.fashioniq_metrics(ranked, gts[:, 0]),
        "cirr": lambda: M.cirr_metrics(ranked, gts[:, 0], subset),
        "circo": lambda: M.circo_metrics(ranked, gts),
        "toy": lambda: M.toy_metrics(ranked, gts),
    }[dataset]()
    per = M.per_query_metrics(dataset, ranked, gts, subset if dataset == "cirr" else None)
    assert list(per) == list(protocol)
    for key, value in protocol.items():
        assert per[key].shape == (30,) and float(per[key].mean()) == pytest.approx(value, abs=1e-4)
    ranks = torch.tensor([0, 1, 2, 5])
    assert M.per_query_metrics("genecis", None, None, target_rank=ranks)["R@2"].tolist() == [
        100.0, 100.0, 0.0, 0.0]  # fmt: skip
