"""Retrieval metrics of the four ZS-CIR benchmarks, as pure tensor functions (percent).

Official sources: `RTD:validate.py::fiq_compute_val_metrics`, `cirr_compute_val_metrics`,
`circo_compute_val_metrics` (= `miccunifi/CIRCO:src/evaluation.py`), and GeneCIS'
`eval/eval_functions.py::validate` (R@1/2/3 over a per-query gallery, target at index 0).

Inputs are rankings already computed by `retrieval.py`: `ranked` (Q, K) gallery indices,
best first; ground truths are (Q, G) gallery indices padded with -1.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable, Mapping, Sequence

import torch

PAD = -1


def hits_matrix(ranked: torch.Tensor, targets: torch.Tensor) -> torch.Tensor:
    """(Q, K) bool: whether the item at rank j of query q is one of its ground truths.

    Args:
        ranked: (Q, K) long gallery indices, best first.
        targets: (Q, G) long ground-truth indices, padded with -1 (never a gallery index).
    """
    valid = targets != PAD  # (Q, G)
    return ((ranked[:, :, None] == targets[:, None, :]) & valid[:, None, :]).any(dim=-1)


def recall_at_k(hits: torch.Tensor, ks: Iterable[int]) -> dict[int, float]:
    """Recall@K x 100: the share of queries with a ground truth among their first K."""
    return {k: float(hits[:, :k].any(dim=1).float().mean() * 100) for k in ks}


def average_precision_at_k(hits: torch.Tensor, n_gt: torch.Tensor, k: int) -> torch.Tensor:
    """(Q,) CIRCO's AP@K per query, in [0, 1]: sum_{j<=K} P@j * rel_j / min(|GT|, K).

    Args:
        hits: (Q, K') bool from `hits_matrix`, K' >= k.
        n_gt: (Q,) number of ground truths of each query (>= 1).
    """
    rel = hits[:, :k].float()
    precision = rel.cumsum(dim=1) / torch.arange(1, rel.shape[1] + 1, device=rel.device)  # P@j
    return (precision * rel).sum(dim=1) / n_gt.clamp(max=k).float()


def map_at_k(hits: torch.Tensor, n_gt: torch.Tensor, ks: Iterable[int]) -> dict[int, float]:
    """CIRCO's mAP@K x 100: AP@K = sum_{k<=K} P@k * rel_k / min(|GT|, K), averaged.

    Args:
        hits: (Q, K) bool from `hits_matrix`, K >= max(ks).
        n_gt: (Q,) number of ground truths of each query (>= 1).
    """
    return {k: float(average_precision_at_k(hits, n_gt, k).mean() * 100) for k in ks}


# The nine semantic aspects CIRCO's validation queries are annotated with, in the order its
# evaluation prints them (`miccunifi/CIRCO:src/evaluation.py::compute_metrics`).
CIRCO_SEMANTIC_ASPECTS = (
    "cardinality", "addition", "negation", "direct_addressing", "compare_change",
    "comparative_statement", "statement_with_conjunction", "spatial_relations_background",
    "viewpoint",
)  # fmt: skip


def semantic_map_at_10(
    hits: torch.Tensor, n_gt: torch.Tensor, aspects: Sequence[Sequence[str]]
) -> tuple[dict[str, float], dict[str, int]]:
    """CIRCO's semantic-aspect mAP@10 x 100: for each aspect, the mean AP@10 over the
    queries annotated with it (a query with several aspects counts in each), as
    `CIRCO:src/evaluation.py::compute_metrics` reports for the validation split.

    Args:
        hits: (Q, K) bool from `hits_matrix`, K >= 10.
        n_gt: (Q,) number of ground truths of each query.
        aspects: per query, its `semantic_aspects` list.

    Returns:
        ({aspect: mAP@10}, {aspect: number of queries}): the official nine in their order,
        then any other aspect found, sorted. An aspect no query has is left out (the
        official code would average an empty list into NaN).
    """
    ap = average_precision_at_k(hits, n_gt, 10)  # (Q,)
    found = {a for row in aspects for a in row}
    order = [a for a in CIRCO_SEMANTIC_ASPECTS if a in found]
    order += sorted(found - set(CIRCO_SEMANTIC_ASPECTS))
    values, counts = {}, {}
    for aspect in order:
        rows = torch.tensor([aspect in row for row in aspects], device=ap.device)
        values[aspect] = float(ap[rows].mean() * 100)
        counts[aspect] = int(rows.sum())
    return values, counts


def rank_in_candidates(
    scores: torch.Tensor, target_col: torch.Tensor, valid: torch.Tensor | None = None
) -> torch.Tensor:
    """0-based rank of each query's target among its candidates (for CIRR's subset and
    GeneCIS' per-query galleries), as a stable descending sort would place it: candidates
    scoring higher, plus equal-scoring ones listed earlier, come first.

    Args:
        scores: (Q, C) similarities.
        target_col: (Q,) column of the target.
        valid: (Q, C) bool, False for padding or removed candidates.
    """
    t = scores.gather(1, target_col[:, None])  # (Q, 1)
    cols = torch.arange(scores.shape[1], device=scores.device)[None, :]
    ahead = (scores > t) | ((scores == t) & (cols < target_col[:, None]))
    if valid is not None:
        ahead &= valid
    return ahead.sum(dim=1)


def recall_from_ranks(ranks: torch.Tensor, ks: Iterable[int]) -> dict[int, float]:
    return {k: float((ranks < k).float().mean() * 100) for k in ks}


# --------------------------------------------------------------------------- protocols
def fashioniq_metrics(ranked: torch.Tensor, target: torch.Tensor) -> dict[str, float]:
    """FashionIQ (one category): R@10, R@50 with one target per query, the reference
    left in the gallery (`fiq_compute_val_metrics`)."""
    r = recall_at_k(hits_matrix(ranked, target[:, None]), (10, 50))
    return {"R@10": r[10], "R@50": r[50]}


def cirr_metrics(
    ranked: torch.Tensor, target: torch.Tensor, subset_rank: torch.Tensor | None
) -> dict[str, float]:
    """CIRR: R@1/5/10/50 on a ranking with the reference already removed, and
    Recall_subset@1/2/3 from the target's rank among `img_set.members` (reference removed);
    `Avg` = (R@5 + Rs@1) / 2 as the CIRR paper reports."""
    r = recall_at_k(hits_matrix(ranked, target[:, None]), (1, 5, 10, 50))
    out = {f"R@{k}": v for k, v in r.items()}
    if subset_rank is not None:
        out.update({f"Rs@{k}": v for k, v in recall_from_ranks(subset_rank, (1, 2, 3)).items()})
        out["Avg"] = (out["R@5"] + out["Rs@1"]) / 2
    return out


def circo_metrics(ranked: torch.Tensor, gts: torch.Tensor) -> dict[str, float]:
    """CIRCO: mAP@5/10/25/50 over all ground truths and Recall@5/10/25/50 of the single
    `target_img_id` (column 0 of `gts`); the reference is not removed."""
    ks = (5, 10, 25, 50)
    n_gt = (gts != PAD).sum(dim=1)
    out = {f"mAP@{k}": v for k, v in map_at_k(hits_matrix(ranked, gts), n_gt, ks).items()}
    out.update({f"R@{k}": v for k, v in recall_at_k(hits_matrix(ranked, gts[:, :1]), ks).items()})
    return out


def genecis_metrics(target_rank: torch.Tensor) -> dict[str, float]:
    """GeneCIS (one task): R@1/2/3 of the target within the query's own gallery."""
    return {f"R@{k}": v for k, v in recall_from_ranks(target_rank, (1, 2, 3)).items()}


def toy_metrics(ranked: torch.Tensor, gts: torch.Tensor) -> dict[str, float]:
    """Toy world: Recall@1/5/10 (any image with the target's attributes) and mAP@5/10."""
    hits = hits_matrix(ranked, gts)
    out = {f"R@{k}": v for k, v in recall_at_k(hits, (1, 5, 10)).items()}
    out.update({f"mAP@{k}": v for k, v in map_at_k(hits, (gts != PAD).sum(dim=1), (5, 10)).items()})
    return out


def first_hit_rank(hits: torch.Tensor) -> torch.Tensor:
    """(Q,) long: the 1-based rank of each query's first ground truth in its ranking, 0 when
    none is among the K ranked (per-query results, for paired comparisons of two runs).

    Args:
        hits: (Q, K) bool from `hits_matrix`.
    """
    found = hits.any(dim=1)
    return torch.where(
        found, hits.float().argmax(dim=1) + 1, torch.zeros_like(found, dtype=torch.long)
    )


def metrics_by_group(
    ranked: torch.Tensor,
    gts: torch.Tensor,
    groups: Sequence[Sequence[str]],
    metric_fn: Callable[[torch.Tensor, torch.Tensor], dict[str, float]] = toy_metrics,
    order: Sequence[str] = (),
) -> tuple[dict[str, dict[str, float]], dict[str, int]]:
    """A benchmark's metrics over the queries of each group alone (the toy world: the
    attribute a query's modification changes), so a user sees where a method helps.

    Args:
        ranked: (Q, K) gallery indices, best first.
        gts: (Q, G) ground truths padded with -1.
        groups: per query, the groups it belongs to (a query may sit in several or none).
        metric_fn: `(ranked, gts) -> {metric: value}` on a subset of rows (`toy_metrics`).
        order: groups to list first, in this order (e.g. digit, colour, background);
            other groups follow sorted.

    Returns:
        ({group: metrics}, {group: number of queries}); a group no query has is left out.
    """
    if len(groups) != ranked.shape[0]:
        raise ValueError(f"{len(groups)} group lists for {ranked.shape[0]} ranked queries")
    found = {g for row in groups for g in row}
    names = [g for g in order if g in found] + sorted(found - set(order))
    values, counts = {}, {}
    for name in names:
        rows = torch.tensor([name in row for row in groups], device=ranked.device)
        values[name] = metric_fn(ranked[rows], gts[rows])
        counts[name] = int(rows.sum())
    return values, counts


def pad_targets(rows: Sequence[Sequence[int]], device: torch.device | str = "cpu") -> torch.Tensor:
    """Ragged ground-truth index lists -> (Q, G) long padded with -1 (G >= 1)."""
    width = max([len(r) for r in rows] + [1])
    out = torch.full((len(rows), width), PAD, dtype=torch.long)
    for i, r in enumerate(rows):
        out[i, : len(r)] = torch.as_tensor(list(r), dtype=torch.long)
    return out.to(device)


def summarize(dataset: str, per_part: Mapping[str, Mapping[str, float]]) -> dict[str, float]:
    """Benchmark-level summary: the mean of each metric over the parts (FashionIQ's
    categories, as SEARLE/LinCIR/RTD report R@10/R@50 averages; GeneCIS' tasks, whose
    headline is the average R@1); a single-part benchmark passes through."""
    if not per_part:
        return {}
    keys = [k for k in next(iter(per_part.values())) if all(k in p for p in per_part.values())]
    return {k: sum(p[k] for p in per_part.values()) / len(per_part) for k in keys}


def per_query_metrics(
    dataset: str,
    ranked: torch.Tensor | None,
    gts: torch.Tensor | None,
    subset_rank: torch.Tensor | None = None,
    target_rank: torch.Tensor | None = None,
) -> dict[str, torch.Tensor]:
    """Each query's contribution to each headline metric, (Q,) float64 per metric, whose
    mean over the queries is the metric of the protocol functions above: 0 or 100 for a
    recall (the query's target within the first K or not), AP@K x 100 for CIRCO's mAP@K.
    The per-query rows of `rtd eval` (items/queries.parquet) and the bootstrap intervals and
    paired comparisons are computed from these.

    Args:
        ranked, gts: as `toy_metrics` (None for GeneCIS).
        subset_rank: CIRR's 0-based rank of the target in its subset (or None).
        target_rank: GeneCIS' 0-based rank of the target in the query's own gallery.
    """

    def recall(hits: torch.Tensor, ks) -> dict[str, torch.Tensor]:
        return {f"R@{k}": hits[:, :k].any(dim=1).double() * 100 for k in ks}

    if dataset == "genecis":
        return {f"R@{k}": (target_rank < k).double() * 100 for k in (1, 2, 3)}
    if dataset == "fashioniq":
        return recall(hits_matrix(ranked, gts[:, :1]), (10, 50))
    if dataset == "cirr":
        out = recall(hits_matrix(ranked, gts[:, :1]), (1, 5, 10, 50))
        if subset_rank is not None:
            out.update({f"Rs@{k}": (subset_rank < k).double() * 100 for k in (1, 2, 3)})
            out["Avg"] = (out["R@5"] + out["Rs@1"]) / 2
        return out
    hits, n_gt = hits_matrix(ranked, gts), (gts != PAD).sum(dim=1)
    ap = {f"mAP@{k}": average_precision_at_k(hits, n_gt, k).double() * 100 for k in (5, 10)}
    if dataset == "circo":
        out = {f"mAP@{k}": average_precision_at_k(hits, n_gt, k).double() * 100
               for k in (5, 10, 25, 50)}  # fmt: skip
        out.update(recall(hits_matrix(ranked, gts[:, :1]), (5, 10, 25, 50)))
        return out
    return {**recall(hits, (1, 5, 10)), **ap}
