"""Rank and score one benchmark part of `rtd eval` from its composed-query features: the
official protocol of each benchmark (CIRR's subset recall and reference exclusion,
CIRCO's mAP@k over several ground truths and its semantic aspects, GeneCIS' per-query
candidate galleries, FashionIQ's recall) and the toy world's per-attribute metrics.
"""

from __future__ import annotations

import time
from dataclasses import dataclass, field

import torch
import torch.nn.functional as F

from labshared.console import log
from labshared.toy import ATTRIBUTES
from rtd_cli import metrics as M
from rtd_cli.retrieval import chunked_topk, gather_scores


@dataclass
class PartResult:
    metrics: dict[str, float]
    ranked: dict[str, list[str]]  # query id -> ranked names (test splits only)
    subset_ranked: dict[str, list[str]]
    n_queries: int
    # CIRCO val: mAP@10 per semantic aspect and how many queries carry each
    aspects: dict[str, float] = field(default_factory=dict)
    aspect_queries: dict[str, int] = field(default_factory=dict)
    # toy: the metrics of the queries of each group (changed attribute), and their counts
    groups: dict[str, dict[str, float]] = field(default_factory=dict)
    group_queries: dict[str, int] = field(default_factory=dict)
    # per query (every benchmark): the 1-based rank of its first ground truth (0: not in
    # the top k; None: a test split, no ground truth), its top-k gallery names, and its
    # contribution to each metric (`metrics.per_query_metrics`: the metric is their mean)
    first_rank: list[int | None] = field(default_factory=list)
    top_names: list[list[str]] = field(default_factory=list)
    per_query: dict[str, torch.Tensor] = field(default_factory=dict)


def evaluate_part(
    bench,
    feats: torch.Tensor,
    index: dict[str, int],
    queries: torch.Tensor,
    runtime,
    top_k: int = 50,
    aspects: list[tuple[str, ...]] | None = None,
) -> PartResult:
    """Rank and score one benchmark part from composed-query features (Q, D); `aspects`
    (CIRCO val, per query) adds the semantic-aspect mAP@10."""
    gal_all = F.normalize(feats, dim=-1)
    device = runtime.device
    is_test = not any(q.targets for q in bench.queries)
    ranked: dict[str, list[str]] = {}
    subset_ranked: dict[str, list[str]] = {}
    if bench.dataset == "genecis":
        cands = M.pad_targets([[index[n] for n in q.gallery] for q in bench.queries])
        scores = gather_scores(queries, gal_all, cands)
        ranks = M.rank_in_candidates(
            scores, torch.zeros(len(queries), dtype=torch.long), cands >= 0
        )
        order = scores.masked_fill(cands < 0, float("-inf")).argsort(
            dim=1, descending=True, stable=True
        )[:, :top_k]
        names = [
            [q.gallery[j] for j in row if j < len(q.gallery)]
            for q, row in zip(bench.queries, order.tolist(), strict=True)
        ]
        per_query = M.per_query_metrics("genecis", None, None, target_rank=ranks)
        return PartResult(
            M.genecis_metrics(ranks), {}, {}, len(queries), first_rank=(ranks + 1).tolist(),
            top_names=names, per_query=per_query,
        )  # fmt: skip
    gal_idx = torch.tensor([index[n] for n in bench.gallery], dtype=torch.long)
    gallery = gal_all[gal_idx].to(device)  # 123k x 768 fp32 is 0.38 GB: fine on any GPU
    pos = {n: i for i, n in enumerate(bench.gallery)}
    exclude = None
    if bench.dataset == "cirr":  # the reference never counts as a result (cirr_compute_val_metrics)
        exclude = torch.tensor([pos.get(q.reference, -1) for q in bench.queries], dtype=torch.long)
    t0 = time.perf_counter()
    _, top = chunked_topk(
        queries.to(device),
        gallery,
        top_k,
        exclude=None if exclude is None else exclude.to(device),
        device=device,
    )
    top = top.cpu()
    log(
        f"[dim]{bench.name}: ranked {len(queries)} queries against {len(gallery)} images "
        f"in {time.perf_counter() - t0:.2f} s[/dim]"
    )
    top_names = [[bench.gallery[j] for j in row] for row in top.tolist()]
    if is_test:
        ranked = {q.query_id: names for q, names in zip(bench.queries, top_names, strict=True)}
    subset_rank = None
    if bench.dataset == "cirr" and all(q.subset for q in bench.queries):
        members = [[n for n in q.subset if n != q.reference] for q in bench.queries]
        cands = M.pad_targets([[index[n] for n in m] for m in members])
        scores = gather_scores(queries, gal_all, cands)
        if is_test:
            order = scores.argsort(dim=1, descending=True, stable=True).tolist()
            subset_ranked = {
                q.query_id: [m[j] for j in o if j < len(m)]
                for q, m, o in zip(bench.queries, members, order, strict=True)
            }
        else:
            col = torch.tensor(
                [
                    m.index(q.targets[0]) if q.targets[0] in m else 0
                    for q, m in zip(bench.queries, members, strict=True)
                ]
            )
            subset_rank = M.rank_in_candidates(scores, col, cands >= 0)
            missing = torch.tensor(
                [q.targets[0] not in m for q, m in zip(bench.queries, members, strict=True)]
            )
            subset_rank[missing] = cands.shape[1]  # a target outside its subset is never found
    if is_test:
        return PartResult({}, ranked, subset_ranked, len(queries),
                          first_rank=[None] * len(queries), top_names=top_names)  # fmt: skip
    gts = M.pad_targets([[pos[t] for t in q.targets if t in pos] for q in bench.queries])
    result = PartResult(
        protocol_metrics(bench.dataset, top, gts, subset_rank), ranked, subset_ranked,
        len(queries), first_rank=M.first_hit_rank(M.hits_matrix(top, gts)).tolist(),
        top_names=top_names, per_query=M.per_query_metrics(bench.dataset, top, gts, subset_rank),
    )  # fmt: skip
    if bench.dataset == "circo" and aspects is not None:
        hits = M.hits_matrix(top, gts)
        result.aspects, result.aspect_queries = M.semantic_map_at_10(
            hits, (gts != M.PAD).sum(dim=1), aspects
        )
    elif bench.dataset == "toy" and any(q.groups for q in bench.queries):
        result.groups, result.group_queries = M.metrics_by_group(
            top, gts, [q.groups for q in bench.queries], M.toy_metrics, order=ATTRIBUTES
        )
    return result


def protocol_metrics(
    dataset: str, top: torch.Tensor, gts: torch.Tensor, subset_rank: torch.Tensor | None
) -> dict[str, float]:
    """The benchmark protocol's metrics of one part from its ranking and ground truths."""
    if dataset == "fashioniq":
        return M.fashioniq_metrics(top, gts[:, 0])
    if dataset == "cirr":
        return M.cirr_metrics(top, gts[:, 0], subset_rank)
    if dataset == "circo":
        return M.circo_metrics(top, gts)
    return M.toy_metrics(top, gts)
